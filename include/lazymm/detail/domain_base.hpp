// lazymm/detail/domain_base.hpp: the policy-independent half of a domain around the protocol
// (detail/protocol.hpp): default context, mechanism, the round's hooks, the deferred teardown of
// thread-bound contexts, checked-mode verification and the counters behind stats() and
// drop_latency(). Split out: the executor list (detail/executor_link.hpp), the statistics types
// (lazymm/stats.hpp), the process-wide list of domains (detail/process_domains.hpp) and the
// final drop's entry (detail/final_drop.hpp).
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/executor_link.hpp>
#include <lazymm/detail/process.hpp>
#include <lazymm/detail/protocol.hpp>
#include <lazymm/detail/retire_queue.hpp>
#include <lazymm/detail/seams.hpp>
#include <lazymm/stats.hpp>

#include <atomic>
#include <cstdint>


namespace lazymm {

namespace detail {

struct default_context_type final : context {};

#if !LAZYMM_GENMC
// The final drop being timed on this thread, and when it started (domain::drop_latency()).
struct drop_timer {
  const context* x = nullptr;
  std::int64_t t0 = 0;
  bool recorded = false;  // the free of x recorded the sample
};
#endif

#define LAZYMM_SIGNAL_DROP_MESSAGE                                                      \
  "final drop on a thread whose executor #%u is inside a switch: a signal handler that " \
  "interrupted switch_to must not drop the last reference to a context"

class domain_base {
 public:
  domain_base(const domain_base&) = delete;
  domain_base& operator=(const domain_base&) = delete;

  // The permanent default context (init_mm). Executors start on it and are moved to it by
  // steals and by detach. It has no hooks.
  const context* default_context() const noexcept { return &default_; }
  // The barrier mechanism in force, and why (a refused membarrier says which step and errno).
  lazymm::mechanism mechanism() const noexcept { return mech_; }

  // ---- thread-bound contexts (T::thread_bound; docs/api.md) ---------------------------------
  // The runtime's way to wake a worker: a round that stole a thread-bound context from an
  // executor of another thread calls fn(arg, that executor's id) on the dropping (or reclaiming)
  // thread, once per such executor; the worker should then call poll_stolen() (or make any real
  // switch) soon: that is when its undo runs. Set it before the first thread-bound context dies,
  // not concurrently with final drops; null: no nudges (an undo then waits for the holder's next
  // switch, poll_stolen(), detach or thread exit).
  using nudge_fn = void (*)(void* arg, executor_id who) noexcept;
  void set_nudge(nudge_fn fn, void* arg) noexcept {
    nudge_ = fn;
    nudge_arg_ = arg;
  }
  // Calls the nudge (set_nudge) for `who`. Inside it this thread may not make a final drop nor
  // reclaim (check_not_nudging): a nudge runs inside a round, maybe under a reclaim's lock.
  void nudge(executor_id who) noexcept {
    ++nudging_;
    nudge_(nudge_arg_, who);
    --nudging_;
  }
  static void check_not_nudging(const char* what) noexcept {
    LAZYMM_CHECK(!nudging_,
                 "%s inside a nudge (set_nudge): a nudge runs inside a round and may only signal the worker "
                 "(post it a task, notify it), not call into lazymm",
                 what);
  }
  // Thread-bound contexts whose teardown (free, under explicit_shootdown) waits for undos now.
  // acquire: pairs with the release decrement in complete_bound(); a zero read here means every
  // deferred completion has finished.
  std::size_t pending_teardowns() const noexcept { return pending_bound_.load(std::memory_order_acquire); }
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
    // Every executor is in the default context's holder set from the start, so a real switch to
    // it finds its bit set and writes nothing (no round ever reads this set: the default context
    // is never dropped). Relaxed: the domain is not shared yet.
    for (auto& w : default_.holders_.inline_words) w.store(~std::uint64_t{0}, std::memory_order_relaxed);
#if !LAZYMM_GENMC
    process::add_domain(this);
#endif
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
  // A final drop while this thread's own executor is inside the protocol part of a switch (not
  // in a hook) can only come from a signal handler that interrupted the switch: under the
  // shootdown policies its round would steal from a record with an odd seq that nobody will ever
  // make even while the handler runs; under refcount it would free or tear down a context the
  // interrupted switch is about to count or deactivate. Refused under every policy.
  static void check_not_in_switch_hook(const context* x) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread) {
      if (!l->live()) continue;
      LAZYMM_CHECK(!l->in_hooks,
                   "final drop of context %p inside a switch hook (on_activate, on_deactivate or on_stolen) of executor #%u: "
                   "switch hooks must not drop the last reference to any context",
                   static_cast<const void*>(x), l->rec->id);
      LAZYMM_CHECK(!l->in_switch(), LAZYMM_SIGNAL_DROP_MESSAGE, l->rec->id);
    }
  }

  // Whether r is an executor of the calling thread. Such an executor is not inside a switch (the
  // calling thread is here, not in its switch), so a steal from it needs no barrier and no wait;
  // if its seq is odd anyway, this final drop interrupted its switch: a signal handler.
  static bool is_own(const executor_record& r) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread)
      if (l->rec == &r && l->live()) {
        // Relaxed: our own thread's store.
        LAZYMM_CHECK(!(r.seq.load(std::memory_order_relaxed) & 1u), LAZYMM_SIGNAL_DROP_MESSAGE, r.id);
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
    void evicted(const stolen_slot& s) noexcept {
      const executor_id who{s.id, s.generation};
      if (s.ctx->ops_->evict) s.ctx->ops_->evict(s.ctx, who);
      // A thread-bound victim's teardown waits for this holder's undo: wake it (the calling
      // thread's own executors undo at their next switch or poll, or when a wait polls them).
      if ((s.ctx->ops_->switch_flags & switch_thread_bound) && !s.own && d->nudge_) d->nudge(who);
    }
  };

  // ---- thread-bound contexts: the deferred teardown ------------------------------------------
  // After x's round (or, under refcount, at its last owning drop): gives back the owners' bind.
  // True: no load of x is left to undo, the caller completes now. False: the holder whose undo
  // gives back the last bind completes (complete_bound), on its thread; x counts as pending
  // until then. The pending count moves first, so that completion never sees it at zero.
  bool owners_unbind(context* x) noexcept {
    pending_bound_.fetch_add(1, std::memory_order_relaxed);  // read by the decrement (coherence)
    // acq_rel: release orders our round's steals and hooks before the completion on another
    // thread; acquire (when we are last) orders every holder's undo before what we do next.
    if (x->binds_.fetch_sub(1, std::memory_order_acq_rel) != 1) return false;
    pending_bound_.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  // A holder's undo of one load of x is done (on its thread): give its bind back. acq_rel: the
  // undo happens before whoever gives back the last bind (a release sequence of RMWs), and, if
  // that is us, every other undo and the round happen before the completion we run.
  static void holder_unbind(context* x) noexcept {
    if (x->binds_.fetch_sub(1, std::memory_order_acq_rel) == 1) x->domain_->complete_bound(x);
  }
  // The policy's work after the last undo (teardown and free, or the free), then the pending
  // count; nothing touches the domain after that decrement (~domain waits for it).
  virtual void complete_bound(context* x) noexcept = 0;
  void bound_completed() noexcept {
    // release: pairs with the acquire in pending_teardowns() (~domain, synchronize()).
    pending_bound_.fetch_sub(1, std::memory_order_release);
  }

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
#if !LAZYMM_GENMC
    if (drop_timer_.x == x && !drop_timer_.recorded) {
      record_drop(monotonic_ns() - drop_timer_.t0);
      drop_timer_.recorded = true;
    }
#endif
    // release: pairs with the acquire in check_destroyable(); all the above happens before a
    // domain destructor that sees the count.
    freed_.fetch_add(1, std::memory_order_release);
    free(x);
  }

  virtual void owning_zero(context* x) noexcept = 0;
  virtual void structural_zero(context* x) noexcept = 0;

  // ---- drop latency -----------------------------------------------------------------------
#if LAZYMM_GENMC
  struct timed_drop {
    timed_drop(const context*, std::int64_t = -1, domain_base* = nullptr) noexcept {}
  };
#else
  inline static thread_local drop_timer drop_timer_;
  // Starts timing x's final drop unless it is already timed (the last owning drop leads to the
  // last structural one on the same thread). The free records the sample; with `unfreed` (implicit:
  // the last owning drop, whose round and teardown the sample must include), a drop that ends
  // without the free (a structural reference outlives the owners) records it here, and the later
  // free records none (structural_zero does not time under implicit).
  struct timed_drop {
    drop_timer outer;
    bool mine;
    domain_base* unfreed;
    explicit timed_drop(const context* x, std::int64_t t0 = -1, domain_base* record_unfreed = nullptr) noexcept
        : outer(drop_timer_), mine(drop_timer_.x != x), unfreed(record_unfreed) {
      if (mine) drop_timer_ = {x, t0 >= 0 ? t0 : monotonic_ns(), false};
    }
    ~timed_drop() {
      if (!mine) return;
      // Not recorded: x is not freed, so its domain is alive.
      if (unfreed && !drop_timer_.recorded) unfreed->record_drop(monotonic_ns() - drop_timer_.t0);
      drop_timer_ = outer;
    }
    timed_drop(const timed_drop&) = delete;
    timed_drop& operator=(const timed_drop&) = delete;
  };
  void record_drop(std::int64_t ns) noexcept {
    const auto v = static_cast<std::uint64_t>(ns > 0 ? ns : 0);
    unsigned b = v ? 63u - static_cast<unsigned>(__builtin_clzll(v)) : 0u;
    if (b > 31) b = 31;
    // Statistics, relaxed: they order nothing (any thread may make a final drop).
    latency_count_.fetch_add(1, std::memory_order_relaxed);
    latency_log2_[b].fetch_add(1, std::memory_order_relaxed);
    for (auto m = latency_max_.load(std::memory_order_relaxed); v > m;)
      if (latency_max_.compare_exchange_weak(m, v, std::memory_order_relaxed)) break;
  }
#endif

 public:
  lazymm::drop_latency drop_latency() const noexcept {
    lazymm::drop_latency r;
#if !LAZYMM_GENMC
    constexpr auto o = std::memory_order_relaxed;  // statistics: a snapshot that orders nothing
    r.count = latency_count_.load(o);
    r.max_ns = latency_max_.load(o);
    for (unsigned i = 0; i < 32; ++i) r.log2_ns[i] = latency_log2_[i].load(o);
#endif
    return r;
  }

 protected:
#if !LAZYMM_GENMC
  // ---- process-wide state (detail/process.hpp), all under process::lock ---------------------
  friend struct process;
  domain_base* next_live_ = nullptr;
  domain_base* prev_live_ = nullptr;
  managed_entry* managed_ = nullptr;  // this domain's library-managed executors
  const void* const copy_ = process::copy_id();  // the copy of lazymm that created this domain
  // Aborts if the calling code binds another copy of lazymm's process-wide state than the one
  // that created this domain (process::copy_id).
  void check_same_copy(const char* what) const noexcept {
    LAZYMM_CHECK(copy_ == process::copy_id(),
                 "%s: this code uses another copy of lazymm's per-thread and process-wide state than the one that "
                 "created the domain (a library that uses lazymm was dlopen()ed by an executable linked without "
                 "-rdynamic): link the executable with -rdynamic (CMake: ENABLE_EXPORTS) so that one copy serves "
                 "the whole process",
                 what);
  }
  // Managed executors being detached at their thread's exit, outside the process lock.
  std::atomic<unsigned> exiting_{0};
  // ~executor of a managed executor of this domain (its type is the domain's executor_type).
  virtual void destroy_managed(managed_entry* e) noexcept = 0;
  // ~domain: waits until no thread-exit detach of this domain is in progress. Not from a hook that
  // such a detach runs (it would wait for itself).
  void wait_for_exiting_threads() const noexcept {
    LAZYMM_CHECK(process::exiting_domain != this,
                 "domain destroyed from a hook run by the thread-exit detach of its own managed executor");
    // acquire: pairs with the release decrement in ~thread_exit_list.
    while (exiting_.load(std::memory_order_acquire) != 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  virtual bool at_fork_prepare() noexcept = 0;  // false: busy, retry (process::atfork_prepare)
  virtual void at_fork_parent() noexcept = 0;
  virtual void at_fork_child() noexcept = 0;

  void add_managed(managed_entry* e) noexcept {
    e->prev_in_domain = nullptr;
    e->next_in_domain = managed_;
    if (managed_) managed_->prev_in_domain = e;
    managed_ = e;
  }
  void remove_managed(managed_entry* e) noexcept {
    (e->prev_in_domain ? e->prev_in_domain->next_in_domain : managed_) = e->next_in_domain;
    if (e->next_in_domain) e->next_in_domain->prev_in_domain = e->prev_in_domain;
    e->prev_in_domain = e->next_in_domain = nullptr;
    e->dom = nullptr;
  }
  // Whether r is one of the calling thread's executors.
  static bool owned_here(const executor_record* r) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread)
      if (l->rec == r && l->live()) return true;
    return false;
  }
  // Whether e is an executor of the calling thread.
  static bool on_this_thread(const managed_entry* e) noexcept {
    for (auto* l = executor_link::this_thread; l; l = l->next_on_thread)
      if (l == e->link) return true;
    return false;
  }
#endif

  friend void detail::release_owning(context*) noexcept;
  friend void detail::release_structural(context*) noexcept;
#if !LAZYMM_GENMC
  friend struct final_drops;
#endif
  template <class>
  friend class lazymm::executor;

  default_context_type default_;
  nudge_fn nudge_ = nullptr;
  void* nudge_arg_ = nullptr;
  std::atomic<std::size_t> pending_bound_{0};
  const lazymm::mechanism mech_;
  const reason_text reason_;
  LAZYMM_CACHELINE_ALIGN registry registry_;
  LAZYMM_CACHELINE_ALIGN std::atomic<std::uint64_t> created_{0}, freed_{0}, rounds_{0}, barriers_{0}, steals_{0}, waits_{0};
#if !LAZYMM_GENMC
  std::atomic<std::uint64_t> latency_count_{0}, latency_max_{0};
  std::atomic<std::uint64_t> latency_log2_[32] = {};
#endif
  // Static members after every field: GenMC pairs a class's fields with its debug-info members by
  // position, and a static one in between shifts the pairs (it then crashes on a void* member).
  inline static thread_local int nudging_ = 0;  // this thread is inside a nudge (check_not_nudging)
};

}  // namespace detail
}  // namespace lazymm

// What needs a complete domain_base: the process-wide list of domains, and the final drop's entry.
#include <lazymm/detail/process_domains.hpp>
#include <lazymm/detail/final_drop.hpp>
