// lazymm/detail/domain_base.hpp: the policy-independent half of a domain around the protocol
// (detail/protocol.hpp): default context, mechanism, the round's hooks and statistics,
// checked-mode verification.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/process.hpp>
#include <lazymm/detail/protocol.hpp>
#include <lazymm/detail/retire_queue.hpp>
#include <lazymm/detail/seams.hpp>

#include <atomic>
#include <cstdint>


namespace lazymm {

// Final-drop latency of one domain (domain::drop_latency()): one sample per free, from the final
// drop that led to it (the last owning drop under implicit_shootdown, the last structural drop
// otherwise; for batched policies, the start of the reclaim that frees it) to the moment the free
// starts. Relaxed snapshot.
struct drop_latency {
  std::uint64_t count = 0;   // samples
  std::uint64_t max_ns = 0;  // the longest
  std::uint64_t log2_ns[32] = {};  // bucket i: [2^i, 2^(i+1)) ns (0 ns in bucket 0, >= 2^31 ns in bucket 31)
  // An upper bound (within a factor of 2, capped at max_ns) of the p-quantile, 0 <= p <= 1;
  // 0 without samples.
  std::uint64_t percentile_ns(double p) const noexcept {
    if (count == 0) return 0;
    if (p < 0) p = 0;
    if (p > 1) p = 1;
    std::uint64_t target = static_cast<std::uint64_t>(p * static_cast<double>(count));
    if (static_cast<double>(target) < p * static_cast<double>(count)) ++target;  // ceil
    if (target == 0) target = 1;
    std::uint64_t seen = 0;
    for (unsigned i = 0; i < 32; ++i) {
      seen += log2_ns[i];
      if (seen >= target) {
        const std::uint64_t upper = i == 31 ? max_ns : (std::uint64_t{2} << i) - 1;
        return upper < max_ns ? upper : max_ns;
      }
    }
    return max_ns;
  }
};

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
  bool in_hooks = false;  // owner-only: inside on_activate / on_deactivate / on_stolen
  // Inside the protocol part of a real switch (switch_slot, (1) to (5)): the record's seq is
  // odd. Asked on the owner's thread only (a hook, or a signal handler that interrupted the
  // switch). Relaxed: the thread's own store.
  bool in_switch() const noexcept { return rec->seq.load(std::memory_order_relaxed) & 1u; }
  // executor::poll_stolen() of this executor: a domain waiting for thread-bound undos runs it for
  // the calling thread's own executors (their holder is this very thread).
  bool (*poll)(executor_link*) noexcept = nullptr;
  // A library-managed executor whose domain was destroyed while its thread lived: it stays on
  // the thread's list (only the thread may unlink it) until the thread exits, and every walk
  // skips it. Written once, by ~domain, under the process lock. Relaxed: a walk that could
  // meet a later domain or record at the same address happens after that ~domain (whatever
  // handed the new domain to this thread, and the allocator's ordering of a free before the
  // reuse of the memory), so coherence makes it read true; a walk concurrent with ~domain is a
  // use of the domain during its destruction (precondition).
  std::atomic<bool> orphaned{false};
  executor_link* next_on_thread = nullptr;
  inline static thread_local executor_link* this_thread = nullptr;

  bool live() const noexcept { return !orphaned.load(std::memory_order_relaxed); }
  // Unlinks l from the calling thread's list (it must be there).
  static void unlink(executor_link* l) noexcept {
    for (executor_link** p = &this_thread; *p; p = &(*p)->next_on_thread)
      if (*p == l) {
        *p = l->next_on_thread;
        return;
      }
  }
  // The calling thread's executor of domain d, or null.
  static executor_link* find(const domain_base* d) noexcept {
    for (auto* l = this_thread; l; l = l->next_on_thread)
      if (l->dom == d && l->live()) return l;
    return nullptr;
  }
};

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

#if !LAZYMM_GENMC
// ---- process (detail/process.hpp) ----------------------------------------------------------

inline void process::add_domain(domain_base* d) noexcept {
  guard g;
#if defined(__unix__) || defined(__APPLE__)
  if (!atfork_registered) {
    atfork_registered = true;
    ::pthread_atfork(&atfork_prepare, &atfork_parent, &atfork_child);
  }
#endif
  d->next_live_ = domains;
  if (domains) domains->prev_live_ = d;
  domains = d;
}

inline void process::remove_domain(domain_base* d) noexcept {
  guard g;
  (d->prev_live_ ? d->prev_live_->next_live_ : domains) = d->next_live_;
  if (d->next_live_) d->next_live_->prev_live_ = d->prev_live_;
  d->next_live_ = d->prev_live_ = nullptr;
}

// fork(): the prepare handler takes the process lock (no managed attach, thread-exit detach or
// ~domain is half done in the child) and lets each domain take what it needs (a batched domain's
// reclaim lock); the child handler releases every record of a thread that does not exist there.
// The domains' locks are only tried under the process lock, and all are let go to retry when one
// is busy: a hook run by a reclaim (which holds that domain's reclaim lock) may itself take the
// process lock (thread_executor(), ~domain), so waiting here while holding it could deadlock.
inline void process::atfork_prepare() noexcept {
  for (;;) {
    lock();
    domain_base* busy = domains;
    while (busy && busy->at_fork_prepare()) busy = busy->next_live_;
    if (!busy) return;
    for (auto* d = domains; d != busy; d = d->next_live_) d->at_fork_parent();
    unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(50));  // a reclaim takes microseconds
  }
}
inline void process::atfork_parent() noexcept {
  for (auto* d = domains; d; d = d->next_live_) d->at_fork_parent();
  unlock();
}
inline void process::atfork_child() noexcept {
  ++forks;
  for (auto* d = domains; d; d = d->next_live_) d->at_fork_child();
  unlock();
}

// Thread exit: detach every managed executor of the thread whose domain is alive, on this thread
// (its hooks run here); free the ones whose domain already detached them. Each entry is taken off
// its domain's list under the process lock, and the domain counts the detach in progress
// (exiting_); the detach itself runs with no lock of lazymm held, since its hooks may drop
// contexts that wait for a reclaim whose own hooks take the process lock (thread_executor() of
// another domain, ~domain). ~domain waits for the count to reach zero before it checks anything.
// Entries added by hooks meanwhile (thread_executor() of another domain) are detached too.
inline process::thread_exit_list::~thread_exit_list() {
  for (;;) {
    managed_entry* e = nullptr;
    domain_base* d = nullptr;
    {
      guard g;
      e = head;
      if (!e) break;
      head = e->next_on_thread;
      d = e->dom;
      if (d) {
        d->remove_managed(e);
        // Relaxed: under the process lock, which ~domain takes before it waits (acquire below).
        d->exiting_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (d) {
      exiting_domain = d;
      d->destroy_managed(e);  // ~executor: switch to default (hooks), leave the registry
      exiting_domain = nullptr;
      managed_entry::free(e);
      // release: pairs with the acquire in ~domain's wait: our detach happens before it goes on.
      // The last access to d: the domain may be destroyed the moment the count is seen.
      d->exiting_.fetch_sub(1, std::memory_order_release);
    } else {
      executor_link::unlink(e->link);
      managed_entry::free(e);
    }
  }
  exit_detached = true;
}
#endif

#if !LAZYMM_GENMC
// Final drops nested in the hooks of final drops on this thread (a teardown that drops the last
// reference to the next context, whose teardown drops the next, ...). Up to max_depth of them
// run nested, as written; a deeper one is handed to the frame at max_depth, which runs it after
// its own drop returns (and the drops that one makes, the same way), so a chain of any length
// runs in bounded stack (without it, 80,000-90,000 links overflowed 8 MiB at -O2). The list is
// threaded through context::retire_next_ (free: a context whose owning or structural count just
// reached zero is in no retire queue yet), tagged with the kind of drop in the low bit. Atomic,
// with signal fences around the depth, for a final drop in a signal handler on this thread (it
// runs to completion before the interrupted code goes on; only the exchange must be one step).
// Default visibility: one per thread for the whole process.
struct __attribute__((visibility("default"))) final_drops {
  static constexpr unsigned max_depth = 64;
  inline static thread_local unsigned depth = 0;
  inline static thread_local std::atomic<std::uintptr_t> deferred{0};

  static void run(context* c, bool owning) noexcept {
    if (owning)
      c->domain_->owning_zero(c);
    else
      c->domain_->structural_zero(c);
  }
  // Relaxed, all: only this thread (and its signal handlers) touches the list.
  static void defer(context* c, bool owning) noexcept {
    const std::uintptr_t tagged = reinterpret_cast<std::uintptr_t>(c) | (owning ? 1u : 0u);
    std::uintptr_t old = deferred.load(std::memory_order_relaxed);
    do retire_link::next(c) = reinterpret_cast<context*>(old);
    while (!deferred.compare_exchange_weak(old, tagged, std::memory_order_relaxed, std::memory_order_relaxed));
  }
  static void drain() noexcept {
    while (std::uintptr_t p = deferred.exchange(0, std::memory_order_relaxed)) {
      while (p) {
        context* c = reinterpret_cast<context*>(p & ~std::uintptr_t{1});
        const bool owning = p & 1u;
        p = reinterpret_cast<std::uintptr_t>(retire_link::next(c));
        retire_link::next(c) = nullptr;
        run(c, owning);
      }
    }
  }
  static void drop(context* c, bool owning) noexcept {
    if (depth >= max_depth) {
      defer(c, owning);
      return;
    }
    ++depth;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    run(c, owning);
    if (depth == max_depth) {
      for (;;) {
        drain();  // at this depth: their own deeper drops are deferred again, and drained here
        std::atomic_signal_fence(std::memory_order_seq_cst);
        --depth;
        std::atomic_signal_fence(std::memory_order_seq_cst);
        // A signal handler's drop deferred after the last exchange and before the decrement.
        if (!deferred.load(std::memory_order_relaxed)) break;
        ++depth;
        std::atomic_signal_fence(std::memory_order_seq_cst);
      }
    } else {
      std::atomic_signal_fence(std::memory_order_seq_cst);
      --depth;
    }
  }
};
#endif

inline void release_owning(context* c) noexcept {
  // Checked mode only; relaxed: our own reference orders it after the make.
  LAZYMM_DCHECK(c->state_.load(std::memory_order_relaxed) == state_live,
                "owning reference dropped on context %p after its teardown: double teardown", static_cast<void*>(c));
  // acq_rel: release publishes this owner's writes to the contents; acquire, on the last drop,
  // makes every owner's writes visible to the teardown hook.
  const auto old = c->users_.fetch_sub(1, std::memory_order_acq_rel);
  LAZYMM_CHECK(old > 0, "owning count of context %p went below zero: double teardown", static_cast<void*>(c));
#if LAZYMM_GENMC
  if (old == 1) c->domain_->owning_zero(c);
#else
  if (old == 1) final_drops::drop(c, true);
#endif
}

inline void release_structural(context* c) noexcept {
  // Checked mode only; relaxed: as above.
  LAZYMM_DCHECK(c->state_.load(std::memory_order_relaxed) != state_freed,
                "structural reference dropped on freed context %p: double free", static_cast<void*>(c));
  // acq_rel: as above, for the free.
  const auto old = c->count_.fetch_sub(1, std::memory_order_acq_rel);
  LAZYMM_CHECK(old > 0, "structural count of context %p went below zero: double free", static_cast<void*>(c));
#if LAZYMM_GENMC
  if (old == 1) c->domain_->structural_zero(c);
#else
  if (old == 1) final_drops::drop(c, false);
#endif
}

}  // namespace detail
}  // namespace lazymm
