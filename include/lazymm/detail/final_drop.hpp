// lazymm/detail/final_drop.hpp: the entry of every final drop (release_owning,
// release_structural: a count reaching zero calls the domain's owning_zero / structural_zero; see
// the map at the top of domain.hpp), with the bound on their nesting. Included at the end of
// detail/domain_base.hpp, which it needs complete.
#pragma once

#include <lazymm/detail/domain_base.hpp>

namespace lazymm::detail {

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

}  // namespace lazymm::detail
