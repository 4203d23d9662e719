// lazymm/executor.hpp: one attached worker thread (a CPU, in kernel terms). The switch itself is
// detail::switch_slot (detail/protocol.hpp); this file adds the checks, the hooks and, under
// refcount, the slot's structural reference.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/config.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/domain_base.hpp>
#include <lazymm/detail/protocol.hpp>

#if LAZYMM_GENMC
#include <pthread.h>
#else
#include <thread>
#endif

namespace lazymm {

namespace detail {
#if LAZYMM_GENMC
using thread_token = pthread_t;
inline thread_token this_thread_token() noexcept { return pthread_self(); }
#else
using thread_token = std::thread::id;
inline thread_token this_thread_token() noexcept { return std::this_thread::get_id(); }
#endif
}  // namespace detail

// Obtained from domain::attach() on the thread it serves; detaches when destroyed. Every member
// function must be called on that thread (checked mode catches other threads). Not copyable or
// movable: the domain and the thread's executor list refer to it by address.
template <class Domain>
class executor : private detail::executor_link {
 public:
  using domain_type = Domain;
  using policy = typename Domain::policy;

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  // Detach: drop the lazy hold (switch to the default context) first, then leave the registry.
  ~executor() {
    check_owner("detach");
#if defined(LAZYMM_MUTANT_DETACH_EARLY)
    detail::registry::detach(rec);
#endif
    switch_to_default();
    lazy_ = false;
    LAZYMM_TEST_POINT(detach_before_unregister, rec->id);
    unlink_from_thread();
#if !defined(LAZYMM_MUTANT_DETACH_EARLY)
    detail::registry::detach(rec);
#endif
  }

  // Loads the context of `r` to run a task of it. `r` must stay alive for the whole call. Until
  // the executor goes lazy or switches away, some owning reference must stay alive, unless the
  // LAST one is dropped on this thread (the exit_mm case, safe under every policy). Switching to
  // what is loaded does nothing.
  template <class T>
  void switch_to(const owning_ref<T>& r) noexcept {
    check_owner("switch_to");
    LAZYMM_CHECK(r, "executor #%u: switch_to with an empty owning_ref (released, reset or moved from)", rec->id);
    context* next = r.get();
    // Checked mode only; relaxed: `r` orders these reads after the context's make.
    LAZYMM_DCHECK(next->state_.load(std::memory_order_relaxed) == detail::state_live &&
                      next->users_.load(std::memory_order_relaxed) > 0,
                  "executor #%u: switch_to a dead context %p", rec->id, static_cast<void*>(next));
    switch_to_context(next);
  }

  // Start context-free work or idle: the loaded context stays loaded, lazily (a kernel thread
  // borrowing active_mm). Every policy: writes nothing shared, no fence, no RMW (under refcount
  // the slot already counts its context).
  void go_lazy() noexcept {
    check_owner("go_lazy");
    lazy_ = true;
  }

  // Load the default context (dropping any lazy hold). What detach does first.
  void switch_to_default() noexcept {
    check_owner("switch_to_default");
    switch_to_context(&dom->default_);
  }

  // What the slot holds now, for comparison only. Never dereference it: a lazily held context
  // may be stolen and freed at any moment under the shootdown policies.
  // Relaxed: a value to compare, never to dereference; it orders nothing.
  const context* loaded() const noexcept { return rec->slot.load(std::memory_order_relaxed); }
  bool is_lazy() const noexcept { return lazy_; }
  executor_id id() const noexcept { return executor_id{rec->id, generation_}; }

 private:
  friend Domain;
  static constexpr bool steals = policy::round != round_at::never;
  static constexpr bool counts_slot = policy::counts_slot_holds;

  explicit executor(Domain& d) : owner_(detail::this_thread_token()), barriers_{d.mechanism()} {
    dom = &d;
    rec = d.registry_.attach(&d.default_);
    // Relaxed: ordered by the acquire in registry::attach; only we write them from now on.
    seq_ = rec->seq.load(std::memory_order_relaxed);
    generation_ = rec->generation.load(std::memory_order_relaxed);
    next_on_thread = this_thread;
    this_thread = this;
  }

  void unlink_from_thread() noexcept {
    for (executor_link** p = &this_thread; *p; p = &(*p)->next_on_thread)
      if (*p == this) {
        *p = next_on_thread;
        return;
      }
  }

  void check_owner([[maybe_unused]] const char* op) const noexcept {
#if LAZYMM_GENMC
    LAZYMM_DCHECK(owner_ == detail::this_thread_token(), "executor used from another thread");
#else
    LAZYMM_DCHECK(owner_ == detail::this_thread_token(), "executor #%u used from a thread that does not own it (%s)",
                  rec->id, op);
#endif
  }

  // Always inlined into switch_to / switch_to_default, as switch_slot (see there).
  [[gnu::always_inline]] void switch_to_context(context* next) noexcept {
    // Relaxed load of our own slot: only a steal can change it behind our back, and nothing
    // steals `next` while the caller holds an owning reference to it (or it is the default).
    context* cur = rec->slot.load(std::memory_order_relaxed);
    lazy_ = false;
    if (cur == next) return;  // fast path: already loaded
    // Always on: one compare on a real switch. A context of another domain would escape that
    // domain's rounds and be freed under this slot.
    LAZYMM_CHECK(next->domain_ == dom, "executor #%u: switch_to a context %p of another domain", rec->id,
                 static_cast<void*>(next));
    LAZYMM_CHECK(!in_hooks, "executor #%u: switch called from inside its own on_activate/on_deactivate hook",
                 rec->id);
    const bool counted = counts_slot && next != &dom->default_;
    // Refcount: the slot's reference on next, taken before the slot holds it. Made from the
    // caller's owning reference, which keeps the count above zero.
    if (counted) structural_kind::acquire(next);
    // Shootdown: next's holder set, with room for our bit (allocated here, outside the switch,
    // the first time an executor id >= 64 runs next).
    detail::holder_set* holders = nullptr;
#if !LAZYMM_NO_HOLDER_SET
    if (steals && next != &dom->default_) {
      holders = &next->holders_;
      holders->reserve(rec->id, dom->registry_.size());
    }
#endif
    context* prev = detail::switch_slot<steals>(*rec, seq_, next, holders, barriers_, [&](context* p) {
      const executor_id me{rec->id, generation_};
      in_hooks = true;
      if (p != &dom->default_ && p->ops_->deactivate) p->ops_->deactivate(p, me);
      if (next != &dom->default_ && next->ops_->activate) next->ops_->activate(next, me);
      in_hooks = false;
    });
    // Refcount: the slot no longer holds prev; drop its reference (may tear down and free prev).
    if constexpr (counts_slot)
      if (prev != &dom->default_) structural_kind::release(prev);
  }

  detail::thread_token owner_;
  detail::barriers<typename Domain::backend> barriers_;
  std::uint32_t seq_ = 0;         // our copy of rec->seq (only the owner writes it)
  std::uint32_t generation_ = 0;  // our incarnation of the record
  bool lazy_ = false;             // informational: go_lazy() since the last switch
};

}  // namespace lazymm
