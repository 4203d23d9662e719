// fiber_tenants: a multi-tenant service on Boost.Fiber with migrating fibers. Several threads
// share one ready queue (Boost's shared_work algorithm), so a fiber that yields resumes on
// whichever thread picks it next. Each fiber serves one tenant (a lazymm context): the glue, a
// scheduling algorithm wrapped around shared_work, switches the picking thread's executor to the
// fiber's tenant every time it resumes a fiber, and goes lazy when it resumes a context-free one
// (the dispatcher, a thread's main fiber) or finds nothing to run. Fibers run nested work of
// another tenant (lazymm::scoped_switch, which never spans a suspension point). The control fiber
// (main) creates and retires tenants while the fibers run. Every step checks that its own tenant
// is loaded on the thread it runs on now; the end-of-run checks are in examples/common/tenants.hpp.
//
// Usage: fiber_tenants [--threads N] [--tenants N] [--tasks N] [--churn N] [--inject-race]
#include <boost/fiber/all.hpp>  // first: Boost.Fiber defines a function-like macro cpu_relax()

#include "../common/tenants.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#if LAZYMM_TSAN
#include <sanitizer/tsan_interface.h>
// Not instrumented at all, not even the function entry and exit TSan records for its stack traces
// (Clang's no_sanitize("thread") keeps those): pick_next switches TSan's fiber before it returns.
#if defined(__clang__)
#define FT_NOT_INSTRUMENTED __attribute__((disable_sanitizer_instrumentation))
#else
#define FT_NOT_INSTRUMENTED __attribute__((no_sanitize_thread))
#endif
#endif

namespace {

using tenants::domain_type;
using tenants::executor_type;
using tenants::tenant;
using tenants::tenant_ref;
namespace bf = boost::fibers;

// A global: the threads' schedulers (thread_local in Boost.Fiber) run their last dispatch at
// thread exit, the main thread's after main returns, while this domain is still alive.
domain_type dom;

// TSan must be told of every switch between fiber stacks (Boost switches in code TSan does not
// see): each worker fiber gets a TSan fiber, and the switch to it is announced in pick_next, just
// before Boost resumes the context that pick_next returns. A thread's main context and its
// dispatcher share the thread's own TSan fiber: the dispatcher runs only Boost's uninstrumented
// loop, which calls instrumented code in balanced calls only. One switch is not Boost's choice:
// destroying a finished fiber's context unwinds its stack (forced unwinding, from the destroying
// context), so the properties' destructor, which runs just before, moves TSan onto the dying
// fiber, and the next announced switch destroys it (docs/integration.md, "TSan and Boost.Fiber").
#if LAZYMM_TSAN
inline thread_local void* tsan_graveyard = nullptr;  // this thread's dying TSan fiber
extern "C" void __tsan_func_entry(void* pc);      // TSan's own instrumentation entry point
#endif
struct tsan_fiber {
#if LAZYMM_TSAN
  void* fiber = nullptr;
  void* target(bf::context* ctx, void* thread_fiber) noexcept {
    if (!ctx->is_context(bf::type::worker_context)) return thread_fiber;
    if (!fiber) fiber = __tsan_create_fiber(0);
    return fiber;
  }
  FT_NOT_INSTRUMENTED ~tsan_fiber() {
    if (!fiber) return;
    __tsan_switch_to_fiber(fiber, 0);  // the end of the fiber's stack comes next
    // We run inside ~worker_context (instantiated here, so instrumented): its function exit will
    // now be recorded on the dying fiber, which never saw its entry. Record one for it.
    __tsan_func_entry(__builtin_return_address(0));
    tsan_graveyard = fiber;
  }
#else
  void* target(bf::context*, void*) noexcept { return nullptr; }
#endif
};

// A thread's last Boost switch (its scheduler's destructor releasing the last finished fibers)
// leaves TSan on a dying fiber, and a thread that ends on a fiber that is not its own is never
// seen to finish (pthread_join under TSan waits forever). This guard is constructed before the
// thread's Boost scheduler, so it is destroyed after it, and switches back.
#if LAZYMM_TSAN
struct tsan_thread_end {
  void* own = __tsan_get_current_fiber();
  FT_NOT_INSTRUMENTED ~tsan_thread_end() {
    if (!tsan_graveyard) return;
    __tsan_switch_to_fiber(own, 0);
    __tsan_destroy_fiber(std::exchange(tsan_graveyard, nullptr));
  }
};
#endif

// ---- glue begins -----------------------------------------------------------------------------
// What the scheduler knows of a fiber: the tenant it serves (empty: context-free).
struct tenant_props : bf::fiber_properties {
  using bf::fiber_properties::fiber_properties;
#if LAZYMM_TSAN
  FT_NOT_INSTRUMENTED ~tenant_props() override {}  // sanitizer glue: see tsan_fiber
#endif
  tenant_ref tenant;
  tsan_fiber tsan;  // sanitizer glue; destroyed first
};

// Boost's shared_work (fibers migrate between threads), plus: load the fiber's tenant on the
// thread that is about to resume it.
class tenant_scheduler final : public bf::algo::algorithm_with_properties<tenant_props> {
 public:
  void awakened(bf::context* ctx, tenant_props&) noexcept override { inner_.awakened(ctx); }
#if LAZYMM_TSAN  // sanitizer glue: the switch is announced after pick()'s own instrumented return
  FT_NOT_INSTRUMENTED bf::context* pick_next() noexcept override {
    void* to = nullptr;
    bf::context* next = pick(to);
    if (to) {
      __tsan_switch_to_fiber(to, 0);
      if (tsan_graveyard && tsan_graveyard != to) __tsan_destroy_fiber(std::exchange(tsan_graveyard, nullptr));
    }
    return next;
  }
#else
  bf::context* pick_next() noexcept override {
    void* to;
    return pick(to);
  }
#endif
  bf::context* pick(void*& tsan_to) noexcept {
    bf::context* next = inner_.pick_next();
    if (next && properties(next).tenant) {
      dom.thread_executor().switch_to(properties(next).tenant);
    } else if (executor_type* ex = dom.find_thread_executor()) {  // nothing to run, or context-free
      ex->go_lazy();
      tenants::idle_point(dom, *ex);  // executor::poll_stolen()
    }
    tsan_to = next && next != bf::context::active() ? properties(next).tsan.target(next, thread_fiber_) : nullptr;
    return next;
  }
  bool has_ready_fibers() const noexcept override { return inner_.has_ready_fibers(); }
  void suspend_until(std::chrono::steady_clock::time_point const& t) noexcept override {
    inner_.suspend_until(std::min(t, std::chrono::steady_clock::now() + std::chrono::microseconds(100)));
  }
  void notify() noexcept override { inner_.notify(); }

 private:
  bf::algo::shared_work inner_{true};  // idle threads sleep (100 us at most: shared_work wakes nobody)
#if LAZYMM_TSAN
  void* thread_fiber_ = __tsan_get_current_fiber();  // constructed on its thread, on its main context
#else
  void* thread_fiber_ = nullptr;
#endif
};

// Every thread that runs fibers starts with this.
void use_tenant_scheduler() {
#if LAZYMM_TSAN
  thread_local tsan_thread_end guard;  // sanitizer glue: before the scheduler (see tsan_thread_end)
  (void)guard;
#endif
  bf::use_scheduling_algorithm<tenant_scheduler>();
}

// This thread's executor, from code that runs on a fiber: never inlined into it (see fiber_main).
[[gnu::noinline]] executor_type& this_executor() {
  asm volatile("" ::: "memory");  // not a pure function: the thread is whichever runs the fiber now
  return dom.thread_executor();
}
// A fiber's first step: from now on the scheduler loads t whenever the fiber resumes.
void serve(const tenant_ref& t) {
  boost::this_fiber::properties<tenant_props>().tenant = t;
  this_executor().switch_to(t);
}
// ---- glue ends -------------------------------------------------------------------------------

// The thread running this fiber now (pthread_self is declared const: a compiler may reuse it
// across a call, so it is read in a function that is not inlined either).
[[gnu::noinline]] std::thread::id running_thread() {
  asm volatile("" ::: "memory");
  return std::this_thread::get_id();
}
std::atomic<std::uint64_t> migrations{0};  // steps that resumed on another thread than the last
// Fibers that have finished (a release, their last step; main waits for them with acquire loads).
std::atomic<std::uint64_t> finished{0};

// What a fiber does: `steps` tasks of its tenant, yielding between them (the next one may run on
// another thread), one in four with a nested task of `peer` inside it. Every call that reads a
// thread_local (the executor, the bound tenant) is in a function that is not inlined here: a
// compiler may keep a thread_local's address across a call, and the fiber may come back on
// another thread (docs/integration.md, "Migrating fibers").
void fiber_main(tenant_ref t, tenant_ref peer, unsigned steps) {
  serve(t);
  for (unsigned s = 0; s < steps; ++s) {
    tenants::task_body(dom, t, false);
    if (s % 4 == 1) {
      {
        lazymm::scoped_switch nested(this_executor(), peer);  // ends before the next yield
        tenants::task_body(dom, peer, true);
      }
      tenants::check_loaded(dom, t, "after its nested task");
    }
    const std::thread::id before = running_thread();
    boost::this_fiber::yield();
    // One step in eight keeps yielding until another thread picks the fiber up (bounded: with one
    // thread, or when the others sleep through it, it gives up).
    for (unsigned tries = 0; s % 8 == 3 && running_thread() == before && tries < 2000; ++tries) boost::this_fiber::yield();
    if (running_thread() != before) migrations.fetch_add(1, std::memory_order_relaxed);
  }
  this_executor().go_lazy();  // then give up the tenant (ownership rule 2)
  boost::this_fiber::properties<tenant_props>().tenant.reset();
  finished.fetch_add(1, std::memory_order_release);  // pairs with main's acquire in wait_below
}

}  // namespace

int main(int argc, char** argv) {
  const tenants::options o = tenants::parse(argc, argv, "fiber_tenants");
  constexpr unsigned steps = 40, max_fibers = 32;
  const unsigned fibers = std::max(1u, o.tasks / steps);
  const std::size_t stack = 256 * 1024;  // sanitizer frames are large
  use_tenant_scheduler();

  // The other threads: they run fibers from the shared queue until main says stop. (Not a fiber
  // condition variable: Boost.Fiber's cross-thread wake-up calls the woken thread's scheduler
  // after the woken fiber may already run, and that thread may have exited: TSan saw it.)
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < o.threads; ++i)
    threads.emplace_back([&] {
      use_tenant_scheduler();
      while (!stop.load(std::memory_order_acquire)) boost::this_fiber::sleep_for(std::chrono::microseconds(200));
    });

  std::uint64_t posted = 0, nested_posted = 0;
  {
    tenants::table live(dom, o.tenants, 5);
    // At most max_fibers at once. Detached, and counted as they finish: a join would destroy the
    // fiber's context on the joining thread, ordered by libboost_fiber only (TSan cannot see it),
    // while a detached fiber's context is destroyed by the scheduler it ended on.
    auto wait_below = [&](unsigned limit) {
      while (posted / steps - finished.load(std::memory_order_acquire) > limit) boost::this_fiber::yield();
    };
    for (unsigned n = 0; n < fibers; ++n) {
      if (n % std::max(1u, o.churn / 16) == 0 && n) live.churn();  // retire one, create one
      bf::fiber(std::allocator_arg, bf::fixedsize_stack(stack), fiber_main, live.pick(), live.pick(), steps).detach();
      posted += steps;
      nested_posted += (steps + 2) / 4;
      wait_below(max_fibers - 1);
    }
    live.clear();  // the last tenants retire while fibers and threads still hold them
    wait_below(0);  // acquire: pairs with each fiber's last release
  }
  stop.store(true, std::memory_order_release);
  for (auto& th : threads) th.join();  // their executors detach at thread exit
  dom.thread_executor().switch_to_default();  // main's: runs a pending on_stolen now
  std::printf("fiber_tenants: %llu of %llu steps resumed on another thread\n",
              static_cast<unsigned long long>(migrations.load(std::memory_order_relaxed)),
              static_cast<unsigned long long>(posted));
  if (o.threads > 1 && migrations.load(std::memory_order_relaxed) == 0)
    tenants::check_failed(tenants::the_books, "no fiber migrated");
  return tenants::finish("fiber_tenants", dom, posted, nested_posted, true);
}
