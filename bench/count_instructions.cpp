// bench/count_instructions.cpp: the hot-path loops whose instructions bench/count.sh counts under
// callgrind (N and 2N iterations; the difference / N is the count per iteration, exact and free of
// timing noise). The same source compiles against every release since 0.1.
//
//   count_instructions POLICY BACKEND LOOP N
//     POLICY   refcount | explicit | implicit | batched_explicit | batched_implicit (the last two
//              only where LAZYMM_COUNT_BATCHED=1: they appeared after 0.1)
//     BACKEND  membarrier | fence
//     LOOP     floor      a thread-local pointer store pair (no lazymm at all)
//              pair       switch_to the loaded context + go_lazy (the lazy pair)
//              switch     two real switches + two go_lazy (bench/count.sh halves it)
//
// Prints to stderr the mechanism the domain chose (valgrind may refuse membarrier; the count then
// is that of the fallback).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <lazymm/lazymm.hpp>

// External linkage: a store the compiler cannot prove unread (the asm memory clobbers keep it).
thread_local const void* count_tl_current;

namespace {

struct ctx : lazymm::context {
  int v = 1;
};

__attribute__((noinline)) void floor_loop(long n, const void* p) {
  for (long i = 0; i < n; ++i) {
    count_tl_current = p;
    asm volatile("" ::: "memory");
    count_tl_current = nullptr;
    asm volatile("" ::: "memory");
  }
}

template <class E, class R>
__attribute__((noinline)) void pair_loop(long n, E& ex, const R& r) {
  for (long i = 0; i < n; ++i) {
    ex.switch_to(r);
    asm volatile("" ::: "memory");
    ex.go_lazy();
    asm volatile("" ::: "memory");
  }
}

template <class E, class R>
__attribute__((noinline)) void switch_loop(long n, E& ex, const R& a, const R& b) {
  for (long i = 0; i < n; ++i) {
    ex.switch_to(a);
    ex.go_lazy();
    ex.switch_to(b);
    ex.go_lazy();
  }
}

template <class P, class B>
int run(const char* loop, long n) {
  lazymm::domain<P, B> dom;
  std::fprintf(stderr, "mechanism: %s\n", lazymm::to_string(dom.mechanism()));
  auto a = dom.template make<ctx>();
  auto b = dom.template make<ctx>();
  auto ex = dom.attach();
  if (std::strcmp(loop, "floor") == 0) {
    floor_loop(n, a.get());
  } else if (std::strcmp(loop, "pair") == 0) {
    pair_loop(n, ex, a);
  } else if (std::strcmp(loop, "switch") == 0) {
    switch_loop(n, ex, a, b);
  } else {
    return 2;
  }
  return 0;
}

template <class B>
int run_policy(const char* policy, const char* loop, long n) {
  if (std::strcmp(policy, "refcount") == 0) return run<lazymm::refcount, B>(loop, n);
  if (std::strcmp(policy, "explicit") == 0) return run<lazymm::explicit_shootdown, B>(loop, n);
  if (std::strcmp(policy, "implicit") == 0) return run<lazymm::implicit_shootdown, B>(loop, n);
#if LAZYMM_COUNT_BATCHED
  if (std::strcmp(policy, "batched_explicit") == 0) return run<lazymm::batched<lazymm::explicit_shootdown>, B>(loop, n);
  if (std::strcmp(policy, "batched_implicit") == 0) return run<lazymm::batched<lazymm::implicit_shootdown>, B>(loop, n);
#endif
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s POLICY BACKEND LOOP N\n", argv[0]);
    return 2;
  }
  const long n = std::atol(argv[4]);
  if (std::strcmp(argv[2], "membarrier") == 0) return run_policy<lazymm::membarrier_backend>(argv[1], argv[3], n);
  if (std::strcmp(argv[2], "fence") == 0) return run_policy<lazymm::fence_backend>(argv[1], argv[3], n);
  return 2;
}
