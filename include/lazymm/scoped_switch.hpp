// lazymm/scoped_switch.hpp: a nested task on an executor (an inline dispatch, a task stolen
// inside a wait): load a context for the nested task, and restore what was loaded before when
// it ends.
#pragma once

#include <lazymm/context.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/executor.hpp>

#include <atomic>
#include <cstdint>

namespace lazymm {

// scoped_switch s(ex, next): ex.switch_to(next) now; at the end of the scope, restores ex's
// state from before:
//   lazy before        -> go_lazy() (keeps what is loaded then: a context that was only held
//                         lazily may have been stolen and freed meanwhile, so it is never loaded
//                         again)
//   a context C before -> switch_to(C): the constructor took an owning reference on C (one RMW,
//   (not lazy)            and one more to drop it), so C is alive
//   default before     -> switch_to_default()
// Not copyable or movable; must end on the executor's thread, in LIFO order with the other
// scoped_switch objects of the executor (out of order aborts [always]).
template <class Executor>
class scoped_switch {
 public:
  template <class T>
  scoped_switch(Executor& ex, const owning_ref<T>& next) noexcept : ex_(ex), lazy_(ex.is_lazy()) {
    context* cur = ex.rec->slot.load(std::memory_order_relaxed);  // relaxed: as executor::loaded()
    if (!lazy_ && cur != ex.dom->default_context()) {
      // The task running on ex owns C (ownership rule 2), so its owning count is above zero,
      // unless the task dropped the last owner on this thread (exit_mm): then C is not restored
      // and the default context is. Relaxed: a reference made from the task's, as a copy.
      auto& users = cur->users_;
      for (std::int64_t n = users.load(std::memory_order_relaxed); n > 0;)
        if (users.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) {
          prev_ = owning_ref<context>::adopt(cur);
          break;
        }
    }
    depth_ = ++ex.scoped_depth_;
    ex.switch_to(next);
  }

  ~scoped_switch() {
    LAZYMM_CHECK(ex_.scoped_depth_ == depth_, "executor #%u: scoped_switch ended out of LIFO order", ex_.rec->id);
    --ex_.scoped_depth_;
    if (lazy_)
      ex_.go_lazy();
    else if (prev_)
      ex_.switch_to(prev_);
    else
      ex_.switch_to_default();
    // prev_'s destructor drops our reference after the switch back (C is loaded again).
  }

  scoped_switch(const scoped_switch&) = delete;
  scoped_switch& operator=(const scoped_switch&) = delete;

 private:
  Executor& ex_;
  owning_ref<context> prev_;
  std::uint32_t depth_ = 0;
  bool lazy_;
};

}  // namespace lazymm
