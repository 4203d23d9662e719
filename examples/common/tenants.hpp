// examples/common/tenants.hpp: what the three runtime integrations (asio_tenants, tbb_tenants,
// fiber_tenants) share: the tenant context type and its books, the task body with its checks, the
// end-of-run checks, a tiny command line, and run_as, the glue that asio_tenants and tbb_tenants
// both wrap their tasks in. What all five examples share (the books' common part, failed checks,
// the balance checks) is in report.hpp. The rest of the glue, the part a runtime author writes for
// that runtime, is in each example; all glue stands between the two glue markers
// (docs/integration.md counts it).
#pragma once

#include "report.hpp"

#include <lazymm/lazymm.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string_view>
#include <vector>

namespace tenants {

using domain_type = lazymm::domain<lazymm::implicit_shootdown>;
using executor_type = domain_type::executor_type;

// The books: every hook counts here (on_stolen is static and may run after the tenant is gone).
// Named after the example by parse().
struct books : examples::books {
  books() noexcept : examples::books("tenants") {}
  std::atomic<std::uint64_t> activated{0}, deactivated{0}, stolen{0};
  std::atomic<std::uint64_t> tasks{0}, nested{0}, checks{0}, own_loaded{0}, undo_checks{0};
};
inline books the_books;

// A failed check: counted in the books, the first ten printed.
using examples::check_failed;

// The thread-bound state a tenant sets up on the worker that runs it (a bound arena, a PKRU
// grant): a thread_local pointer. Read through a function that is never inlined, so that code
// running on a fiber that migrates never reuses another thread's address of it.
[[gnu::noinline]] inline const void*& bound() noexcept {
  static thread_local const void* p = nullptr;
  asm volatile("" ::: "memory");  // not a pure function: the address is this thread's, now
  return p;
}

class tenant : public lazymm::context {
 public:
  explicit tenant(unsigned id) noexcept : id_(id) { the_books.created.fetch_add(1, std::memory_order_relaxed); }
  unsigned id() const noexcept { return id_; }

  void on_activate(lazymm::executor_id) noexcept {
    bound() = this;
    the_books.activated.fetch_add(1, std::memory_order_relaxed);
  }
  void on_deactivate(lazymm::executor_id) noexcept {
    bound() = nullptr;
    the_books.deactivated.fetch_add(1, std::memory_order_relaxed);
  }
  void on_teardown() noexcept { the_books.torn_down.fetch_add(1, std::memory_order_relaxed); }
  // On the reclaimer's thread: the tenant's own resources may be reclaimed now.
  void on_evict(lazymm::executor_id) noexcept { the_books.evicted.fetch_add(1, std::memory_order_relaxed); }
  // On the evicted executor's own thread, later: undo the thread-bound state (the tenant may be gone).
  static void on_stolen(lazymm::executor_id) noexcept {
    bound() = nullptr;
    the_books.stolen.fetch_add(1, std::memory_order_relaxed);
  }
  static void on_free(tenant* t) noexcept {
    the_books.freed.fetch_add(1, std::memory_order_relaxed);
    delete t;
  }

  // The tenant's own data, written by its tasks on any thread, several at once.
  std::atomic<std::uint64_t> served{0};
  std::uint64_t racy = 0;  // written only with --inject-race, without synchronisation: a data race

 private:
  unsigned id_;
};
using tenant_ref = lazymm::owning_ref<tenant>;

// The live tenants, kept by the control thread: `n` at a time, picked at random (a fixed seed).
class table {
 public:
  table(domain_type& dom, unsigned n, unsigned seed) : dom_(dom), rng_(seed) {
    for (unsigned i = 0; i < n; ++i) live_.push_back(dom_.make<tenant>(next_id_++));
  }
  tenant_ref& pick() { return live_[rng_() % live_.size()]; }
  // Retires one tenant (drops the table's reference; its queued tasks keep it alive) and creates one.
  void churn() { pick() = dom_.make<tenant>(next_id_++); }
  // Retires every tenant still in the table.
  void clear() noexcept { live_.clear(); }

 private:
  domain_type& dom_;
  std::mt19937 rng_;
  unsigned next_id_ = 0;
  std::vector<tenant_ref> live_;
};

inline bool inject_race = false;  // --inject-race: tasks write tenant::racy and racy_all unsynchronised
inline std::uint64_t racy_all = 0;

// Checks that t is loaded on this thread's executor and that the thread-bound state is t's.
// Not inlined: a fiber that calls it may have moved to another thread since its last call.
[[gnu::noinline]] inline void check_loaded(domain_type& dom, const tenant_ref& t, const char* where) noexcept {
  executor_type& ex = dom.thread_executor();
  the_books.checks.fetch_add(1, std::memory_order_relaxed);
  if (ex.loaded() == t.get() && bound() == t.get())
    the_books.own_loaded.fetch_add(1, std::memory_order_relaxed);
  else
    check_failed(the_books, "tenant %u %s: found %s loaded%s", t->id(), where,
         ex.loaded() == dom.default_context() ? "the default context" : "another tenant",
         bound() == t.get() ? "" : ", and another tenant's thread-bound state");
}

// The body of every task of tenant t, top-level or nested, whatever runs it: checks, then works.
[[gnu::noinline]] inline void task_body(domain_type& dom, const tenant_ref& t, bool nested) noexcept {
  check_loaded(dom, t, nested ? "nested task" : "task");
  t->served.fetch_add(1, std::memory_order_relaxed);
  if (inject_race) {  // a data race in the example's own code, which TSan must report
    ++t->racy;
    ++racy_all;
  }
  the_books.tasks.fetch_add(1, std::memory_order_relaxed);
  if (nested) the_books.nested.fetch_add(1, std::memory_order_relaxed);
}

// ---- glue begins (asio_tenants, tbb_tenants) ---------------------------------------------------
// Runs f with tenant t loaded on this thread's executor, then restores what it had: the outer
// task's tenant when the runtime runs this task inside another one (asio's dispatch, a TBB wait or
// nested arena), a lazy hold (t stays loaded) when it ran between tasks.
template <class F>
void run_as(domain_type& dom, const tenant_ref& t, F&& f) {
  executor_type& ex = dom.thread_executor();  // attached on first use, detached at thread exit
  if (!ex.is_lazy() && ex.loaded() == dom.default_context()) ex.go_lazy();  // between tasks
  lazymm::scoped_switch s(ex, t);
  f();
}
// ---- glue ends -------------------------------------------------------------------------------

// Where a worker is between tasks (idle, polling, back in the scheduler): the cheap poll. If the
// slot was stolen, on_stolen runs here and the thread-bound state is undone; check that it is.
inline void idle_point(domain_type& dom, executor_type& ex) noexcept {
  const bool was_default = ex.loaded() == dom.default_context();  // read first: see docs/integration.md
  ex.poll_stolen();
  if (!was_default) return;
  the_books.undo_checks.fetch_add(1, std::memory_order_relaxed);
  if (bound() != nullptr)
    check_failed(the_books, "an executor whose slot holds the default context still has a tenant bound");
}

struct options {
  unsigned threads = 3;
  unsigned tenants = 8;      // alive at once
  unsigned tasks = 20000;    // top-level tasks posted
  unsigned churn = 64;       // retire one tenant and create one every `churn` tasks
};

inline options parse(int argc, char** argv, const char* usage) {
  options o;
  the_books.name = usage;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("usage: %s [--threads N] [--tenants N] [--tasks N] [--churn N] [--inject-race]\n"
                  "  --threads  worker threads (default 3)    --tenants  tenants alive at once (8)\n"
                  "  --tasks    top-level tasks (20000)       --churn    retire and create a tenant every N tasks (64)\n"
                  "  --inject-race  tasks write shared counters unsynchronised (TSan must report it)\n",
                  usage);
      std::exit(0);  // NOLINT(concurrency-mt-unsafe): before any thread starts
    }
    if (a == "--inject-race") {
      inject_race = true;
      continue;
    }
    unsigned* v = a == "--threads" ? &o.threads : a == "--tenants" ? &o.tenants : a == "--tasks" ? &o.tasks
                  : a == "--churn" ? &o.churn : nullptr;
    if (!v || i + 1 >= argc || (*v = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10))) == 0) {
      std::fprintf(stderr, "usage: %s [--threads N] [--tenants N] [--tasks N] [--churn N] [--inject-race]\n", usage);
      std::exit(2);  // NOLINT(concurrency-mt-unsafe): before any thread starts
    }
  }
  return o;
}

// The end-of-run checks. `holders_joined`: every thread that ran tasks has exited (or detached),
// so every load of a tenant has been undone on its own thread, once: by on_deactivate or, after a
// steal, by on_stolen; otherwise (TBB's workers outlive the run) at most once. (A steal that races
// with the holder's own switch away gets on_deactivate, not on_stolen: docs/api.md, on_evict.)
inline int finish(const char* name, domain_type& dom, std::uint64_t tasks_posted, std::uint64_t nested_posted,
                  bool holders_joined) {
  constexpr auto rx = std::memory_order_relaxed;  // statistics, after the run
  books& b = the_books;
  const lazymm::domain_stats s = dom.stats();
  examples::check_balance(b, dom, "tenants");
  const auto created = b.created.load(rx);
  const auto tasks = b.tasks.load(rx), nested = b.nested.load(rx), own = b.own_loaded.load(rx);
  const auto checks = b.checks.load(rx);
  if (own != checks || checks < tasks)
    check_failed(b, "%llu of %llu checks found the task's own tenant loaded", static_cast<unsigned long long>(own),
         static_cast<unsigned long long>(checks));
  if (tasks - nested != tasks_posted || nested != nested_posted)
    check_failed(b, "%llu top-level and %llu nested tasks ran, %llu and %llu posted",
         static_cast<unsigned long long>(tasks - nested), static_cast<unsigned long long>(nested),
         static_cast<unsigned long long>(tasks_posted), static_cast<unsigned long long>(nested_posted));
  if (nested == 0) check_failed(b, "no nested task ran");
  const auto stolen = b.stolen.load(rx), act = b.activated.load(rx), deact = b.deactivated.load(rx);
  if (stolen > s.steals)
    check_failed(b, "%llu steals, on_stolen ran %llu times", static_cast<unsigned long long>(s.steals),
         static_cast<unsigned long long>(stolen));
  if (holders_joined ? act != deact + stolen : act < deact + stolen)
    check_failed(b, "%llu loads (on_activate), undone %llu times by on_deactivate and %llu by on_stolen",
         static_cast<unsigned long long>(act), static_cast<unsigned long long>(deact),
         static_cast<unsigned long long>(stolen));
  const lazymm::drop_latency d = dom.drop_latency();
  std::printf("%s: %llu tenants created = torn down = freed; %llu tasks (%llu nested), %llu checks: each found its "
              "own tenant loaded; %llu steals = on_evict %llu; %llu loads = %llu on_deactivate + %llu on_stolen; %llu "
              "undo checks at idle points\n",
              name, static_cast<unsigned long long>(created), static_cast<unsigned long long>(tasks),
              static_cast<unsigned long long>(nested), static_cast<unsigned long long>(checks),
              static_cast<unsigned long long>(s.steals), static_cast<unsigned long long>(b.evicted.load(rx)),
              static_cast<unsigned long long>(act), static_cast<unsigned long long>(deact),
              static_cast<unsigned long long>(stolen), static_cast<unsigned long long>(b.undo_checks.load(rx)));
  std::printf("%s: final drops timed %llu, p50 %llu ns, p99 %llu ns, max %llu ns (checked mode %s, mechanism %s)\n",
              name, static_cast<unsigned long long>(d.count), static_cast<unsigned long long>(d.percentile_ns(0.5)),
              static_cast<unsigned long long>(d.percentile_ns(0.99)), static_cast<unsigned long long>(d.max_ns),
              LAZYMM_CHECKED ? "on" : "off", lazymm::to_string(dom.mechanism()));
  const bool ok = b.failures.load(rx) == 0;
  std::printf("%s: %s\n", name, ok ? "all checks passed" : "CHECKS FAILED");
  return ok ? 0 : 1;
}

}  // namespace tenants
