// lazymm/detail/domain_base.hpp: the policy-independent half of a domain: executor registry,
// default context, the shootdown round, checked-mode verification.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/seams.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace lazymm {

// Counters of one domain, for diagnostics, torture runs and benchmarks (relaxed snapshots).
struct domain_stats {
  std::uint64_t contexts_created = 0;
  std::uint64_t contexts_freed = 0;
  std::uint64_t rounds = 0;          // shootdown rounds (one per final drop under shootdown)
  std::uint64_t heavy_barriers = 0;  // rounds that stole something and so needed the barrier
  std::uint64_t steals = 0;          // slots taken away (= evict hook calls)
  std::uint64_t waits = 0;           // executors found inside a switch and waited for
};

namespace detail {

// One per attached executor, never freed before the domain; reused after a detach. The owner
// writes slot and seq; a reclaimer writes slot only when it steals. One cache line each, so
// that executors never write each other's lines.
struct alignas(64) executor_record {
  std::atomic<context*> slot{nullptr};  // the active context (active_mm), possibly lazy
  std::atomic<std::uint64_t> seq{0};    // odd while the owner is inside a switch
  std::atomic<bool> in_use{true};       // attached
  executor_record* next = nullptr;      // registry link, immutable once published
  std::uint32_t id = 0;
};

// What other code needs of an executor: found through the per-thread list, to catch double
// attach, to refuse final drops inside switch hooks, and for the refcount exit_mm case.
struct executor_link {
  domain_base* dom = nullptr;
  executor_record* rec = nullptr;
  bool lazy = false;      // owner-only
  bool in_hooks = false;  // owner-only: inside on_activate / on_deactivate
  executor_link* next_on_thread = nullptr;
  inline static thread_local executor_link* this_thread = nullptr;
};

struct default_context_type final : context {};

// A vector that stays on the stack for the usual handful of entries.
template <class T, std::size_t N>
class small_vector {
 public:
  void push_back(T v) {
    if (n_ < N)
      inline_[n_] = v;
    else
      spill_.push_back(v);
    ++n_;
  }
  std::size_t size() const noexcept { return n_; }
  T operator[](std::size_t i) const noexcept { return i < N ? inline_[i] : spill_[i - N]; }

 private:
  std::array<T, N> inline_{};
  std::vector<T> spill_;
  std::size_t n_ = 0;
};

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class domain_base {
 public:
  domain_base(const domain_base&) = delete;
  domain_base& operator=(const domain_base&) = delete;

  // The permanent default context (init_mm). Executors start on it and are moved to it by
  // steals and by detach. It has no hooks.
  const context* default_context() const noexcept { return &default_; }
  // The barrier mechanism in force, and why (a refused membarrier says which errno).
  lazymm::mechanism mechanism() const noexcept { return mech_; }
  const std::string& mechanism_reason() const noexcept { return reason_; }

  domain_stats stats() const noexcept {
    constexpr auto r = std::memory_order_relaxed;  // statistics: a snapshot that orders nothing
    return {created_.load(r), freed_.load(r), rounds_.load(r), barriers_.load(r), steals_.load(r), waits_.load(r)};
  }
  std::int64_t live_contexts() const noexcept { return static_cast<std::int64_t>(created_.load() - freed_.load()); }
  std::size_t attached_executors() const noexcept {
    std::size_t n = 0;
    for (auto* r = head_.load(std::memory_order_acquire); r; r = r->next) n += r->in_use.load(std::memory_order_acquire);
    return n;
  }

 protected:
  explicit domain_base(mechanism_choice m) : mech_(m.mech), reason_(std::move(m.reason)) {
    default_.domain_ = this;
    default_.ops_ = &ops_for<default_context_type>::table;
  }
  ~domain_base() {
    for (auto* r = head_.load(std::memory_order_acquire); r;) delete std::exchange(r, r->next);
  }

  // Destroying a domain that still has executors or contexts is a use-after-free in waiting.
  void check_destroyable() const noexcept {
    for (auto* r = head_.load(std::memory_order_acquire); r; r = r->next)
      LAZYMM_CHECK(!r->in_use.load(std::memory_order_acquire),
                   "domain destroyed while executor #%u is still attached (destroy executors first)", r->id);
    const auto live = created_.load(std::memory_order_acquire) - freed_.load(std::memory_order_acquire);
    LAZYMM_CHECK(live == 0, "domain destroyed while %lld context(s) are still alive (drop every reference first)",
                 static_cast<long long>(live));
  }

  template <class T>
  void adopt_new(T* c) noexcept {
    c->domain_ = this;
    c->ops_ = &ops_for<T>::table;
    created_.fetch_add(1, std::memory_order_relaxed);  // statistics; freed_ is the one that orders
  }

  // A free record, or a new one pushed on the registry. The new executor starts on default.
  executor_record* acquire_record() {
    for (auto* r = head_.load(std::memory_order_acquire); r; r = r->next) {
      bool busy = false;
      // acquire: pairs with the release in release_record(); the previous owner's switches
      // happen before the new owner's.
      // Relaxed pre-check only filters; the CAS below is the acquire.
      if (!r->in_use.load(std::memory_order_relaxed) &&
          r->in_use.compare_exchange_strong(busy, true, std::memory_order_acquire))
        return r;
    }
    auto* r = new executor_record;
    // Relaxed: the record is private until the release CAS below publishes it; ids need only be
    // distinct (fetch_add is atomic), not ordered.
    r->slot.store(&default_, std::memory_order_relaxed);
    r->id = next_id_.fetch_add(1, std::memory_order_relaxed);
    r->next = head_.load(std::memory_order_relaxed);
    // release: publishes the record's fields to reclaimers that walk the registry (acquire).
    while (!head_.compare_exchange_weak(r->next, r, std::memory_order_release, std::memory_order_relaxed)) {
    }
    return r;
  }

  // (11) release: the detaching owner's switch to default (its last slot store) happens before
  // any reclaimer that reads in_use == false at (10) and skips the record.
  static void release_record(executor_record* r) noexcept { r->in_use.store(false, std::memory_order_release); }

  // A final drop inside an activate/deactivate hook would make this thread a reclaimer while
  // its own executor is inside a switch (odd seq): two such threads wait for each other forever.
  static void check_not_in_switch_hook(const context* x) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread)
      LAZYMM_CHECK(!l->in_hooks,
                   "final drop of context %p inside an on_activate/on_deactivate hook of executor #%u: "
                   "switch hooks must not drop the last reference to any context",
                   static_cast<const void*>(x), l->rec->id);
  }

  // The shootdown round for x: steal x from every slot, one heavy barrier, wait for executors
  // caught inside a switch, then report each steal. Called once no new owning reference to x
  // can appear. Never blocks on anything an executor holds: it waits only for the short,
  // non-blocking tail of a switch already in progress (S3).
  void shootdown(context* x) noexcept {
    rounds_.fetch_add(1, std::memory_order_relaxed);  // statistics, here and below: order nothing
#if defined(LAZYMM_MUTANT_STEAL_AFTER_BARRIER)
    heavy_barrier(mech_);
#endif
    small_vector<executor_record*, 16> stolen;
    for (auto* r = head_.load(std::memory_order_acquire); r; r = r->next) {
      // (10) acquire: pairs with (11). A record seen free was switched to default first.
      if (!r->in_use.load(std::memory_order_acquire)) continue;
      // (6) acquire: if this reads the owner's (4) or a later value, the owner's hooks on x
      // happen before our teardown/free, and the owner cannot read x again (no owning ref).
      context* cur = r->slot.load(std::memory_order_acquire);
      if (cur != x) continue;
#if !defined(LAZYMM_MUTANT_NO_STEAL)
      // (6') steal: seq_cst CAS (a locked RMW on x86). A failure reads the owner's (4) or later:
      // same conclusion as (6).
      if (r->slot.compare_exchange_strong(cur, &default_, std::memory_order_seq_cst)) stolen.push_back(r);
#else
      stolen.push_back(r);
#endif
    }
    LAZYMM_TEST_POINT(reclaim_after_steal, ~0u);
    // No steal means no slot held x at (6'): every owner that ever read x has already passed
    // its (4), so no barrier and no wait are needed.
    if (stolen.size() == 0) return;
    // Full fence
    // (7) heavy barrier. Matches A ((1) then (2)) in every executor's switch: an owner whose
    // load (3) read x before our steal has its odd seq (1) visible to the loads in (8).
#if !defined(LAZYMM_MUTANT_NO_HEAVY_BARRIER) && !defined(LAZYMM_MUTANT_STEAL_AFTER_BARRIER)
    heavy_barrier(mech_);
#endif
    barriers_.fetch_add(1, std::memory_order_relaxed);
#if !defined(LAZYMM_MUTANT_NO_WAIT)
    for (std::size_t i = 0; i < stolen.size(); ++i) {
      executor_record* r = stolen[i];
      // (8) acquire: pairs with the owner's release (5); once seq moves on, every access the
      // owner made to x in that switch happens before what we do next.
      const std::uint64_t s = r->seq.load(std::memory_order_acquire);
      if (!(s & 1)) continue;  // not inside a switch (never our own: check_not_in_switch_hook)
      waits_.fetch_add(1, std::memory_order_relaxed);
      for (unsigned spins = 0; r->seq.load(std::memory_order_acquire) == s; ++spins) {
        if (spins < 1024)
          cpu_relax();
        else
          std::this_thread::yield();  // the owner was preempted mid-switch; let it run
      }
    }
#endif
    // (9) Nothing holds or touches x now: report the steals; the caller tears down / frees.
    for (std::size_t i = 0; i < stolen.size(); ++i) {
      steals_.fetch_add(1, std::memory_order_relaxed);
      if (x->ops_->evict) x->ops_->evict(x, executor_id{stolen[i]->id});
    }
  }

  // Refcount policy, the kernel's exit_mm(): the last owner is a task running on an executor
  // of this thread that still has x loaded, not lazy. Turn that into a counted lazy hold
  // before the teardown, exactly as exit_mm() does mmgrab_lazy_tlb() before mmput().
  void convert_active_to_lazy_on_this_thread(context* x) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread)
      // Relaxed: our own executor's slot, which only this thread writes under refcount.
      if (l->dom == this && !l->lazy && l->rec->slot.load(std::memory_order_relaxed) == x) {
        l->lazy = true;
        x->count_.fetch_add(1, std::memory_order_relaxed);  // from the owners' reference: > 0
      }
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
    for (auto* r = head_.load(std::memory_order_acquire); r; r = r->next)
      LAZYMM_CHECK(r->slot.load(std::memory_order_acquire) != x,
                   "context %p (%.*s) freed while executor #%u still holds it in its slot", static_cast<const void*>(x),
                   static_cast<int>(x->ops_->type_name.size()), x->ops_->type_name.data(), r->id);
  }

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
    x->ops_->free(x);
    // release: the free happens before a domain destructor that reads freed_ (acquire).
    freed_.fetch_add(1, std::memory_order_release);
  }

  virtual void owning_zero(context* x) noexcept = 0;
  virtual void structural_zero(context* x) noexcept = 0;

  friend void detail::release_owning(context*) noexcept;
  friend void detail::release_structural(context*) noexcept;
  template <class>
  friend class lazymm::executor;

  default_context_type default_;
  const lazymm::mechanism mech_;
  const std::string reason_;
  alignas(64) std::atomic<executor_record*> head_{nullptr};
  std::atomic<std::uint32_t> next_id_{0};
  alignas(64) std::atomic<std::uint64_t> created_{0}, freed_{0}, rounds_{0}, barriers_{0}, steals_{0}, waits_{0};
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
