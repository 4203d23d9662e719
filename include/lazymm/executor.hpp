// lazymm/executor.hpp: one attached worker thread (a CPU, in kernel terms).
//
// Ordering edges of the switch protocol, numbered as in docs/design.md and domain_base.hpp:
//   executor (owner thread)                       reclaimer (final drop, any thread)
//   (1) seq = s+1, odd        relaxed  // A       (6)  slot == x ? CAS x -> default  (steal)
//   (2) light barrier                  // A       (7)  heavy barrier     // Matches A
//   (3) prev = slot           relaxed             (8)  seq odd? wait until it changes (acquire)
//       deactivate(prev), activate(next)               then evict hooks, teardown / free
//   (4) slot = next           release
//   (5) seq = s+2, even       release
#pragma once

#include <lazymm/config.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/domain_base.hpp>
#include <lazymm/detail/seams.hpp>

#include <thread>

namespace lazymm {

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
    detail::domain_base::release_record(rec);
#endif
    switch_to_default();
    lazy = false;
    LAZYMM_TEST_POINT(detach_before_unregister, rec->id);
    unlink_from_thread();
#if !defined(LAZYMM_MUTANT_DETACH_EARLY)
    detail::domain_base::release_record(rec);
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
    LAZYMM_DCHECK(next->domain_ == dom, "executor #%u: switch_to a context %p of another domain", rec->id,
                  static_cast<void*>(next));
    switch_to_context(next);
  }

  // Start context-free work or idle: the loaded context stays loaded, lazily (a kernel thread
  // borrowing active_mm). Shootdown policies: writes nothing shared, no fence, no RMW.
  // Refcount: takes a structural reference on the loaded context.
  void go_lazy() noexcept {
    check_owner("go_lazy");
    if (lazy) return;
    lazy = true;
    if constexpr (policy::counts_lazy_holds) {
      // Relaxed load: only this thread writes the slot under refcount (no steals).
      context* cur = rec->slot.load(std::memory_order_relaxed);
      if (cur != &dom->default_) structural_kind::acquire(cur);
    }
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
  bool is_lazy() const noexcept { return lazy; }
  executor_id id() const noexcept { return executor_id{rec->id}; }

 private:
  friend Domain;

  explicit executor(Domain& d) : owner_(std::this_thread::get_id()), mech_(d.mechanism()) {
    dom = &d;
    rec = d.acquire_record();
    seq_ = rec->seq.load(std::memory_order_relaxed);  // ordered by the acquire in acquire_record
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
    LAZYMM_DCHECK(owner_ == std::this_thread::get_id(), "executor #%u used from a thread that does not own it (%s)",
                  rec->id, op);
  }

  void switch_to_context(context* next) noexcept {
    // Relaxed load of our own slot: only a steal can change it behind our back, and nothing
    // steals `next` while the caller holds an owning reference to it (or it is the default).
    context* cur = rec->slot.load(std::memory_order_relaxed);
    const bool was_lazy = std::exchange(lazy, false);
    if (cur == next) {  // fast path: already loaded
      if constexpr (policy::counts_lazy_holds)
        if (was_lazy && cur != &dom->default_) structural_kind::release(cur);  // > 0: caller owns it
      return;
    }
    context* prev = real_switch(next);
    if constexpr (policy::counts_lazy_holds)
      if (was_lazy && prev != &dom->default_) structural_kind::release(prev);  // may free prev
  }

  context* real_switch(context* next) noexcept {
    constexpr bool steals = policy::round != round_at::never;
    const std::uint64_t s = seq_ + 1;
    if constexpr (steals) {
      // (1) A: odd seq, relaxed; ordered before (3) by (2). TSan: seq_cst so that it sees it.
      rec->seq.store(s, LAZYMM_TSAN_ORDER(std::memory_order_relaxed));
      // (2) A: light barrier; matches the reclaimer's heavy barrier (7).
#if !defined(LAZYMM_MUTANT_NO_LIGHT_FENCE)
      if constexpr (std::is_same_v<typename Domain::backend, fence_backend>)
        detail::full_fence();
      else
        detail::light_barrier(mech_);
#endif
    }
    LAZYMM_TEST_POINT(switch_before_slot_read, rec->id);
    // (3) relaxed: a stolen slot reads default, and we then never touch the old context.
    context* prev = rec->slot.load(LAZYMM_TSAN_ORDER(std::memory_order_relaxed));
    LAZYMM_TEST_POINT(switch_after_slot_read, rec->id);
    const executor_id me{rec->id};
    in_hooks = true;
    if (prev != &dom->default_ && prev->ops_->deactivate) prev->ops_->deactivate(prev, me);
    if (next != &dom->default_ && next->ops_->activate) next->ops_->activate(next, me);
    in_hooks = false;
    // (4) release: pairs with the reclaimer's acquire load / failed CAS (6): our hooks on prev
    // happen before its teardown and free.
#if defined(LAZYMM_MUTANT_RELAXED_SLOT_STORE)
    rec->slot.store(next, std::memory_order_relaxed);
#else
    rec->slot.store(next, std::memory_order_release);
#endif
    if constexpr (steals) {
      // (5) release: pairs with the acquire wait (8): the switch is over.
#if defined(LAZYMM_MUTANT_RELAXED_SEQ_STORE)
      rec->seq.store(s + 1, std::memory_order_relaxed);
#else
      rec->seq.store(s + 1, std::memory_order_release);
#endif
      seq_ = s + 1;
    }
    return prev;
  }

  std::thread::id owner_;
  mechanism mech_;
  std::uint64_t seq_ = 0;  // our copy of rec->seq (only the owner writes it)
};

}  // namespace lazymm
