// tbb_tenants: a multi-tenant service on oneTBB, whose worker threads lazymm does not own and
// which outlive the run (no tbb::finalize: the domain is destroyed while TBB's workers still
// have their executors, and they exit after it). Tenants (lazymm contexts) are served by two
// tenant groups, one tbb::task_arena each, watched by a tbb::task_scheduler_observer. The control
// thread (main) enqueues tasks per tenant and creates and retires tenants while they run. Nested
// tasks, three ways:
//   wait      a task of a runs a task of b in a task_group and waits for it: inside the wait, TBB
//             runs b's task, or any other task of the arena (another tenant's), on this thread
//   isolate   the same inside this_task_arena::isolate: only b's task can run inside the wait
//   arena     a task of a enters the other group's arena (task_arena::execute) and runs b's task
//             there: nested arenas on one thread, each observed
// Every task checks that its own tenant is loaded; the end-of-run checks are in
// examples/common/tenants.hpp.
//
// Usage: tbb_tenants [--threads N] [--tenants N] [--tasks N] [--churn N] [--inject-race]
#include <oneapi/tbb/global_control.h>  // first: lazymm's headers must survive a runtime's macros
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/task_scheduler_observer.h>

#include "../common/tenants.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <utility>
#include <vector>

namespace {

using tenants::domain_type;
using tenants::executor_type;
using tenants::tenant;
using tenants::tenant_ref;

// ---- glue begins -----------------------------------------------------------------------------
// Each task runs through tenants::run_as (examples/common/tenants.hpp, glue shared with
// asio_tenants): t loaded on this thread's executor, then what it had restored: the outer task's
// tenant when TBB runs this task inside another one (a wait, a nested arena), a lazy hold when it
// ran between tasks.

// A thread that leaves an arena (to sleep, or back to the outer arena) polls for a steal: the
// thread-side undo of a stolen tenant runs there rather than at its next task.
class poll_on_exit final : public tbb::task_scheduler_observer {
 public:
  poll_on_exit(tbb::task_arena& a, domain_type& dom) : tbb::task_scheduler_observer(a), dom_(dom) { observe(true); }
  ~poll_on_exit() override {
    observe(false);  // waits for callbacks in progress, inside libtbb: made visible to TSan below
    (void)callbacks_.load(std::memory_order_acquire);  // sanitizer glue: pairs with the release
  }
  void on_scheduler_exit(bool) override {
    if (executor_type* ex = dom_.find_thread_executor()) tenants::idle_point(dom_, *ex);  // poll_stolen()
    callbacks_.fetch_add(1, std::memory_order_release);  // sanitizer glue: pairs with the acquire
  }

 private:
  domain_type& dom_;
  std::atomic<std::uint64_t> callbacks_{0};
};
// ---- glue ends -------------------------------------------------------------------------------

// TBB hands a task to another thread inside libtbb, which Debian does not build for TSan: TSan
// sees no order between the spawning thread's writes and the task's reads. A release store
// before the spawn and an acquire load first thing in the task make that order visible (they are
// redundant with TBB's own, and cost one store and one load per task). What TSan still cannot
// order is TBB's own task object, recycled by libtbb's allocator, and the functor stored in it:
// so the functors are a pointer and nothing else, read unchecked, and tbb.tsan.supp suppresses
// races whose top frame is TBB's inline task code (docs/integration.md).
struct handoff {
  std::atomic<bool> sent{false};
  void send() noexcept { sent.store(true, std::memory_order_release); }          // pairs with receive()
  void receive() const noexcept { (void)sent.load(std::memory_order_acquire); }  // pairs with send()
};

// How many tasks ran inside another running task on the same thread (TBB's nesting, seen): child
// tasks inside their parent (a wait, an isolate, an arena entered), and tasks inside a task that
// is not their parent (a wait that stole another parent's child).
std::atomic<std::uint64_t> children_inside{0}, foreign_inside{0};

class service;
struct top_work {  // a top-level task: what it owns
  service* svc;
  unsigned group, kind;
  tenant_ref a, b;  // its tenant, and the nested task's
  handoff h;
};
struct child_work {  // a nested task of b inside a task of a: borrowed from the parent's frame
  service* svc;
  const tenant_ref* a;
  const tenant_ref* b;
  handoff h;
};
// The functors TBB stores in its task objects: one pointer each, whose read TSan does not check
// (TBB's hand-off of the task object orders it, in libtbb; everything they call is checked).
struct top_task {
  top_work* w;
  __attribute__((no_sanitize("thread"))) void operator()() const;
};
struct child_task {
  child_work* w;
  __attribute__((no_sanitize("thread"))) void operator()() const;
};

class service {
 public:
  service(domain_type& dom, unsigned threads) : dom_(dom), arena_{tbb::task_arena(static_cast<int>(threads)),
                                                                  tbb::task_arena(static_cast<int>(threads))} {
    for (auto& a : arena_) a.initialize();
  }

  void enqueue(unsigned group, unsigned kind, tenant_ref a, tenant_ref b) {
    auto* w = new top_work{this, group, kind, std::move(a), std::move(b), {}};
    w->h.send();
    arena_[group].enqueue(top_task{w});
  }
  std::uint64_t done() const noexcept { return done_.load(std::memory_order_acquire); }  // pairs with run_top

  [[gnu::noinline]] void run_top(top_work* w) {
    w->h.receive();
    task(w->a, nullptr, [&] {
      tenants::task_body(dom_, w->a, false);
      child_work c{this, &w->a, &w->b, {}};
      if (w->kind == 1 || w->kind == 2) {  // wait / isolate: TBB may run other tasks inside the wait
        tbb::task_group tg;
        auto children = [&] {
          c.h.send();
          tg.run(child_task{&c});  // another thread may steal this one, and meanwhile
          tg.run(child_task{&c});  // the wait runs what the arena offers
          tg.wait();
        };
        if (w->kind == 1)
          children();
        else
          tbb::this_task_arena::isolate(children);
      } else if (w->kind == 3) {  // the other group's arena, entered from inside this task
        c.h.send();
        arena_[1 - w->group].execute(child_task{&c});
      }
      if (w->kind) tenants::check_loaded(dom_, w->a, "after its nested task");
    });
    delete w;  // after the task (lazy by now): main's end-of-run check needs every reference gone
    done_.fetch_add(1, std::memory_order_release);  // release: pairs with done()
  }

  [[gnu::noinline]] void run_child(child_work* c) {
    c->h.receive();
    task(*c->b, c->a, [&] {
      tenants::task_body(dom_, *c->b, true);
      for (int i = 0; i < 2000; ++i) asm volatile("");  // a little work: time for a thief
    });
  }

  tbb::task_arena& arena(unsigned g) noexcept { return arena_[g]; }

 private:
  // Runs f as a task of t, counting whether it runs inside another task on this thread (not glue).
  template <class F>
  void task(const tenant_ref& t, const tenant_ref* parent, F&& f) {
    executor_type& ex = dom_.thread_executor();
    if (!ex.is_lazy() && ex.loaded() != dom_.default_context())
      (parent && ex.loaded() == parent->get() ? children_inside : foreign_inside).fetch_add(1, std::memory_order_relaxed);
    tenants::run_as(dom_, t, f);
  }

  domain_type& dom_;
  tbb::task_arena arena_[2];
  std::atomic<std::uint64_t> done_{0};
};

__attribute__((no_sanitize("thread"))) void top_task::operator()() const { w->svc->run_top(w); }
__attribute__((no_sanitize("thread"))) void child_task::operator()() const { w->svc->run_child(w); }

}  // namespace

int main(int argc, char** argv) {
  const tenants::options o = tenants::parse(argc, argv, "tbb_tenants");
  std::uint64_t posted = 0, nested_posted = 0;
  domain_type dom;
  {
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism, o.threads + 1);
    service svc(dom, o.threads);
    poll_on_exit observers[2] = {{svc.arena(0), dom}, {svc.arena(1), dom}};
    tenants::table live(dom, o.tenants, 11);
    for (unsigned n = 0; n < o.tasks; ++n) {
      if (n % o.churn == o.churn - 1) live.churn();  // retire one, create one
      const unsigned kind = (n / 2) % 4;
      tenant_ref a = live.pick();
      tenant_ref b = kind ? live.pick() : tenant_ref{};
      nested_posted += kind == 1 || kind == 2 ? 2 : kind == 3;
      ++posted;
      svc.enqueue(n % 2, kind, std::move(a), std::move(b));
      // Keep at most 256 tasks queued, so that tenants are retired while their tasks run.
      while (n + 1 - svc.done() > 256) std::this_thread::yield();
    }
    live.clear();  // the last tenants retire while TBB's workers still hold them lazily
    while (svc.done() != posted) std::this_thread::yield();
  }
  const auto children = children_inside.load(std::memory_order_relaxed);
  const auto tops = foreign_inside.load(std::memory_order_relaxed);
  std::printf("tbb_tenants: ran inside another task on the same thread: %llu inside their parent, %llu inside a "
              "task that is not their parent\n",
              static_cast<unsigned long long>(children), static_cast<unsigned long long>(tops));
  if (children == 0) tenants::check_failed(tenants::the_books, "TBB never ran a child task inside its parent");
  // TBB's workers are alive and keep their executors: the domain detaches them when it goes.
  return tenants::finish("tbb_tenants", dom, posted, nested_posted, false);
}
