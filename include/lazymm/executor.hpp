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

// Counters of one executor (executor::stats()). Only the owner writes them (a load and a store,
// no RMW, on the executor object, which no other executor writes); any thread may read a
// relaxed snapshot.
struct executor_stats {
  std::uint64_t real_switches = 0;   // switches that found another context in the slot
  std::uint64_t fast_path_hits = 0;  // switches that found their context already loaded
  std::uint64_t steals_seen = 0;     // steals of this executor's slot it noticed (on_stolen runs)
};

template <class Executor>
class scoped_switch;

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
    detail::executor_link::unlink(this);
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

  // Whether a round stole this executor's slot since the last check, and if so, runs the stolen
  // context's static on_stolen(id()) here, now (once per steal; see switch_to_context for the
  // other places it runs). One relaxed load of the own slot and private compares. From inside
  // this executor's own switch hooks: returns false (the switch in progress handles it).
  bool poll_stolen() noexcept {
    check_owner("poll_stolen");
    if (in_hooks) return false;
    // Relaxed: only a steal changes the slot behind our back, and a steal only puts the default
    // context there; on_stolen touches no context (static), so nothing needs ordering.
    if (rec->slot.load(std::memory_order_relaxed) == held_) return false;
    in_hooks = true;
    saw_stolen();
    in_hooks = false;
    return true;
  }

  // A relaxed snapshot of the counters; any thread (the executor must be alive).
  executor_stats stats() const noexcept {
    constexpr auto o = std::memory_order_relaxed;  // statistics: a snapshot that orders nothing
    return {real_switches_.load(o), fast_path_hits_.load(o), steals_seen_.load(o)};
  }

 private:
  friend Domain;
  template <class>
  friend class scoped_switch;
  static constexpr bool steals = policy::round != round_at::never;
  static constexpr bool counts_slot = policy::counts_slot_holds;

  explicit executor(Domain& d) : owner_(detail::this_thread_token()), barriers_{d.mechanism()} {
    dom = &d;
    rec = d.registry_.attach(&d.default_);
    // Relaxed: ordered by the acquire in registry::attach; only we write them from now on.
    seq_ = rec->seq.load(std::memory_order_relaxed);
    generation_ = rec->generation.load(std::memory_order_relaxed);
    held_ = &d.default_;
    held_ops_ = d.default_.ops_;
    next_on_thread = this_thread;
    this_thread = this;
  }

  void check_owner([[maybe_unused]] const char* op) const noexcept {
#if LAZYMM_GENMC
    LAZYMM_DCHECK(owner_ == detail::this_thread_token(), "executor used from another thread");
#else
    LAZYMM_DCHECK(owner_ == detail::this_thread_token(), "executor #%u used from a thread that does not own it (%s)",
                  rec->id, op);
#endif
  }

  // Owner-only counter: a load and a store, no RMW (relaxed: statistics; only this thread writes).
  // Not in the GenMC build: not part of the protocol, and each access is an event GenMC tracks.
  static void bump([[maybe_unused]] std::atomic<std::uint64_t>& c) noexcept {
#if !LAZYMM_GENMC
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
#endif
  }
  // The in-switch flag (owner-only, read by a signal handler on this thread). The compiler
  // barriers keep it around the protocol. Not in the GenMC build, which models the barriers as
  // fences (and has no signals).
  void set_in_switch([[maybe_unused]] bool v) noexcept {
#if !LAZYMM_GENMC
    if (!v) detail::compiler_barrier();
    in_switch.store(v, std::memory_order_relaxed);  // relaxed: read only on this thread
    if (v) detail::compiler_barrier();
#endif
  }

  // The slot no longer holds held_ (a round stole it: it holds the default context): forget it
  // and run its type's static on_stolen. The caller sets in_hooks. held_ops_ is static storage,
  // valid even if the context itself is freed by now.
  void saw_stolen() noexcept {
    const detail::context_ops* ops = held_ops_;
    held_ = &dom->default_;
    held_ops_ = dom->default_.ops_;
    bump(steals_seen_);
    if (ops->stolen) ops->stolen(executor_id{rec->id, generation_});
  }

  // Always inlined into switch_to / switch_to_default, as switch_slot (see there).
  [[gnu::always_inline]] void switch_to_context(context* next) noexcept {
    // Relaxed load of our own slot: only a steal can change it behind our back, and nothing
    // steals `next` while the caller holds an owning reference to it (or it is the default).
    context* cur = rec->slot.load(std::memory_order_relaxed);
    lazy_ = false;
    if (cur == next) {  // fast path: already loaded
      bump(fast_path_hits_);
      // Private compare: the slot holds the default context but we last stored another one, so a
      // round stole it (switch_to_default after a steal, detach and thread exit included).
      if (cur != held_) [[unlikely]] {
        in_hooks = true;
        saw_stolen();
        in_hooks = false;
      }
      return;
    }
    // Always on: one compare on a real switch. A context of another domain would escape that
    // domain's rounds and be freed under this slot.
    LAZYMM_CHECK(next->domain_ == dom, "executor #%u: switch_to a context %p of another domain", rec->id,
                 static_cast<void*>(next));
    LAZYMM_CHECK(!in_hooks, "executor #%u: switch called from inside its own on_activate/on_deactivate hook",
                 rec->id);
    bump(real_switches_);
    const bool counted = counts_slot && next != &dom->default_;
    // Refcount: the slot's reference on next, taken before the slot holds it. Made from the
    // caller's owning reference, which keeps the count above zero.
    if (counted) structural_kind::acquire(next);
    set_in_switch(true);  // a final drop on this thread from now on is a signal handler's
    context* prev = detail::switch_slot<steals>(*rec, seq_, next, barriers_, [&](context* p) {
      const executor_id me{rec->id, generation_};
      in_hooks = true;
      // p != held_: p is the default context, put there by a steal since our last switch (before
      // or after the load above): the holder's side of that steal runs here, where on_deactivate
      // would have.
      if (p != held_) [[unlikely]]
        saw_stolen();
      else if (p != &dom->default_ && p->ops_->deactivate)
        p->ops_->deactivate(p, me);
      if (next != &dom->default_ && next->ops_->activate) next->ops_->activate(next, me);
      in_hooks = false;
    });
    held_ = next;
    held_ops_ = next->ops_;
    set_in_switch(false);
    // Refcount: the slot no longer holds prev; drop its reference (may tear down and free prev).
    if constexpr (counts_slot)
      if (prev != &dom->default_) structural_kind::release(prev);
  }

  detail::thread_token owner_;
  detail::barriers<typename Domain::backend> barriers_;
  std::uint32_t seq_ = 0;         // our copy of rec->seq (only the owner writes it)
  std::uint32_t generation_ = 0;  // our incarnation of the record
  bool lazy_ = false;             // informational: go_lazy() since the last switch
  // What we last stored in the slot, and its hooks: a private copy, so that a steal (which
  // leaves the default context in the slot) is seen by a compare, and its static on_stolen can
  // run after the context is gone.
  context* held_ = nullptr;
  const detail::context_ops* held_ops_ = nullptr;
  std::uint32_t scoped_depth_ = 0;  // live scoped_switch objects on this executor (LIFO check)
  std::atomic<std::uint64_t> real_switches_{0}, fast_path_hits_{0}, steals_seen_{0};
};

}  // namespace lazymm
