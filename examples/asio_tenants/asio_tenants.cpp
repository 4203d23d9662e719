// asio_tenants: a multi-tenant service on a standalone asio::thread_pool, a pool lazymm does not
// own. Tenants (lazymm contexts) are created and retired while the pool runs; the control thread
// (main) posts tasks per tenant. Some tasks run another tenant's task inline (asio::dispatch from
// inside the pool runs the handler at once, on the same thread: a nested task); some handlers
// are context-free completions that run a tenant's task inline. Every task checks that its own
// tenant is loaded; the end-of-run checks are in examples/common/tenants.hpp.
//
// Usage: asio_tenants [--threads N] [--tenants N] [--tasks N] [--churn N] [--inject-race]
#include <asio.hpp>  // first: lazymm's headers must survive whatever a runtime's headers define

#include "../common/tenants.hpp"

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <utility>
#include <vector>

namespace {

using tenants::domain_type;
using tenants::tenant;
using tenants::tenant_ref;

// ---- glue begins -----------------------------------------------------------------------------
// A handler that runs with tenant t loaded on whichever pool thread runs it, and then restores
// what that thread had before: the outer tenant when asio runs it inline inside another handler,
// a lazy hold (t stays loaded) when it ran between handlers (tenants::run_as, shared with TBB).
template <class F>
auto with_tenant(domain_type& dom, tenant_ref t, F f) {
  return [&dom, t = std::move(t), f = std::move(f)]() mutable { tenants::run_as(dom, t, [&] { f(t); }); };
}
// ---- glue ends -------------------------------------------------------------------------------

}  // namespace

int main(int argc, char** argv) {
  const tenants::options o = tenants::parse(argc, argv, "asio_tenants");
  domain_type dom;
  std::uint64_t posted = 0, nested_posted = 0;
  {
    asio::thread_pool pool(o.threads);
    std::atomic<std::uint64_t> done{0};
    tenants::table live(dom, o.tenants, 7);

    for (unsigned n = 0; n < o.tasks; ++n) {
      if (n % o.churn == o.churn - 1) live.churn();  // retire one, create one
      tenant_ref a = live.pick();
      switch (n % 4) {
        case 0:
        case 1:  // a task of a
          asio::post(pool, with_tenant(dom, std::move(a), [&](const tenant_ref& t) {
                       tenants::task_body(dom, t, false);
                       done.fetch_add(1, std::memory_order_relaxed);
                     }));
          ++posted;
          break;
        case 2: {  // a task of a that runs a task of b inline, then goes on with a loaded again
          tenant_ref b = live.pick();
          asio::post(pool, with_tenant(dom, std::move(a), [&, b = std::move(b)](const tenant_ref& t) mutable {
                       tenants::task_body(dom, t, false);
                       bool ran = false;
                       asio::dispatch(pool, with_tenant(dom, std::move(b), [&](const tenant_ref& u) {
                                        tenants::task_body(dom, u, true);
                                        ran = true;
                                      }));
                       if (!ran)
                         tenants::check_failed(tenants::the_books,
                                               "asio::dispatch inside the pool did not run the handler inline");
                       tenants::check_loaded(dom, t, "after its nested task");
                       done.fetch_add(1, std::memory_order_relaxed);
                     }));
          ++posted;
          ++nested_posted;
          break;
        }
        default:  // a context-free completion (timer, I/O) that runs a task of a inline
          asio::post(pool, [&, a = std::move(a)]() mutable {
            dom.thread_executor().go_lazy();  // context-free work: whatever is loaded stays, lazily
            tenants::idle_point(dom, dom.thread_executor());
            asio::dispatch(pool, with_tenant(dom, std::move(a), [&](const tenant_ref& t) {
                             tenants::task_body(dom, t, true);
                           }));
            if (!dom.thread_executor().is_lazy())
              tenants::check_failed(tenants::the_books, "a completion is not lazy after its nested task");
            done.fetch_add(1, std::memory_order_relaxed);
          });
          ++nested_posted;
          break;
      }
      // Keep at most 256 handlers queued, so that tenants are retired while their tasks run.
      while (n + 1 - done.load(std::memory_order_relaxed) > 256) std::this_thread::yield();
    }
    live.clear();  // the last tenants retire while the pool threads still hold them lazily
    pool.join();   // the pool's threads exit: each one's executor detaches (lazy hold dropped)
  }
  return tenants::finish("asio_tenants", dom, posted, nested_posted, true);
}
