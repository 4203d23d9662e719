// Workload 4: churn. Contexts created and retired per second while executors switch.
//
// R retiring threads (the benchmark's threads, 1 .. cores), each its own executor, and
// E = cores - 1 (at least one) background executors. Each background executor switches all the
// time between two contexts of its own (a task of one, go lazy, a task of the other), so it is
// running, inside or between switches, whenever a retirer drops something. Each retirer repeats:
// make a context, run a task of it (a real switch, the tiny work, go lazy), and retire it by
// dropping the only owning reference while it is still loaded lazily on the retirer's own
// executor: the kernel's exit_mm() followed by the last mmput()/mmdrop(). Under the shootdown
// policies that drop steals the context from the retirer's own slot and issues one heavy barrier,
// which on the membarrier backend interrupts every running background executor; under refcount
// it tears down and the memory is freed at the retirer's next switch.
//
// Reported: real time per retired context (1e9 / real_time is the retire rate of all retirers
// together), and counters from the first retirer: exec_switch_per_s (switches by all background
// executors per second, to see what the retirers cost them), barriers_per_ctx and
// steals_per_ctx (heavy barriers and steals per freed context).
#include <chrono>
#include <memory>
#include <vector>

#include "common.hpp"

namespace bench {
namespace {

template <class P, class B>
struct churn_bench {
  using domain_t = lazymm::domain<P, B>;
  using ref_t = lazymm::owning_ref<bench_ctx>;
  static inline domain_t* dom = nullptr;
  static inline int nexecutors = 1;
  static inline std::vector<std::thread> executors;
  static inline std::atomic<bool> stop{false};
  static inline std::atomic<std::uint64_t> switches{0};  // by all background executors

  static void executor_loop() {
    ref_t own[2] = {dom->template make<bench_ctx>(), dom->template make<bench_ctx>()};
    auto ex = dom->attach();
    std::uint64_t acc = 0, local = 0;
    // relaxed: a flag to stop; the join in teardown orders everything else.
    while (!stop.load(std::memory_order_relaxed)) {
      const ref_t& task = own[local & 1];
      ex.switch_to(task);
      tiny_work(task.get(), acc);
      ex.go_lazy();
      if ((++local & 1023) == 0) switches.fetch_add(1024, std::memory_order_relaxed);  // statistics only
    }
  }

  static void setup(const benchmark::State&) {
    dom = new domain_t;
    stop.store(false, std::memory_order_relaxed);  // no executor yet
    switches.store(0, std::memory_order_relaxed);  // as above
    for (int i = 0; i < nexecutors; ++i) executors.emplace_back(&churn_bench::executor_loop);
  }

  static void teardown(const benchmark::State&) {
    stop.store(true, std::memory_order_relaxed);  // see executor_loop
    for (auto& t : executors) t.join();
    executors.clear();
    delete dom;
    dom = nullptr;
  }

  static void run(benchmark::State& st) {
    if (!backend_in_force<B>(st, *dom)) return;
    const bool reporter = st.thread_index() == 0;
    std::chrono::steady_clock::time_point t0;
    std::uint64_t sw0 = 0;
    lazymm::domain_stats s0{};
    bool first = true;
    std::uint64_t acc = 0;
    {
      auto ex = dom->attach();
      for (auto _ : st) {
        if (reporter && first) {
          first = false;
          t0 = std::chrono::steady_clock::now();
          sw0 = switches.load(std::memory_order_relaxed);  // statistics only
          s0 = dom->stats();
        }
        auto c = dom->template make<bench_ctx>();
        ex.switch_to(c);  // a task of the new context
        tiny_work(c.get(), acc);
        ex.go_lazy();  // the task exits; the context stays loaded lazily
        c.reset();     // retire: the last reference
      }
    }
    if (reporter && !first) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto s1 = dom->stats();
      const double freed = static_cast<double>(s1.contexts_freed - s0.contexts_freed);
      st.counters["exec_switch_per_s"] =
          static_cast<double>(switches.load(std::memory_order_relaxed) - sw0) / secs;  // statistics only
      st.counters["barriers_per_ctx"] =
          freed > 0 ? static_cast<double>(s1.heavy_barriers - s0.heavy_barriers) / freed : 0.0;
      st.counters["steals_per_ctx"] = freed > 0 ? static_cast<double>(s1.steals - s0.steals) / freed : 0.0;
    }
  }
};

template <class P, class B>
void add(int cpus) {
  using V = churn_bench<P, B>;
  V::nexecutors = cpus > 1 ? cpus - 1 : 1;
  benchmark::RegisterBenchmark(("churn/" + variant_name<P, B>()).c_str(), &V::run)
      ->Setup(&V::setup)
      ->Teardown(&V::teardown)
      ->DenseThreadRange(1, cpus)
      ->UseRealTime();
}

}  // namespace

void register_churn(int cpus) {
  for_each_policy_backend([cpus]<class P, class B>() { add<P, B>(cpus); });
}

}  // namespace bench
