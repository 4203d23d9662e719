// lazymm/domain.hpp: a set of executors, their contexts, a policy and a backend.
//
// The final drop, from a reference to the free (every step is named in the file it is in):
//
//   owning_ref::reset()                          context.hpp   owning_kind::release
//     -> detail::release_owning(x)               final_drop.hpp  users_ 1 -> 0 (acq_rel) ...
//       -> final_drops::run: x->domain_->owning_zero(x)   the one virtual hop: a context knows its
//          domain only as a domain_base; 64 nested at most per thread, deeper ones queued
//     -> domain::owning_zero (here)              checks (not in a switch hook, not in a nudge)
//       -> shootdown_then_teardown
//            implicit:  round (detail::shootdown, protocol.hpp), [thread-bound: owners_unbind;
//                       the last undo completes instead, complete_bound], run_teardown,
//                       then release_structural(x) (the owners' share)
//            batched:   retire(x) (queue); later reclaim_locked: one round per chunk, then
//                       after_round(x) per context
//            explicit, refcount: run_teardown, release_structural (no round here)
//   structural_ref::reset() / that release_structural(x)
//     -> detail::release_structural(x)           final_drop.hpp  count_ 1 -> 0 (acq_rel)
//       -> x->domain_->structural_zero(x) -> domain::structural_zero (here)
//            explicit:  round, [thread-bound: owners_unbind], run_free
//            batched explicit: retire(x), later after_round -> run_free
//            implicit, refcount: run_free (the round, if any, ran at the owning drop)
//   run_free (domain_base.hpp): checked-mode verification, the freed count, then T::on_free / delete.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/domain_base.hpp>
#include <lazymm/detail/retire_queue.hpp>
#include <lazymm/executor.hpp>
#include <lazymm/fwd.hpp>
#include <lazymm/policy.hpp>

#include <cstddef>
#include <cstdint>
#include <new>
#if !LAZYMM_GENMC
#include <cstdio>
#endif
#include <type_traits>
#include <utility>

namespace lazymm {

// Owns the executor registry, the permanent default context and the backend's set-up.
// Create it before the workers start (membarrier registration happens in the constructor) and
// destroy it after every executor has detached and every context has been freed: anything else
// aborts with a message. Not copyable or movable: contexts and executors point to it.
template <class Policy, class Backend>
class domain final : public detail::domain_base {
 public:
  using policy = Policy;
  using backend = Backend;
  using executor_type = executor<domain>;

  domain() requires(!Policy::batches) : domain_base(detail::choose_mechanism<Backend>()) {}
  // A batched domain: final drops queue their context for reclaim().
  explicit domain(batch_options o = {}) requires(Policy::batches)
      : domain_base(detail::choose_mechanism<Backend>()) {
    LAZYMM_CHECK(o.backlog >= 1, "batch_options::backlog must be at least 1 (it bounds the retire queue)");
    batch_.opts = o;
  }
  // First detaches the library-managed executors of threads that still live (their slots go to
  // the default context without hooks; their threads' exit later does not touch the domain). A
  // batched domain then drains its queue (reclaim() until it is empty: teardown hooks may retire
  // more). Then: no executor attached, no context alive, or it aborts with a message. No thread
  // may use the domain during or after this.
  ~domain() {
    if constexpr (Policy::batches) reclaim_all();
    drain_thread_bound();
#if !LAZYMM_GENMC
    // The records are released under the process lock, a few at a time; the slots' references
    // (refcount) are dropped after it is let go: a free there runs hooks that may take the process
    // lock on another thread, or wait for a reclaim whose hooks do.
    for (bool first = true;; first = false) {
      released drop[16];
      std::size_t k = 0;
      bool more = false;
      {
        detail::process::guard g;
        if (first) detail::process::remove_domain(this);
        for (; managed_ && k < 16; ++k) {
          detail::managed_entry* e = managed_;
          drop[k] = release_record(e->link->rec);
          // Relaxed: see executor_link::orphaned.
          e->link->orphaned.store(true, std::memory_order_relaxed);
          remove_managed(e);  // the thread frees the entry at its exit
        }
        more = managed_ != nullptr;
      }
      for (std::size_t i = 0; i < k; ++i) drop_released(drop[i]);
      if (!more) break;
    }
    wait_for_exiting_threads();
#endif
    if constexpr (Policy::batches) reclaim_all();
    drain_thread_bound();
    check_destroyable();
  }

  // Creates a T (new T(args...)) with one owning reference, returned.
  template <class T, class... Args>
  owning_ref<T> make(Args&&... args) {
    detail::check_context_type<T>();
    T* p = new T(std::forward<Args>(args)...);
    adopt_new(p);
    return owning_ref<T>::adopt(p);
  }

  // Attaches the calling thread as an executor, loaded with the default context. A thread may
  // be attached to a domain once at a time: a second attach (RAII or library-managed) aborts with
  // a message that points to thread_executor().
  [[nodiscard]] executor_type attach() {
#if !LAZYMM_GENMC
    check_same_copy("attach()");
#endif
    if (auto* l = detail::executor_link::find(this))
      detail::abort_with("this thread is already attached to this domain as executor #%u (use domain::thread_executor() "
                   "to get it)",
                   l->rec->id);
    return executor_type(*this);
  }

#if !LAZYMM_GENMC
  // The calling thread's executor of this domain: the one attach() returned, if it is alive;
  // otherwise a library-managed one, attached now (on first use) and detached when the thread
  // exits (a thread_local destructor; see docs/api.md for the order) or when the domain is
  // destroyed, whichever comes first.
  executor_type& thread_executor() {
    check_same_copy("thread_executor()");
    if (executor_type* e = find_thread_executor()) return *e;
    LAZYMM_CHECK(!detail::process::exit_detached,
                 "thread_executor() on a thread whose library-managed executors were already detached at its exit "
                 "(a thread_local destructor that runs after theirs): call thread_executor() before that "
                 "thread_local is constructed, or attach() an executor for the destructor's work");
    auto& exits = detail::process::this_thread_list();  // constructed now, at the first use
    auto* m = detail::managed_executor<executor_type>::allocate();
    detail::process::guard g;
    executor_type* e;
    try {
      e = ::new (static_cast<void*>(m->storage)) executor_type(*this);
    } catch (...) {  // std::bad_alloc from the registry: nothing attached, nothing kept
      detail::managed_entry::free(m);
      throw;
    }
    m->link = e;
    m->dom = this;
    m->next_on_thread = exits.head;
    exits.head = m;
    add_managed(m);
    return *e;
  }
#endif

  // How long ~domain waits for the undos of thread-bound contexts (nudging their holders every
  // millisecond) before it aborts naming the executors that never undid their load. 0: forever.
  void set_drain_timeout(unsigned milliseconds) noexcept { drain_timeout_ms_ = milliseconds; }

  // The calling thread's executor of this domain (RAII or managed), or nullptr. Never attaches.
  executor_type* find_thread_executor() noexcept {
#if !LAZYMM_GENMC
    check_same_copy("find_thread_executor()");
#endif
    return static_cast<executor_type*>(detail::executor_link::find(this));
  }

  // ---- shootdown policies: holder sets ------------------------------------------------------

  // Removes from x's holder set the executors that no longer hold x (switched away, detached),
  // so that x's final round visits only those that may still hold it. For contexts that live
  // long and run on many executors; call it from a timer or an idle loop, on any thread. Safe
  // against concurrent switches to and from x: it never removes an executor that holds x or is
  // inside a switch. Costs one heavy barrier per 1024 executor ids with something to remove
  // (none if nothing is), and a load of seq and slot of each member. Returns how many it removed.
  template <class T>
  std::size_t trim(const owning_ref<T>& x) noexcept requires(Policy::round != round_at::never) {
    LAZYMM_CHECK(x, "trim with an empty owning_ref");
    LAZYMM_CHECK(x.get()->domain_ == this, "trim of a context %p of another domain", static_cast<void*>(x.get()));
    return trim_holders<Backend>(x.get());
  }

  // How many executors x's holder set names now (its next round visits them; all registered
  // executors if the set overflowed). For tests and diagnostics: a snapshot.
  template <class T>
  std::size_t holder_count(const owning_ref<T>& x) const noexcept requires(Policy::round != round_at::never) {
    const detail::holder_set& h = x.get()->holders_;
    if (h.overflow.load(std::memory_order_relaxed)) return registry_.size();  // relaxed: a snapshot
    return h.members();
  }

  // ---- batched policies (batched<P>): reclaiming the retire queue ---------------------------

  // Reclaims everything queued when it is called: for each chunk of up to 256 contexts, one
  // round (one registry walk, at most one heavy barrier, one wait pass), then the evict hooks and
  // the base policy's after-round work (implicit: teardown then free; explicit: free), on this
  // thread. Waits for a reclaim in progress on another thread. Returns how many it took.
  // Not from inside a switch hook, nor from a hook that a reclaim of this domain runs.
  std::size_t reclaim() noexcept requires(Policy::batches) {
    check_may_reclaim("reclaim()");
    batch_.q.lock();
    const std::size_t n = reclaim_locked();
    batch_.q.unlock();
    return n;
  }

  // rcu_barrier(): returns once every context retired before the call is freed (under implicit,
  // torn down, and freed unless a structural reference outlives the owners). The same as reclaim(): a reclaim in progress elsewhere holds what it took
  // until it is done, and this call waits for it.
  //
  // Thread-bound contexts (T::thread_bound) are torn down and freed only after every holder's
  // undo: synchronize() then also waits until no teardown is pending in the domain, polling the
  // calling thread's own executor and nudging the others (set_nudge); with a nudge installed it
  // waits about as long as the runtime takes to act on one, without one until each holder's next
  // switch, poll_stolen(), detach or thread exit.
  void synchronize() noexcept requires(Policy::batches) {
    check_may_reclaim("synchronize()");
    reclaim();
    wait_thread_bound(0);
  }

  // For idle loops and timers: reclaims if the backlog reached the threshold or the oldest queued
  // context is older than max_age_us, and no other reclaim is running. Never blocks. Returns
  // whether it reclaimed.
  bool reclaim_if_due() noexcept requires(Policy::batches) {
    check_may_reclaim("reclaim_if_due()");  // first: a misplaced call aborts whether or not one is due
    const std::size_t n = batch_.q.backlog();
    if (n == 0) return false;
    if (n < threshold() && !too_old()) return false;
    if (!batch_.q.try_lock()) return false;
    reclaim_locked();
    batch_.q.unlock();
    return true;
  }

  const batch_options& options() const noexcept requires(Policy::batches) { return batch_.opts; }
  // The reclaim_if_due() threshold in force (batch_options::threshold, or its automatic value).
  std::size_t threshold() const noexcept requires(Policy::batches) {
    if (batch_.opts.threshold) return batch_.opts.threshold;
    const std::size_t auto_n = 4 * std::size_t{registry_.size()};
    return auto_n > 64 ? auto_n : 64;
  }

  domain_stats stats() const noexcept {
    domain_stats s = domain_base::stats();
    if constexpr (Policy::batches) {
      s.reclaimed = batch_.reclaimed.load(std::memory_order_relaxed);  // statistics
      s.backlog = batch_.q.backlog();
      s.peak_backlog = batch_.q.peak();
    }
    return s;
  }

 private:
  struct no_batching {};
  struct batching {
    detail::retire_queue<detail::retire_link> q;
    batch_options opts;
    std::atomic<std::uint64_t> reclaimed{0};
    // Contexts the reclaims of the thread that holds the lock took off the queue and have not yet
    // subtracted from the backlog (reclaim_locked). Only the lock holder (and its signal handlers)
    // touches it.
    std::size_t taken = 0;
    bool fork_took = false;  // the fork prepare handler took the lock (under the process lock)
  };

  // Whether the oldest queued context waited max_age_us. Any max_age_us is valid: one too large
  // for a signed count of nanoseconds (SIZE_MAX, "never by age") is never reached.
  bool too_old() const noexcept requires(Policy::batches) {
    constexpr std::uint64_t max_us = static_cast<std::uint64_t>(INT64_MAX) / 1000;
    const std::uint64_t us = batch_.opts.max_age_us;
    return us <= max_us && batch_.q.age_ns() >= static_cast<std::int64_t>(us) * 1000;
  }

  void check_may_reclaim(const char* what) const noexcept {
    check_not_nudging(what);
    for (auto* l = detail::executor_link::this_thread; l; l = l->next_on_thread)
      LAZYMM_CHECK(!l->in_hooks, "%s inside a switch hook (on_activate, on_deactivate or on_stolen) of executor #%u",
                   what, l->rec->id);
    // The lock names its holder: a hook of a reclaim of this domain on this thread, however
    // nested in reclaims of other domains (of this type or not).
    LAZYMM_CHECK(!batch_.q.held_here(),
                 "%s called from a hook run by a reclaim of the same domain (it would wait for itself)", what);
  }

  // One take of the queue, in chunks; the caller holds the queue's lock. May nest (retire(): a
  // hook of this reclaim that drops past the bound reclaims what was queued since the take).
  std::size_t reclaim_locked() noexcept requires(Policy::batches) {
    std::size_t total = 0;
#if !LAZYMM_GENMC
    const std::int64_t started = detail::monotonic_ns();
#endif
    context* list = batch_.q.take_all();
    for (context* c = list; c; c = detail::retire_link::next(c)) ++batch_.taken;
    for (; list;) {
      context* chunk[detail::batch_chunk];
      std::size_t n = 0;
      for (; list && n < detail::batch_chunk; list = detail::retire_link::next(list)) chunk[n++] = list;
      detail::sort_contexts(chunk, n);
      shootdown<Backend>(detail::context_set{chunk, n});
      for (std::size_t i = 0; i < n; ++i) {
#if !LAZYMM_GENMC
        // latency: from the reclaim's start (implicit: to the free, or to the teardown's end if a
        // structural reference outlives it)
        [[maybe_unused]] timed_drop t(chunk[i], started, Policy::round == round_at::owning_zero ? this : nullptr);
#endif
        after_round(chunk[i]);
      }
      batch_.q.reclaimed(n);
      batch_.taken -= n;
      batch_.reclaimed.fetch_add(n, std::memory_order_relaxed);  // statistics
      total += n;
    }
    return total;
  }

  // What the base policy does once no executor holds x (a thread-bound x: once every holder
  // undid its load as well).
  void after_round(context* x) noexcept {
    if (is_thread_bound(x) && !owners_unbind(x)) return;  // the last holder's undo completes
    after_round_now(x);
  }
  void after_round_now(context* x) noexcept {
    if constexpr (Policy::round == round_at::owning_zero) {
      run_teardown(x);
      detail::release_structural(x);  // the owners' structural reference; frees x (no round)
    } else {
      run_free(x);
    }
  }

  // A final drop of a batched domain: queue x; past the backlog bound, help; past twice the
  // bound, wait for the running reclaim and help. A drop on the thread that holds the reclaim lock
  // (a hook of its reclaim, or a signal handler that interrupted it) never waits: it queues, and
  // past twice the bound, counting only what is queued and not yet taken by that reclaim, it
  // reclaims here, nested, so that a hook that drops many contexts does not grow the queue without
  // bound. (A chain of teardowns that each drop one context stays under the bound: no nesting.)
  void retire(context* x) noexcept {
    // The bound counts contexts waiting for thread-bound undos too (they hold their memory).
    const std::size_t n = batch_.q.push(x) + pending_bound_.load(std::memory_order_relaxed);
    if (n < batch_.opts.backlog) return;  // first: the common drop reads nothing more
    if (batch_.q.held_here()) {
      if (n - batch_.taken >= 2 * batch_.opts.backlog) reclaim_locked();
      return;
    }
    if (!batch_.q.try_lock()) {
      if (n < 2 * batch_.opts.backlog) return;  // the running reclaim (or the next) takes it
      batch_.q.lock();
    }
    reclaim_locked();
    batch_.q.unlock();
  }

  void owning_zero(context* x) noexcept override {
    check_not_in_switch_hook(x);
    check_not_nudging("final drop");
    if constexpr (Policy::round == round_at::owning_zero && !Policy::batches) {
      // The round and the teardown are part of this drop's latency (timed to the free, or to the
      // teardown's end if a structural reference outlives it: the free then records nothing).
      [[maybe_unused]] timed_drop t(x, -1, this);
      shootdown_then_teardown(x);
    } else {
      shootdown_then_teardown(x);
    }
  }

  void shootdown_then_teardown(context* x) noexcept {
    if constexpr (Policy::round == round_at::owning_zero) {
      if constexpr (Policy::batches) {
        retire(x);
        return;
      } else {
        shootdown<Backend>(detail::one_context{x, &x->holders_});
      }
    }
    // A thread-bound x under implicit (after its round) or refcount (no round: holders undo at
    // their next switch away): the teardown waits for every load's undo.
    if constexpr (Policy::round != round_at::structural_zero)
      if (is_thread_bound(x) && !owners_unbind(x)) return;
    teardown_then_release(x);
  }
  void teardown_then_release(context* x) noexcept {
    run_teardown(x);
    detail::release_structural(x);  // the owners' structural reference
  }

  void structural_zero(context* x) noexcept override {
    check_not_in_switch_hook(x);
    check_not_nudging("final drop");
    if constexpr (Policy::round == round_at::owning_zero) {
      // The sample belongs to the last owning drop: timed there (this free records it when it
      // runs inside that drop), or recorded at its end if this free comes later.
      run_free(x);
    } else {
      [[maybe_unused]] timed_drop t(x);
      if constexpr (Policy::round == round_at::structural_zero) {
        if constexpr (Policy::batches) {
          retire(x);
          return;
        } else {
          shootdown<Backend>(detail::one_context{x, &x->holders_});
        }
        if (is_thread_bound(x) && !owners_unbind(x)) return;  // explicit: the free waits for the undos
      }
      run_free(x);
    }
  }

  static bool is_thread_bound(const context* x) noexcept {
    return x->ops_->switch_flags & detail::switch_thread_bound;
  }

  // The last undo of a thread-bound x was given back (on its holder's thread, outside any switch):
  // what the policy deferred.
  void complete_bound(context* x) noexcept override {
    if constexpr (Policy::batches)
      after_round_now(x);
    else if constexpr (Policy::round == round_at::structural_zero)
      run_free(x);
    else
      teardown_then_release(x);
    bound_completed();
  }

#if LAZYMM_GENMC
  // The model's threads are joined before ~domain: nothing may be pending (an assertion).
  bool wait_thread_bound(std::size_t left, unsigned = 0) noexcept { return pending_teardowns() <= left; }
  void drain_thread_bound() noexcept {
    LAZYMM_CHECK(pending_teardowns() == 0, "domain destroyed while thread-bound contexts wait for undos");
  }
#else
  // Waits until at most `left` thread-bound teardowns are pending: polls this thread's executor
  // (its undo is this thread's to run) and nudges the executors that still owe one, every 1 ms.
  // Gives up after `timeout_ms` (0: never), returning false.
  bool wait_thread_bound(std::size_t left, unsigned timeout_ms = 0) noexcept {
    for (unsigned ms = 0; pending_teardowns() > left; ++ms) {
      if (timeout_ms && ms >= timeout_ms) return false;
      if (auto* l = detail::executor_link::find(this)) l->poll(l);
      if (pending_teardowns() <= left) break;
      for (auto* r = registry_.head(); r; r = r->next)
        // Relaxed bound: a hint (executor_record::bound); a stale one costs a spare nudge. The
        // acquire loads of in_use and generation pair with (11) and (13) as in a round's walk:
        // the id named is the current attach's.
        if (r->in_use.load(std::memory_order_acquire) && r->bound.load(std::memory_order_relaxed) && nudge_)
          nudge(executor_id{r->id, r->generation.load(std::memory_order_acquire)});
      detail::sleep_briefly();
    }
    return true;
  }

  // ~domain: every thread-bound teardown completes, or the domain aborts naming the executors
  // whose undo never came (after set_drain_timeout()'s limit, 10 s by default, of nudges).
  void drain_thread_bound() noexcept {
    if (wait_thread_bound(0, drain_timeout_ms_)) return;
    for (auto* r = registry_.head(); r; r = r->next)
      if (r->in_use.load(std::memory_order_acquire) && r->bound.load(std::memory_order_relaxed))
        std::fprintf(stderr, "lazymm: executor #%u still owes the undo (on_deactivate) of thread-bound context %p\n",
                     r->id, static_cast<void*>(r->bound.load(std::memory_order_relaxed)));
    detail::abort_with("domain destroyed while %zu thread-bound context(s) wait for their holders' undo (on_deactivate "
                       "on the holder's thread): make those executors switch, poll_stolen() or detach first (a nudge, "
                       "set_nudge(), lets the domain ask them)",
                       pending_teardowns());
  }

#endif

  void reclaim_all() noexcept requires(Policy::batches) {
    batch_.q.lock();
    while (reclaim_locked()) {
    }
    batch_.q.unlock();
  }

  // Releases a record whose owner does not run: a managed executor of a live thread (~domain)
  // or any executor of a thread that does not exist (fork child). The slot goes to the default
  // context without hooks, the switch counter is made even, then the record is free. Returns what
  // the record still had, for the caller to give back outside the process lock (drop_released):
  // the context whose structural reference the slot held (refcount), and a thread-bound load
  // nobody can undo any more (the thread does not exist here; ~domain drained every live holder's
  // undo first). Relaxed: the owner's last accesses happen before (~domain's precondition; in the
  // fork child there is one thread).
  struct released {
    context* slot_ref = nullptr;
    context* bound = nullptr;
  };
  [[nodiscard]] released release_record(detail::executor_record* r) noexcept {
    released out;
    context* prev = r->slot.load(std::memory_order_relaxed);
    r->slot.store(&default_, std::memory_order_relaxed);
    const std::uint32_t s = r->seq.load(std::memory_order_relaxed);
    if (s & 1u) r->seq.store(s + 1, std::memory_order_relaxed);
    r->waiters.store(0, std::memory_order_relaxed);
    out.bound = r->bound.exchange(nullptr, std::memory_order_relaxed);
    detail::registry::detach(r);
    if constexpr (Policy::counts_slot_holds)
      if (prev != &default_) out.slot_ref = prev;
    return out;
  }
  // Gives back what release_record returned: the bound load on the thread's behalf (may run the
  // deferred teardown here), then the slot's reference (may free).
  static void drop_released(const released& d) noexcept {
    if (d.bound) holder_unbind(d.bound);
    if (d.slot_ref) detail::release_structural(d.slot_ref);
  }

#if !LAZYMM_GENMC
  void destroy_managed(detail::managed_entry* e) noexcept override {
    static_cast<detail::managed_executor<executor_type>*>(e)->get()->~executor_type();
  }
#endif

#if !LAZYMM_GENMC
  // fork(), under the process lock (detail/process.hpp). A batched domain's reclaim lock is
  // taken in prepare (tried; process::atfork_prepare retries until every domain's is free: a
  // reclaim running on another thread finishes first, so the child never
  // inherits a queue half taken by a thread it does not have), unless this very thread holds it
  // (a fork from a hook that its reclaim runs): the child's thread then goes on with that reclaim.
  bool at_fork_prepare() noexcept override {
    if constexpr (Policy::batches) {
      batch_.fork_took = false;
      if (batch_.q.held_here()) return true;
      if (!batch_.q.try_lock()) return false;
      batch_.fork_took = true;
    }
    return true;
  }
  void at_fork_parent() noexcept override {
    if constexpr (Policy::batches)
      if (std::exchange(batch_.fork_took, false)) batch_.q.unlock();
  }
  // The child has one thread, the one that forked: every other thread's record is released
  // (nothing waits on their odd seq), and their managed entries are freed.
  void at_fork_child() noexcept override {
    // Relaxed: the child has one thread, and the prepare handler's lock ordered every attach
    // and detach that it did not interrupt before the fork.
    for (auto* r = registry_.head(); r; r = r->next) {
      if (!r->in_use.load(std::memory_order_relaxed)) continue;
      if (!owned_here(r)) {
        drop_released(release_record(r));
      } else {
        // A reclaimer of the parent that was blocked on this thread's switch (a fork from a
        // switch hook) does not exist here: nobody waits, so the switch needs no wake.
        r->waiters.store(0, std::memory_order_relaxed);
      }
    }
    for (detail::managed_entry* e = managed_; e;) {
      detail::managed_entry* n = e->next_in_domain;
      if (!on_this_thread(e)) {
        remove_managed(e);
        detail::managed_entry::free(e);
      }
      e = n;
    }
    // Thread-exit detaches in progress at the fork belong to threads the child does not have,
    // except this thread's own (a fork from a hook of that detach).
    exiting_.store(detail::process::exiting_domain == this ? 1u : 0u, std::memory_order_relaxed);
    if constexpr (Policy::batches)
      if (std::exchange(batch_.fork_took, false)) batch_.q.unlock();
  }
#endif

  [[no_unique_address]] std::conditional_t<Policy::batches, batching, no_batching> batch_;
  unsigned drain_timeout_ms_ = 10'000;
};

// make_context<T>(d, args...) is d.make<T>(args...).
template <class T, class Domain, class... Args>
owning_ref<T> make_context(Domain& d, Args&&... args) {
  return d.template make<T>(std::forward<Args>(args)...);
}

}  // namespace lazymm
