// lazymm/detail/process_domains.hpp: the process-wide state of detail/process.hpp that walks
// the live domains (add/remove, fork handlers, the thread-exit detach). Included at the end of
// detail/domain_base.hpp, which it needs complete.
#pragma once

#include <lazymm/detail/domain_base.hpp>

namespace lazymm::detail {

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

}  // namespace lazymm::detail
