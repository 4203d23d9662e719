// Workload 5: retirement under churn, inline against batched ("retire/<variant>").
//
// R = 1 or 2 retiring threads (the benchmark's threads) and ONE background thread, whatever the
// core count. Each lazymm retirer is its own executor and repeats the task of bench_churn.cpp:
// make a context, switch_to it, tiny_work, go_lazy, and drop the only owning reference while the
// context is still loaded lazily. The background executor keeps switching between two contexts of
// its own. Variants:
//   lazymm.{explicit,implicit}.{membarrier,fence}          inline: the drop runs the round
//   lazymm.batched_{explicit,implicit}.{membarrier,fence}  the drop only queues; a
//                                                          lazymm::reclaimer (default options)
//                                                          thread runs the rounds
//   lazymm.refcount.{membarrier,fence}                     the slot counts; no round
//   shared_ptr      make_shared, the task's work, drop (background: a counted copy per switch)
//   urcu.call_rcu   liburcu memb: new, the work inside a read-side section, call_rcu (background:
//                   a registered reader running read-side sections)
// Every retired object has the same size (sizeof(retire_ctx)); shared_ptr adds its control block.
//
// Counters (from thread 0; figures of all retirers together):
//   retired_per_s        contexts created, run, retired and freed per second (wall clock, from the
//                        first iteration until everything retired is freed: drain_ms is that tail)
//   cpu_per_ctx_ns       CPU time of every thread but the background one (retirers, reclaimer or
//                        call_rcu thread) per retired context
//   exec_switch_per_s    background switches per second (what retiring costs the others)
//   drop_p50_ns, drop_p99_ns, drop_mean_ns, drop_typ_ns   time inside the drop call (c.reset(),
//                        p.reset(), call_rcu) of every 64th retirement; typ = the mean of the
//                        fastest 99 %; each includes one clock read (clock_ns)
//   lat_p50_us, lat_p99_us, lat_max_us       retire -> free of the same sampled objects (the free
//                        runs on the reclaimer or call_rcu thread); histogram, ~6% resolution
//   barriers_per_ctx, rounds_per_ctx         lazymm: heavy barriers and rounds per retired context
//   peak_backlog, backlog_bound              batched: stats().peak_backlog, 2 x batch_options::backlog + R
#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstddef>
#include <lazymm/reclaimer.hpp>
#include <memory>
#include <vector>

#include "common.hpp"

#if LAZYMM_BENCH_HAVE_URCU
#define _LGPL_SOURCE 1  // inline read-side primitives, as in bench_lazy_pair.cpp
#include <urcu/urcu-memb.h>
#endif

namespace bench {
namespace {

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Log-linear histogram of non-negative nanosecond values: 16 buckets per power of two (values
// below 32 exact). Relaxed everywhere: statistics, which order nothing. Thread 0 reads it after
// the benchmark's stop barrier (the retirers' records) and after drain() (the frees' records:
// the reclaim lock's or rcu_barrier's synchronisation orders them before).
class histogram {
 public:
  void reset() noexcept {
    for (auto& b : b_) b.store(0, std::memory_order_relaxed);
    max_.store(0, std::memory_order_relaxed);
  }
  void record(std::int64_t v) noexcept {
    const auto u = static_cast<std::uint64_t>(v < 0 ? 0 : v);
    b_[index(u)].fetch_add(1, std::memory_order_relaxed);
    for (std::uint64_t m = max_.load(std::memory_order_relaxed); u > m;)
      if (max_.compare_exchange_weak(m, u, std::memory_order_relaxed)) break;
  }
  std::uint64_t count() const noexcept {
    std::uint64_t n = 0;
    for (auto& b : b_) n += b.load(std::memory_order_relaxed);
    return n;
  }
  // The q-quantile (0 < q <= 1): the middle of the bucket holding it; 0 without samples.
  double quantile(double q) const noexcept {
    const std::uint64_t n = count();
    if (n == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(n - 1)) + 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < nbuckets; ++i)
      if ((seen += b_[i].load(std::memory_order_relaxed)) >= rank) return lower(i) + (width(i) - 1) / 2.0;
    return static_cast<double>(max());
  }
  // Mean of the samples up to the q-quantile (bucket middles): the typical cost without the rare
  // preemptions. On this VM the clock ticks in ~10 ns steps; a mean averages that out, a quantile
  // does not.
  double trimmed_mean(double q) const noexcept {
    const std::uint64_t n = count();
    const auto keep = static_cast<std::uint64_t>(q * static_cast<double>(n));
    double sum = 0;
    std::uint64_t taken = 0;
    for (std::size_t i = 0; i < nbuckets && taken < keep; ++i) {
      const std::uint64_t k = std::min(b_[i].load(std::memory_order_relaxed), keep - taken);
      sum += static_cast<double>(k) * (lower(i) + (width(i) - 1) / 2.0);
      taken += k;
    }
    return taken ? sum / static_cast<double>(taken) : 0.0;
  }
  std::uint64_t max() const noexcept { return max_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::size_t nbuckets = 16 + 60 * 16;
  static std::size_t index(std::uint64_t v) noexcept {
    if (v < 16) return v;
    const int m = std::bit_width(v) - 1;  // 4 .. 63
    return static_cast<std::size_t>(m - 3) * 16 + ((v >> (m - 4)) & 15);
  }
  static double lower(std::size_t i) noexcept {
    if (i < 16) return static_cast<double>(i);
    return static_cast<double>((16 + i % 16) << (i / 16 - 1));  // (16 + sub) << (m - 4)
  }
  static double width(std::size_t i) noexcept { return i < 32 ? 1.0 : static_cast<double>(1ull << (i / 16 - 1)); }
  std::atomic<std::uint64_t> b_[nbuckets] = {};
  std::atomic<std::uint64_t> max_{0};
};

// What one run collects. One run at a time: Setup resets it, Teardown drains every free into it.
struct run_data {
  histogram drop, latency;
  std::atomic<std::int64_t> drop_sum_ns{0};
  void reset() noexcept {
    drop.reset();
    latency.reset();
    drop_sum_ns.store(0, std::memory_order_relaxed);  // statistics, as the histograms
  }
};
inline run_data g_run;
constexpr unsigned sample_mask = 63;  // every 64th retirement is timed (two clock reads)

// At the free of a retired object: the latency, for the sampled ones (stamp != 0).
inline void record_free(std::int64_t stamp) noexcept {
  if (stamp) g_run.latency.record(now_ns() - stamp);
}

// Runs drop() (the retirement). When sampled, times it, and stamps the object (*stamp, a plain
// field that the free reads: the retirement itself hands the object over, with the ordering that
// each scheme guarantees between a retire and its reclamation).
template <class F>
inline void retire_now(std::int64_t& stamp, bool sampled, F&& drop) noexcept {
  if (!sampled) return drop();
  const std::int64_t t0 = now_ns();
  stamp = t0;
  drop();
  const std::int64_t dt = now_ns() - t0;
  g_run.drop.record(dt);
  g_run.drop_sum_ns.fetch_add(dt, std::memory_order_relaxed);  // statistics
}

// The retired lazymm context: bench_ctx's payload plus the stamp; its free records the latency.
struct retire_ctx final : lazymm::context, payload {
  std::int64_t retired_ns = 0;
  static void on_free(retire_ctx* p) noexcept {
    record_free(p->retired_ns);
    delete p;
  }
};

// The peers' object: the same payload and stamp, an rcu_head, padded to the same size.
struct peer_obj {
  payload data;
  std::int64_t retired_ns = 0;
#if LAZYMM_BENCH_HAVE_URCU
  rcu_head head;
  static constexpr std::size_t head_size = sizeof(rcu_head);
#else
  static constexpr std::size_t head_size = 0;
#endif
  char pad[sizeof(retire_ctx) - sizeof(payload) - sizeof(std::int64_t) - head_size];
};
static_assert(sizeof(peer_obj) == sizeof(retire_ctx), "the peers retire objects of the lazymm context's size");

// ---- lazymm ---------------------------------------------------------------------------------

// The reclaimer thread of a batched domain; nothing for the others.
template <class D>
struct reclaimer_of {
  explicit reclaimer_of(D&) {}
};
template <class D>
  requires D::policy::batches
struct reclaimer_of<D> : lazymm::reclaimer<D> {
  using lazymm::reclaimer<D>::reclaimer;
};

template <class P, class B>
struct lazymm_retire {
  using domain_t = lazymm::domain<P, B>;
  using stats_t = lazymm::domain_stats;
  static inline domain_t* dom = nullptr;
  static inline reclaimer_of<domain_t>* rec = nullptr;

  static void start() {
    dom = new domain_t;  // default batch_options
    rec = new reclaimer_of<domain_t>(*dom);
  }
  static void finish() {
    delete rec;  // a reclaimer reclaims what is left when destroyed
    delete dom;
    rec = nullptr;
    dom = nullptr;
  }
  static bool ready(benchmark::State& st) { return backend_in_force<B>(st, *dom); }
  // Frees everything retired so far (batched: waits for the reclaimer's reclaim, then reclaims the rest).
  static void drain() {
    if constexpr (P::batches) dom->synchronize();
  }
  static stats_t snapshot() { return dom->stats(); }

  // bench_churn.cpp's executor_loop.
  static void background(const std::atomic<bool>& stop, std::atomic<std::uint64_t>& switches) {
    lazymm::owning_ref<bench_ctx> own[2] = {dom->template make<bench_ctx>(), dom->template make<bench_ctx>()};
    auto ex = dom->attach();
    std::uint64_t acc = 0, n = 0;
    while (!stop.load(std::memory_order_relaxed)) {  // relaxed: a flag; the join orders the rest
      ex.switch_to(own[n & 1]);
      tiny_work(own[n & 1].get(), acc);
      ex.go_lazy();
      if ((++n & 1023) == 0) switches.fetch_add(1024, std::memory_order_relaxed);  // statistics
    }
  }

  struct thread_state {
    typename domain_t::executor_type ex = dom->attach();
    void retire(std::uint64_t& acc, bool sampled) noexcept {
      auto c = dom->template make<retire_ctx>();
      ex.switch_to(c);  // a task of the new context
      tiny_work(c.get(), acc);
      ex.go_lazy();  // the task exits; the context stays loaded lazily
      // The final drop.
      retire_now(c->retired_ns, sampled, [&] { c.reset(); });
    }
  };

  static void report(benchmark::State& st, const stats_t& s0, const stats_t& s1, double retired) {
    st.counters["barriers_per_ctx"] = static_cast<double>(s1.heavy_barriers - s0.heavy_barriers) / retired;
    st.counters["rounds_per_ctx"] = static_cast<double>(s1.rounds - s0.rounds) / retired;
    if constexpr (P::batches) {
      st.counters["peak_backlog"] = static_cast<double>(s1.peak_backlog);
      // The documented bound: 2 x batch_options::backlog plus one per thread inside a final drop.
      st.counters["backlog_bound"] = static_cast<double>(2 * dom->options().backlog + st.threads());
    }
  }
};

// ---- peers ----------------------------------------------------------------------------------

struct no_stats {};

struct shared_ptr_retire {
  using stats_t = no_stats;
  static void start() {}
  static void finish() {}
  static bool ready(benchmark::State&) { return true; }
  static void drain() {}  // nothing is pending: the last drop frees
  static stats_t snapshot() { return {}; }
  static void report(benchmark::State&, const stats_t&, const stats_t&, double) {}

  // A "switch" replaces the worker's counted copy (one increment, one decrement).
  static void background(const std::atomic<bool>& stop, std::atomic<std::uint64_t>& switches) {
    std::shared_ptr<peer_obj> own[2] = {std::make_shared<peer_obj>(), std::make_shared<peer_obj>()};
    std::shared_ptr<peer_obj> cur;
    std::uint64_t acc = 0, n = 0;
    while (!stop.load(std::memory_order_relaxed)) {  // relaxed: as in lazymm_retire
      cur = own[n & 1];
      tiny_work(&cur->data, acc);
      if ((++n & 1023) == 0) switches.fetch_add(1024, std::memory_order_relaxed);  // statistics
    }
  }

  struct thread_state {
    void retire(std::uint64_t& acc, bool sampled) noexcept {
      auto p = std::make_shared<peer_obj>();
      tiny_work(&p->data, acc);
      retire_now(p->retired_ns, sampled, [&] { p.reset(); });
    }
  };
};

#if LAZYMM_BENCH_HAVE_URCU
struct urcu_retire {
  using stats_t = no_stats;
  static void start() {}
  static void finish() {  // every callback of the run has run (into g_run) before the next Setup
    urcu_memb_register_thread();
    urcu_memb_barrier();
    urcu_memb_unregister_thread();
  }
  static bool ready(benchmark::State&) { return true; }
  static void drain() { urcu_memb_barrier(); }  // from a registered thread, outside read-side sections
  static stats_t snapshot() { return {}; }
  static void report(benchmark::State&, const stats_t&, const stats_t&, double) {}

  // A registered reader that keeps running read-side sections on two objects of its own: the
  // thread that each grace period's membarrier interrupts.
  static void background(const std::atomic<bool>& stop, std::atomic<std::uint64_t>& switches) {
    urcu_memb_register_thread();
    peer_obj own[2];
    std::uint64_t acc = 0, n = 0;
    while (!stop.load(std::memory_order_relaxed)) {  // relaxed: as in lazymm_retire
      urcu_memb_read_lock();
      tiny_work(&own[n & 1].data, acc);
      urcu_memb_read_unlock();
      if ((++n & 1023) == 0) switches.fetch_add(1024, std::memory_order_relaxed);  // statistics
    }
    urcu_memb_unregister_thread();
  }

  // Runs on liburcu's call_rcu thread, after a grace period.
  static void free_cb(rcu_head* h) noexcept {
    auto* p = reinterpret_cast<peer_obj*>(reinterpret_cast<char*>(h) - offsetof(peer_obj, head));
    record_free(p->retired_ns);
    delete p;
  }

  struct thread_state {
    thread_state() { urcu_memb_register_thread(); }  // call_rcu takes a read-side lock inside
    ~thread_state() { urcu_memb_unregister_thread(); }
    void retire(std::uint64_t& acc, bool sampled) noexcept {
      auto* p = new peer_obj;
      urcu_memb_read_lock();  // the task's use of the object
      tiny_work(&p->data, acc);
      urcu_memb_read_unlock();
      retire_now(p->retired_ns, sampled, [&] { urcu_memb_call_rcu(&p->head, &free_cb); });
    }
  };
};
#endif

// ---- the benchmark --------------------------------------------------------------------------

// Cost of one steady_clock read, as seen between two reads (what every timed drop includes): the
// mean of the fastest 99 % of 10000 back-to-back pairs, as drop_typ_ns.
double clock_read_ns() {
  std::vector<std::int64_t> d(10000);
  for (auto& x : d) {
    const std::int64_t t0 = now_ns();
    x = now_ns() - t0;
  }
  std::sort(d.begin(), d.end());
  double sum = 0;
  for (std::size_t i = 0; i < 9900; ++i) sum += static_cast<double>(d[i]);
  return sum / 9900;
}

// CPU time of the whole process less the background thread's: the retirers' and the helpers'
// (reclaimer, liburcu's call_rcu thread) work.
double cpu_less(std::thread& bg) {
  const auto secs = [](clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  };
  clockid_t bg_clock;
  if (pthread_getcpuclockid(bg.native_handle(), &bg_clock) != 0) return 0;
  return secs(CLOCK_PROCESS_CPUTIME_ID) - secs(bg_clock);
}

template <class V>
struct retire_bench {
  static inline std::thread bg;
  static inline std::atomic<bool> stop{false};
  static inline std::atomic<std::uint64_t> switches{0};  // by the background thread

  static void setup(const benchmark::State&) {
    g_run.reset();
    stop.store(false, std::memory_order_relaxed);  // no background thread yet
    switches.store(0, std::memory_order_relaxed);  // as above
    V::start();
    bg = std::thread([] { V::background(stop, switches); });
  }

  static void teardown(const benchmark::State&) {
    stop.store(true, std::memory_order_relaxed);  // see background(); the join orders the rest
    bg.join();
    V::finish();  // every retired object of the run is freed
  }

  static void run(benchmark::State& st) {
    if (!V::ready(st)) return;
    const bool reporter = st.thread_index() == 0;
    typename V::thread_state ts;  // attach (lazymm) or register (liburcu)
    std::chrono::steady_clock::time_point t0;
    std::uint64_t sw0 = 0, acc = 0;
    double cpu0 = 0;
    typename V::stats_t s0{};
    bool first = true;
    unsigned n = 0;
    for (auto _ : st) {
      if (reporter && first) {
        first = false;
        t0 = std::chrono::steady_clock::now();
        sw0 = switches.load(std::memory_order_relaxed);  // statistics
        s0 = V::snapshot();
        cpu0 = cpu_less(bg);
      }
      ts.retire(acc, (++n & sample_mask) == 0);
    }
    if (!reporter || first) return;
    // Google Benchmark's stop barrier: every retirer has finished its iterations. The rate counts
    // until everything they retired is freed, so a backlog left for later does not count as done.
    const auto d0 = std::chrono::steady_clock::now();
    V::drain();
    const auto t1 = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    const double retired = static_cast<double>(st.iterations()) * st.threads();
    st.counters["retired_per_s"] = retired / secs;
    st.counters["drain_ms"] = std::chrono::duration<double, std::milli>(t1 - d0).count();
    st.counters["cpu_per_ctx_ns"] = (cpu_less(bg) - cpu0) * 1e9 / retired;
    st.counters["exec_switch_per_s"] =
        static_cast<double>(switches.load(std::memory_order_relaxed) - sw0) / secs;  // statistics
    const auto drops = g_run.drop.count();
    st.counters["drop_p50_ns"] = g_run.drop.quantile(0.5);
    st.counters["drop_p99_ns"] = g_run.drop.quantile(0.99);
    st.counters["drop_mean_ns"] =
        drops ? static_cast<double>(g_run.drop_sum_ns.load(std::memory_order_relaxed)) / drops : 0.0;
    st.counters["drop_typ_ns"] = g_run.drop.trimmed_mean(0.99);
    st.counters["clock_ns"] = clock_read_ns();
    if (g_run.latency.count()) {
      st.counters["lat_p50_us"] = g_run.latency.quantile(0.5) / 1e3;
      st.counters["lat_p99_us"] = g_run.latency.quantile(0.99) / 1e3;
      st.counters["lat_max_us"] = static_cast<double>(g_run.latency.max()) / 1e3;
    }
    V::report(st, s0, V::snapshot(), retired);
  }
};

template <class V>
void add(const std::string& variant) {
  benchmark::RegisterBenchmark(("retire/" + variant).c_str(), &retire_bench<V>::run)
      ->Setup(&retire_bench<V>::setup)
      ->Teardown(&retire_bench<V>::teardown)
      ->Threads(1)
      ->Threads(2)
      ->UseRealTime();
}

template <class B>
void add_lazymm() {
  namespace l = lazymm;
  const std::string b = backend_short<B>();
  add<lazymm_retire<l::explicit_shootdown, B>>("lazymm.explicit." + b);
  add<lazymm_retire<l::implicit_shootdown, B>>("lazymm.implicit." + b);
  add<lazymm_retire<l::batched<l::explicit_shootdown>, B>>("lazymm.batched_explicit." + b);
  add<lazymm_retire<l::batched<l::implicit_shootdown>, B>>("lazymm.batched_implicit." + b);
  add<lazymm_retire<l::refcount, B>>("lazymm.refcount." + b);
}

}  // namespace

// The shape is fixed (one background thread, 1 and 2 retirers), whatever the core count.
void register_retire(int /*cpus*/) {
  add_lazymm<lazymm::membarrier_backend>();
  add_lazymm<lazymm::fence_backend>();
  add<shared_ptr_retire>("shared_ptr");
#if LAZYMM_BENCH_HAVE_URCU
  add<urcu_retire>("urcu.call_rcu");
#endif
}

}  // namespace bench
