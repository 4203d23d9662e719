// lazymm/reclaimer.hpp: an optional thread that runs a batched domain's reclaims, for users who
// do not call reclaim()/reclaim_if_due() from a loop of their own. Not part of lazymm.hpp's
// core: lazymm owns no threads unless asked to.
#pragma once

#include <lazymm/domain.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace lazymm {

// Starts one thread that calls d.reclaim_if_due() every max_age_us / 4, at least every 50 us and
// at most every 100 ms (max_age_us may be anything, SIZE_MAX for "never by age": the threshold
// still triggers), so that with the default options a retired context waits about max_age_us plus
// one period; and reclaims whatever is left when destroyed. Destroy it before the domain. Not
// copyable or movable.
//
// fork(): the child has no reclaimer thread, so nothing is reclaimed there in the background; the
// child's ~reclaimer neither joins nor locks what the parent's thread may have held (it leaves
// them, and the thread's bookkeeping, to the process's end) and reclaims what is left. A child that
// wants background reclaims constructs a reclaimer of its own.
template <class Domain>
  requires Domain::policy::batches
class reclaimer {
 public:
  explicit reclaimer(Domain& d) : d_(d), forks_(fork_count()), s_(new state), thread_([this] { run(); }) {}
  ~reclaimer() {
    if (fork_count() != forks_) {
      // A fork child: the thread does not exist here. Its handle moves into the abandoned state
      // (no pthread call: detach() of a thread the child does not have crashes Clang's TSan
      // runtime); the mutex and the condition variable may be held or waited on by that thread
      // forever, so they are neither locked nor destroyed (kept reachable, for leak checkers).
      s_->gone = std::move(thread_);
      {
        detail::process::guard g;
        s_->next = abandoned_;
        abandoned_ = s_;
      }
      d_.reclaim();
      return;
    }
    {
      std::lock_guard g(s_->m);
      s_->stop = true;
    }
    s_->cv.notify_all();
    thread_.join();
    delete s_;
    d_.reclaim();
  }
  reclaimer(const reclaimer&) = delete;
  reclaimer& operator=(const reclaimer&) = delete;

 private:
  struct state {
    std::mutex m;
    std::condition_variable cv;
    bool stop = false;
    state* next = nullptr;
    std::thread gone;  // a fork child's handle of the parent's thread: never joined nor destroyed
  };
  // fork()s of this process that its children saw (detail::process::forks; the parent's stays 0).
  static unsigned long fork_count() noexcept {
    detail::process::guard g;
    return detail::process::forks;
  }

  void run() {
    // Clamped in size_t before it becomes a duration: no overflow whatever max_age_us is.
    std::size_t us = d_.options().max_age_us / 4;
    if (us < 50) us = 50;
    if (us > 100000) us = 100000;
    const auto period = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(us));
    std::unique_lock g(s_->m);
    while (!s_->stop) {
      s_->cv.wait_for(g, period, [&] { return s_->stop; });
      g.unlock();
      d_.reclaim_if_due();
      g.lock();
    }
  }

  inline static state* abandoned_ = nullptr;  // fork children: states of threads they do not have

  Domain& d_;
  const unsigned long forks_;
  state* s_;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace lazymm
