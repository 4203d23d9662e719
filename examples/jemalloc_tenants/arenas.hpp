// examples/jemalloc_tenants/arenas.hpp: the jemalloc side of jemalloc_tenants, with nothing of
// lazymm in it. One jemalloc arena per tenant (`arenas.create` with our extent hooks), bound to a
// thread with `thread.arena`, unbound with `thread.tcache.flush` + `thread.arena` = 0, destroyed
// with `arena.<i>.destroy`. The extent hooks map memory with mmap and, when the arena is destroyed,
// turn every page of it into PROT_NONE and keep it so (a bounded quarantine), as jemalloc's own
// test_arena_destroy_hooks_unmap unmaps it: any later access faults, and the SIGSEGV handler names
// the destroyed arena (index and generation) before the process exits with status 3.
//
// Sanitizer builds: ASan and TSan replace malloc/new, so a plain malloc there never reaches
// jemalloc. The tasks then allocate with mallocx(size, 0)/dallocx(p, 0): the same jemalloc path as
// malloc (the thread's bound arena, its tcache), just by name; the runtime's own allocations go to
// the sanitizer's malloc. Without a sanitizer, tasks use plain malloc and new (jemalloc replaces
// both when it is linked), and the runtime's own long-lived allocations go to arena 0 around the
// tcache (runtime_alloc): see docs/integration.md, "Thread-bound state".
#pragma once

#include <jemalloc/jemalloc.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define JT_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define JT_SANITIZER 1
#endif
#endif
#ifndef JT_SANITIZER
#define JT_SANITIZER 0
#endif

namespace arenas {

constexpr unsigned max_arenas = 4096;  // MALLOCX_ARENA's limit; jemalloc recycles destroyed indices
constexpr unsigned no_arena = ~0u;

// ---- the books ---------------------------------------------------------------------------------
struct books {
  std::atomic<std::uint64_t> created{0}, destroyed{0}, destroy_efault{0}, destroy_other{0};
  std::atomic<std::uint64_t> bind_failures{0}, stale_binds{0}, mapped{0}, unmapped{0}, quarantined{0};
};
inline books the_books;

// Per arena index: the generation of the arena now at that index (incremented by every
// arenas.create that returns it) and whether it is alive.
struct slot {
  std::atomic<std::uint64_t> generation{0};
  std::atomic<bool> live{false};
  std::atomic<bool> retired{false};  // the service let go of its tenant; memory not yet destroyed
};
inline slot slots[max_arenas];

// ---- the quarantine of destroyed memory --------------------------------------------------------
// A ring of PROT_NONE ranges (no physical memory: re-mapped with MAP_FIXED|MAP_NORESERVE). The
// oldest are unmapped when the ring is full; the fields are atomics because the SIGSEGV handler
// reads them.
struct grave {
  std::atomic<std::uintptr_t> begin{0}, end{0};
  std::atomic<unsigned> arena{0};
  std::atomic<std::uint64_t> generation{0};
};
constexpr unsigned graves = 8192;
inline grave graveyard[graves];
inline unsigned next_grave = 0;  // under graveyard_mutex
inline std::mutex graveyard_mutex;

inline thread_local unsigned destroying = no_arena;  // set around arena.<i>.destroy on this thread

inline void bury(void* addr, std::size_t size, unsigned ind) noexcept {
  void* p = mmap(addr, size, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p != addr) std::abort();
  std::lock_guard lock(graveyard_mutex);
  grave& g = graveyard[next_grave++ % graves];
  if (const std::uintptr_t b = g.begin.load(std::memory_order_relaxed)) {
    g.begin.store(0, std::memory_order_relaxed);
    munmap(reinterpret_cast<void*>(b), g.end.load(std::memory_order_relaxed) - b);
  }
  g.arena.store(ind, std::memory_order_relaxed);
  g.generation.store(slots[ind].generation.load(std::memory_order_relaxed), std::memory_order_relaxed);
  g.end.store(reinterpret_cast<std::uintptr_t>(addr) + size, std::memory_order_relaxed);
  g.begin.store(reinterpret_cast<std::uintptr_t>(addr), std::memory_order_relaxed);
  the_books.quarantined.fetch_add(size, std::memory_order_relaxed);
}

// The grave holding address a, or nullptr.
inline const grave* grave_of(std::uintptr_t a) noexcept {
  for (const grave& g : graveyard) {
    const std::uintptr_t b = g.begin.load(std::memory_order_relaxed);
    if (b != 0 && a >= b && a < g.end.load(std::memory_order_relaxed)) return &g;
  }
  return nullptr;
}

[[noreturn]] inline void report_destroyed(const void* p, const grave& g, const char* how) noexcept {
  char msg[240];
  const int n = std::snprintf(msg, sizeof msg,
                              "CHECK FAILED: access to destroyed arena memory (%s): address %p in arena %u "
                              "(generation %llu), destroyed\n",
                              how, p, g.arena.load(std::memory_order_relaxed),
                              static_cast<unsigned long long>(g.generation.load(std::memory_order_relaxed)));
  if (n > 0) (void)!write(2, msg, static_cast<std::size_t>(n));
  _exit(3);
}

// Before handing a pointer the runtime kept back to jemalloc (free would dereference jemalloc's
// metadata of the destroyed extent, which is gone: a NULL dereference, not a fault we can name).
inline void check_not_destroyed(const void* p) noexcept {
  if (const grave* g = grave_of(reinterpret_cast<std::uintptr_t>(p))) report_destroyed(p, *g, "free");
}

// SIGSEGV: an access to a destroyed arena's memory is reported as such; any other fault is
// re-raised with the default action.
inline void on_segv(int sig, siginfo_t* info, void*) {
  if (const grave* g = grave_of(reinterpret_cast<std::uintptr_t>(info->si_addr)))
    report_destroyed(info->si_addr, *g, "fault");
  signal(sig, SIG_DFL);  // not ours: fault again, with the default action
}

inline void install_fault_handler() {
  struct sigaction sa {};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

// ---- extent hooks ------------------------------------------------------------------------------
inline void* hook_alloc(extent_hooks_t*, void* new_addr, std::size_t size, std::size_t alignment, bool* zero,
                        bool* commit, unsigned) {
  if (new_addr != nullptr) return nullptr;  // no growth in place: jemalloc maps elsewhere
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  if (alignment < page) alignment = page;
  const std::size_t len = size + alignment - page;
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  const auto b = reinterpret_cast<std::uintptr_t>(m);
  const std::uintptr_t a = (b + alignment - 1) & ~(alignment - 1);
  if (a > b) munmap(m, a - b);
  if (a + size < b + len) munmap(reinterpret_cast<void*>(a + size), b + len - (a + size));
  *zero = true;
  *commit = true;
  the_books.mapped.fetch_add(size, std::memory_order_relaxed);
  return reinterpret_cast<void*>(a);
}
// dalloc: while the arena lives, refuse (return true), as jemalloc's own hooks do with opt.retain
// on Linux: jemalloc keeps the range as retained and returns its pages with the purge hooks (our
// madvise). (Unmapping here broke jemalloc 5.3.0 after extent splits: a NULL dereference inside
// malloc.) While the arena is being destroyed on this thread, every range goes to the quarantine.
inline bool hook_dalloc(extent_hooks_t*, void* addr, std::size_t size, bool, unsigned ind) {
  if (destroying != ind) return true;
  the_books.unmapped.fetch_add(size, std::memory_order_relaxed);
  bury(addr, size, ind);
  return false;
}
inline void hook_destroy(extent_hooks_t* h, void* addr, std::size_t size, bool committed, unsigned ind) {
  hook_dalloc(h, addr, size, committed, ind);
}
inline bool hook_commit(extent_hooks_t*, void*, std::size_t, std::size_t, std::size_t, unsigned) { return false; }
inline bool hook_decommit(extent_hooks_t*, void*, std::size_t, std::size_t, std::size_t, unsigned) { return true; }
inline bool hook_purge_lazy(extent_hooks_t*, void* addr, std::size_t, std::size_t off, std::size_t len, unsigned) {
  return madvise(static_cast<char*>(addr) + off, len, MADV_FREE) != 0;
}
inline bool hook_purge_forced(extent_hooks_t*, void* addr, std::size_t, std::size_t off, std::size_t len, unsigned) {
  return madvise(static_cast<char*>(addr) + off, len, MADV_DONTNEED) != 0;
}
inline bool hook_split(extent_hooks_t*, void*, std::size_t, std::size_t, std::size_t, bool, unsigned) { return false; }
inline bool hook_merge(extent_hooks_t*, void*, std::size_t, void*, std::size_t, bool, unsigned) { return false; }

inline extent_hooks_t hooks = {hook_alloc,      hook_dalloc,       hook_destroy, hook_commit, hook_decommit,
                               hook_purge_lazy, hook_purge_forced, hook_split,   hook_merge};

// ---- mallctl by MIB ----------------------------------------------------------------------------
struct mib {
  std::size_t v[4];
  std::size_t n = 4;
  explicit mib(const char* name) {
    if (mallctlnametomib(name, v, &n) != 0) {
      std::fprintf(stderr, "jemalloc_tenants: mallctlnametomib(%s) failed\n", name);
      std::abort();
    }
  }
};
inline const mib& mib_thread_arena() { static const mib m("thread.arena"); return m; }
inline const mib& mib_flush() { static const mib m("thread.tcache.flush"); return m; }
inline const mib& mib_destroy() { static const mib m("arena.0.destroy"); return m; }

inline unsigned bound_arena() noexcept {
  unsigned ind = no_arena;
  std::size_t sz = sizeof ind;
  const mib& m = mib_thread_arena();
  if (mallctlbymib(m.v, m.n, &ind, &sz, nullptr, 0) != 0) return no_arena;
  return ind;
}
inline bool bind(unsigned ind) noexcept {
  const mib& m = mib_thread_arena();
  return mallctlbymib(m.v, m.n, nullptr, nullptr, &ind, sizeof ind) == 0;
}
inline void flush_tcache() noexcept {
  const mib& m = mib_flush();
  (void)mallctlbymib(m.v, m.n, nullptr, nullptr, nullptr, 0);  // EFAULT only without a tcache
}
// The holder-side undo: what the thread's tcache holds goes back to its arenas, and the thread is
// bound to arena 0 again (it no longer counts in the tenant arena's nthreads: destroy needs 0).
inline void unbind() noexcept {
  flush_tcache();
  if (!bind(0)) the_books.bind_failures.fetch_add(1, std::memory_order_relaxed);
}

inline unsigned arena_of(const void* p) noexcept {
  unsigned ind = no_arena;
  std::size_t sz = sizeof ind;
  if (mallctl("arenas.lookup", &ind, &sz, const_cast<void**>(&p), sizeof p) != 0) return no_arena;
  return ind;
}

// A thread's own setup, before it first binds a tenant arena: whatever it allocates with plain
// malloc/new (a runtime's per-thread state, such as lazymm's library-managed executor from
// domain::thread_executor(), and glibc's record of a thread_local destructor, which
// __cxa_thread_atexit_impl callocs) goes through the tcache, and jemalloc fills a tcache bin in
// batches: besides the object the setup keeps, the rest of the batch stays cached, and the first
// tenant bound on the thread would hand those regions of another arena to its tasks until the
// first undo flushes them. So the setup runs on arena 0 (what it keeps is runtime memory, freed by
// this thread at its exit) and the tcache is flushed after it. Returns what f returns.
template <class F>
decltype(auto) thread_setup(F&& f) {
  struct flush_after {
    ~flush_after() { flush_tcache(); }
  };
  if (!bind(0)) the_books.bind_failures.fetch_add(1, std::memory_order_relaxed);
  const flush_after flush;
  return f();
}

// ---- allocation --------------------------------------------------------------------------------
// A task's allocations: plain malloc/free (jemalloc) without a sanitizer, the same jemalloc path
// by name under one.
inline void* task_alloc(std::size_t n) noexcept { return JT_SANITIZER ? mallocx(n, 0) : std::malloc(n); }
inline void task_free(void* p) noexcept {
  if (JT_SANITIZER)
    dallocx(p, 0);
  else
    std::free(p);
}

// The runtime's own memory (handlers, queues, tenant objects: anything that may outlive the
// tenant whose arena the thread has bound, lazily or not): arena 0, never a tenant's, and around
// the tcache both ways, so it never enters a tcache that a tenant's task allocates from.
inline void* runtime_alloc(std::size_t n) {
  if (JT_SANITIZER) return std::malloc(n);
  void* p = mallocx(n, MALLOCX_ARENA(0) | MALLOCX_TCACHE_NONE);
  if (!p) throw std::bad_alloc();
  return p;
}
inline void runtime_free(void* p) noexcept {
  if (JT_SANITIZER)
    std::free(p);
  else if (p)
    dallocx(p, MALLOCX_TCACHE_NONE);
}
template <class T>
struct runtime_allocator {
  using value_type = T;
  runtime_allocator() = default;
  template <class U>
  runtime_allocator(const runtime_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(runtime_alloc(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) noexcept { runtime_free(p); }
  template <class U>
  bool operator==(const runtime_allocator<U>&) const noexcept { return true; }
};
// Objects the runtime owns derive from this: they live in arena 0 too.
struct runtime_object {
  static void* operator new(std::size_t n) { return runtime_alloc(n); }
  static void operator delete(void* p) noexcept { runtime_free(p); }
};

// ---- one tenant's arena ------------------------------------------------------------------------
using clock = std::chrono::steady_clock;

class arena : public runtime_object {
 public:
  arena() {
    extent_hooks_t* h = &hooks;
    std::size_t sz = sizeof ind_;
    if (mallctl("arenas.create", &ind_, &sz, &h, sizeof h) != 0 || ind_ >= max_arenas) {
      std::fprintf(stderr, "jemalloc_tenants: arenas.create failed\n");
      std::abort();
    }
    generation_ = slots[ind_].generation.fetch_add(1, std::memory_order_relaxed) + 1;
    slots[ind_].retired.store(false, std::memory_order_relaxed);
    slots[ind_].live.store(true, std::memory_order_relaxed);
    the_books.created.fetch_add(1, std::memory_order_relaxed);
  }
  arena(const arena&) = delete;
  arena& operator=(const arena&) = delete;

  unsigned index() const noexcept { return ind_; }
  std::uint64_t generation() const noexcept { return generation_; }

  // Binds the calling thread to this arena; a stale index (destroyed, recycled) is refused.
  void bind_here() const noexcept {
    if (!slots[ind_].live.load(std::memory_order_relaxed) ||
        slots[ind_].generation.load(std::memory_order_relaxed) != generation_) {
      the_books.stale_binds.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (!bind(ind_)) the_books.bind_failures.fetch_add(1, std::memory_order_relaxed);
  }

  // The service lets go of the tenant now (for the teardown latency and the memory held).
  void mark_retired() noexcept {
    retired_at_ = clock::now().time_since_epoch().count();
    slots[ind_].retired.store(true, std::memory_order_relaxed);
  }

  // arena.<i>.destroy: must return 0 (EFAULT: a thread is still bound to it). Returns the latency
  // from mark_retired() to the destroy's return in ns, or -1 if it was not marked.
  std::int64_t destroy() noexcept {
    std::size_t m[4];
    std::memcpy(m, mib_destroy().v, sizeof m);
    m[1] = ind_;
    slots[ind_].live.store(false, std::memory_order_relaxed);
    destroying = ind_;
    const int rc = mallctlbymib(m, mib_destroy().n, nullptr, nullptr, nullptr, 0);
    destroying = no_arena;
    if (rc == 0) {
      slots[ind_].retired.store(false, std::memory_order_relaxed);
      the_books.destroyed.fetch_add(1, std::memory_order_relaxed);
    } else {
      (rc == EFAULT ? the_books.destroy_efault : the_books.destroy_other).fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "CHECK FAILED: arena.%u.destroy returned %s\n", ind_, rc == EFAULT ? "EFAULT" : "an error");
    }
    if (retired_at_ == 0) return -1;
    return clock::now().time_since_epoch().count() - retired_at_;
  }

 private:
  unsigned ind_ = 0;
  std::uint64_t generation_ = 0;
  clock::rep retired_at_ = 0;
};

// Resident bytes of arenas whose tenant was retired but which are not destroyed yet (jemalloc's
// stats.arenas.<i>.resident, refreshed by `epoch`).
inline std::uint64_t retired_resident() noexcept {
  std::uint64_t e = 1;
  std::size_t sz = sizeof e;
  mallctl("epoch", &e, &sz, &e, sz);
  std::uint64_t total = 0;
  for (unsigned i = 0; i < max_arenas; ++i) {
    if (!slots[i].retired.load(std::memory_order_relaxed)) continue;
    char name[64];
    std::snprintf(name, sizeof name, "stats.arenas.%u.resident", i);
    std::size_t v = 0, vs = sizeof v;
    if (mallctl(name, &v, &vs, nullptr, 0) == 0) total += v;
  }
  return total;
}

}  // namespace arenas
