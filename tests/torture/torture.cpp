// lazymm_torture: a long-running randomised stress of one policy x backend, in the spirit of the
// kernel's rcutorture. Checked mode and the test seams are on.
//
// What runs, concurrently, for --seconds:
//   * --threads executor threads (more than the cores): each attaches, runs tasks of random
//     contexts (switch_to + work under an owning reference), context-free work and idle periods
//     (lazy holds), creates and retires contexts, takes and upgrades structural references,
//     and detaches and re-attaches mid-run. Every fourth executor is a "sleeper" that blocks
//     for long stretches while it holds a context lazily.
//   * --churn non-executor threads: create and retire contexts (final drops from threads that
//     are no executor, some under a spinlock), hold owning references for a while, and take,
//     upgrade and drop structural references.
//
// What is checked (each failure prints the seed that reproduces the run and exits non-zero):
//   * every context carries a canary: alive -> torn down (teardown) -> dead (free). Tasks read
//     it under an owning reference, hooks read it before and after a deliberate delay, and the
//     freed memory stays readable in a per-thread quarantine for a while, so a use after free
//     is seen even without ASan;
//   * a per-context mask of the executors that have it activated: a free (and, under
//     implicit_shootdown, a teardown) with a bit still set means an executor still holds it;
//   * plain (non-atomic) per-executor fields written by tasks and hooks and read by teardown
//     and free: under TSan a missing ordering edge in the protocol is a data race report;
//   * S3: a sleeper that holds a context lazily parks until that context is torn down
//     (refcount, implicit_shootdown) or freed (explicit_shootdown), and asks a churn thread to
//     retire it. If a final drop waited for the parked holder, the run would deadlock and the
//     watchdog fails it;
//   * at the end: created == torn down == freed (ours and the domain's), no executor attached,
//     a round per freed context under the shootdown policies and none under refcount, one
//     evict hook per steal, and one membarrier syscall per heavy barrier (none if the domain
//     fell back to fences).
//
// Fault injection (--fault), set up before the first domain is created:
//   seam-ENOSYS, seam-EPERM, seam-EINVAL, seam-EINVAL-query  the test seam answers membarrier
//       like a kernel/sandbox that refuses it; the membarrier backend must fall back to fences,
//       say why, and never issue an expedited barrier;
//   seccomp-eperm   a real seccomp filter makes membarrier fail with EPERM;
//   seccomp-kill    a real seccomp filter kills the process on membarrier: only survivable
//                   with LAZYMM_NO_MEMBARRIER=1 in the environment (the "never" switch);
//   seccomp-kill-check  forks a child that installs the killing filter without the switch and
//                   creates a membarrier domain: the child must die of SIGSYS.
// Under ThreadSanitizer the membarrier backend never calls membarrier, so fault runs exit 77
// (skipped).
#include <lazymm/lazymm.hpp>
#include <lazymm/reclaimer.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if !LAZYMM_CHECKED || !LAZYMM_TEST_SEAMS
#error "lazymm_torture needs LAZYMM_CHECKED=1 and LAZYMM_TEST_SEAMS=1"
#endif

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int exit_skip = 77;
constexpr std::uint32_t max_executors = 64;  // executor ids index the per-context masks

// ---- failure reporting ----------------------------------------------------------------------

char g_repro[1024] = "torture: (no run started)\n";

[[noreturn]] __attribute__((format(printf, 1, 2))) void die(const char* fmt, ...) {
  std::fputs("torture: FAIL: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::fputs(g_repro, stderr);
  std::fflush(stderr);
  std::_Exit(1);
}

// A library check (abort) or a crash still names the seed. Async-signal-safe: write(2) only.
void on_fatal_signal(int sig) {
  const ssize_t n = ::write(2, g_repro, std::strlen(g_repro));
  (void)n;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// ---- randomness -----------------------------------------------------------------------------

// splitmix64: small, fast, and a run's decisions depend only on the seed and the thread index
// (the interleaving does not: that is the scheduler's).
struct rng {
  std::uint64_t s;
  std::uint64_t next() noexcept {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }
  bool percent(unsigned p) noexcept { return below(100) < p; }
};

thread_local rng t_rng{0x5eed};

void spin(std::uint64_t n) noexcept {
  for (std::uint64_t i = 0; i < n; ++i) lazymm::detail::cpu_pause();
}

// ---- options --------------------------------------------------------------------------------

enum class fault { none, seam_enosys, seam_eperm, seam_einval, seam_einval_query, seccomp_eperm, seccomp_kill, seccomp_kill_check };

struct options {
  std::string policy = "all";
  std::string backend = "all";
  std::uint64_t seed = 0;
  bool seed_given = false;
  double seconds = 2.0;
  unsigned threads = 6;
  unsigned churn = 2;
  unsigned slots = 12;
  double grace = 120.0;  // watchdog: seconds past the end before a stuck run fails
  fault flt = fault::none;
  std::string fault_name = "none";
  bool litmus = false;  // --litmus: the store-buffering litmus test instead of the torture
  unsigned litmus_jitter = 64;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "lazymm_torture: %s\n"
               "usage: lazymm_torture [--policy refcount|explicit_shootdown|implicit_shootdown|\n"
               "                        batched_explicit_shootdown|batched_implicit_shootdown|all]\n"
               "                      [--backend fence|membarrier|all] [--seed N] [--seconds S]\n"
               "                      [--threads N] [--churn N] [--slots N] [--grace S] [--litmus [--jitter N]]\n"
               "                      [--fault none|seam-ENOSYS|seam-EPERM|seam-EINVAL|seam-EINVAL-query|\n"
               "                               seccomp-eperm|seccomp-kill|seccomp-kill-check]\n",
               why);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (a == "--policy")
      o.policy = val();
    else if (a == "--backend")
      o.backend = val();
    else if (a == "--seed") {
      o.seed = std::strtoull(val().c_str(), nullptr, 0);
      o.seed_given = true;
    } else if (a == "--seconds")
      o.seconds = std::strtod(val().c_str(), nullptr);
    else if (a == "--threads")
      o.threads = static_cast<unsigned>(std::strtoul(val().c_str(), nullptr, 0));
    else if (a == "--churn")
      o.churn = static_cast<unsigned>(std::strtoul(val().c_str(), nullptr, 0));
    else if (a == "--slots")
      o.slots = static_cast<unsigned>(std::strtoul(val().c_str(), nullptr, 0));
    else if (a == "--grace")
      o.grace = std::strtod(val().c_str(), nullptr);
    else if (a == "--litmus")
      o.litmus = true;
    else if (a == "--jitter")
      o.litmus_jitter = static_cast<unsigned>(std::strtoul(val().c_str(), nullptr, 0)) + 1;
    else if (a == "--fault") {
      o.fault_name = val();
      const std::string& f = o.fault_name;
      o.flt = f == "none"                ? fault::none
              : f == "seam-ENOSYS"       ? fault::seam_enosys
              : f == "seam-EPERM"        ? fault::seam_eperm
              : f == "seam-EINVAL"       ? fault::seam_einval
              : f == "seam-EINVAL-query" ? fault::seam_einval_query
              : f == "seccomp-eperm"     ? fault::seccomp_eperm
              : f == "seccomp-kill"      ? fault::seccomp_kill
              : f == "seccomp-kill-check"
                  ? fault::seccomp_kill_check
                  : (usage("unknown --fault"), fault::none);
    } else
      usage("unknown argument");
  }
  if (o.threads < 1 || o.threads > 48) usage("--threads must be 1..48");
  if (o.slots < 1 || o.slots > 4096) usage("--slots must be 1..4096");
  if (!(o.seconds > 0)) usage("--seconds must be positive");
  if (!o.seed_given) o.seed = std::random_device{}() ^ (std::uint64_t{std::random_device{}()} << 32);
  return o;
}

// ---- membarrier: counting wrapper, refusing seams, seccomp filters --------------------------

struct syscall_counts {
  std::atomic<std::uint64_t> query{0}, reg{0}, expedited{0}, other{0};
};
syscall_counts g_mb;
std::atomic<int> g_refuse_errno{0};
std::atomic<bool> g_refuse_query_lacks_expedited{false};

void count_call(int cmd) noexcept {
  // Relaxed: counters, read after the threads are joined.
  auto& c = cmd == MEMBARRIER_CMD_QUERY                         ? g_mb.query
            : cmd == MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED ? g_mb.reg
            : cmd == MEMBARRIER_CMD_PRIVATE_EXPEDITED          ? g_mb.expedited
                                                               : g_mb.other;
  c.fetch_add(1, std::memory_order_relaxed);
}

// The real syscall, counted: every membarrier the library issues goes through here (and
// through any seccomp filter the process installed).
long counting_membarrier(int cmd, unsigned flags) {
  count_call(cmd);
  return ::syscall(__NR_membarrier, cmd, flags);
}

// A kernel or sandbox that refuses membarrier.
long refusing_membarrier(int cmd, unsigned flags) {
  (void)flags;
  count_call(cmd);
  if (g_refuse_query_lacks_expedited.load(std::memory_order_relaxed)) {
    // A kernel older than 4.14: the query works, the private expedited commands do not exist.
    if (cmd == MEMBARRIER_CMD_QUERY) return MEMBARRIER_CMD_GLOBAL;
    errno = EINVAL;
    return -1;
  }
  const int e = g_refuse_errno.load(std::memory_order_relaxed);
  if (e == EINVAL && cmd == MEMBARRIER_CMD_QUERY)  // advertises the command, refuses to register
    return MEMBARRIER_CMD_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
  errno = e;
  return -1;
}

// Installs, on the calling thread (and every thread it creates later), a seccomp filter that
// answers __NR_membarrier with `action` and allows everything else.
bool install_membarrier_filter(std::uint32_t action, std::string& err) {
#if defined(__x86_64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_AARCH64;
#else
  err = "no seccomp architecture value for this target";
  return false;
#endif
  sock_filter prog_insns[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),  // another ABI: not ours to filter
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, action),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof prog_insns / sizeof prog_insns[0]), prog_insns};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    err = std::string("prctl(PR_SET_NO_NEW_PRIVS): ") + std::strerror(errno);
    return false;
  }
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    err = std::string("prctl(PR_SET_SECCOMP): ") + std::strerror(errno);
    return false;
  }
  return true;
}

// ---- the context type -----------------------------------------------------------------------

struct counters {
  std::atomic<std::uint64_t> created{0}, torn_down{0}, freed{0};
  std::atomic<std::uint64_t> activations{0}, deactivations{0}, evictions{0};
  std::atomic<std::uint64_t> tasks{0}, switches{0}, fast_path{0}, lazy_transitions{0};
  std::atomic<std::uint64_t> attaches{0}, detaches{0}, parks{0}, long_blocks{0};
  std::atomic<std::uint64_t> upgrades{0}, failed_upgrades{0}, retires{0}, exit_mm_drops{0};
  std::atomic<std::uint64_t> final_drops{0}, longest_final_drop_ns{0};
  std::atomic<std::uint64_t> checksum{0};  // keeps the plain reads of teardown/free alive
};

struct run_state {
  counters n;
  bool refcount = false, implicit = false;
  bool gate_on_free = false;  // explicit_shootdown: parked holders wait for the free
};

thread_local std::uint64_t t_reclaims = 0;  // teardown/free hooks run by this thread

struct tctx;

// Freed contexts stay readable for a while (canary = dead) so that a late hook on freed memory
// sees the poison even without ASan; then they are deleted. Per thread: no lock, so no
// accidental happens-before edges that would hide a missing edge from TSan.
struct quarantine {
  std::deque<tctx*> q;
  void push(tctx* p);
  void drain();
  ~quarantine() { drain(); }
};
thread_local quarantine t_quarantine;

struct tctx final : lazymm::context {
  static constexpr std::uint64_t alive = 0xa11ce0a11ce0a11cull;
  static constexpr std::uint64_t torn = 0x7ea2d0a27ea2d0a2ull;
  static constexpr std::uint64_t dead = 0xdeadbeefdeadbeefull;

  tctx(run_state& r, std::uint64_t serial)
      : run(&r), serial(serial), retired(std::make_shared<std::atomic<bool>>(false)) {}

  run_state* run;
  const std::uint64_t serial;
  std::shared_ptr<std::atomic<bool>> retired;  // set by teardown or free; parked holders wait on it
  std::atomic<std::uint64_t> canary{alive};
  std::atomic<std::uint64_t> loaded{0};  // bit e: activated on executor e, not deactivated or evicted
  // Plain fields: [e] is written only on executor e (its hooks, its tasks). Teardown and free
  // read them all: each such read needs a happens-before edge from the protocol.
  std::uint64_t hook_writes[max_executors] = {};
  std::uint64_t task_writes[max_executors] = {};

  static std::uint64_t bit(lazymm::executor_id e) {
    if (e.value >= max_executors) die("executor id %u out of range", e.value);
    return std::uint64_t{1} << e.value;
  }

  // Relaxed canary and mask accesses throughout: they are detectors, not synchronisation; the
  // protocol's edges order them, and a wrong value is the failure being looked for.
  void on_activate(lazymm::executor_id e) noexcept {
    const auto b = bit(e);
    if (const auto c = canary.load(std::memory_order_relaxed); c != alive)
      die("activate on executor #%u of context #%llu whose canary is %#llx (not alive)", e.value,
          ull(serial), ull(c));
    if (loaded.fetch_or(b, std::memory_order_relaxed) & b)
      die("context #%llu activated twice on executor #%u", ull(serial), e.value);
    hook_writes[e.value] += 1;
    run->n.activations.fetch_add(1, std::memory_order_relaxed);
    if (t_rng.percent(10)) spin(t_rng.below(400));
  }

  void on_deactivate(lazymm::executor_id e) noexcept {
    const auto b = bit(e);
    check_holdable("deactivate", e);
    hook_writes[e.value] += 1;
    // A reclaimer that did not wait for this switch would free us during this delay.
    if (t_rng.percent(25)) spin(t_rng.below(2000));
    check_holdable("deactivate (after a delay)", e);
    if (!(loaded.fetch_and(~b, std::memory_order_relaxed) & b))
      die("context #%llu deactivated on executor #%u, which did not have it activated (evicted first?)",
          ull(serial), e.value);
    run->n.deactivations.fetch_add(1, std::memory_order_relaxed);
  }

  void on_evict(lazymm::executor_id e) noexcept {
    check_holdable("evict", e);
    // The bit may already be clear: an executor caught inside its switch deactivated us itself.
    loaded.fetch_and(~bit(e), std::memory_order_relaxed);
    run->n.evictions.fetch_add(1, std::memory_order_relaxed);
  }

  void on_teardown() noexcept {
    std::uint64_t was = alive;
    if (!canary.compare_exchange_strong(was, torn, std::memory_order_relaxed))
      die("teardown of context #%llu whose canary is %#llx (double teardown, or teardown after free)", ull(serial),
          ull(was));
    std::uint64_t sum = 0;
    for (auto w : task_writes) sum += w;  // every task's writes happen before the teardown
    if (run->implicit) {
      // The round ran before the teardown: no executor holds us, and their hooks are over.
      if (const auto m = loaded.load(std::memory_order_relaxed))
        die("implicit_shootdown: context #%llu torn down while executors %#llx still hold it", ull(serial),
            ull(m));
      for (auto w : hook_writes) sum += w;
    }
    run->n.checksum.fetch_add(sum, std::memory_order_relaxed);
    run->n.torn_down.fetch_add(1, std::memory_order_relaxed);
    ++t_reclaims;
    if (!run->gate_on_free) open_gate();
  }

  static void on_free(tctx* c) noexcept {
    std::uint64_t was = torn;
    if (!c->canary.compare_exchange_strong(was, dead, std::memory_order_relaxed))
      die("free of context #%llu whose canary is %#llx (free before teardown, or double free)", ull(c->serial),
          ull(was));
    if (const auto m = c->loaded.load(std::memory_order_relaxed))
      die("context #%llu freed while executors %#llx still hold it", ull(c->serial), ull(m));
    std::uint64_t sum = 0;
    for (auto& w : c->hook_writes) sum += std::exchange(w, ~0ull);
    for (auto& w : c->task_writes) sum += std::exchange(w, ~0ull);
    c->run->n.checksum.fetch_add(sum, std::memory_order_relaxed);
    c->run->n.freed.fetch_add(1, std::memory_order_relaxed);
    ++t_reclaims;
    if (c->run->gate_on_free) c->open_gate();
    t_quarantine.push(c);
  }

  // Under an owning reference (tasks): the contents must be alive.
  void check_alive(const char* where) const {
    if (const auto c = canary.load(std::memory_order_relaxed); c != alive)
      die("%s: context #%llu canary is %#llx under an owning reference", where, ull(serial), ull(c));
  }

 private:
  static unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

  // Lazily held contexts may be torn down (refcount, explicit) but never freed; under implicit
  // the round runs before the teardown, so a holder always sees it alive.
  void check_holdable(const char* what, lazymm::executor_id e) const {
    const auto c = canary.load(std::memory_order_relaxed);
    if (c == alive || (c == torn && !run->implicit)) return;
    die("%s on executor #%u of context #%llu whose canary is %#llx (use after %s)", what, e.value, ull(serial),
        ull(c), c == torn ? "teardown" : "free");
  }

  void open_gate() noexcept {
    // release: pairs with the parked holder's acquire wait; nothing else is published by it.
    retired->store(true, std::memory_order_release);
    retired->notify_all();
  }
};

void quarantine::push(tctx* p) {
  q.push_back(p);
  if (q.size() > 512) {
    delete q.front();
    q.pop_front();
  }
}
void quarantine::drain() {
  for (auto* p : q) delete p;
  q.clear();
}

// ---- the torture of one domain --------------------------------------------------------------

class spinlock {
 public:
  void lock() noexcept {
    // acquire/release: an ordinary lock.
    while (f_.test_and_set(std::memory_order_acquire)) std::this_thread::yield();
  }
  void unlock() noexcept { f_.clear(std::memory_order_release); }

 private:
  std::atomic_flag f_ = ATOMIC_FLAG_INIT;
};

template <class Domain>
class torture {
 public:
  using oref = lazymm::owning_ref<tctx>;
  using sref = lazymm::structural_ref<tctx>;
  using executor = typename Domain::executor_type;

  torture(const options& o, run_state& st) : o_(o), st_(st), pool_(o.slots) {}

  void run() {
    t_rng = rng{o_.seed};
    for (auto& s : pool_) s.ref = make();
    std::vector<std::thread> threads;
    executors_running_.store(static_cast<int>(o_.threads));
    for (unsigned i = 0; i < o_.threads; ++i) threads.emplace_back([this, i] { executor_thread(i); });
    for (unsigned i = 0; i < o_.churn; ++i) threads.emplace_back([this, i] { churn_thread(i); });
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.seconds));
    // release: the threads' acquire loads of stop_ see everything before it (nothing needed).
    stop_.store(true, std::memory_order_release);
    for (auto& t : threads) t.join();
    // The main thread (no executor) drops what is left: final drops from a non-executor.
    for (auto& s : pool_) timed_drop(s.ref);
    t_quarantine.drain();
  }

  Domain& domain() { return d_; }

 private:
  struct pool_slot {
    spinlock lock;
    oref ref;
  };

  bool stopping() const noexcept { return stop_.load(std::memory_order_acquire); }

  oref make() {
    // Relaxed: a serial number, unique is all that matters.
    auto r = d_.template make<tctx>(st_, next_serial_.fetch_add(1, std::memory_order_relaxed));
    st_.n.created.fetch_add(1, std::memory_order_relaxed);
    return r;
  }

  // Drops a reference and, if that ran a teardown or a free on this thread, records how long
  // the drop took (the final-drop wait: rounds, barriers, waits for executors in a switch).
  template <class Ref>
  void timed_drop(Ref& r) {
    if (!r) return;
    const auto before = t_reclaims;
    const auto t0 = clock_type::now();
    r.reset();
    if (t_reclaims == before) return;
    const auto ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
    st_.n.final_drops.fetch_add(1, std::memory_order_relaxed);
    auto& m = st_.n.longest_final_drop_ns;
    // Relaxed: a statistic.
    for (auto cur = m.load(std::memory_order_relaxed); ns > cur;)
      if (m.compare_exchange_weak(cur, ns, std::memory_order_relaxed)) break;
  }

  pool_slot& random_slot() { return pool_[t_rng.below(pool_.size())]; }

  oref copy_from(pool_slot& s) {
    std::lock_guard g(s.lock);
    return s.ref;
  }

  // Replaces a slot's context with a new one (or empties it); the old reference is dropped,
  // sometimes while the slot's spinlock is held (a final drop must never block on a lock an
  // executor may hold: executors never hold these inside a switch).
  void replace(pool_slot& s, bool empty) {
    oref fresh = empty ? oref{} : make();
    oref old;
    if (t_rng.percent(20)) {
      std::lock_guard g(s.lock);
      std::swap(s.ref, fresh);
      if (fresh) st_.n.retires.fetch_add(1, std::memory_order_relaxed);
      timed_drop(fresh);
      return;
    }
    {
      std::lock_guard g(s.lock);
      std::swap(s.ref, fresh);
      old = std::move(fresh);
    }
    if (old) st_.n.retires.fetch_add(1, std::memory_order_relaxed);
    timed_drop(old);
  }

  // Retires the context with this serial from the pool, if it is still there.
  void retire_serial(std::uint64_t serial) {
    for (auto& s : pool_) {
      oref old;
      {
        std::lock_guard g(s.lock);
        if (s.ref && s.ref->serial == serial) old = std::move(s.ref);
      }
      if (old) {
        st_.n.retires.fetch_add(1, std::memory_order_relaxed);
        timed_drop(old);
        return;
      }
    }
  }

  void request_retire(std::uint64_t serial) {
    std::lock_guard g(req_m_);
    requests_.push_back(serial);
  }
  void serve_retire_requests() {
    for (;;) {
      std::uint64_t serial;
      {
        std::lock_guard g(req_m_);
        if (requests_.empty()) return;
        serial = requests_.front();
        requests_.pop_front();
      }
      retire_serial(serial);
    }
  }

  // A run of 1-4 tasks of r's context on ex (after the first, the switch takes the fast path:
  // the context is still loaded, lazily). Each task works under the owning reference; the last
  // one ends the way a runtime would: go lazy (context-free work follows), load the default
  // context, or (shootdown policies) drop the reference while the context is still loaded
  // (the exit_mm case).
  void run_tasks(executor& ex, oref r, std::uint64_t& last_serial, std::shared_ptr<std::atomic<bool>>& last_gate) {
    const auto e = ex.id().value;
    last_serial = r->serial;
    last_gate = r->retired;
    for (auto k = 1 + t_rng.below(4); k > 0; --k) {
      if (ex.loaded() == r.get())
        st_.n.fast_path.fetch_add(1, std::memory_order_relaxed);
      else
        st_.n.switches.fetch_add(1, std::memory_order_relaxed);
      ex.switch_to(r);
      r->check_alive("task start");
      r->task_writes[e] += 1;
      spin(t_rng.below(300));
      r->check_alive("task end");
      st_.n.tasks.fetch_add(1, std::memory_order_relaxed);
      if (k > 1) lazy(ex);
    }
    const auto how = t_rng.below(100);
    if (how < 75)
      lazy(ex);
    else if (how < 85)
      ex.switch_to_default();
    else if (st_.refcount)
      // Under refcount, dropping a reference that is not the last one while the context is
      // still loaded (not lazy) leaves an uncounted hold (see docs/testing.md, "findings"),
      // so the task leaves the context first.
      lazy(ex);
    else
      st_.n.exit_mm_drops.fetch_add(1, std::memory_order_relaxed);
    timed_drop(r);
  }

  void lazy(executor& ex) {
    if (!ex.is_lazy()) st_.n.lazy_transitions.fetch_add(1, std::memory_order_relaxed);
    ex.go_lazy();
  }

  void executor_thread(unsigned idx) {
    struct leave {
      // release: our last drops happen before a churn thread's exit test (acquire).
      std::atomic<int>& n;
      ~leave() { n.fetch_sub(1, std::memory_order_release); }
    } leaving{executors_running_};
    t_rng = rng{o_.seed * 0x100000001b3ull + idx + 1};
    const bool sleeper = idx % 4 == 3;
    std::vector<sref> stash;
    while (!stopping()) {
      {
        executor ex = d_.attach();
        st_.n.attaches.fetch_add(1, std::memory_order_relaxed);
        if (ex.id().value >= max_executors) die("executor id %u out of range", ex.id().value);
        std::uint64_t last_serial = 0;
        std::shared_ptr<std::atomic<bool>> last_gate;
        const auto life = 20 + t_rng.below(2000);
        for (std::uint64_t i = 0; i < life && !stopping(); ++i) {
          const auto a = t_rng.below(100);
          if (a < 40) {  // tasks of a random context
            if (oref r = copy_from(random_slot())) run_tasks(ex, std::move(r), last_serial, last_gate);
          } else if (a < 48) {  // context-free work
            lazy(ex);
            spin(t_rng.below(3000));
          } else if (a < 55) {  // idle
            lazy(ex);
            std::this_thread::sleep_for(std::chrono::microseconds(t_rng.below(200)));
          } else if (a < (sleeper ? 62u : 57u)) {  // blocked for a long stretch, holding lazily
            lazy(ex);
            park(ex, last_serial, last_gate, stash);
          } else if (a < 63) {  // create (from an executor)
            replace(random_slot(), false);
          } else if (a < 65) {  // retire (from an executor; may be our own lazy context)
            replace(random_slot(), true);
          } else if (a < 73) {  // take a structural reference
            if (stash.size() < 8) {
              oref r = copy_from(random_slot());
              if (r) stash.push_back(r.structural());
            }
          } else if (a < 82) {  // upgrade one and run a task on it
            if (!stash.empty()) {
              auto& s = stash[t_rng.below(stash.size())];
              if (oref r = s.try_upgrade()) {
                st_.n.upgrades.fetch_add(1, std::memory_order_relaxed);
                run_tasks(ex, std::move(r), last_serial, last_gate);
              } else {
                st_.n.failed_upgrades.fetch_add(1, std::memory_order_relaxed);
              }
            }
          } else if (a < 90) {  // drop a structural reference (may be a final drop)
            if (!stash.empty()) {
              const auto k = t_rng.below(stash.size());
              std::swap(stash[k], stash.back());
              timed_drop(stash.back());
              stash.pop_back();
            }
          } else if (a < 93) {
            ex.switch_to_default();
          } else if (a < 98) {
            break;  // detach now, usually while holding a context lazily
          } else {
            std::this_thread::yield();
          }
        }
        if (t_rng.percent(50)) lazy(ex);
      }  // detach
      st_.n.detaches.fetch_add(1, std::memory_order_relaxed);
      if (t_rng.percent(30)) std::this_thread::sleep_for(std::chrono::microseconds(t_rng.below(500)));
      if (t_rng.percent(50)) {
        for (auto& s : stash) timed_drop(s);
        stash.clear();
      }
    }
    for (auto& s : stash) timed_drop(s);
  }

  // A long block while holding the last task's context lazily. With churn threads, the sleeper
  // asks for that context to be retired and parks until its teardown (free, under
  // explicit_shootdown): S3 says the final drop must not wait for us, so this cannot deadlock.
  void park(executor& ex, std::uint64_t serial, const std::shared_ptr<std::atomic<bool>>& gate,
            std::vector<sref>& stash) {
    st_.n.long_blocks.fetch_add(1, std::memory_order_relaxed);
    const bool holds_it = gate && ex.is_lazy() && serial != 0;
    if (o_.churn == 0 || !holds_it || t_rng.percent(30)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1 + t_rng.below(30)));
      return;
    }
    // Our own structural references would hold the free back: a parked thread holds none.
    for (auto& s : stash) timed_drop(s);
    stash.clear();
    st_.n.parks.fetch_add(1, std::memory_order_relaxed);
    parked_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic for the watchdog
    request_retire(serial);
    // acquire: pairs with the release in tctx::open_gate.
    while (!gate->load(std::memory_order_acquire)) gate->wait(false, std::memory_order_acquire);
    parked_.fetch_sub(1, std::memory_order_relaxed);
  }

  void churn_thread(unsigned idx) {
    t_rng = rng{o_.seed * 0x9e3779b97f4a7c15ull + 1000 + idx};
    std::vector<sref> stash;
    std::vector<oref> held;
    while (!stopping()) {
      const auto a = t_rng.below(100);
      if (a < 12) {
        replace(random_slot(), false);
      } else if (a < 16) {
        replace(random_slot(), true);
      } else if (a < 30) {
        serve_retire_requests();
      } else if (a < 42) {
        if (stash.size() < 8)
          if (oref r = copy_from(random_slot())) stash.push_back(r.structural());
      } else if (a < 52) {  // upgrade, hold a moment, drop: a final drop from a non-executor
        if (!stash.empty()) {
          if (oref r = stash[t_rng.below(stash.size())].try_upgrade()) {
            st_.n.upgrades.fetch_add(1, std::memory_order_relaxed);
            r->check_alive("churn upgrade");
            spin(t_rng.below(500));
            timed_drop(r);
          } else {
            st_.n.failed_upgrades.fetch_add(1, std::memory_order_relaxed);
          }
        }
      } else if (a < 60) {
        if (!stash.empty()) {
          const auto k = t_rng.below(stash.size());
          std::swap(stash[k], stash.back());
          timed_drop(stash.back());
          stash.pop_back();
        }
      } else if (a < 68) {  // owning references held across iterations
        if (held.size() < 4) {
          if (oref r = copy_from(random_slot())) held.push_back(std::move(r));
        } else {
          timed_drop(held[t_rng.below(held.size())]);
          std::erase_if(held, [](const oref& r) { return !r; });
        }
      } else if (a < 90) {
        std::this_thread::sleep_for(std::chrono::microseconds(t_rng.below(200)));
      } else {
        std::this_thread::yield();
      }
    }
    for (auto& s : stash) timed_drop(s);
    for (auto& h : held) timed_drop(h);
    // Parked sleepers wait for their contexts to be retired: keep serving until every executor
    // thread has finished (testing parked_ instead would race with a sleeper about to park).
    while (executors_running_.load(std::memory_order_acquire) > 0) {
      serve_retire_requests();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    serve_retire_requests();
  }

  const options& o_;
  run_state& st_;
  Domain d_;
  std::vector<pool_slot> pool_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> next_serial_{1};
  std::atomic<int> parked_{0};
  std::atomic<int> executors_running_{0};
  std::mutex req_m_;
  std::deque<std::uint64_t> requests_;
};

// ---- one run: set-up, watchdog, checks, report -----------------------------------------------

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

const char* fault_errno_name(fault f) {
  switch (f) {
    case fault::seam_enosys:
      return "ENOSYS";
    case fault::seam_eperm:
    case fault::seccomp_eperm:
      return "EPERM";
    case fault::seam_einval:
    case fault::seam_einval_query:
      return "EINVAL";
    default:
      return nullptr;
  }
}

template <class Policy, class Backend>
int run_combo(const options& o) {
  using D = lazymm::domain<Policy, Backend>;
  constexpr bool mb_backend = std::is_same_v<Backend, lazymm::membarrier_backend>;
  std::snprintf(g_repro, sizeof g_repro,
                "torture: reproduce with: lazymm_torture --policy %s --backend %s --seed %llu --seconds %g "
                "--threads %u --churn %u --slots %u --fault %s\n",
                Policy::name, Backend::name, static_cast<unsigned long long>(o.seed), o.seconds, o.threads, o.churn,
                o.slots, o.fault_name.c_str());
  std::fputs(g_repro, stdout);
  std::fflush(stdout);

  run_state st;
  st.refcount = Policy::round == lazymm::round_at::never;
  st.implicit = Policy::round == lazymm::round_at::owning_zero;
  st.gate_on_free = Policy::round == lazymm::round_at::structural_zero;
  struct {
    std::uint64_t query, reg, expedited, other;
  } const before{g_mb.query.load(), g_mb.reg.load(), g_mb.expedited.load(), g_mb.other.load()};
  const auto t0 = clock_type::now();

  // Watchdog: a stuck final drop (S3) or detach shows up as a run that never ends.
  std::mutex wm;
  std::condition_variable wcv;
  bool finished = false;
  std::thread watchdog([&] {
    std::unique_lock g(wm);
    const auto deadline = t0 + std::chrono::duration<double>(o.seconds + o.grace);
    if (!wcv.wait_until(g, deadline, [&] { return finished; }))
      die("run still going %.0f s after its end: a final drop or a detach is stuck "
          "(created=%llu torn_down=%llu freed=%llu attaches=%llu detaches=%llu parks=%llu)",
          o.grace, static_cast<unsigned long long>(st.n.created.load()),
          static_cast<unsigned long long>(st.n.torn_down.load()), static_cast<unsigned long long>(st.n.freed.load()),
          static_cast<unsigned long long>(st.n.attaches.load()), static_cast<unsigned long long>(st.n.detaches.load()),
          static_cast<unsigned long long>(st.n.parks.load()));
  });

  lazymm::mechanism mech;
  std::string reason;
  lazymm::domain_stats ds;
  std::size_t attached_after = 0;
  std::int64_t live_after = 0;
  {
    auto t = std::make_unique<torture<D>>(o, st);
    mech = t->domain().mechanism();
    reason = t->domain().mechanism_reason();
    std::printf("torture: %s x %s: mechanism %s (%s)\n", Policy::name, Backend::name, lazymm::to_string(mech),
                reason.c_str());
    std::fflush(stdout);

    // What the domain must have decided, given the fault in force.
    if (mb_backend && !LAZYMM_TSAN) {
      if (const char* err = fault_errno_name(o.flt)) {
        if (mech != lazymm::mechanism::fence) die("fault %s: the domain did not fall back to fences", o.fault_name.c_str());
        if (!contains(reason, err)) die("fault %s: the reason does not name %s: \"%s\"", o.fault_name.c_str(), err, reason.c_str());
      }
      if (o.flt == fault::seccomp_kill) {
        if (mech != lazymm::mechanism::fence || !contains(reason, "LAZYMM_NO_MEMBARRIER"))
          die("seccomp-kill: expected the LAZYMM_NO_MEMBARRIER fallback, got %s (%s)", lazymm::to_string(mech),
              reason.c_str());
      }
    }
    if (!mb_backend && mech != lazymm::mechanism::fence) die("fence backend reports mechanism %s", lazymm::to_string(mech));

    if constexpr (Policy::batches) {
      lazymm::reclaimer<D> reclaims(t->domain());  // the optional helper thread
      t->run();
    } else {
      t->run();
    }
    ds = t->domain().stats();
    attached_after = t->domain().attached_executors();
    live_after = t->domain().live_contexts();
  }  // ~domain: aborts if an executor is attached or a context alive
  {
    std::lock_guard g(wm);
    finished = true;
  }
  wcv.notify_all();
  watchdog.join();
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();

  const auto& n = st.n;
  const std::uint64_t q = g_mb.query.load() - before.query, r = g_mb.reg.load() - before.reg,
                      x = g_mb.expedited.load() - before.expedited, other = g_mb.other.load() - before.other;
  using ull = unsigned long long;
  auto U = [](std::uint64_t v) { return static_cast<ull>(v); };
  std::printf("torture: %s x %s: %.1f s, %u executor threads + %u churn threads, %u slots\n", Policy::name, Backend::name,
              secs, o.threads, o.churn, o.slots);
  std::printf("  contexts   created %llu  torn down %llu  freed %llu  (domain: created %llu freed %llu)\n",
              U(n.created), U(n.torn_down), U(n.freed), U(ds.contexts_created), U(ds.contexts_freed));
  std::printf("  executors  tasks %llu  switches %llu  fast-path %llu  lazy transitions %llu  activations %llu  "
              "deactivations %llu\n",
              U(n.tasks), U(n.switches), U(n.fast_path), U(n.lazy_transitions), U(n.activations), U(n.deactivations));
  std::printf("             attaches %llu  detaches %llu  long blocks %llu  parked holders %llu  exit_mm drops %llu\n",
              U(n.attaches), U(n.detaches), U(n.long_blocks), U(n.parks), U(n.exit_mm_drops));
  std::printf("  refs       upgrades %llu  failed upgrades %llu  retires %llu\n", U(n.upgrades), U(n.failed_upgrades),
              U(n.retires));
  std::printf("  rounds     %llu  heavy barriers %llu  steals %llu  evictions %llu  waits %llu\n", U(ds.rounds),
              U(ds.heavy_barriers), U(ds.steals), U(n.evictions), U(ds.waits));
  std::printf("  membarrier syscalls: expedited %llu  query %llu  register %llu  other %llu\n", U(x), U(q), U(r),
              U(other));
  std::printf("  final drops %llu  longest final-drop wait %.1f us\n", U(n.final_drops),
              static_cast<double>(n.longest_final_drop_ns.load()) / 1000.0);

  // The end-of-run checks.
  if (n.created != n.torn_down || n.torn_down != n.freed)
    die("created %llu, torn down %llu, freed %llu: must be equal", U(n.created), U(n.torn_down), U(n.freed));
  if (ds.contexts_created != n.created || ds.contexts_freed != n.freed)
    die("the domain counted %llu created / %llu freed, the contexts %llu / %llu", U(ds.contexts_created),
        U(ds.contexts_freed), U(n.created), U(n.freed));
  if (live_after != 0 || attached_after != 0)
    die("after the run: %lld live contexts, %zu attached executors", static_cast<long long>(live_after), attached_after);
  // Each activation ends in a deactivation, an eviction, or (executor caught in its switch by a
  // steal) both.
  if (n.deactivations > n.activations || n.activations > n.deactivations + n.evictions)
    die("%llu activations, %llu deactivations, %llu evictions", U(n.activations), U(n.deactivations),
        U(n.evictions));
  if (n.evictions != ds.steals) die("%llu evict hooks for %llu steals", U(n.evictions), U(ds.steals));
  if (st.refcount) {
    if (ds.rounds || ds.steals || ds.heavy_barriers) die("refcount ran a shootdown round");
  } else if (Policy::batches) {
    if (ds.reclaimed != n.freed || ds.rounds > ds.reclaimed || ds.backlog != 0)
      die("batched: %llu reclaimed, %llu rounds, %llu still queued for %llu freed contexts", U(ds.reclaimed),
          U(ds.rounds), U(ds.backlog), U(n.freed));
    std::printf("  batched    %.1f contexts per round, peak backlog %llu\n",
                ds.rounds ? static_cast<double>(ds.reclaimed) / static_cast<double>(ds.rounds) : 0.0,
                U(ds.peak_backlog));
  } else if (ds.rounds != n.freed) {
    die("%llu shootdown rounds for %llu freed contexts: one each expected", U(ds.rounds), U(n.freed));
  }
  if (ds.heavy_barriers > ds.rounds) die("more heavy barriers than rounds");
  const bool uses_mb = mech == lazymm::mechanism::membarrier;
  // One probe per registration (the domain's creation), one per heavy barrier, and at most one
  // per wait (a wait that blocks announces itself with a heavy barrier).
  if (uses_mb && (x < ds.heavy_barriers + r || x > ds.heavy_barriers + r + ds.waits))
    die("%llu membarrier(PRIVATE_EXPEDITED) syscalls for %llu heavy barriers, %llu registrations and %llu waits: "
        "one per barrier and registration (plus at most one per wait) expected",
        U(x), U(ds.heavy_barriers), U(r), U(ds.waits));
  if (!uses_mb && x != 0) die("%llu membarrier(PRIVATE_EXPEDITED) calls after falling back to fences", U(x));
  if (o.flt == fault::seccomp_kill && q + r + x + other != 0) die("membarrier was called under the never switch");
  std::printf("torture: %s x %s: PASS\n", Policy::name, Backend::name);
  std::fflush(stdout);
  return 0;
}


// ---- the store-buffering litmus test (--litmus) ----------------------------------------------
//
// The heart of the protocol is a store-buffering (Dekker) pattern, and x86 really reorders a
// store with a later load from another address (the store waits in the store buffer):
//   executor E:  (1) seq = odd   (2) light barrier   (3) read slot       -> x ?
//   reclaimer R: (6') CAS slot x -> default          (7) heavy barrier   (8) read seq -> odd ?
// Without (2) on the fence backend, or without (7) (or with (7) before (6')) on the membarrier
// backend, E can read x while R reads an even seq: R then frees x while E is still in its
// deactivate hook. Here E and R meet at a spin rendezvous thousands of times a second with
// random offsets of a few nanoseconds, and E's deactivate hook lingers until R's drop returns;
// a free seen from inside the hook is the reordering caught in the act. The correct protocol
// never shows it (R waits for E's odd seq); the defective ones do, at a rate that depends on
// the machine (it needs the two threads running at the same moment on two CPUs).

std::atomic<bool> g_litmus_drop_done{false};
std::atomic<std::uint64_t> g_litmus_in_hook{0}, g_litmus_hits{0};

struct lctx final : lazymm::context {
  explicit lctx(bool raced) : raced(raced) {}
  const bool raced;  // x (dropped by R during E's switch), not E's own y
  std::atomic<bool> freed{false};
  void on_deactivate(lazymm::executor_id) noexcept {
    if (!raced) return;
    g_litmus_in_hook.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    // Linger until the reclaimer's drop returns (bounded: a correct reclaimer is waiting for us).
    // relaxed: only a hint to stop lingering; the check below is what matters.
    for (int k = 0; k < 300 && !g_litmus_drop_done.load(std::memory_order_relaxed); ++k) lazymm::detail::cpu_pause();
    // relaxed: a detector; any value true here means the free ran during our switch.
    if (freed.load(std::memory_order_relaxed)) g_litmus_hits.fetch_add(1, std::memory_order_relaxed);
  }
  // The memory stays until the lap is over (the reclaimer deletes it), so that a hook running
  // late reads the flag, not freed memory.
  static void on_free(lctx* c) noexcept {
    c->freed.store(true, std::memory_order_relaxed);  // relaxed: read by the detector above
    grave = c;
  }
  inline static lctx* grave = nullptr;  // written and deleted on the reclaimer thread only
};

std::vector<int> allowed_cpus() {
  std::vector<int> v;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) v.push_back(c);
  return v;
}
void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);  // best effort
}
void pin_to_all(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
}

void tiny_delay(unsigned n) {
  for (unsigned k = 0; k < n; ++k) std::atomic_signal_fence(std::memory_order_seq_cst);  // not optimised away
}

void spin_until(const std::atomic<std::uint64_t>& a, std::uint64_t v) {
  // acquire: pairs with the partner's release store of the phase.
  for (unsigned k = 0; a.load(std::memory_order_acquire) < v; ++k)
    if (k > 2000) std::this_thread::yield();
}

template <class Policy, class Backend>
int run_litmus(const options& o) {
  using D = lazymm::domain<Policy, Backend>;
  std::snprintf(g_repro, sizeof g_repro,
                "torture: reproduce with: lazymm_torture --litmus --policy %s --backend %s --seed %llu --seconds %g\n",
                Policy::name, Backend::name, static_cast<unsigned long long>(o.seed), o.seconds);
  std::fputs(g_repro, stdout);
  if constexpr (Policy::round == lazymm::round_at::never) {
    std::printf("torture: litmus %s x %s: not applicable (no steal under refcount)\n", Policy::name, Backend::name);
    return 0;
  } else {
    D d;
    std::printf("torture: litmus %s x %s: mechanism %s (%s)\n", Policy::name, Backend::name,
                lazymm::to_string(d.mechanism()), d.mechanism_reason().c_str());
    std::fflush(stdout);
    g_litmus_hits.store(0);
    g_litmus_in_hook.store(0);
    std::atomic<std::uint64_t> r_phase{0}, e_phase{0};
    std::atomic<bool> stop{false};
    lazymm::owning_ref<lctx> handoff;  // R -> E, ordered by r_phase
    std::uint64_t e_delay_seed = o.seed * 31 + 7;
    // Both delays are random within a jitter; R's also has a base that a feedback loop keeps
    // where E reads x before the steal about half the time (the boundary where the reordering
    // window is). Any delay is correct: they only move where the race is run.
    const unsigned jitter = o.litmus_jitter;
    int offset = 0;  // > 0: R starts later; < 0: E starts later (written by R before "go")
    // E and R on two different CPUs when the process may use two: the reordering needs them
    // running at the same moment, which two threads time-sliced on one CPU never are.
    const auto cpus = allowed_cpus();
    if (cpus.size() >= 2) pin_to(cpus[1]);
    std::thread e([&] {
      if (cpus.size() >= 2) pin_to(cpus[0]);
      t_rng = rng{e_delay_seed};
      auto ex = d.attach();
      auto y = d.template make<lctx>(false);  // E's task context after the race
      for (std::uint64_t i = 1;; ++i) {
        spin_until(r_phase, 3 * i - 2);  // x is in handoff, or stop
        if (stop.load(std::memory_order_acquire)) break;
        ex.switch_to(handoff);
        ex.go_lazy();
        handoff.reset();                                     // only the lazy hold is left
        e_phase.store(3 * i - 2, std::memory_order_release);  // ready
        spin_until(r_phase, 3 * i - 1);                   // go
        tiny_delay(static_cast<unsigned>(std::max(-offset, 0)) + static_cast<unsigned>(t_rng.below(jitter)));
        ex.switch_to(y);  // races with R's final drop of x
        spin_until(r_phase, 3 * i);  // R's drop returned
        e_phase.store(3 * i, std::memory_order_release);
      }
      ex.switch_to_default();
      y.reset();
    });
    t_rng = rng{o.seed};
    const auto until = clock_type::now() + std::chrono::duration<double>(o.seconds);
    std::uint64_t i = 0;
    while (clock_type::now() < until) {
      ++i;
      auto x = d.template make<lctx>(true);
      handoff = x;
      r_phase.store(3 * i - 2, std::memory_order_release);
      spin_until(e_phase, 3 * i - 2);
      g_litmus_drop_done.store(false, std::memory_order_relaxed);
      r_phase.store(3 * i - 1, std::memory_order_release);  // go
      const auto in_hook_before = g_litmus_in_hook.load(std::memory_order_relaxed);
      tiny_delay(static_cast<unsigned>(std::max(offset, 0)) + static_cast<unsigned>(t_rng.below(jitter)));
      x.reset();  // the final drop: round, teardown, free
      g_litmus_drop_done.store(true, std::memory_order_relaxed);
      r_phase.store(3 * i, std::memory_order_release);
      spin_until(e_phase, 3 * i);
      delete std::exchange(lctx::grave, nullptr);  // E is out of its switch
      // Bounded: when the two threads are not running at the same moment, no offset helps.
      if (g_litmus_in_hook.load(std::memory_order_relaxed) != in_hook_before)
        offset = std::max(offset - 8, -20000);  // E was first: start R sooner, or E later
      else
        offset = std::min(offset + 8, 2000);  // R was first: start R later, or E sooner
    }
    stop.store(true, std::memory_order_release);
    r_phase.store(3 * (i + 1) - 2, std::memory_order_release);
    e.join();
    if (cpus.size() >= 2) pin_to_all(cpus);
    const auto st = d.stats();
    const auto hits = g_litmus_hits.load();
    std::printf("torture: litmus %s x %s: %llu laps in %g s; executor read x before the steal %llu times; "
                "steals %llu, waits %llu; frees seen from inside the switch: %llu (final offset %d)\n",
                Policy::name, Backend::name, static_cast<unsigned long long>(i), o.seconds,
                static_cast<unsigned long long>(g_litmus_in_hook.load()), static_cast<unsigned long long>(st.steals),
                static_cast<unsigned long long>(st.waits), static_cast<unsigned long long>(hits), offset);
    if (hits) die("store-buffering: %llu times the reclaimer freed x while the executor that read it was still in its "
                  "switch (a light or heavy barrier is missing or misplaced)",
                  static_cast<unsigned long long>(hits));
    std::printf("torture: litmus %s x %s: PASS\n", Policy::name, Backend::name);
    return 0;
  }
}

template <class Policy>
int run_policy(const options& o) {
  int rc = 0;
  if (o.backend == "fence" || o.backend == "all")
    rc |= o.litmus ? run_litmus<Policy, lazymm::fence_backend>(o) : run_combo<Policy, lazymm::fence_backend>(o);
  if (o.backend == "membarrier" || o.backend == "all")
    rc |= o.litmus ? run_litmus<Policy, lazymm::membarrier_backend>(o) : run_combo<Policy, lazymm::membarrier_backend>(o);
  return rc;
}

// The companion of seccomp-kill: without the never switch, the killing filter must really kill.
int seccomp_kill_check() {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::unsetenv("LAZYMM_NO_MEMBARRIER");
    std::string err;
    if (!install_membarrier_filter(SECCOMP_RET_KILL_PROCESS, err)) {
      std::fprintf(stderr, "child: %s\n", err.c_str());
      std::_Exit(3);
    }
    lazymm::domain<lazymm::implicit_shootdown, lazymm::membarrier_backend> d;
    std::fprintf(stderr, "child: survived; mechanism %s (%s)\n", lazymm::to_string(d.mechanism()),
                 d.mechanism_reason().c_str());
    std::_Exit(0);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) {
    std::printf("torture: seccomp-kill-check: a membarrier domain without LAZYMM_NO_MEMBARRIER died of SIGSYS: PASS\n");
    return 0;
  }
  if (WIFSIGNALED(status)) die("seccomp-kill-check: child died of signal %d, not SIGSYS", WTERMSIG(status));
  die("seccomp-kill-check: child exited with status %d instead of dying of SIGSYS", WEXITSTATUS(status));
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::snprintf(g_repro, sizeof g_repro, "torture: reproduce with: lazymm_torture --seed %llu (set-up)\n",
                static_cast<unsigned long long>(o.seed));
  std::signal(SIGABRT, on_fatal_signal);
  std::signal(SIGSEGV, on_fatal_signal);
  std::signal(SIGBUS, on_fatal_signal);

  if (o.flt != fault::none && LAZYMM_TSAN) {
    std::printf("torture: --fault %s skipped: a ThreadSanitizer build never issues membarrier\n", o.fault_name.c_str());
    return exit_skip;
  }
  // Fault set-up happens once, before the first domain exists and before any thread starts
  // (a seccomp filter applies to the installing thread and the threads it creates later).
  switch (o.flt) {
    case fault::none:
      lazymm::detail::seams::membarrier.store(&counting_membarrier);
      break;
    case fault::seam_enosys:
    case fault::seam_eperm:
    case fault::seam_einval:
    case fault::seam_einval_query:
      g_refuse_errno.store(o.flt == fault::seam_enosys ? ENOSYS : o.flt == fault::seam_eperm ? EPERM : EINVAL);
      g_refuse_query_lacks_expedited.store(o.flt == fault::seam_einval_query);
      lazymm::detail::seams::membarrier.store(&refusing_membarrier);
      break;
    case fault::seccomp_eperm:
    case fault::seccomp_kill: {
      std::string err;
      const std::uint32_t action =
          o.flt == fault::seccomp_eperm ? (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)) : SECCOMP_RET_KILL_PROCESS;
      if (!install_membarrier_filter(action, err)) {
        std::printf("torture: cannot install a seccomp filter here (%s): skipped\n", err.c_str());
        return exit_skip;
      }
      lazymm::detail::seams::membarrier.store(&counting_membarrier);
      break;
    }
    case fault::seccomp_kill_check:
      return seccomp_kill_check();
  }

  std::printf("torture: seed %llu\n", static_cast<unsigned long long>(o.seed));
  auto is = [&](const std::string& v, std::initializer_list<const char*> names) {
    return std::find(names.begin(), names.end(), v) != names.end();
  };
  if (!is(o.policy, {"refcount", "explicit_shootdown", "explicit", "implicit_shootdown", "implicit",
                     "batched_explicit_shootdown", "batched_implicit_shootdown", "all"}))
    usage("unknown --policy");
  if (!is(o.backend, {"fence", "membarrier", "all"})) usage("unknown --backend");
  int rc = 0;
  if (is(o.policy, {"refcount", "all"})) rc |= run_policy<lazymm::refcount>(o);
  if (is(o.policy, {"explicit_shootdown", "explicit", "all"})) rc |= run_policy<lazymm::explicit_shootdown>(o);
  if (is(o.policy, {"implicit_shootdown", "implicit", "all"})) rc |= run_policy<lazymm::implicit_shootdown>(o);
  if (is(o.policy, {"batched_explicit_shootdown", "all"}))
    rc |= run_policy<lazymm::batched<lazymm::explicit_shootdown>>(o);
  if (is(o.policy, {"batched_implicit_shootdown", "all"}))
    rc |= run_policy<lazymm::batched<lazymm::implicit_shootdown>>(o);
  return rc;
}
