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

// Starts one thread that calls d.reclaim_if_due() every max_age_us / 4 (at least every 50 us), so
// that with the default options a retired context waits about max_age_us plus one period; and
// reclaims whatever is left when destroyed. Destroy it before the domain. Not copyable or movable.
template <class Domain>
  requires Domain::policy::batches
class reclaimer {
 public:
  explicit reclaimer(Domain& d) : d_(d), thread_([this] { run(); }) {}
  ~reclaimer() {
    {
      std::lock_guard g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    d_.reclaim();
  }
  reclaimer(const reclaimer&) = delete;
  reclaimer& operator=(const reclaimer&) = delete;

 private:
  void run() {
    const auto us = d_.options().max_age_us / 4;
    const auto period = std::chrono::microseconds(us > 50 ? us : 50);
    std::unique_lock g(m_);
    while (!stop_) {
      cv_.wait_for(g, period, [&] { return stop_; });
      g.unlock();
      d_.reclaim_if_due();
      g.lock();
    }
  }

  Domain& d_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace lazymm
