// The hot paths whose instructions tests/perf/check.sh counts with callgrind, one case per run:
//   hotpath CASE N
// Each case is one noinline function named perf_CASE; check.sh collects only inside it
// (--toggle-collect), so the count is exact and independent of set-up and machine load.
// Policy and backend come from the command line (-DPOLICY=..., -DBACKEND=...). bench/count.sh
// compiles the same program against an older release's headers for the report's trend.
#include <lazymm/lazymm.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#ifndef POLICY
#define POLICY lazymm::implicit_shootdown
#endif
#ifndef BACKEND
#define BACKEND lazymm::membarrier_backend
#endif

namespace {
struct ctx : lazymm::context {
  int v = 1;
};
using dom_t = lazymm::domain<POLICY, BACKEND>;
using ex_t = dom_t::executor_type;
using ref_t = lazymm::owning_ref<ctx>;
#define CLOBBER() asm volatile("" ::: "memory")
}  // namespace

extern thread_local const void* perf_tl;  // external linkage: the stores are not dead
thread_local const void* perf_tl;

// A thread-local store pair: what a lazy transition is measured against.
extern "C" __attribute__((noinline)) void perf_floor(long n, const void* p) {
  for (long i = 0; i < n; ++i) {
    perf_tl = p;
    CLOBBER();
    perf_tl = nullptr;
    CLOBBER();
  }
}
// switch_to the loaded context, then go_lazy: the lazy pair.
extern "C" __attribute__((noinline)) void perf_lazy_pair(long n, ex_t& ex, const ref_t& r) {
  for (long i = 0; i < n; ++i) {
    ex.switch_to(r);
    CLOBBER();
    ex.go_lazy();
    CLOBBER();
  }
}
extern "C" __attribute__((noinline)) void perf_go_lazy(long n, ex_t& ex) {
  for (long i = 0; i < n; ++i) {
    ex.go_lazy();
    CLOBBER();
  }
}
// Two real switches and two go_lazy per iteration (check.sh halves it).
extern "C" __attribute__((noinline)) void perf_real_switch(long n, ex_t& ex, const ref_t& a, const ref_t& b) {
  for (long i = 0; i < n; ++i) {
    ex.switch_to(a);
    ex.go_lazy();
    ex.switch_to(b);
    ex.go_lazy();
  }
}
// The final drop of a context that no executor ever held (teardown and free included; batched
// policies: the push, and the reclaims that back-pressure runs on this thread, amortised).
extern "C" __attribute__((noinline)) void perf_final_drop(long n, std::vector<ref_t>& v) {
  for (long i = 0; i < n; ++i) v[static_cast<std::size_t>(i)].reset();
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s floor|lazy_pair|go_lazy|real_switch|final_drop N\n", argv[0]);
    return 2;
  }
  const char* what = argv[1];
  const long n = std::atol(argv[2]);
  dom_t d;
  // For bench/count.sh: valgrind may refuse membarrier (the domain then falls back to fences).
  std::fprintf(stderr, "mechanism: %s\n", lazymm::to_string(d.mechanism()));
  {
    auto ex = d.attach();
    auto a = d.make<ctx>();
    auto b = d.make<ctx>();
    ex.switch_to(a);  // warm: the holder bits are set, a is loaded
    ex.switch_to(b);
    ex.switch_to(a);
    if (!std::strcmp(what, "floor")) {
      perf_floor(n, &a);
    } else if (!std::strcmp(what, "lazy_pair")) {
      perf_lazy_pair(n, ex, a);
    } else if (!std::strcmp(what, "go_lazy")) {
      perf_go_lazy(n, ex);
    } else if (!std::strcmp(what, "real_switch")) {
      perf_real_switch(n, ex, a, b);
    } else if (!std::strcmp(what, "final_drop")) {
      std::vector<ref_t> v;
      v.reserve(static_cast<std::size_t>(n));
      for (long i = 0; i < n; ++i) v.push_back(d.make<ctx>());
      perf_final_drop(n, v);
    } else {
      std::fprintf(stderr, "unknown case %s\n", what);
      return 2;
    }
    ex.switch_to_default();
  }
  return 0;
}
