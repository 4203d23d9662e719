// lazymm/detail/retire_queue.hpp: batched retirement for the shootdown policies (policy
// batched<P>). A final drop pushes the context on a lock-free stack threaded through the context
// headers (O(1), no syscall, no wait); reclaim() takes the whole stack and runs one round of
// detail/protocol.hpp for up to batch_chunk contexts at a time: one registry walk, one heavy
// barrier, one wait pass.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/config.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/protocol.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

#if LAZYMM_GENMC
#include <pthread.h>
#else
#include <algorithm>
#include <chrono>
#include <thread>
#endif

namespace lazymm {

// Tuning of a batched domain (domain<batched<P>, B>(batch_options{...})).
struct batch_options {
  // Back-pressure. A final drop that finds this many queued reclaims itself if no reclaim is
  // running; one that finds twice as many waits for the running reclaim and then reclaims. So
  // the queue holds at most 2 x backlog plus one context per thread in a final drop. At least 1.
  std::size_t backlog = 4096;
  // reclaim_if_due() reclaims at this many queued contexts; 0: max(64, 4 x registered executors).
  std::size_t threshold = 0;
  // reclaim_if_due() also reclaims when the oldest queued context has waited this long.
  std::size_t max_age_us = 1000;  // (size_t: no padding to copy, for GenMC)
};

namespace detail {

// How many contexts one batch round takes: the victims array lives on the reclaimer's stack.
inline constexpr std::size_t batch_chunk = 256;

// The victims of a batch round: a sorted array, searched per registry record.
struct context_set {
  context* const* v;
  std::size_t n;
  static std::uintptr_t key(const context* c) noexcept { return reinterpret_cast<std::uintptr_t>(c); }
  bool contains(const context* c) const noexcept {
    std::size_t lo = 0, hi = n;
    const std::uintptr_t k = key(c);
    while (lo < hi) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (key(v[mid]) < k)
        lo = mid + 1;
      else if (key(v[mid]) > k)
        hi = mid;
      else
        return true;
    }
    return false;
  }

  // The members of each victim's holder set, one victim after another (a record in several sets
  // is visited for each: the later visits find default, or another victim, in its slot), unless
  // that visits more records than the registry has, or a set overflowed: then every record once.
  template <class F>
  void for_each_candidate(const registry& reg, F&& f) const {
    std::size_t visits = 0;
    bool walk_all = false;
#if LAZYMM_NO_HOLDER_SET
    walk_all = true;
#endif
    for (std::size_t i = 0; i < n && !walk_all; ++i) {
      const holder_set& h = retire_link::holders(v[i]);
      walk_all = h.overflow.load(std::memory_order_relaxed);  // relaxed: as (16) in for_each_member
      if (!walk_all) visits += h.members();
      walk_all = walk_all || visits > reg.size();
    }
    if (walk_all) {
      for (executor_record* r = reg.head(); r; r = r->next) f(r);
      return;
    }
    for (std::size_t i = 0; i < n; ++i) for_each_member(reg, retire_link::holders(v[i]), f);
  }
};

inline void sort_contexts(context** v, std::size_t n) noexcept {
#if LAZYMM_GENMC
  for (std::size_t i = 1; i < n; ++i)  // GenMC: no <algorithm>; a batch there is a few entries
    for (std::size_t j = i; j > 0 && context_set::key(v[j]) < context_set::key(v[j - 1]); --j) {
      context* t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
#else
  std::sort(v, v + n, [](const context* a, const context* b) { return context_set::key(a) < context_set::key(b); });
#endif
}

inline std::int64_t monotonic_ns() noexcept {
#if LAZYMM_GENMC
  return 0;
#else
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
#endif
}

// A per-thread value that names the calling thread as the owner of a reclaim lock: the address of
// a thread_local (default visibility: one per thread for the whole process, as
// executor_link::this_thread). In the GenMC build the thread's pthread id names it (the model does
// not rely on the addresses GenMC gives thread_locals).
#if LAZYMM_GENMC
inline std::uintptr_t reclaim_token() noexcept { return static_cast<std::uintptr_t>(pthread_self()) + 1; }
#else
struct __attribute__((visibility("default"))) reclaim_owner {
  inline static thread_local char token = 0;
};
inline std::uintptr_t reclaim_token() noexcept { return reinterpret_cast<std::uintptr_t>(&reclaim_owner::token); }
#endif

// The queue. `next_of(c)` is the link field in the context header (context::retire_next_).
template <class Link>
class retire_queue {
 public:
  // Pushes x; returns the backlog including x. Lock-free: one fetch_add and one CAS loop.
  std::size_t push(context* x) noexcept {
    // Counted before x is visible: a reclaim that takes x subtracts after this add (its take
    // reads our CAS, which is sequenced after it), so the count never wraps below zero.
    // Relaxed, here and below: the age and the counts are heuristics and statistics; the
    // contexts themselves are handed over by the CAS.
    const std::size_t n = backlog_.fetch_add(1, std::memory_order_relaxed) + 1;
    context* old = head_.load(std::memory_order_relaxed);
    do {
      Link::next(x) = old;
      // release: pairs with the acquire in take_all(); the final drop's view of the context
      // (every owner's writes, through the count's acq_rel) happens before its teardown or free.
    } while (!head_.compare_exchange_weak(old, x, std::memory_order_release, std::memory_order_relaxed));
    if (!old) oldest_ns_.store(monotonic_ns(), std::memory_order_relaxed);
    for (std::size_t p = peak_.load(std::memory_order_relaxed); n > p;)
      if (peak_.compare_exchange_weak(p, n, std::memory_order_relaxed)) break;
    return n;
  }

  // Takes everything queued (newest first). acquire: pairs with the release in push().
  context* take_all() noexcept { return head_.exchange(nullptr, std::memory_order_acquire); }
  // Relaxed, here and in the three readers below: counts and ages are heuristics and statistics
  // (see push()); what orders the contexts is the head's CAS and exchange.
  void reclaimed(std::size_t n) noexcept { backlog_.fetch_sub(n, std::memory_order_relaxed); }

  std::size_t backlog() const noexcept { return backlog_.load(std::memory_order_relaxed); }
  std::size_t peak() const noexcept { return peak_.load(std::memory_order_relaxed); }
  // Nanoseconds the oldest queued context has waited (0 when the queue is empty).
  std::int64_t age_ns() const noexcept {
    if (!head_.load(std::memory_order_relaxed)) return 0;
    return monotonic_ns() - oldest_ns_.load(std::memory_order_relaxed);
  }

  // One reclaimer at a time (synchronize() waits for one in progress). The lock word holds the
  // owner's token (detail::this_thread_token_address()), so that the owner can tell that it holds
  // it: a final drop made by a hook of its own reclaim, or by a signal handler that interrupted
  // the first or last instructions of that reclaim, must not wait for it (it would wait for
  // itself). acquire/release: the previous reclaimer's frees happen before the next one's (and
  // before synchronize returns). unlock() is a single store: the domain may be destroyed the
  // moment it is seen (a destructor drains under this lock), so nothing may touch the lock after
  // it, not even a notify.
  bool try_lock() noexcept {
    std::uintptr_t expected = 0;
    return busy_.compare_exchange_strong(expected, reclaim_token(), std::memory_order_acquire,
                                         std::memory_order_relaxed);  // relaxed on failure: we only retry
  }
  void lock() noexcept {
    for (unsigned spins = 0; !try_lock(); ++spins) {
#if !LAZYMM_GENMC
      if (spins < 64)
        cpu_pause();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // a reclaim takes microseconds
#endif
    }
  }
  void unlock() noexcept { busy_.store(0, std::memory_order_release); }
  // Whether the calling thread holds the lock. Relaxed: only this thread ever stores its own token
  // (the CAS in try_lock) and then 0 (unlock); by coherence this load sees our latest store
  // or a later one, and a later one is never our token unless we locked again. A signal handler
  // runs on the thread it interrupted, so the same holds there (the CAS is one instruction).
  bool held_here() const noexcept { return busy_.load(std::memory_order_relaxed) == reclaim_token(); }

 private:
  LAZYMM_CACHELINE_ALIGN std::atomic<context*> head_{nullptr};
  std::atomic<std::size_t> backlog_{0};
  std::atomic<std::size_t> peak_{0};
  std::atomic<std::int64_t> oldest_ns_{0};
  LAZYMM_CACHELINE_ALIGN std::atomic<std::uintptr_t> busy_{0};  // 0, or the holder's reclaim_token()
};

}  // namespace detail
}  // namespace lazymm
