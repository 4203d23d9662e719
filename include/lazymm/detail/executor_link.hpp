// lazymm/detail/executor_link.hpp: the per-thread list of executors (every domain's), and what
// the rest of lazymm reads of an executor through it.
#pragma once

#include <lazymm/detail/protocol.hpp>

#include <atomic>

namespace lazymm::detail {

class domain_base;

// What other code needs of an executor: found through the per-thread list, to catch double
// attach, to refuse final drops inside switch hooks, and to let a round skip the barrier for the
// calling thread's own executors. Default visibility: one list per thread for the whole process,
// even when shared objects are built with -fvisibility=hidden (tests/dso/).
struct __attribute__((visibility("default"))) executor_link {
  domain_base* dom = nullptr;
  executor_record* rec = nullptr;
  bool in_hooks = false;  // owner-only: inside on_activate / on_deactivate / on_stolen
  // Inside the protocol part of a real switch (switch_slot, (1) to (5)): the record's seq is
  // odd. Asked on the owner's thread only (a hook, or a signal handler that interrupted the
  // switch). Relaxed: the thread's own store.
  bool in_switch() const noexcept { return rec->seq.load(std::memory_order_relaxed) & 1u; }
  // executor::poll_stolen() of this executor: a domain waiting for thread-bound undos runs it for
  // the calling thread's own executors (their holder is this very thread).
  bool (*poll)(executor_link*) noexcept = nullptr;
  // A library-managed executor whose domain was destroyed while its thread lived: it stays on
  // the thread's list (only the thread may unlink it) until the thread exits, and every walk
  // skips it. Written once, by ~domain, under the process lock. Relaxed: a walk that could
  // meet a later domain or record at the same address happens after that ~domain (whatever
  // handed the new domain to this thread, and the allocator's ordering of a free before the
  // reuse of the memory), so coherence makes it read true; a walk concurrent with ~domain is a
  // use of the domain during its destruction (precondition).
  std::atomic<bool> orphaned{false};
  executor_link* next_on_thread = nullptr;
  inline static thread_local executor_link* this_thread = nullptr;

  bool live() const noexcept { return !orphaned.load(std::memory_order_relaxed); }
  // Unlinks l from the calling thread's list (it must be there).
  static void unlink(executor_link* l) noexcept {
    for (executor_link** p = &this_thread; *p; p = &(*p)->next_on_thread)
      if (*p == l) {
        *p = l->next_on_thread;
        return;
      }
  }
  // The calling thread's executor of domain d, or null.
  static executor_link* find(const domain_base* d) noexcept {
    for (auto* l = this_thread; l; l = l->next_on_thread)
      if (l->dom == d && l->live()) return l;
    return nullptr;
  }
};

}  // namespace lazymm::detail
