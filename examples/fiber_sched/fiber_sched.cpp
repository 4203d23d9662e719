// fiber_sched: an M:N fiber scheduler on lazymm, under each of its three policies.
//
// N scheduler threads are executors (CPUs). Fibers (ucontext, no dependency) belong to
// processes; a process is a lazymm context (an mm) with its own memory, which its fibers write.
// Each scheduler runs its fibers, switching its executor to the fiber's process first; between
// fibers it runs context-free work, as the kernel runs kernel threads: an I/O-poller fiber that
// wakes blocked fibers, and the idle loop. Both go lazy: the last process stays loaded.
//
// Fibers are pinned: a fiber always runs on the scheduler thread it was created for, so it never
// migrates while inside switch_to (or anywhere else). A process's fibers are dealt round-robin
// over the schedulers, so a process runs on several executors at once, and each of those keeps
// it loaded lazily after its fibers there have exited.
//
// A process's first fiber is its main thread: it joins the others, then exits the process by
// dropping the threads' owning reference from inside the fiber, on its scheduler thread, while
// that executor still has the process loaded and the executors that ran its other fibers hold it
// lazily: the kernel's exit_mm. Two kinds of process:
//   private  nothing else references it: the drop in the fiber is the final one, made with the
//            process *active* on the executor (lazymm turns that into a lazy hold under refcount
//            and steals it under the shootdown policies).
//   visible  the control thread keeps a structural reference to it (a /proc entry) and now and
//            then upgrades it to peek; a third of them are also "ptraced" (the control thread
//            holds an owning reference until it sees the threads gone). The main fiber goes lazy
//            first, then drops (exit_mm's order), and the final drop may happen on the control
//            thread, which never ran the process.
//
// Usage: fiber_sched [--schedulers N] [--live N] [--procs N] [--duration S]
//                    [--policy refcount|explicit|implicit|all] [--seed N]
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "../common/report.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <lazymm/lazymm.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// Fiber switches need telling to the sanitizers: ASan tracks the current stack, TSan the
// current thread of execution.
#if defined(__SANITIZE_ADDRESS__)
#define FS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FS_ASAN 1
#endif
#endif
#ifndef FS_ASAN
#define FS_ASAN 0
#endif
#if FS_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if LAZYMM_TSAN  // lazymm/config.hpp: __SANITIZE_THREAD__ or __has_feature(thread_sanitizer)
#include <sanitizer/tsan_interface.h>
#endif

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// --policy, --seed, and --duration: seconds of spawning per policy, at most (0.5).
struct options : examples::run_options {
  options() noexcept : run_options{0.5} {}
  unsigned schedulers = 0;           // 0: hardware threads, clamped to [2, 4]
  unsigned live = 16;                // processes alive at once
  std::uint64_t procs = 10'000'000;  // processes spawned per policy, at most
};

constexpr const char* usage_text =
    "usage: fiber_sched [--schedulers N] [--live N] [--procs N] [--duration SECONDS]\n"
    "                   [--policy refcount|explicit|implicit|all] [--seed N]\n"
    "Runs an M:N fiber scheduler whose processes are lazymm contexts, under each policy:\n"
    "--live processes at a time, until --procs were spawned or --duration seconds pass.\n";

constexpr unsigned kMaxFibersPerProcess = 8;

// Where a process's final owning reference was dropped (set by the dropper, read by the
// teardown hook on the same thread).
enum drop_site : unsigned { site_none, site_fiber_active, site_fiber_lazy, site_other_thread, site_count };
thread_local drop_site tl_drop_site = site_none;

// What the hooks and checks count in one run (examples/common/report.hpp), and where each process
// exited. Relaxed: statistics, read by the control thread after it has joined the schedulers (the
// joins order them).
struct run_counters : examples::books {
  run_counters() noexcept : books("fiber_sched") {}
  std::atomic<std::uint64_t> exits[site_count]{};
};

class process;
// The process this scheduler thread has loaded (CR3): set by on_activate, cleared by
// on_deactivate, nothing else. A fiber checks it every time it runs.
thread_local const process* tl_loaded = nullptr;

class process final : public lazymm::context {
 public:
  process(std::uint32_t pid, bool visible, run_counters& c)
      : pid_(pid), visible_(visible), mem_(new std::uint64_t[kMaxFibersPerProcess]()), counters_(c) {}

  // ---- lazymm hooks ----
  void on_activate(lazymm::executor_id) noexcept { tl_loaded = this; }
  // May run after on_teardown (a lazy holder switching away under explicit_shootdown or
  // refcount): touches only the thread_local, never the memory.
  void on_deactivate(lazymm::executor_id) noexcept { tl_loaded = nullptr; }
  // The last owner is gone: every fiber's writes happen before this (through the release
  // decrements of the thread count and the owning count's acq_rel chain). Check them, free them.
  void on_teardown() noexcept {
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < kMaxFibersPerProcess; ++i) sum += mem_[i];
    const std::uint64_t planned = planned_.load(std::memory_order_relaxed);  // relaxed: as above
    if (sum != planned)
      check_failed(counters_, "process %u: its fibers made %llu steps, %llu planned", pid_,
                   static_cast<unsigned long long>(sum), static_cast<unsigned long long>(planned));
    mem_.reset();
    if (tl_drop_site == site_none) check_failed(counters_, "process %u torn down from an unexpected place", pid_);
    // relaxed: statistics (see run_counters).
    counters_.exits[tl_drop_site].fetch_add(1, std::memory_order_relaxed);
    counters_.torn_down.fetch_add(1, std::memory_order_relaxed);
  }
  // relaxed: a statistic (see run_counters).
  void on_evict(lazymm::executor_id) noexcept { counters_.evicted.fetch_add(1, std::memory_order_relaxed); }
  static void on_free(process* p) noexcept {
    run_counters& c = p->counters_;
    delete p;
    c.freed.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }

  std::uint32_t pid() const noexcept { return pid_; }
  bool visible() const noexcept { return visible_; }
  // Only while an owner is alive; word i belongs to the fiber with ordinal i.
  std::uint64_t* memory() noexcept { return mem_.get(); }
  // relaxed: made before the fiber that will take these steps is published (a mutex or the
  // thread count orders it), and ordered before on_teardown as every fiber write is.
  void plan(unsigned steps) noexcept { planned_.fetch_add(steps, std::memory_order_relaxed); }
  // A remote reader's peek (/proc/<pid>/status): relaxed, only a number to look at.
  std::uint64_t planned() const noexcept { return planned_.load(std::memory_order_relaxed); }

  // Set by the main fiber just before it drops the threads' reference. release: pairs with the
  // ptracer's acquire load.
  std::atomic<bool> threads_exited{false};

 private:
  const std::uint32_t pid_;
  const bool visible_;
  std::unique_ptr<std::uint64_t[]> mem_;
  run_counters& counters_;
  std::atomic<std::uint64_t> planned_{0};
};

// The process's threads, together: they share one owning reference (the kernel counts one
// mm_users per thread; one shared count is the same thing, cheaper), dropped by the main fiber.
struct thread_group {
  lazymm::owning_ref<process> ref;
  std::atomic<int> alive{0};              // fibers not yet exited or (main) not yet joining
  std::atomic<unsigned> next_ordinal{0};  // fiber ordinals, for the process memory
  void* main = nullptr;                   // the main fiber, woken by the last thread to exit
};

// A fiber's stack: an anonymous mapping with a guard page below it.
struct stack_mapping {
#if FS_ASAN || LAZYMM_TSAN
  static constexpr std::size_t usable = std::size_t{256} * 1024;
#else
  static constexpr std::size_t usable = std::size_t{64} * 1024;
#endif
  std::byte* map = nullptr;
  std::byte* lo = nullptr;  // lowest usable byte
  static std::size_t page() noexcept {
    return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  }

  void allocate() {
    const std::size_t total = usable + page();
    void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    map = static_cast<std::byte*>(p);
    ::mprotect(map, page(), PROT_NONE);  // guard
    lo = map + page();
  }
  void release() noexcept {
#if FS_ASAN
    __asan_unpoison_memory_region(lo, usable);  // the dead fiber's frames leave poison behind
#endif
    ::munmap(map, usable + page());
    map = lo = nullptr;
  }
};

enum class fiber_state : std::uint8_t { runnable, blocked, parked, done };

// One policy's run, for the report.
struct sched_result {
  const char* policy = "";
  std::uint64_t procs = 0, fibers = 0, runs = 0, switches = 0, lazy_hits = 0, same_process = 0, polls = 0, idle = 0;
  std::uint64_t torn_down = 0, freed = 0, evicted = 0, failures = 0;
  std::uint64_t exits[site_count]{};
  lazymm::domain_stats dom{};
  double seconds = 0;
  bool ok = false;
};

template <class Policy>
class fiber_system {
 public:
  using domain_type = lazymm::domain<Policy, lazymm::default_backend>;
  using executor_type = typename domain_type::executor_type;

  using result = sched_result;

  explicit fiber_system(const options& o) : opts_(o), scheds_(o.schedulers) {
    for (unsigned i = 0; i < o.schedulers; ++i) {
      scheds_[i] = std::make_unique<scheduler>();
      scheds_[i]->index = i;
      scheds_[i]->sys = this;
    }
  }
  ~fiber_system() {
    for (fiber* f : spare_) release_shell(f);
  }
  fiber_system(const fiber_system&) = delete;
  fiber_system& operator=(const fiber_system&) = delete;

  result run();

 private:
  struct scheduler;

  struct fiber {
    ucontext_t uc{};
    stack_mapping stack;
    scheduler* home = nullptr;
    thread_group* group = nullptr;  // null: the scheduler's I/O poller (context-free)
    unsigned ordinal = 0;
    int steps_left = 0;
    bool is_main = false;
    fiber_state state = fiber_state::runnable;
    std::uint64_t wake_tick = 0;
    examples::rng64 rng{1};
#if FS_ASAN
    void* asan_fake = nullptr;
    const void* sched_bottom = nullptr;  // the scheduler's stack, learnt on every switch in
    std::size_t sched_size = 0;
#endif
#if LAZYMM_TSAN
    void* tsan = nullptr;
#endif
  };

  struct scheduler {
    unsigned index = 0;
    fiber_system* sys = nullptr;
    // Fibers posted by other threads (the spawner, fibers of other schedulers).
    std::mutex m;
    std::condition_variable cv;
    std::vector<fiber*> inbox;  // guarded by m
    bool sleeping = false;      // guarded by m
    // The scheduler thread's own state (its fibers run on the same thread).
    executor_type* ex = nullptr;
    ucontext_t uc{};
    std::deque<fiber*> runq;
    std::vector<fiber*> blocked;
    fiber* poller = nullptr;
    std::uint64_t tick = 0;
    bool quit = false;
#if LAZYMM_TSAN
    void* tsan = nullptr;
#endif
    std::uint64_t runs = 0, switches = 0, lazy_hits = 0, same_process = 0, polls = 0, idle = 0;
  };

  // ---- fiber mechanics ----
  fiber* take_shell();
  static void prepare_context(fiber& f);
  static void release_shell(fiber* f) noexcept;
  fiber* make_fiber(scheduler& home, thread_group* g, unsigned ordinal, int steps, bool is_main, std::uint64_t seed);
  static void entry(int lo, int hi);
  static void resume(scheduler& s, fiber& f);
  static void suspend(fiber& f, bool for_good);
  void destroy(fiber* f);
  void post(scheduler& s, fiber* f);

  // ---- what runs on fibers ----
  void fiber_main(fiber& f);
  void process_fiber(fiber& f);
  void poller_fiber(fiber& f);
  void step_check(const fiber& f, const process& p);
  void block(fiber& f, unsigned ticks);
  void yield(fiber& f);
  void clone(fiber& f);
  void exit_thread(fiber& f);
  void exit_process(fiber& f);

  // ---- threads ----
  void scheduler_main(scheduler& s);
  void idle(scheduler& s);
  void spawn_process(examples::rng64& rng);
  void service(examples::rng64& rng);

  const options& opts_;
  run_counters counters_;
  domain_type dom_;  // before anything that holds a context or an executor
  std::vector<std::unique_ptr<scheduler>> scheds_;
  alignas(64) std::atomic<std::int64_t> fibers_live_{0};  // process fibers not yet destroyed
  std::atomic<std::int64_t> procs_running_{0};            // spawned, main fiber not yet exited
  std::atomic<std::uint64_t> fibers_made_{0};
  std::atomic<bool> stop_{false};
  // Finished fibers' shells (stack, sanitizer state), reused: a fiber library pools its stacks,
  // and under TSan creating a fiber context is slow (milliseconds with GCC 12's runtime).
  static constexpr std::size_t max_spare = 256;
  std::mutex spare_m_;
  std::vector<fiber*> spare_;  // guarded by spare_m_
  // Control thread only.
  std::uint32_t next_pid_ = 1;
  std::vector<lazymm::structural_ref<process>> proc_table_;  // visible processes (/proc)
  std::vector<lazymm::owning_ref<process>> ptraced_;
};

// ---- fiber mechanics -------------------------------------------------------------------------

template <class Policy>
auto fiber_system<Policy>::make_fiber(scheduler& home, thread_group* g, unsigned ordinal, int steps, bool is_main,
                                      std::uint64_t seed) -> fiber* {
  fiber* f = take_shell();
  f->home = &home;
  f->group = g;
  f->ordinal = ordinal;
  f->steps_left = steps;
  f->is_main = is_main;
  f->state = fiber_state::runnable;
  f->wake_tick = 0;
  f->rng = examples::rng64{seed | 1};
#if FS_ASAN
  f->asan_fake = nullptr;
  f->sched_bottom = nullptr;
  f->sched_size = 0;
#endif
  prepare_context(*f);
  if (g != nullptr) {
    fibers_live_.fetch_add(1, std::memory_order_relaxed);  // relaxed: see destroy()
    fibers_made_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }
  return f;
}

template <class Policy>
void fiber_system<Policy>::entry(int lo, int hi) {
  const auto bits = static_cast<std::uintptr_t>(static_cast<unsigned>(lo)) |
                    (static_cast<std::uintptr_t>(static_cast<unsigned>(hi)) << 32);
  fiber& f = *reinterpret_cast<fiber*>(bits);  // NOLINT(performance-no-int-to-ptr): makecontext passes ints
#if FS_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &f.sched_bottom, &f.sched_size);
#endif
  f.home->sys->fiber_main(f);
  f.state = fiber_state::done;
  suspend(f, true);
  std::abort();  // a finished fiber is never resumed
}

// Scheduler thread -> fiber f, until f suspends.
template <class Policy>
void fiber_system<Policy>::resume(scheduler& s, fiber& f) {
#if FS_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack.lo, stack_mapping::usable);
#endif
#if LAZYMM_TSAN
  __tsan_switch_to_fiber(f.tsan, 0);
#endif
  ::swapcontext(&s.uc, &f.uc);
#if FS_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Fiber f -> its scheduler. for_good: f is done and its stack is about to be unmapped.
template <class Policy>
void fiber_system<Policy>::suspend(fiber& f, bool for_good) {
#if FS_ASAN
  __sanitizer_start_switch_fiber(for_good ? nullptr : &f.asan_fake, f.sched_bottom, f.sched_size);
#else
  (void)for_good;
#endif
#if LAZYMM_TSAN
  __tsan_switch_to_fiber(f.home->tsan, 0);
#endif
  ::swapcontext(&f.uc, &f.home->uc);
#if FS_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake, &f.sched_bottom, &f.sched_size);
#endif
}

// A fresh ucontext that starts in entry(f). Not inlined: getcontext() returns twice (as setjmp
// does), so it gets a frame of its own with nothing else live across it.
template <class Policy>
[[gnu::noinline]] void fiber_system<Policy>::prepare_context(fiber& f) {
  if (::getcontext(&f.uc) != 0) std::abort();
  f.uc.uc_stack.ss_sp = f.stack.lo;
  f.uc.uc_stack.ss_size = stack_mapping::usable;
  f.uc.uc_link = nullptr;  // a fiber never returns from entry(): it switches away for good
  const auto bits = reinterpret_cast<std::uintptr_t>(&f);
  ::makecontext(&f.uc, reinterpret_cast<void (*)()>(&entry), 2, static_cast<int>(bits & 0xffffffffu),
                static_cast<int>(bits >> 32));
}

// A spare shell, or a new one.
template <class Policy>
auto fiber_system<Policy>::take_shell() -> fiber* {
  {
    std::lock_guard lk(spare_m_);
    if (!spare_.empty()) {
      fiber* f = spare_.back();
      spare_.pop_back();
      return f;
    }
  }
  auto* f = new fiber;
  f->stack.allocate();
#if LAZYMM_TSAN
  f->tsan = __tsan_create_fiber(0);
#endif
  return f;
}

template <class Policy>
void fiber_system<Policy>::release_shell(fiber* f) noexcept {
#if LAZYMM_TSAN
  __tsan_destroy_fiber(f->tsan);
#endif
  f->stack.release();
  delete f;
}

// A finished fiber (never the one running): its shell goes back to the spares.
template <class Policy>
void fiber_system<Policy>::destroy(fiber* f) {
  const bool is_poller = f == f->home->poller;
#if FS_ASAN
  __asan_unpoison_memory_region(f->stack.lo, stack_mapping::usable);  // its dead frames' poison
#endif
  {
    std::lock_guard lk(spare_m_);
    if (spare_.size() < max_spare) {
      spare_.push_back(f);
      f = nullptr;
    }
  }
  if (f != nullptr) release_shell(f);
  // release: pairs with the control thread's acquire wait for zero.
  if (!is_poller) fibers_live_.fetch_sub(1, std::memory_order_release);
}

template <class Policy>
void fiber_system<Policy>::post(scheduler& s, fiber* f) {
  std::lock_guard lk(s.m);
  s.inbox.push_back(f);
  if (s.sleeping) s.cv.notify_one();
}

// ---- what runs on fibers ---------------------------------------------------------------------

template <class Policy>
void fiber_system<Policy>::fiber_main(fiber& f) {
  if (f.group == nullptr)
    poller_fiber(f);
  else
    process_fiber(f);
}

// Runs every time a process fiber gets the CPU: its own process must be the one loaded.
template <class Policy>
void fiber_system<Policy>::step_check(const fiber& f, const process& p) {
  if (tl_loaded != &p)
    check_failed(counters_, "fiber %u of process %u runs with %s loaded", f.ordinal, p.pid(),
                 tl_loaded ? "another process" : "no process");
}

template <class Policy>
void fiber_system<Policy>::block(fiber& f, unsigned ticks) {
  f.state = fiber_state::blocked;
  f.wake_tick = f.home->tick + ticks;
  suspend(f, false);
}

template <class Policy>
void fiber_system<Policy>::yield(fiber& f) {
  f.state = fiber_state::runnable;
  suspend(f, false);
}

// clone(CLONE_VM): a new fiber of the same process, on the next scheduler.
template <class Policy>
void fiber_system<Policy>::clone(fiber& f) {
  thread_group& g = *f.group;
  // relaxed: only fibers of this process take ordinals, and each takes a distinct one.
  const unsigned ord = g.next_ordinal.fetch_add(1, std::memory_order_relaxed);
  if (ord >= kMaxFibersPerProcess) return;
  const int steps = 2 + static_cast<int>(f.rng() % 6);
  g.ref->plan(static_cast<unsigned>(steps));
  // relaxed: we are alive and counted, so the count cannot reach zero before our own
  // decrement, which comes after this (and the new fiber is published by post()'s mutex).
  g.alive.fetch_add(1, std::memory_order_relaxed);
  scheduler& to = *scheds_[(f.home->index + 1) % scheds_.size()];
  post(to, make_fiber(to, &g, ord, steps, false, f.rng()));
}

template <class Policy>
void fiber_system<Policy>::process_fiber(fiber& f) {
  process& p = *f.group->ref;  // alive: the main fiber holds the reference until we are gone
  while (f.steps_left > 0) {
    step_check(f, p);
    --f.steps_left;
    p.memory()[f.ordinal] += 1;  // the process's memory: word `ordinal` is ours alone
    const std::uint64_t r = f.rng();
    if (r % 8 == 0) clone(f);
    if (r % 3 == 0)
      block(f, 1 + static_cast<unsigned>((r >> 8) % 3));  // an I/O request: the poller wakes us
    else
      yield(f);
  }
  if (!f.is_main) {
    exit_thread(f);
    return;
  }
  // The main thread joins the others, then exits the process. acq_rel: release, for a thread
  // that exits after us and so wakes us; acquire, pairs with the others' decrements (their
  // writes to the memory happen before the exit) when we are the last.
  if (f.group->alive.fetch_sub(1, std::memory_order_acq_rel) != 1) {
    // Others still run: park until the last of them posts us back (the post's mutex orders
    // their decrements, and so their writes, before we go on).
    f.state = fiber_state::parked;
    suspend(f, false);
    step_check(f, p);
  }
  exit_process(f);
}

template <class Policy>
void fiber_system<Policy>::exit_thread(fiber& f) {
  // exit_mm for a thread that is not the last: hold the process lazily *before* giving up our
  // share. Under refcount an executor still holding it active (uncounted) when the main fiber
  // makes the final drop elsewhere would be left pointing at a freed process.
  f.home->ex->go_lazy();
  thread_group* g = std::exchange(f.group, nullptr);
  auto* main = static_cast<fiber*>(g->main);  // read before the decrement: g may go right after it
  // acq_rel: release pairs with the main fiber's acquire decrement; acquire, when we are the
  // last, orders the main fiber's own decrement (it is parked, or about to park) before the post.
  if (g->alive.fetch_sub(1, std::memory_order_acq_rel) == 1) post(*main->home, main);
}

template <class Policy>
void fiber_system<Policy>::exit_process(fiber& f) {
  thread_group* g = std::exchange(f.group, nullptr);
  lazymm::owning_ref<process> ref = std::move(g->ref);
  delete g;
  ref->threads_exited.store(true, std::memory_order_release);  // pairs with the ptracer's acquire
  // relaxed: a throttle for the spawner only.
  procs_running_.fetch_sub(1, std::memory_order_relaxed);
  if (!ref->visible()) {
    // Nobody else can own a private process: this is the final drop, with the process still
    // loaded and active on this executor (the kernel's exit_mm followed by the last mmput).
    tl_drop_site = site_fiber_active;
    ref.reset();
  } else {
    // exit_mm's order: go lazy, then drop. A ptracer or a /proc reader may still own it: then
    // the final drop happens on the control thread.
    f.home->ex->go_lazy();
    tl_drop_site = site_fiber_lazy;
    ref.reset();
  }
  tl_drop_site = site_none;
}

// The I/O poller: context-free, like a kernel thread. It wakes the fibers whose I/O completed.
template <class Policy>
void fiber_system<Policy>::poller_fiber(fiber& f) {
  scheduler& s = *f.home;
  while (!s.quit) {
    ++s.tick;
    for (std::size_t i = 0; i < s.blocked.size();) {
      if (s.blocked[i]->wake_tick <= s.tick) {
        s.blocked[i]->state = fiber_state::runnable;
        s.runq.push_back(s.blocked[i]);
        s.blocked[i] = s.blocked.back();
        s.blocked.pop_back();
      } else {
        ++i;
      }
    }
    yield(f);
  }
}

// ---- threads ---------------------------------------------------------------------------------

template <class Policy>
void fiber_system<Policy>::idle(scheduler& s) {
  std::unique_lock lk(s.m);
  // acquire: pairs with the control thread's release store of stop_.
  if (!s.inbox.empty() || stop_.load(std::memory_order_acquire)) return;
  s.sleeping = true;
  s.cv.wait_for(lk, 1ms);
  s.sleeping = false;
}

template <class Policy>
void fiber_system<Policy>::scheduler_main(scheduler& s) {
  auto ex = dom_.attach();
  s.ex = &ex;
#if LAZYMM_TSAN
  s.tsan = __tsan_get_current_fiber();
#endif
  s.poller = make_fiber(s, nullptr, 0, 0, false, 1);
  std::vector<fiber*> arrived;
  for (std::uint64_t n = 0;; ++n) {
    {
      std::lock_guard lk(s.m);
      arrived.swap(s.inbox);
    }
    for (fiber* f : arrived) s.runq.push_back(f);
    arrived.clear();
    if (!s.blocked.empty() && (s.runq.empty() || n % 8 == 0)) {
      ex.go_lazy();  // the poller is context-free: the last process stays loaded, lazily
      ++s.polls;
      resume(s, *s.poller);
      continue;
    }
    if (s.runq.empty()) {
      if (stop_.load(std::memory_order_acquire)) break;  // acquire: pairs with run()'s release
      ex.go_lazy();                                      // idle: likewise
      ++s.idle;
      idle(s);
      continue;
    }
    fiber* f = s.runq.front();
    s.runq.pop_front();
    const lazymm::owning_ref<process>& proc = f->group->ref;
    if (ex.loaded() != proc.get())
      ++s.switches;
    else if (ex.is_lazy())
      ++s.lazy_hits;  // loaded lazily since an earlier fiber: switch_to does nothing
    else
      ++s.same_process;  // a fiber of the process that ran just before: no switch either
    ex.switch_to(proc);
    ++s.runs;
    resume(s, *f);
    switch (f->state) {
      case fiber_state::runnable:
        s.runq.push_back(f);
        break;
      case fiber_state::blocked:
        s.blocked.push_back(f);
        break;
      case fiber_state::parked:  // a main fiber joining its threads: the last one posts it back
        break;
      case fiber_state::done:
        destroy(f);
        break;
    }
  }
  // Let the poller leave through its final switch, then free it.
  s.quit = true;
  ex.go_lazy();
  resume(s, *s.poller);
  destroy(s.poller);
  s.poller = nullptr;
  s.ex = nullptr;
}  // ex detaches: its lazy hold is dropped first

template <class Policy>
void fiber_system<Policy>::spawn_process(examples::rng64& rng) {
  const std::uint64_t x = rng();
  const bool visible = x % 2 == 0;
  const bool ptraced = visible && (x >> 1) % 3 == 0;
  const std::uint32_t pid = next_pid_++;
  auto ref = dom_.template make<process>(pid, visible, counters_);
  counters_.created.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  procs_running_.fetch_add(1, std::memory_order_relaxed);     // relaxed: a throttle
  auto* g = new thread_group;
  const unsigned nf = 2 + static_cast<unsigned>((x >> 4) % 3);
  g->alive.store(static_cast<int>(nf), std::memory_order_relaxed);  // published by post()'s mutex
  g->next_ordinal.store(nf, std::memory_order_relaxed);             // likewise
  std::vector<fiber*> fs;
  for (unsigned j = 0; j < nf; ++j) {
    const int steps = 2 + static_cast<int>(rng() % 8);
    ref->plan(static_cast<unsigned>(steps));
    fs.push_back(make_fiber(*scheds_[(pid + j) % scheds_.size()], g, j, steps, j == 0, rng()));
  }
  if (visible) proc_table_.push_back(ref.structural());
  if (ptraced) ptraced_.push_back(ref);
  g->main = fs[0];
  g->ref = std::move(ref);
  for (fiber* f : fs) post(*f->home, f);
}

// The control thread's other work: detach from ptraced processes whose threads are gone, and
// peek at one /proc entry. Either drop may be a process's final one.
template <class Policy>
void fiber_system<Policy>::service(examples::rng64& rng) {
  tl_drop_site = site_other_thread;
  for (std::size_t i = 0; i < ptraced_.size();) {
    if (ptraced_[i]->threads_exited.load(std::memory_order_acquire)) {  // pairs: exit_process release
      ptraced_[i] = std::move(ptraced_.back());
      ptraced_.pop_back();  // detach
    } else {
      ++i;
    }
  }
  if (!proc_table_.empty()) {
    const std::size_t i = rng() % proc_table_.size();
    if (auto p = proc_table_[i].try_upgrade()) {  // get_task_mm(): mmget_not_zero
      if (p->planned() == 0) check_failed(counters_, "process %u has no planned steps", p->pid());
      p.reset();  // mmput: the last one if the process exited meanwhile
    } else {
      proc_table_[i] = std::move(proc_table_.back());
      proc_table_.pop_back();  // the entry goes (mmdrop): may be the free
    }
  }
}

template <class Policy>
auto fiber_system<Policy>::run() -> result {
  result r;
  r.policy = Policy::name;
  std::vector<std::thread> threads;
  for (auto& s : scheds_) threads.emplace_back([this, sp = s.get()] { scheduler_main(*sp); });
  examples::rng64 rng{opts_.seed * 0x9e3779b97f4a7c15ull | 1};
  const bool progress = opts_.duration > 2.0;
  const auto start = steady::now();
  const auto deadline =
      start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(opts_.duration));
  auto next_progress = start + 1s;
  std::uint64_t spawned = 0;
  for (;;) {
    const auto now = steady::now();
    if (now >= deadline || spawned >= opts_.procs) break;
    if (progress && now >= next_progress) {
      std::fprintf(stderr, "  %-18s %5.1f s  %9llu processes spawned\n", Policy::name,
                   std::chrono::duration<double>(now - start).count(), static_cast<unsigned long long>(spawned));
      next_progress += 1s;
    }
    bool spawned_any = false;
    // relaxed: a throttle only.
    while (spawned < opts_.procs && procs_running_.load(std::memory_order_relaxed) < opts_.live) {
      spawn_process(rng);
      ++spawned;
      spawned_any = true;
    }
    service(rng);
    if (!spawned_any) std::this_thread::sleep_for(20us);
  }
  // Wind down: every fiber finishes; then the control thread lets go of everything it holds.
  while (fibers_live_.load(std::memory_order_acquire) != 0) {  // pairs with destroy()'s release
    service(rng);
    std::this_thread::sleep_for(20us);
  }
  r.seconds = std::chrono::duration<double>(steady::now() - start).count();
  tl_drop_site = site_other_thread;
  ptraced_.clear();
  proc_table_.clear();
  tl_drop_site = site_none;
  stop_.store(true, std::memory_order_release);  // release: pairs with the schedulers' acquire
  for (auto& s : scheds_) {
    std::lock_guard lk(s->m);
    s->cv.notify_one();
  }
  for (auto& th : threads) th.join();

  for (auto& s : scheds_) {
    r.runs += s->runs;
    r.switches += s->switches;
    r.lazy_hits += s->lazy_hits;
    r.same_process += s->same_process;
    r.polls += s->polls;
    r.idle += s->idle;
    if (!s->runq.empty() || !s->blocked.empty() || !s->inbox.empty())
      check_failed(counters_, "scheduler %u stopped with fibers left", s->index);
  }
  constexpr auto rx = std::memory_order_relaxed;  // statistics, after the joins
  r.procs = counters_.created.load(rx);
  r.fibers = fibers_made_.load(rx);
  r.torn_down = counters_.torn_down.load(rx);
  r.freed = counters_.freed.load(rx);
  r.evicted = counters_.evicted.load(rx);
  for (unsigned i = 0; i < site_count; ++i) r.exits[i] = counters_.exits[i].load(rx);
  r.dom = dom_.stats();
  r.failures = examples::check_balance(counters_, dom_, "processes");
  r.ok = r.failures == 0;
  return r;
}

// ---- report and command line ----------------------------------------------------------------

void print_report(const std::vector<sched_result>& rs) {
  using ull = unsigned long long;
  std::printf("\nscheduling (per policy, same workload)\n");
  std::printf("%-19s %9s %9s %10s %9s %9s %9s %9s %8s\n", "policy", "processes", "fibers", "fiber runs", "switches",
              "lazy hits", "same proc", "poller", "idle");
  for (const sched_result& r : rs)
    std::printf("%-19s %9llu %9llu %10llu %9llu %9llu %9llu %9llu %8llu\n", r.policy, static_cast<ull>(r.procs),
                static_cast<ull>(r.fibers), static_cast<ull>(r.runs), static_cast<ull>(r.switches),
                static_cast<ull>(r.lazy_hits), static_cast<ull>(r.same_process), static_cast<ull>(r.polls),
                static_cast<ull>(r.idle));
  std::printf(
      "\nexits and reclamation (where the final drop happened: in the exiting fiber with the process\n"
      "active, in it after going lazy, or on the control thread, which never ran the process)\n");
  std::printf("%-19s %11s %9s %9s %7s %8s %7s %7s %5s %9s %8s\n", "policy", "fiber/active", "fiber/lazy", "elsewhere",
              "rounds", "barriers", "steals", "evicted", "waits", "torn down", "freed");
  for (const sched_result& r : rs)
    std::printf("%-19s %11llu %10llu %9llu %7llu %8llu %7llu %7llu %5llu %9llu %8llu\n", r.policy,
                static_cast<ull>(r.exits[site_fiber_active]), static_cast<ull>(r.exits[site_fiber_lazy]),
                static_cast<ull>(r.exits[site_other_thread]), static_cast<ull>(r.dom.rounds),
                static_cast<ull>(r.dom.heavy_barriers), static_cast<ull>(r.dom.steals), static_cast<ull>(r.evicted),
                static_cast<ull>(r.dom.waits), static_cast<ull>(r.torn_down), static_cast<ull>(r.freed));
  std::printf(
      "\nswitches: real switches between processes; lazy hits: the process was still loaded, lazily, since the\n"
      "poller or the idle loop ran; same proc: the previous fiber was of the same process. rounds, barriers,\n"
      "steals, waits: as in tenant_pool (a steal from the exiting fiber's own executor counts too).\n");
}

options parse(int argc, char** argv) {
  options o;
  examples::parse_options(argc, argv, usage_text, o,
                          {{"--schedulers", &o.schedulers, 64}, {"--live", &o.live, 100000}, {"--procs", &o.procs}});
  if (o.schedulers == 0) o.schedulers = std::clamp(std::thread::hardware_concurrency(), 2u, 4u);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  examples::print_header("; fibers: ucontext, pinned to their scheduler",
                         "lazymm fiber_sched: %u scheduler threads (executors), %u processes alive at a time, per "
                         "policy: up to %llu processes or %.2f s\n",
                         o.schedulers, o.live, static_cast<unsigned long long>(o.procs), o.duration);
  std::vector<sched_result> rs;
  using examples::chosen;
  if (chosen<lazymm::refcount>(o.policy)) rs.push_back(examples::run_fresh<fiber_system, lazymm::refcount>(o));
  if (chosen<lazymm::explicit_shootdown>(o.policy))
    rs.push_back(examples::run_fresh<fiber_system, lazymm::explicit_shootdown>(o));
  if (chosen<lazymm::implicit_shootdown>(o.policy))
    rs.push_back(examples::run_fresh<fiber_system, lazymm::implicit_shootdown>(o));
  print_report(rs);
  bool ok = true;
  for (const sched_result& r : rs) ok = ok && r.ok;
  return examples::verdict(ok, "every process created was torn down and freed exactly once, every fiber ran with "
                               "its own process loaded, every planned step reached its memory");
}
