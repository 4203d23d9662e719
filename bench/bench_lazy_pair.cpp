// Workload 1: the lazy transition pair on one shared context.
//
// Every thread repeats: task of context C (switch to C) -> context-free work (go lazy, keeping C
// cached) -> task of C again. After the first iteration lazymm takes its fast path: C is already
// loaded, so the switch only leaves the lazy state. The peers do the same thing the way a runtime
// would without lazymm:
//   floor        a thread-local pointer store pair around the work: nothing keeps C alive
//   shared_ptr   each worker keeps a std::shared_ptr copy of C while lazy (copy / reset)
//   atomic_sp    each task start loads C from a std::atomic<std::shared_ptr>, and the worker
//                keeps the loaded copy while lazy
//   intrusive    an atomic refcount in the object: +1 when going lazy, -1 when the task resumes
//   urcu.memb    a liburcu (memb flavour) read-side critical section around the use
//
// Reported per benchmark: real time per iteration (Google Benchmark divides wall time by the
// iterations of all threads) and CPU time per iteration (one thread's CPU time per operation).
// bench/report.py turns these into per-thread cost.
#include <memory>

#include "common.hpp"

#if LAZYMM_BENCH_HAVE_URCU
#define _LGPL_SOURCE 1  // inline read-side primitives: liburcu's fastest configuration
#include <urcu/urcu-memb.h>
#endif

namespace bench {
namespace {

// ---- lazymm, one policy x backend ----------------------------------------------------------
template <class P, class B>
struct lazymm_pair {
  using domain_t = lazymm::domain<P, B>;
  static inline domain_t* dom = nullptr;
  static inline lazymm::owning_ref<bench_ctx> shared;

  // Setup/Teardown run on the main thread before the workers start and after they all finish.
  static void setup(const benchmark::State&) {
    dom = new domain_t;
    shared = dom->template make<bench_ctx>();
  }
  static void teardown(const benchmark::State&) {
    shared.reset();
    delete dom;
    dom = nullptr;
  }
  static void run(benchmark::State& st) {
    if (!backend_in_force<B>(st, *dom)) return;
    auto ex = dom->attach();
    const auto task = shared;  // this worker's owning reference to C (one RMW, before timing)
    std::uint64_t acc = 0;
    for (auto _ : st) {
      ex.switch_to(task);  // task of C: fast path after the first iteration
      tiny_work(task.get(), acc);
      ex.go_lazy();  // context-free work: C stays loaded, lazily
    }
  }
};

// ---- the floor: a plain thread-local pointer store pair ----------------------------------------
struct floor_pair {
  static inline payload shared;
  static void setup(const benchmark::State&) {}
  static void teardown(const benchmark::State&) {}
  static void run(benchmark::State& st) {
    const payload* c = &shared;
    std::uint64_t acc = 0;
    for (auto _ : st) {
      tl_current = c;
      compiler_barrier();
      tiny_work(c, acc);
      compiler_barrier();
      tl_current = nullptr;
      compiler_barrier();
    }
  }
};

// ---- std::shared_ptr copy held by each worker while lazy --------------------------------------
struct shared_ptr_pair {
  static inline std::shared_ptr<payload> shared;
  static void setup(const benchmark::State&) { shared = std::make_shared<payload>(); }
  static void teardown(const benchmark::State&) { shared.reset(); }
  static void run(benchmark::State& st) {
    const auto task = shared;  // the task's own reference, as above
    std::shared_ptr<payload> lazy_hold;
    std::uint64_t acc = 0;
    for (auto _ : st) {
      lazy_hold.reset();  // task of C: the task's reference covers C, drop the lazy copy
      tiny_work(task.get(), acc);
      lazy_hold = task;  // context-free work: keep a counted copy of C
    }
  }
};

// ---- std::atomic<std::shared_ptr> load at every task start ------------------------------------
struct atomic_shared_ptr_pair {
  static inline std::atomic<std::shared_ptr<payload>>* shared = nullptr;
  static void setup(const benchmark::State&) {
    shared = new std::atomic<std::shared_ptr<payload>>(std::make_shared<payload>());
  }
  static void teardown(const benchmark::State&) {
    delete shared;
    shared = nullptr;
  }
  static void run(benchmark::State& st) {
    std::shared_ptr<payload> lazy_hold;
    std::uint64_t acc = 0;
    for (auto _ : st) {
      auto task = shared->load();  // task of C: read the current context (seq_cst, the default)
      tiny_work(task.get(), acc);
      lazy_hold = std::move(task);  // context-free work: the loaded copy is the lazy reference
    }
  }
};

// ---- an intrusive atomic refcount -------------------------------------------------------------
struct intrusive_pair : per_run<counted_payload> {
  static void run(benchmark::State& st) {
    counted_payload* c = p;  // the setup's reference outlives every worker: it is the task's
    bool lazy = false;
    std::uint64_t acc = 0;
    for (auto _ : st) {
      if (lazy) {
        // acq_rel: a decrement that could be the last must order this worker's uses before the
        // free (pairs with the other decrements); here the setup's reference keeps it above 0.
        c->refs.fetch_sub(1, std::memory_order_acq_rel);
        lazy = false;
      }
      tiny_work(&c->data, acc);
      // relaxed: the count is already above zero (the task's reference); nothing to publish.
      c->refs.fetch_add(1, std::memory_order_relaxed);
      lazy = true;
    }
    if (lazy) c->refs.fetch_sub(1, std::memory_order_acq_rel);  // as above
  }
};

#if LAZYMM_BENCH_HAVE_URCU
// ---- liburcu memb: read-side critical section around the use ----------------------------------
struct urcu_pair {
  static inline payload* shared = nullptr;
  // Publication as rcu_assign_pointer() does it (a release store). The macro itself assigns
  // through a volatile lvalue, which clang rejects in C++20 (-Wdeprecated-volatile).
  static void publish(payload* p) noexcept { __atomic_store_n(&shared, p, __ATOMIC_RELEASE); }
  static void setup(const benchmark::State&) { publish(new payload); }
  static void teardown(const benchmark::State&) {
    payload* old = shared;  // the only updater: every reader has finished and unregistered
    publish(nullptr);
    urcu_memb_synchronize_rcu();
    delete old;
  }
  static void run(benchmark::State& st) {
    urcu_memb_register_thread();
    std::uint64_t acc = 0;
    for (auto _ : st) {
      urcu_memb_read_lock();
      const payload* c = rcu_dereference(shared);
      tiny_work(c, acc);
      urcu_memb_read_unlock();
    }
    urcu_memb_unregister_thread();
  }
};
#endif

template <class V>
void add(const std::string& variant, int cpus) {
  benchmark::RegisterBenchmark(("lazy_pair/" + variant).c_str(), &V::run)
      ->Setup(&V::setup)
      ->Teardown(&V::teardown)
      ->DenseThreadRange(1, 2 * cpus)
      ->UseRealTime();
}

}  // namespace

void register_lazy_pair(int cpus) {
  add<floor_pair>("floor", cpus);
  for_each_policy_backend([cpus]<class P, class B>() { add<lazymm_pair<P, B>>(variant_name<P, B>(), cpus); });
  add<shared_ptr_pair>("shared_ptr", cpus);
  add<atomic_shared_ptr_pair>("atomic_shared_ptr", cpus);
  add<intrusive_pair>("intrusive_refcount", cpus);
#if LAZYMM_BENCH_HAVE_URCU
  add<urcu_pair>("urcu.memb", cpus);
#endif
}

}  // namespace bench
