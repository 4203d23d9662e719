// lazymm/detail/domain_base.hpp: the policy-independent half of a domain around the protocol
// (detail/protocol.hpp): default context, mechanism, the round's hooks and statistics,
// checked-mode verification.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/protocol.hpp>
#include <lazymm/detail/seams.hpp>

#include <atomic>
#include <cstdint>

namespace lazymm {

// Counters of one domain, for diagnostics, torture runs and benchmarks (relaxed snapshots).
struct domain_stats {
  std::uint64_t contexts_created = 0;
  std::uint64_t contexts_freed = 0;
  std::uint64_t rounds = 0;          // shootdown rounds (one per final drop under shootdown)
  std::uint64_t heavy_barriers = 0;  // barriers issued by rounds (one per chunk that stole from another thread)
  std::uint64_t steals = 0;          // slots taken away (= evict hook calls)
  std::uint64_t waits = 0;           // executors found inside a switch and waited for
  // Batched policies only (zero otherwise):
  std::uint64_t reclaimed = 0;       // contexts taken off the retire queue by reclaims
  std::uint64_t backlog = 0;         // contexts queued now
  std::uint64_t peak_backlog = 0;    // the most ever queued at once
};

namespace detail {

// What other code needs of an executor: found through the per-thread list, to catch double
// attach, to refuse final drops inside switch hooks, and to let a round skip the barrier for the
// calling thread's own executors. Default visibility: one list per thread for the whole process,
// even when shared objects are built with -fvisibility=hidden (tests/dso/).
struct __attribute__((visibility("default"))) executor_link {
  domain_base* dom = nullptr;
  executor_record* rec = nullptr;
  bool in_hooks = false;  // owner-only: inside on_activate / on_deactivate
  executor_link* next_on_thread = nullptr;
  inline static thread_local executor_link* this_thread = nullptr;
};

struct default_context_type final : context {};

class domain_base {
 public:
  domain_base(const domain_base&) = delete;
  domain_base& operator=(const domain_base&) = delete;

  // The permanent default context (init_mm). Executors start on it and are moved to it by
  // steals and by detach. It has no hooks.
  const context* default_context() const noexcept { return &default_; }
  // The barrier mechanism in force, and why (a refused membarrier says which step and errno).
  lazymm::mechanism mechanism() const noexcept { return mech_; }
  const reason_text& mechanism_reason() const noexcept { return reason_; }

  domain_stats stats() const noexcept {
    constexpr auto r = std::memory_order_relaxed;  // statistics: a snapshot that orders nothing
    return {created_.load(r), freed_.load(r), rounds_.load(r), barriers_.load(r), steals_.load(r), waits_.load(r)};
  }
  std::int64_t live_contexts() const noexcept { return static_cast<std::int64_t>(created_.load() - freed_.load()); }
  std::size_t attached_executors() const noexcept {
    std::size_t n = 0;
    for (auto* r = registry_.head(); r; r = r->next) n += r->in_use.load(std::memory_order_acquire);
    return n;
  }

 protected:
#if LAZYMM_GENMC
  explicit domain_base(mechanism_choice m) : mech_(m.mech), reason_(m.reason()) {
#else
  explicit domain_base(mechanism_choice m) : mech_(m.mech), reason_(static_cast<reason_text&&>(m.reason)) {
#endif
    default_.domain_ = this;
    default_.ops_ = &ops_for<default_context_type>::table;
  }
  ~domain_base() = default;

  // Destroying a domain that still has executors or contexts is a use-after-free in waiting.
  void check_destroyable() const noexcept {
    for (auto* r = registry_.head(); r; r = r->next)
      LAZYMM_CHECK(!r->in_use.load(std::memory_order_acquire),
                   "domain destroyed while executor #%u is still attached (destroy executors first)", r->id);
    // acquire: pairs with the release in run_free(); every free counted happens before this.
    const auto live = created_.load(std::memory_order_relaxed) - freed_.load(std::memory_order_acquire);
    LAZYMM_CHECK(live == 0, "domain destroyed while %lld context(s) are still alive (drop every reference first)",
                 static_cast<long long>(live));
  }

  template <class T>
  void adopt_new(T* c) noexcept {
    c->domain_ = this;
    c->ops_ = &ops_for<T>::table;
    created_.fetch_add(1, std::memory_order_relaxed);  // statistics; freed_ is the one that orders
  }

  // A final drop inside an activate/deactivate hook would make this thread a reclaimer while
  // its own executor is inside a switch (odd seq): two such threads wait for each other forever.
  static void check_not_in_switch_hook(const context* x) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread)
      LAZYMM_CHECK(!l->in_hooks,
                   "final drop of context %p inside an on_activate/on_deactivate hook of executor #%u: "
                   "switch hooks must not drop the last reference to any context",
                   static_cast<const void*>(x), l->rec->id);
  }

  // Whether r is an executor of the calling thread. Such an executor is not inside a switch (the
  // calling thread is here, not in its switch), so a steal from it needs no barrier and no wait;
  // if its seq is odd anyway, this final drop interrupted its switch: a signal handler.
  static bool is_own(const executor_record& r) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread)
      if (l->rec == &r) {
        // Relaxed: our own thread's store.
        LAZYMM_CHECK(!(r.seq.load(std::memory_order_relaxed) & 1u),
                     "final drop on a thread whose executor #%u is inside a switch: a signal handler that "
                     "interrupted switch_to must not drop the last reference to a context",
                     r.id);
        return true;
      }
    return false;
  }

  // What the round (detail/protocol.hpp) asks of the domain.
  struct round_hooks {
    domain_base* d;
    static bool is_own(const executor_record& r) noexcept { return domain_base::is_own(r); }
    // Statistics: relaxed, they order nothing. Counted before the wait, so a test sees it move.
    void waiting() noexcept { d->waits_.fetch_add(1, std::memory_order_relaxed); }
    static void evicted(const stolen_slot& s) noexcept {
      if (s.ctx->ops_->evict) s.ctx->ops_->evict(s.ctx, executor_id{s.id, s.generation});
    }
  };

  // Removes from x's holder set the executors that no longer hold it (protocol.hpp).
  template <class Backend>
  std::uint32_t trim_holders(context* x) noexcept {
    return detail::trim_holders(registry_, x->holders_, x, barriers<Backend>{mech_});
  }

  // The shootdown round for the victims (one context, or a batch), one evict hook per steal.
  template <class Backend, class Victims>
  void shootdown(const Victims& victims) noexcept {
    round_hooks hooks{this};
    round_result res;
    detail::shootdown(registry_, victims, &default_, barriers<Backend>{mech_}, hooks, res);
    // Statistics: relaxed, they order nothing.
    rounds_.fetch_add(1, std::memory_order_relaxed);
    if (res.barriers) barriers_.fetch_add(res.barriers, std::memory_order_relaxed);
    if (res.steals) steals_.fetch_add(res.steals, std::memory_order_relaxed);
  }

  static void run_teardown(context* x) noexcept {
#if LAZYMM_CHECKED
    // Relaxed: the acquire of the last owning drop orders this after every owner's accesses.
    const auto was = x->state_.exchange(state_torn_down, std::memory_order_relaxed);
    LAZYMM_CHECK(was == state_live, "double teardown of context %p (%.*s)", static_cast<void*>(x),
                 static_cast<int>(x->ops_->type_name.size()), x->ops_->type_name.data());
#endif
    if (x->ops_->teardown) x->ops_->teardown(x);
  }

  // Checked mode (DEBUG_VM_SHOOT_LAZIES): no slot may hold x at its free. All records, in use
  // or not.
  void verify_not_held(const context* x) const noexcept {
    for (auto* r = registry_.head(); r; r = r->next)
      LAZYMM_CHECK(r->slot.load(std::memory_order_acquire) != x,
                   "context %p (%.*s) freed while executor #%u still holds it in its slot", static_cast<const void*>(x),
                   static_cast<int>(x->ops_->type_name.size()), x->ops_->type_name.data(), r->id);
  }

  // The free. The freed count moves first and nothing touches the domain after it: a domain
  // destroyed by whoever on_free wakes (or by anyone who sees the count) is never touched again.
  void run_free(context* x) noexcept {
#if LAZYMM_CHECKED
    verify_not_held(x);
    // Relaxed: the acquire of the last structural drop orders these after every holder's use.
    // Poison: a later use of this header (through a stale pointer into memory the deleter did
    // not give back) is caught by the state checks.
    const auto was = x->state_.exchange(state_freed, std::memory_order_relaxed);
    LAZYMM_CHECK(was != state_freed, "double free of context %p", static_cast<void*>(x));
    x->users_.store(-1, std::memory_order_relaxed);
    x->count_.store(-1, std::memory_order_relaxed);
#endif
    x->holders_.release();
    const auto free = x->ops_->free;
    // release: pairs with the acquire in check_destroyable(); all the above happens before a
    // domain destructor that sees the count.
    freed_.fetch_add(1, std::memory_order_release);
    free(x);
  }

  virtual void owning_zero(context* x) noexcept = 0;
  virtual void structural_zero(context* x) noexcept = 0;

  friend void detail::release_owning(context*) noexcept;
  friend void detail::release_structural(context*) noexcept;
  template <class>
  friend class lazymm::executor;

  default_context_type default_;
  const lazymm::mechanism mech_;
  const reason_text reason_;
  LAZYMM_CACHELINE_ALIGN registry registry_;
  LAZYMM_CACHELINE_ALIGN std::atomic<std::uint64_t> created_{0}, freed_{0}, rounds_{0}, barriers_{0}, steals_{0}, waits_{0};
};

inline void release_owning(context* c) noexcept {
  // Checked mode only; relaxed: our own reference orders it after the make.
  LAZYMM_DCHECK(c->state_.load(std::memory_order_relaxed) == state_live,
                "owning reference dropped on context %p after its teardown: double teardown", static_cast<void*>(c));
  // acq_rel: release publishes this owner's writes to the contents; acquire, on the last drop,
  // makes every owner's writes visible to the teardown hook.
  const auto old = c->users_.fetch_sub(1, std::memory_order_acq_rel);
  LAZYMM_CHECK(old > 0, "owning count of context %p went below zero: double teardown", static_cast<void*>(c));
  if (old == 1) c->domain_->owning_zero(c);
}

inline void release_structural(context* c) noexcept {
  // Checked mode only; relaxed: as above.
  LAZYMM_DCHECK(c->state_.load(std::memory_order_relaxed) != state_freed,
                "structural reference dropped on freed context %p: double free", static_cast<void*>(c));
  // acq_rel: as above, for the free.
  const auto old = c->count_.fetch_sub(1, std::memory_order_acq_rel);
  LAZYMM_CHECK(old > 0, "structural count of context %p went below zero: double free", static_cast<void*>(c));
  if (old == 1) c->domain_->structural_zero(c);
}

}  // namespace detail
}  // namespace lazymm
