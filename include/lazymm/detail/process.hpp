// lazymm/detail/process.hpp: process-wide bookkeeping for threads lazymm does not own: the
// library-managed executors (domain::thread_executor(): attached on first use, detached at thread
// exit), the list of live domains, and fork() (pthread_atfork). None of it is on a hot path: it
// runs at a managed attach, at thread exit, at ~domain and at fork. Not in the GenMC build (which
// has no thread exit or fork to model).
#pragma once

#include <lazymm/config.hpp>

#if !LAZYMM_GENMC
#include <chrono>
#include <cstddef>
#include <mutex>
#include <new>
#include <thread>
#include <type_traits>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#endif

namespace lazymm::detail {

class domain_base;
struct executor_link;

#if !LAZYMM_GENMC

// One library-managed executor: on its thread's exit list and on its domain's list. The executor
// itself lives in the derived managed_executor<E>. No pointer into the code of whoever called
// thread_executor() (a plugin may be dlclose()d before the thread exits): the detach goes through
// the domain (its vtable, alive as long as the domain is), the memory is raw (::operator new),
// freed here.
struct managed_entry {
  executor_link* link = nullptr;
  domain_base* dom = nullptr;  // null once ~domain detached it (the thread still has to free it)
  std::size_t align = 0;       // of the allocation (::operator new with this alignment)
  managed_entry* next_on_thread = nullptr;
  managed_entry* prev_in_domain = nullptr;
  managed_entry* next_in_domain = nullptr;

  // Frees the memory of an entry whose executor is destroyed (or was never constructed).
  static void free(managed_entry* e) noexcept {
    const std::size_t a = e->align;
    e->~managed_entry();
    ::operator delete(static_cast<void*>(e), std::align_val_t{a});
  }
};

template <class Executor>
struct managed_executor final : managed_entry {
  alignas(Executor) unsigned char storage[sizeof(Executor)];
  Executor* get() noexcept { return std::launder(reinterpret_cast<Executor*>(storage)); }
  // Raw memory for one, freed by managed_entry::free. May throw std::bad_alloc.
  static managed_executor* allocate() {
    void* p = ::operator new(sizeof(managed_executor), std::align_val_t{alignof(managed_executor)});
    auto* m = ::new (p) managed_executor;
    m->align = alignof(managed_executor);
    return m;
  }
};
static_assert(std::is_trivially_destructible_v<managed_entry>);

// Everything process-wide, under one lock. Default visibility: one instance per process even
// with -fvisibility=hidden shared objects (as executor_link::this_thread).
struct __attribute__((visibility("default"))) process {
  // The lock is recursive per thread (a hook run under it may destroy another domain or attach a
  // managed executor), and a plain std::mutex underneath so that the fork child, whose only thread
  // is the one that took it in the prepare handler, can release it.
  inline static std::mutex m;
  inline static thread_local unsigned depth = 0;
  inline static domain_base* domains = nullptr;  // live domains (domain_base::next_live_)
  inline static bool atfork_registered = false;
  // This thread's managed executors were detached at its exit (~thread_exit_list ran): a later
  // thread_executor() on it (a thread_local destructor that runs after) would never be detached.
  // A plain bool with no destructor: valid until the thread is gone.
  inline static thread_local bool exit_detached = false;
  // The domain whose managed executor this thread is detaching at its exit, outside the lock
  // (~domain waits for such detaches; a fork child counts only its own thread's).
  inline static thread_local const domain_base* exiting_domain = nullptr;
  // Forks this process's ancestors made, counted in each child (lazymm::reclaimer compares it).
  inline static unsigned long forks = 0;

  static void lock() noexcept {
    if (depth++ == 0) m.lock();
  }
  static void unlock() noexcept {
    if (--depth == 0) m.unlock();
  }
  struct guard {
    guard() noexcept { lock(); }
    ~guard() { unlock(); }
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
  };

  // The calling thread's managed executors; the holder is a thread_local constructed at the first
  // managed attach of the thread, so its destructor (the detach of every managed executor of the
  // thread) runs after the destructors of thread_locals constructed later, and before those
  // constructed earlier.
  struct thread_exit_list {
    managed_entry* head = nullptr;
    ~thread_exit_list();
  };
  static thread_exit_list& this_thread_list() {
    thread_local thread_exit_list l;
    return l;
  }

  // Names this copy of lazymm's process-wide state: the address of one of its variables. Two
  // copies exist when an executable linked without -rdynamic dlopen()s a library that uses lazymm
  // (the library cannot bind to the executable's inline variables, so it defines its own executor
  // lists, process lock and so on): then one thread could attach twice to a domain, and the
  // process lock would not exclude anything across the two. A domain remembers the copy that
  // created it; attach(), thread_executor() and find_thread_executor() compare it with their own
  // (the copy of the code that runs them) and abort on a mismatch (domain.hpp).
  static const void* copy_id() noexcept { return &domains; }

  static void add_domain(domain_base* d) noexcept;
  static void remove_domain(domain_base* d) noexcept;
  static void atfork_prepare() noexcept;
  static void atfork_parent() noexcept;
  static void atfork_child() noexcept;
};

#endif  // !LAZYMM_GENMC

}  // namespace lazymm::detail
