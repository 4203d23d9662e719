// Workload 3: final-drop latency.
//
// The benchmark thread (not an executor) drops the last owning reference to a context that every
// one of N registered executors holds lazily, and times only that drop. Two settings:
//   drop_idle   N = 1, 2, 16, 256, 1024 executors, parked (blocked in a futex wait) while they
//               hold the context lazily: the kernel's idle CPUs with a lazy active_mm.
//   drop_busy   B = 1 .. cores executors that hold the context lazily while running context-free
//               work (spinning): a membarrier must interrupt them.
// Between two timed drops (untimed) the benchmark makes a new context and has every holding
// executor switch to it and go lazy (holding = 1: all; 0: none; 2: the first `holders`); the
// executors that do not hold stay parked for the whole benchmark, registered and never woken. Variants: the six lazymm policy x backend pairs, and "membarrier.call":
// one bare membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) timed under the same conditions (same
// executors, same lazy holds), the unit the targets are stated in.
//
// What a drop does per policy: refcount = teardown + one decrement (the memory is freed later, by
// the last lazy holder); explicit = teardown, then the round (steal from every holder, one heavy
// barrier, wait for executors inside a switch) and the free; implicit = the round, teardown,
// free. Counters: p50_ns (median of the timed drops), unit_p50_ns (median of a bare membarrier
// call timed in the same iterations, next to each drop), steals and barriers per drop.
#include <algorithm>
#include <chrono>
#include <utility>
#include <thread>
#include <vector>

#include "common.hpp"

#if defined(__linux__)
#include <linux/futex.h>
#endif

namespace bench {
namespace {

// The timed operation of each variant.
template <class P, class B>
struct lazymm_drop {
  using domain_t = lazymm::domain<P, B>;
  static std::string name() { return variant_name<P, B>(); }
  static bool drop(lazymm::owning_ref<bench_ctx>& v) noexcept {
    v.reset();  // the final owning reference
    return true;
  }
};

struct membarrier_call {
  using domain_t = lazymm::domain<lazymm::refcount, lazymm::membarrier_backend>;
  static std::string name() { return "membarrier.call"; }
  static bool drop(lazymm::owning_ref<bench_ctx>&) noexcept { return bare_membarrier(); }
};

// Parks the calling thread until *word != seen. A raw futex wait, not std::atomic::wait, whose
// spin-and-yield phase would keep just-armed executors runnable (and so interrupted by the
// membarrier) for a while after they arrive.
inline void park(std::atomic<std::uint32_t>& word, std::uint32_t seen) noexcept {
#if defined(__linux__)
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
#else
  word.wait(seen, std::memory_order_acquire);  // acquire: as the load after it in worker()
#endif
}
inline void unpark_all(std::atomic<std::uint32_t>& word) noexcept {
#if defined(__linux__)
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
#else
  word.notify_all();
#endif
}

template <class V>
struct drop_bench {
  using domain_t = typename V::domain_t;
  static inline domain_t* dom = nullptr;
  static inline std::vector<std::thread> workers;
  static inline int nworkers = 0;
  static inline bool busy = false;
  static inline int holders = 0;                    // workers 0 .. holders-1 switch to each context
  static inline std::atomic<int> next_worker{0};
  static inline std::atomic<std::uint32_t> gen{0};  // bumped to hand out a new context (or stop)
  static inline std::atomic<int> armed{0};          // workers done with the current generation
  static inline std::atomic<bool> stop{false};
  // Arrivals wait_armed() waits for: every worker at the start, then the holders only (the others
  // stay parked on `quit` for the whole benchmark, registered and idle, never woken).
  static inline int expected = 0;
  static inline std::atomic<std::uint32_t> quit{0};
  // Written by the benchmark thread before it bumps gen (release), read by workers after they
  // see the bump (acquire).
  static inline const lazymm::owning_ref<bench_ctx>* offer = nullptr;

  static void arrive() noexcept {
    // release: pairs with the acquire in wait_armed(); the worker's lazy hold is in place.
    if (armed.fetch_add(1, std::memory_order_release) + 1 == expected) armed.notify_one();
  }

  static void wait_armed() noexcept {
    // acquire: pairs with the release in arrive().
    for (int a; (a = armed.load(std::memory_order_acquire)) != expected;) armed.wait(a, std::memory_order_acquire);
    // relaxed: no worker touches armed again until the next gen bump, which is a release.
    armed.store(0, std::memory_order_relaxed);
  }

  static void worker() {
    auto ex = dom->attach();
    const bool hold = next_worker.fetch_add(1, std::memory_order_relaxed) < holders;  // relaxed: an index
    std::uint64_t acc = 0;
    std::uint32_t seen = 0;
    arrive();
    if (!hold) {
      // acquire: pairs with the release store in teardown(); a registered, parked non-holder.
      while (quit.load(std::memory_order_acquire) == 0) park(quit, 0);
      return;
    }
    for (;;) {
      // acquire: pairs with the release bump in publish(); makes `offer` and `stop` visible.
      if (busy)
        while (gen.load(std::memory_order_acquire) == seen) spin_for(64);  // context-free work
      else
        park(gen, seen);                                            // parked
      const std::uint32_t g = gen.load(std::memory_order_acquire);  // as above
      if (g == seen) continue;                                      // spurious wake-up
      seen = g;
      // relaxed: ordered by the acquire on gen (stop is set before the release bump).
      if (stop.load(std::memory_order_relaxed)) break;
      const auto task = *offer;  // a task of the new context
      ex.switch_to(task);
      tiny_work(task.get(), acc);
      ex.go_lazy();  // the task ends; the executor keeps the context lazily
      arrive();
    }
  }

  static void publish() noexcept {
    // release: publishes offer / stop (pairs with the workers' acquire loads of gen).
    gen.fetch_add(1, std::memory_order_release);
    if (!busy) unpark_all(gen);
  }

  static void setup(const benchmark::State& st) {
    busy = st.range(0) != 0;
    nworkers = static_cast<int>(st.range(1));
    // holding: 1 every executor holds the context, 0 none, 2 the first `holders` (4th argument).
    holders = st.range(2) == 1 ? nworkers : st.range(2) == 0 ? 0 : static_cast<int>(st.range(3));
    next_worker.store(0, std::memory_order_relaxed);  // no worker yet
    dom = new domain_t;
    gen.store(0, std::memory_order_relaxed);       // no worker yet
    armed.store(0, std::memory_order_relaxed);     // as above
    stop.store(false, std::memory_order_relaxed);  // as above
    quit.store(0, std::memory_order_relaxed);      // as above
    expected = nworkers;
    workers.reserve(static_cast<std::size_t>(nworkers));
    for (int i = 0; i < nworkers; ++i) workers.emplace_back(&drop_bench::worker);
    wait_armed();  // every worker attached
    expected = holders;  // read by holders after the next release bump of gen
  }

  static void teardown(const benchmark::State&) {
    quit.store(1, std::memory_order_release);  // pairs with the non-holders' acquire load
    unpark_all(quit);
    stop.store(true, std::memory_order_relaxed);  // published by the release in publish()
    publish();
    for (auto& t : workers) t.join();
    workers.clear();
    delete dom;  // every executor has detached, every context has been freed
    dom = nullptr;
  }

  static void run(benchmark::State& st) {
    if (!std::is_same_v<V, membarrier_call> && std::is_same_v<typename domain_t::backend, lazymm::membarrier_backend> &&
        dom->mechanism() != lazymm::mechanism::membarrier) {
      st.SkipWithError(dom->mechanism_reason().c_str());
      return;
    }
    std::vector<double> samples, unit;
    samples.reserve(static_cast<std::size_t>(st.max_iterations));
    unit.reserve(static_cast<std::size_t>(st.max_iterations));
    const auto before = dom->stats();
    bool ok = true;
    bool unit_first = true;
    using clock = std::chrono::steady_clock;
    for (auto _ : st) {
      auto v = dom->template make<bench_ctx>();
      offer = &v;
      publish();
      wait_armed();
      // Untimed: give the last executors to arrive time to park again (idle means off-CPU).
      if (!busy) std::this_thread::sleep_for(std::chrono::microseconds(50 + holders / 4));
      // The paired unit: one bare membarrier call in the same iteration, alternately just before
      // and just after the drop, so that both see the same executors in the same state (the
      // executors stay parked or busy either way). membarrier.call rows time only this.
      double unit_s = -1;
      const bool pair = !std::is_same_v<V, membarrier_call>;
      if (pair && unit_first) {
        const auto u0 = clock::now();
        ok = bare_membarrier() && ok;
        unit_s = std::chrono::duration<double>(clock::now() - u0).count();
      }
      const auto t0 = clock::now();
      ok = V::drop(v) && ok;
      const auto t1 = clock::now();
      if (pair && !unit_first) {
        const auto u0 = clock::now();
        ok = bare_membarrier() && ok;
        unit_s = std::chrono::duration<double>(clock::now() - u0).count();
      }
      unit_first = !unit_first;
      v.reset();  // membarrier.call: the untimed drop; otherwise already empty
      const double s = std::chrono::duration<double>(t1 - t0).count();
      st.SetIterationTime(s);
      samples.push_back(s * 1e9);
      if (unit_s >= 0) unit.push_back(unit_s * 1e9);
    }
    if (!ok) {
      st.SkipWithError("membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed");
      return;
    }
    const auto after = dom->stats();
    const double n = static_cast<double>(samples.size());
    std::sort(samples.begin(), samples.end());
    st.counters["p50_ns"] = samples[samples.size() / 2];
    st.counters["p90_ns"] = samples[samples.size() * 9 / 10];
    if (!unit.empty()) {
      std::sort(unit.begin(), unit.end());
      st.counters["unit_p50_ns"] = unit[unit.size() / 2];
    }
    st.counters["steals_per_drop"] = static_cast<double>(after.steals - before.steals) / n;
    st.counters["barriers_per_drop"] = static_cast<double>(after.heavy_barriers - before.heavy_barriers) / n;
  }
};

template <class V>
void add(int cpus) {
  // Idle: parked executors. Fewer iterations where re-arming wakes many threads.
  for (int n : {1, 2, 16, 256, 1024}) {
    const int iters = n <= 16 ? 1000 : n <= 256 ? 300 : 120;
    benchmark::RegisterBenchmark(("drop_idle/" + V::name()).c_str(), &drop_bench<V>::run)
        ->Setup(&drop_bench<V>::setup)
        ->Teardown(&drop_bench<V>::teardown)
        ->ArgNames({"busy", "executors", "holding", "holders"})
        ->Args({0, n, 1, n})
        ->Iterations(iters)
        ->UseManualTime();
  }
  // Registered but not holding the context: no steal, so no barrier either.
  benchmark::RegisterBenchmark(("drop_idle/" + V::name()).c_str(), &drop_bench<V>::run)
      ->Setup(&drop_bench<V>::setup)
      ->Teardown(&drop_bench<V>::teardown)
      ->ArgNames({"busy", "executors", "holding", "holders"})
      ->Args({0, 1024, 0, 0})
      ->Iterations(300)
      ->UseManualTime();
  // Some of the registered executors hold it (holding = 2): a round that visits the context's
  // holder set costs what the holders cost, not what the registry costs.
  for (auto [n, h] : {std::pair{1024, 2}, std::pair{16, 2}})
    benchmark::RegisterBenchmark(("drop_idle/" + V::name()).c_str(), &drop_bench<V>::run)
        ->Setup(&drop_bench<V>::setup)
        ->Teardown(&drop_bench<V>::teardown)
        ->ArgNames({"busy", "executors", "holding", "holders"})
        ->Args({0, n, 2, h})
        ->Iterations(n <= 16 ? 1000 : 300)
        ->UseManualTime();
  // Busy: executors running context-free work while they hold the context lazily.
  for (int b = 1; b <= cpus; ++b)
    benchmark::RegisterBenchmark(("drop_busy/" + V::name()).c_str(), &drop_bench<V>::run)
        ->Setup(&drop_bench<V>::setup)
        ->Teardown(&drop_bench<V>::teardown)
        ->ArgNames({"busy", "executors", "holding", "holders"})
        ->Args({1, b, 1, b})
        ->Iterations(1000)
        ->UseManualTime();
}

}  // namespace

void register_drop(int cpus) {
  add<membarrier_call>(cpus);
  for_each_policy_backend([cpus]<class P, class B>() { add<lazymm_drop<P, B>>(cpus); });
}

}  // namespace bench
