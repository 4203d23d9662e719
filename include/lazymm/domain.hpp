// lazymm/domain.hpp: a set of executors, their contexts, a policy and a backend.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/domain_base.hpp>
#include <lazymm/detail/retire_queue.hpp>
#include <lazymm/executor.hpp>
#include <lazymm/fwd.hpp>
#include <lazymm/policy.hpp>

#include <cstddef>
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
  // A batched domain drains its queue first (reclaim() until it is empty: teardown hooks may
  // retire more). Then: no executor attached, no context alive, or it aborts with a message.
  ~domain() {
    if constexpr (Policy::batches) {
      batch_.q.lock();
      while (reclaim_locked()) {
      }
      batch_.q.unlock();
    }
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
  // be attached to a domain once at a time (a second attach aborts with a message).
  [[nodiscard]] executor_type attach() {
    for (auto* l = detail::executor_link::this_thread; l; l = l->next_on_thread)
      LAZYMM_CHECK(l->dom != this, "this thread is already attached to this domain as executor #%u", l->rec->id);
    return executor_type(*this);
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
    std::size_t n = 0;
    for (std::uint32_t w = 0, k = h.words(); w < k; ++w)
      n += static_cast<std::size_t>(__builtin_popcountll(h.word(w)->load(std::memory_order_relaxed)));
    return n;
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
  // torn down and freed). The same as reclaim(): a reclaim in progress elsewhere holds what it took
  // until it is done, and this call waits for it.
  void synchronize() noexcept requires(Policy::batches) {
    check_may_reclaim("synchronize()");
    reclaim();
  }

  // For idle loops and timers: reclaims if the backlog reached the threshold or the oldest queued
  // context is older than max_age_us, and no other reclaim is running. Never blocks. Returns
  // whether it reclaimed.
  bool reclaim_if_due() noexcept requires(Policy::batches) {
    const std::size_t n = batch_.q.backlog();
    if (n == 0) return false;
    if (n < threshold() && batch_.q.age_ns() < static_cast<std::int64_t>(batch_.opts.max_age_us) * 1000) return false;
    check_may_reclaim("reclaim_if_due()");
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
  };
  inline static thread_local const domain* reclaiming_ = nullptr;  // this thread runs a reclaim of it

  void check_may_reclaim(const char* what) const noexcept {
    for (auto* l = detail::executor_link::this_thread; l; l = l->next_on_thread)
      LAZYMM_CHECK(!l->in_hooks, "%s inside an on_activate/on_deactivate hook of executor #%u", what, l->rec->id);
    LAZYMM_CHECK(reclaiming_ != this,
                 "%s called from a hook run by a reclaim of the same domain (it would wait for itself)", what);
  }

  // One take of the queue, in chunks; the caller holds the queue's lock.
  std::size_t reclaim_locked() noexcept requires(Policy::batches) {
    const domain* outer = reclaiming_;
    reclaiming_ = this;
    std::size_t total = 0;
    for (context* list = batch_.q.take_all(); list;) {
      context* chunk[detail::batch_chunk];
      std::size_t n = 0;
      for (; list && n < detail::batch_chunk; list = detail::retire_link::next(list)) chunk[n++] = list;
      detail::sort_contexts(chunk, n);
#if defined(LAZYMM_MUTANT_BATCH_FREE_BEFORE_ROUND)
      for (std::size_t i = 0; i < n; ++i) after_round(chunk[i]);
      shootdown<Backend>(detail::context_set{chunk, n});
#else
      shootdown<Backend>(detail::context_set{chunk, n});
      for (std::size_t i = 0; i < n; ++i) after_round(chunk[i]);
#endif
      batch_.q.reclaimed(n);
      batch_.reclaimed.fetch_add(n, std::memory_order_relaxed);  // statistics
      total += n;
    }
    reclaiming_ = outer;
    return total;
  }

  // What the base policy does once no executor holds x.
  void after_round(context* x) noexcept {
    if constexpr (Policy::round == round_at::owning_zero) {
      run_teardown(x);
      detail::release_structural(x);  // the owners' structural reference; frees x (no round)
    } else {
      run_free(x);
    }
  }

  // A final drop of a batched domain: queue x; past the backlog bound, help; past twice the
  // bound, wait for the running reclaim and help (a drop from a hook of a reclaim never waits).
  void retire(context* x) noexcept {
    const std::size_t n = batch_.q.push(x);
    if (n < batch_.opts.backlog || reclaiming_ == this) return;
    if (!batch_.q.try_lock()) {
      if (n < 2 * batch_.opts.backlog) return;  // the running reclaim (or the next) takes it
      batch_.q.lock();
    }
    reclaim_locked();
    batch_.q.unlock();
  }

  void owning_zero(context* x) noexcept override {
    check_not_in_switch_hook(x);
    if constexpr (Policy::round == round_at::owning_zero) {
#if !defined(LAZYMM_MUTANT_IMPLICIT_NO_ROUND)
      if constexpr (Policy::batches) {
        retire(x);
        return;
      } else {
        shootdown<Backend>(detail::one_context{x, &x->holders_});
      }
#endif
    }
    run_teardown(x);
    detail::release_structural(x);  // the owners' structural reference
  }

  void structural_zero(context* x) noexcept override {
    check_not_in_switch_hook(x);
    if constexpr (Policy::round == round_at::structural_zero) {
      if constexpr (Policy::batches) {
        retire(x);
        return;
      } else {
        shootdown<Backend>(detail::one_context{x, &x->holders_});
      }
    }
    run_free(x);
  }

  [[no_unique_address]] std::conditional_t<Policy::batches, batching, no_batching> batch_;
};

// make_context<T>(d, args...) is d.make<T>(args...).
template <class T, class Domain, class... Args>
owning_ref<T> make_context(Domain& d, Args&&... args) {
  return d.template make<T>(std::forward<Args>(args)...);
}

}  // namespace lazymm
