// bench/common.hpp: what every lazymm benchmark shares: the context type, the "tiny work" a task
// does, the policy x backend list, names, and a few helpers.
//
// Naming scheme (parsed by bench/report.py): "<workload>/<variant>[/<key>:<value>...]", to which
// Google Benchmark appends its own segments (min_time, iterations, real_time, threads:N).
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <lazymm/lazymm.hpp>
#include <string>
#include <thread>
#include <type_traits>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace bench {

// A membarrier-backend benchmark on a domain that fell back to fences would measure the wrong
// thing: skip it, with the domain's reason.
template <class B, class D>
bool backend_in_force(benchmark::State& st, const D& dom) {
  if (std::is_same_v<B, lazymm::membarrier_backend> && dom.mechanism() != lazymm::mechanism::membarrier) {
    st.SkipWithError(dom.mechanism_reason().c_str());
    return false;
  }
  return true;
}

// What a task reads from its context. Every variant (lazymm and peers) runs the same work on the
// same shape of object, so the comparison isolates the cost of keeping the reference valid.
struct payload {
  std::uint64_t value = 1;
  std::uint64_t pad[7] = {};
};

// The payload with an intrusive atomic reference count next to it (the counting peers).
struct counted_payload {
  std::atomic<std::int64_t> refs{1};
  payload data;
};

// One T shared by every thread of a benchmark: made by its Setup, deleted by its Teardown (both run
// on the main thread, before the workers start and after they all finish).
template <class T>
struct per_run {
  static inline T* p = nullptr;
  static void setup(const benchmark::State&) { p = new T; }
  static void teardown(const benchmark::State&) {
    delete p;
    p = nullptr;
  }
};

// The lazymm context: the payload lives in the context object, next to the counts, as mm_count
// lives in mm_struct (so the refcount policy pays for the shared line in the same way a real
// runtime would).
struct bench_ctx final : lazymm::context, payload {};

// The task's work: one dependent read of the context and an opaque add.
inline void tiny_work(const payload* p, std::uint64_t& acc) noexcept {
  acc += p->value;
  benchmark::DoNotOptimize(acc);
}

// A compiler barrier that clobbers memory (asm volatile with a "memory" clobber): keeps the
// floor's plain stores from being merged or dropped.
inline void compiler_barrier() noexcept {
  benchmark::ClobberMemory();
}

// The floor's thread-local "current context" pointer. External linkage, so that the compiler
// cannot prove that nothing reads it and drop the stores.
inline thread_local const payload* tl_current = nullptr;

// Number of CPUs the benchmark may use (at least 1).
inline int ncpu() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// Short names for the policy x backend matrix.
template <class P>
constexpr const char* policy_short() {
  if constexpr (std::is_same_v<P, lazymm::refcount>)
    return "refcount";
  else if constexpr (std::is_same_v<P, lazymm::explicit_shootdown>)
    return "explicit";
  else
    return "implicit";
}
template <class B>
constexpr const char* backend_short() {
  return std::is_same_v<B, lazymm::membarrier_backend> ? "membarrier" : "fence";
}
template <class P, class B>
std::string variant_name() {
  return std::string("lazymm.") + policy_short<P>() + "." + backend_short<B>();
}

// Calls f.template operator()<Policy, Backend>() for each of the six combinations.
template <class F>
void for_each_policy_backend(F&& f) {
  f.template operator()<lazymm::refcount, lazymm::membarrier_backend>();
  f.template operator()<lazymm::explicit_shootdown, lazymm::membarrier_backend>();
  f.template operator()<lazymm::implicit_shootdown, lazymm::membarrier_backend>();
  f.template operator()<lazymm::refcount, lazymm::fence_backend>();
  f.template operator()<lazymm::explicit_shootdown, lazymm::fence_backend>();
  f.template operator()<lazymm::implicit_shootdown, lazymm::fence_backend>();
}

// One bare membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), the unit of the final-drop figures.
// Returns false if the kernel refuses it (the benchmark then reports an error for that row).
inline bool bare_membarrier() noexcept {
#if defined(__linux__)
  return ::syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
  return false;
#endif
}

// Registers the process for private expedited membarrier (idempotent). False if refused.
inline bool register_membarrier() noexcept {
#if defined(__linux__)
  return ::syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
  return false;
#endif
}

// Spin briefly without touching shared memory: context-free work of a busy executor.
inline void spin_for(unsigned n) noexcept {
  for (unsigned i = 0; i < n; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    compiler_barrier();
#endif
  }
}

// Registration entry points, one per workload file.
void register_lazy_pair(int cpus);
void register_switch(int cpus);
void register_drop(int cpus);
void register_churn(int cpus);
void register_retire(int cpus);

}  // namespace bench
