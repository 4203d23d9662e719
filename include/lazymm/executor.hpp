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

#include <atomic>
#include <cstdint>

#if LAZYMM_GENMC
#include <pthread.h>
#else
#include <thread>
#endif

namespace lazymm {

// Counters of one executor (executor::stats()), kept off the fast path: real switches are the
// switch counter (seq) the protocol keeps anyway, halved; steals are counted where on_stolen
// runs. Any thread may read a relaxed snapshot.
struct executor_stats {
  std::uint64_t real_switches = 0;  // switches that found another context in the slot
  std::uint64_t steals_seen = 0;    // steals of this executor's slot it noticed (on_stolen runs)
};

template <class Executor>
class scoped_switch;

namespace detail {
#if LAZYMM_GENMC
using thread_token = pthread_t;
inline thread_token this_thread_token() noexcept { return pthread_self(); }
#else
using thread_token = std::thread::id;
// Out of line and opaque: pthread_self() is declared const, so once switch_to's owner check is
// inlined into a caller, the compiler may reuse a value read before a fiber switch that moved
// the caller to another thread (Boost.Fiber's migrating fibers; examples/fiber_tenants).
[[gnu::noinline]] inline thread_token this_thread_token() noexcept {
  asm volatile("" ::: "memory");
  return std::this_thread::get_id();
}
#endif

// A word only its owner thread writes (a load and a store, no RMW) and any thread may read as a
// relaxed snapshot (statistics: it orders nothing). Plain in the GenMC build, where no other
// thread reads it and each atomic access would be one more event to explore.
template <class T>
struct owner_word {
#if LAZYMM_GENMC
  T v{};
  T get() const noexcept { return v; }
  void set(T x) noexcept { v = x; }
#else
  std::atomic<T> v{};
  T get() const noexcept { return v.load(std::memory_order_relaxed); }
  void set(T x) noexcept { v.store(x, std::memory_order_relaxed); }
#endif
};
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
    switch_to_default();
    lazy_ = false;
    LAZYMM_TEST_POINT(detach_before_unregister, rec->id);
    detail::executor_link::unlink(this);
    detail::registry::detach(rec);
  }

  // Loads the context of `r` to run a task of it. `r` must stay alive for the whole call. Until
  // the executor goes lazy or switches away, some owning reference must stay alive, unless the
  // LAST one is dropped on this thread (the exit_mm case, safe under every policy). Switching to
  // what is loaded does nothing.
  //
  // The fast path (already loaded) is inlined into the caller: a load of the own slot, a compare,
  // a private store; no call, nothing shared written. Nobody but this executor puts a context
  // other than the default into its slot, so finding `next` there means it is loaded (a steal
  // only ever leaves the default context, which switch_to_default checks for).
  template <class T>
  [[gnu::always_inline]] void switch_to(const owning_ref<T>& r) noexcept {
    check_owner("switch_to");
    context* next = r.get();
    // Checked mode only; relaxed: `r` orders these reads after the context's make.
    LAZYMM_DCHECK(!next || (next->state_.load(std::memory_order_relaxed) == detail::state_live &&
                            next->users_.load(std::memory_order_relaxed) > 0),
                  "executor #%u: switch_to a dead context %p", rec->id, static_cast<void*>(next));
    lazy_ = false;
    // Relaxed load of our own slot: see loaded(). An empty `r` (null) never matches: slow path.
    if (rec->slot.load(std::memory_order_relaxed) == next) [[likely]]
      return;
    switch_slow(next);
  }

  // Start context-free work or idle: the loaded context stays loaded, lazily (a kernel thread
  // borrowing active_mm). Every policy: writes nothing shared, no fence, no RMW (under refcount
  // the slot already counts its context).
  [[gnu::always_inline]] void go_lazy() noexcept {
    check_owner("go_lazy");
    lazy_ = true;
  }

  // Load the default context (dropping any lazy hold). What detach does first. Inlined fast
  // path: the slot holds the default context and we stored it there ourselves (held_ private);
  // if a round put it there (a steal), the slow path runs on_stolen.
  [[gnu::always_inline]] void switch_to_default() noexcept {
    check_owner("switch_to_default");
    context* const dflt = &dom->default_;
    lazy_ = false;
    if (held_ == dflt && rec->slot.load(std::memory_order_relaxed) == dflt) [[likely]]
      return;
    default_slow();
  }

  // What the slot holds now, for comparison only. Never dereference it: a lazily held context
  // may be stolen and freed at any moment under the shootdown policies.
  // Relaxed: a value to compare, never to dereference; it orders nothing.
  const context* loaded() const noexcept { return rec->slot.load(std::memory_order_relaxed); }
  bool is_lazy() const noexcept { return lazy_; }
  executor_id id() const noexcept { return executor_id{rec->id, generation_}; }

  // Whether a round stole this executor's slot since the last check, and if so, runs the stolen
  // context's static on_stolen(id()) here, now (once per steal; see switch_slow for the
  // other places it runs). One relaxed load of the own slot and private compares. From inside
  // this executor's own switch hooks: returns false (the switch in progress handles it).
  bool poll_stolen() noexcept {
    check_owner("poll_stolen");
    if (general_ & busy) return false;
    // Relaxed: only a steal changes the slot behind our back, and a steal only puts the default
    // context there; on_stolen touches no context (static), so nothing needs ordering.
    if (rec->slot.load(std::memory_order_relaxed) == held_) return false;
    took_steal();
    return true;
  }

  // A relaxed snapshot of the counters; any thread (the executor must be alive).
  executor_stats stats() const noexcept { return {(seq_.get() - seq_at_attach_) / 2, steals_seen_.get()}; }

 private:
  friend Domain;
  template <class>
  friend class scoped_switch;
  static constexpr bool steals = policy::round != round_at::never;
  static constexpr bool counts_slot = policy::counts_slot_holds;
  using stolen_hook = void (*)(const executor_id&) noexcept;

  explicit executor(Domain& d) : owner_(detail::this_thread_token()), barriers_{d.mechanism()} {
    dom = &d;
    rec = d.registry_.attach(&d.default_);
    // Relaxed: ordered by the acquire in registry::attach; only we write them from now on.
    seq_at_attach_ = rec->seq.load(std::memory_order_relaxed);
    seq_.set(seq_at_attach_);
    generation_ = rec->generation.load(std::memory_order_relaxed);
    holder_bit_ = detail::holder_set::bit_of(rec->id);
    general_base_ = detail::holder_set::is_inline(rec->id) && barriers_.lean() ? 0 : detail::switch_general;
    general_ = general_base_;
    held_ = &d.default_;
    held_ops_ = d.default_.ops_;
    poll = &poll_link;
    next_on_thread = this_thread;
    this_thread = this;
  }

  static bool poll_link(detail::executor_link* l) noexcept { return static_cast<executor*>(l)->poll_stolen(); }

  void check_owner([[maybe_unused]] const char* op) const noexcept {
#if LAZYMM_GENMC
    LAZYMM_DCHECK(owner_ == detail::this_thread_token(), "executor used from another thread");
#else
    LAZYMM_DCHECK(owner_ == detail::this_thread_token(), "executor #%u used from a thread that does not own it (%s)",
                  rec->id, op);
#endif
  }

  // ---- the slow paths: out of line ------------------------------------------------------------
  //
  // general_ says whether a real switch must take the general form (real_switch<true>, which
  // checks for re-entry and runs hooks) instead of the lean one (no call inside, so the compiler
  // saves no registers; the light barrier without a test). Bits:
  //   1 (detail::switch_general)  held_'s type has on_deactivate, or (general_base_, fixed at
  //                               attach) our holder-set word is not in the context header
  //                               (id >= 64) or the domain fell back from membarrier to fences
  //   2 (busy)                    inside a switch or a hook: a switch now is a re-entry (from a
  //                               hook or a signal handler) that the general form refuses
  //   4 (detail::switch_stolen)   held_'s type has on_stolen (read from held_ops_ after a steal;
  //                               without it the type's static storage is never read again)
  //   16 (switch_thread_bound)    held_'s type is thread-bound: leave it with its undo first
  // (general_ is held_'s switch_flags | general_base_; bit 8, "has on_activate", is read from the
  // next context's flags, not from here.)

  static constexpr std::uint8_t busy = 2, take_general = detail::switch_general | busy;

  // switch_to_default off its fast path: the holder's side of a steal (the slot holds the default
  // context that a round left there), or a real switch.
  [[gnu::noinline]] void default_slow() noexcept {
    check_may_switch();
    // Relaxed: see loaded().
    if (rec->slot.load(std::memory_order_relaxed) != &dom->default_) return real_switch_any(&dom->default_);
    took_steal();
  }

  // The holder's side of a steal noticed outside a switch: on_stolen, then, for a thread-bound
  // type, its undo (the context is alive: our load is still counted in its binds_).
  void took_steal() noexcept {
    context* const x = held_;
    const detail::context_ops* const ops = held_ops_;
    const bool bound = general_ & detail::switch_thread_bound;
    enter_hooks();
    saw_stolen();
    leave_hooks();
    if (bound) undo_bound(x, ops);
  }

  // switch_to off its fast path: a real switch (next is not in the slot; an empty ref is null).
  [[gnu::noinline]] void switch_slow(context* next) noexcept {
    LAZYMM_CHECK(next, "executor #%u: switch_to with an empty owning_ref (released, reset or moved from)", rec->id);
    // Always on: one compare on a real switch. A context of another domain would escape that
    // domain's rounds and be freed under this slot.
    LAZYMM_CHECK(next->domain_ == dom, "executor #%u: switch_to a context %p of another domain", rec->id,
                 static_cast<void*>(next));
    real_switch_any(next);
  }

  [[gnu::always_inline]] void real_switch_any(context* next) noexcept {
    if ((general_ & take_general) || (next->ops_->switch_flags & detail::switch_activates)) [[unlikely]]
      return real_switch_general(next);
    real_switch<false>(next);
  }

  [[gnu::noinline]] void real_switch_general(context* next) noexcept {
    check_may_switch();
    if (general_ & detail::switch_thread_bound) {  // leave a thread-bound context first
      leave_thread_bound();
      if (next == &dom->default_) return;
    }
    real_switch<true>(next);
  }

  // ---- thread-bound contexts (T::thread_bound) -----------------------------------------------
  // Each real switch to x counts a bind in x->binds_; each undo (on_deactivate, on this thread)
  // gives it back; x's teardown (free, under explicit) waits for the last one. The hooks run
  // outside the switch protocol (between two switches, or after one): a hook may drop references
  // (no round waits for this executor there: its seq is even), and a switch of this executor
  // from inside it aborts (busy).

  // Leaves the held thread-bound x: a hook-less switch to the default context (a steal noticed
  // at (3) runs x's on_stolen after it), then x's undo.
  void leave_thread_bound() noexcept {
    context* const x = held_;
    const detail::context_ops* const ops = held_ops_;
    real_switch<false>(&dom->default_);
    undo_bound(x, ops);
  }

  // One load of x undone on this thread: on_deactivate, then the bind given back (the last one
  // runs x's deferred teardown here, outside any switch).
  void undo_bound(context* x, const detail::context_ops* ops) noexcept {
    general_ |= busy;
    ops->deactivate(x, executor_id{rec->id, generation_});
    general_ &= static_cast<std::uint8_t>(~busy);
    rec->bound.store(nullptr, std::memory_order_relaxed);  // relaxed: a hint (executor_record::bound)
    detail::domain_base::holder_unbind(x);
  }

  // Always on: a switch from inside this executor's own hook (on_activate, on_deactivate,
  // on_stolen) or from a signal handler that interrupted its switch would end the switch in
  // progress under it (seq even mid-switch: a waiting round frees what the hooks touch).
  void check_may_switch() const noexcept {
    LAZYMM_CHECK(!(general_ & busy),
                 "executor #%u: switch called from inside its own on_activate/on_deactivate hook (or on_stolen, "
                 "or a signal handler that interrupted its switch)",
                 rec->id);
  }

  // Hooks run with in_hooks (final drops and reclaim() refuse) and busy (switches refuse).
  void enter_hooks() noexcept {
    in_hooks = true;
    general_ |= busy;
  }
  void leave_hooks() noexcept {
    in_hooks = false;
    general_ &= static_cast<std::uint8_t>(~busy);
  }

  // A real switch to next (checked by the caller). General: runs the hooks (on_deactivate of what
  // the slot held, on_activate of next, or on_stolen if a round stole the slot) between (3) and
  // (4), and finds an outer holder word. Lean: the caller saw no hook on either side; a steal
  // noticed at (3) runs on_stolen after the switch (it touches no context, so where it runs
  // does not matter).
  template <bool General>
  [[gnu::always_inline]] void real_switch(context* next) noexcept {
    context* const dflt = &dom->default_;
    general_ |= busy;  // from here to the end of the switch, a switch is a re-entry
    // Refcount: the slot's reference on next, taken before the slot holds it. Made from the
    // caller's owning reference, which keeps the count above zero.
    if constexpr (counts_slot)
      if (next != dflt) structural_kind::acquire(next);
    // Thread-bound next: count our load before the slot can hold it (relaxed: made under the
    // caller's owning reference, so it precedes the owners' unbind in binds_' modification order;
    // the undo's release carries the ordering). Its on_activate runs after the protocol.
    [[maybe_unused]] bool bound_next = false;
    if constexpr (General) {
      bound_next = next->ops_->switch_flags & detail::switch_thread_bound;
      if (bound_next) {
        next->binds_.fetch_add(1, std::memory_order_relaxed);
        rec->bound.store(next, std::memory_order_relaxed);  // relaxed: a hint (executor_record::bound)
      }
    }
    // Shootdown: our word in next's holder set (the default context's too: all its bits are set
    // from the start, so nothing is written there). An id >= 64 may allocate here, outside the
    // switch, the first time.
    std::atomic<std::uint64_t>* holder_word = nullptr;
#if !LAZYMM_NO_HOLDER_SET
    if constexpr (steals) {
      if constexpr (General)
        holder_word = next->holders_.word_for(rec->id, [this] { return dom->registry_.size(); });
      else
        holder_word = next->holders_.inline_word(rec->id);
    }
#endif
    // rec->seq is odd from (1) to (5); our 64-bit copy (for stats()) moves first.
    const std::uint64_t s = seq_.get() + 1;
    seq_.set(s + 1);
    auto hooks = [&](context* p) {
      // p != held_: p is the default context, put there by a steal since our last switch (before
      // or after the fast path's load): the holder's side of that steal runs instead of
      // on_deactivate. Exactly one of them per load.
      const bool stolen = p != held_;
      if constexpr (!General) {
        if (stolen) [[unlikely]]
          stolen_fn_ = held_stolen(), stolen_pending_ = true;  // members: nothing stays live across (12)
      } else {
        const executor_id me{rec->id, generation_};
        in_hooks = true;
        if (stolen)
          saw_stolen();
        else if (p->ops_->deactivate)  // null for the default context
          p->ops_->deactivate(p, me);
        if (next->ops_->activate && !bound_next) next->ops_->activate(next, me);
        in_hooks = false;
      }
      held_ = next;
      held_ops_ = next->ops_;
    };
    const auto s32 = static_cast<std::uint32_t>(s);
    context* prev;
    if constexpr (General)
      prev = detail::switch_slot<steals>(*rec, s32, next, holder_word, holder_bit_, barriers_.general(), hooks);
    else
      prev = detail::switch_slot<steals>(*rec, s32, next, holder_word, holder_bit_, barriers_, hooks);
    // After (5): not busy any more; general_ for the next switch away from held_.
    general_ = static_cast<std::uint8_t>(held_ops_->switch_flags | general_base_);
    if constexpr (General)
      if (bound_next && next->ops_->activate) {
        general_ |= busy;
        next->ops_->activate(next, executor_id{rec->id, generation_});
        general_ &= static_cast<std::uint8_t>(~busy);
      }
    // Refcount: the slot no longer holds prev; drop its reference (may tear down and free prev).
    if constexpr (counts_slot)
      if (prev != dflt) structural_kind::release(prev);
    if constexpr (!General)
      if (stolen_pending_) [[unlikely]]
        stolen_after_switch();
  }

  [[gnu::noinline]] void stolen_after_switch() noexcept {
    stolen_pending_ = false;
    enter_hooks();
    run_on_stolen(stolen_fn_);
    leave_hooks();
  }

  // The slot no longer holds held_ (a round stole it: it holds the default context): forget it
  // and run the stolen context's on_stolen, from the private copy of its pointer. Nothing of the
  // context or of its type's static storage is read: the context may be freed by now, and the
  // object that defined its type unloaded (a type without on_stolen is never touched again).
  // The caller has entered the hooks.
  void saw_stolen() noexcept {
    const stolen_hook fn = held_stolen();
    held_ = &dom->default_;
    held_ops_ = dom->default_.ops_;
    general_ = static_cast<std::uint8_t>((general_ & busy) | general_base_);
    run_on_stolen(fn);
  }
  stolen_hook held_stolen() const noexcept { return general_ & detail::switch_stolen ? held_ops_->stolen : nullptr; }
  void run_on_stolen(stolen_hook fn) noexcept {
    steals_seen_.set(steals_seen_.get() + 1);
    if (fn) fn(executor_id{rec->id, generation_});
  }

  detail::thread_token owner_;
  detail::lean_barriers<typename Domain::backend> barriers_;
  // Our copy of rec->seq, 64 bits wide: it counts our real switches for stats() too. rec->seq
  // holds its low 32 bits.
  detail::owner_word<std::uint64_t> seq_;
  std::uint64_t seq_at_attach_ = 0;
  std::uint32_t generation_ = 0;  // our incarnation of the record
  std::uint64_t holder_bit_ = 0;  // our bit in a holder-set word (detail::holder_set)
  bool lazy_ = false;             // informational: go_lazy() since the last switch
  // What we last stored in the slot, and its type's on_stolen: private copies, so that a steal
  // (which leaves the default context in the slot) is seen by a compare, and on_stolen can run
  // after the context is gone without reading anything of it or of its type.
  context* held_ = nullptr;
  const detail::context_ops* held_ops_ = nullptr;
  std::uint8_t general_ = 0;       // see "the slow paths" above
  std::uint8_t general_base_ = 0;  // 1 if our holder-set word is not in the context header
  bool stolen_pending_ = false;    // a hook-less switch noticed a steal: stolen_fn_ runs after it
  stolen_hook stolen_fn_ = nullptr;
  std::uint32_t scoped_depth_ = 0;  // live scoped_switch objects on this executor (LIFO check)
  detail::owner_word<std::uint64_t> steals_seen_;
};

}  // namespace lazymm
