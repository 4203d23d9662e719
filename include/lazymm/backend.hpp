// lazymm/backend.hpp: the remote-interrupt analogue, chosen by template argument.
//
// Contract (in standard terms): a light barrier and a heavy barrier interact as if both were
// std::atomic_thread_fence(std::memory_order_seq_cst). The light barrier runs on every real
// switch of an executor; the heavy one once per shootdown round, on the reclaimer.
//
//   backend     | light barrier (executor)     | heavy barrier (reclaimer)
//   ------------+------------------------------+----------------------------------------
//   membarrier  | compiler barrier only        | membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
//   fence       | atomic_thread_fence(seq_cst) | atomic_thread_fence(seq_cst)
//
// membarrier makes every running thread of the process pass a full barrier before it returns,
// and a thread that is not running passes one at its next context switch; so the executor's
// compiler barrier is upgraded to a full fence exactly when the reclaimer needs it.
//
// Pairings (edge numbers of detail/protocol.hpp):
//   A  executor (1) odd seq, (2) light     with  (6') steal, (7) heavy, (8) seq load    [S1]
//   B  executor (5) even seq, (12) waiters  with  waiters++, heavy, seq load (blocking wait)
// Under GenMC (LAZYMM_GENMC) both barriers are seq_cst fences: the membarrier backend is checked
// under its contract, not as the syscall.
#pragma once

#include <lazymm/config.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/protocol.hpp>
#include <lazymm/detail/seams.hpp>

#include <atomic>
#include <cstdint>
#include <type_traits>

#if !LAZYMM_GENMC
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#if defined(__linux__)
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif
#endif

namespace lazymm {

// Portable: seq_cst fences on both sides. Any platform; the automatic choice under TSan.
struct fence_backend {
  static constexpr const char* name = "fence";
};

// Linux membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED). Registered and probed once when the
// domain is created; if the kernel refuses any step (ENOSYS, EPERM, EINVAL), the domain falls
// back to fences and says why (domain::mechanism_reason()), unless LAZYMM_REQUIRE_MEMBARRIER
// makes that fatal.
struct membarrier_backend {
  static constexpr const char* name = "membarrier";
};

// TSan models neither membarrier nor standalone fences: TSan builds use fences, and TSan then
// checks the release/acquire half of the protocol (the fence half is GenMC's, tests/model/).
#if LAZYMM_TSAN || !defined(__linux__)
using default_backend = fence_backend;
#else
using default_backend = membarrier_backend;
#endif

// What a domain actually uses, decided when it is created.
enum class mechanism { membarrier, fence };

inline const char* to_string(mechanism m) noexcept {
  return m == mechanism::membarrier ? "membarrier" : "fence";
}

namespace detail {

// Compiler barrier that does not trip GCC's -Wtsan.
inline void compiler_barrier() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

// Full fence. GCC warns (-Wtsan) that TSan ignores it; TSan relies on the release/acquire
// edges instead (the fence pairings are checked by GenMC), so the warning is silenced here only.
inline void full_fence() noexcept {
#if defined(__GNUC__) && !defined(__clang__) && LAZYMM_TSAN
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
#if defined(__GNUC__) && !defined(__clang__) && LAZYMM_TSAN
#pragma GCC diagnostic pop
#endif
}

inline void cpu_pause() noexcept {
#if LAZYMM_GENMC
#elif defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

#if LAZYMM_GENMC
// (GenMC cannot follow a two-word struct returned by value: the reason follows from mech.)
using reason_text = const char*;
struct mechanism_choice {
  mechanism mech;
  reason_text reason() const noexcept {
    return mech == mechanism::fence ? "fence backend selected"
                                    : "GenMC: membarrier checked under its contract (both barriers seq_cst fences)";
  }
};
template <class B>
mechanism_choice choose_mechanism() {
  return {std::is_same_v<B, fence_backend> ? mechanism::fence : mechanism::membarrier};
}
#else
using reason_text = std::string;
struct mechanism_choice {
  mechanism mech;
  reason_text reason;
};

#if defined(__linux__)
inline long sys_membarrier(int cmd, unsigned flags) noexcept {
#if LAZYMM_TEST_SEAMS
  if (auto f = seams::membarrier.load(std::memory_order_acquire)) return f(cmd, flags);
#endif
  return ::syscall(__NR_membarrier, cmd, flags, 0);
}
#endif

inline mechanism_choice refused(const char* step, int err) {
  std::string why = std::string("membarrier refused at ") + step + ": " +
                    (err == ENOSYS ? "ENOSYS" : err == EPERM ? "EPERM" : err == EINVAL ? "EINVAL"
                                                                                       : std::strerror(err));
#if LAZYMM_REQUIRE_MEMBARRIER
  abort_with("%s, and LAZYMM_REQUIRE_MEMBARRIER is set", why.c_str());
#endif
  return {mechanism::fence, why + "; falling back to fences"};
}

// Decides the mechanism for a domain with backend B: registers membarrier and issues one
// barrier command, so that a sandbox that allows registration but refuses the command itself
// is found here and not at the first round.
template <class B>
mechanism_choice choose_mechanism() {
  if constexpr (std::is_same_v<B, fence_backend>) {
    return {mechanism::fence, "fence backend selected"};
  } else {
    static_assert(std::is_same_v<B, membarrier_backend>, "lazymm: unknown backend");
#if LAZYMM_NO_MEMBARRIER
#if LAZYMM_REQUIRE_MEMBARRIER
    abort_with("LAZYMM_NO_MEMBARRIER and LAZYMM_REQUIRE_MEMBARRIER are both set");
#endif
    return {mechanism::fence, "membarrier disabled at compile time (LAZYMM_NO_MEMBARRIER)"};
#elif LAZYMM_TSAN
    return {mechanism::fence, "ThreadSanitizer build: TSan does not model membarrier"};
#elif !defined(__linux__)
    return {mechanism::fence, "membarrier is Linux-only"};
#else
    if (const char* env = std::getenv("LAZYMM_NO_MEMBARRIER"); env && *env && std::strcmp(env, "0") != 0) {
#if LAZYMM_REQUIRE_MEMBARRIER
      abort_with("LAZYMM_NO_MEMBARRIER is set in the environment and LAZYMM_REQUIRE_MEMBARRIER at compile time");
#endif
      return {mechanism::fence, "membarrier disabled by the environment (LAZYMM_NO_MEMBARRIER)"};
    }
    const long cmds = sys_membarrier(MEMBARRIER_CMD_QUERY, 0);
    if (cmds < 0) return refused("MEMBARRIER_CMD_QUERY", errno);
    if (!(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return refused("MEMBARRIER_CMD_QUERY", EINVAL);
    // Registration waits for a grace period the first time a process does it: it belongs here,
    // before workers start. Later registrations return at once.
    if (sys_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) < 0)
      return refused("MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED", errno);
    // The probe: the command every round will issue.
    if (sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) < 0)
      return refused("MEMBARRIER_CMD_PRIVATE_EXPEDITED", errno);
    return {mechanism::membarrier, "membarrier MEMBARRIER_CMD_PRIVATE_EXPEDITED registered"};
#endif
  }
}

// Blocking on a record's seq word: a futex on Linux, a short sleep elsewhere. Timed, so that a
// wake missed on the fence mechanism (see B) costs at most one period.
inline void sleep_on(std::atomic<std::uint32_t>& word, std::uint32_t value) noexcept {
#if defined(__linux__)
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  const timespec period{0, 1000 * 1000};  // 1 ms
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, value, &period, nullptr, 0);
#else
  (void)word;
  (void)value;
  std::this_thread::sleep_for(std::chrono::microseconds(100));
#endif
}

// A pause of about a millisecond in a loop that waits for other threads (domain.hpp).
inline void sleep_briefly() noexcept { std::this_thread::sleep_for(std::chrono::milliseconds(1)); }

// Called from the owner's switch (12). On x86-64 and arm64 Linux the syscall instruction is
// inline, not a call into libc: the switch then contains no call and the compiler saves no
// registers for this cold branch (the lean switch in executor.hpp).
inline void wake_all(std::atomic<std::uint32_t>& word) noexcept {
  auto* const w = reinterpret_cast<std::uint32_t*>(&word);
#if defined(__linux__) && defined(__x86_64__) && !LAZYMM_TSAN
  long ret = SYS_futex;
  register long timeout asm("r10") = 0;
  register long uaddr2 asm("r8") = 0;
  register long val3 asm("r9") = 0;
  asm volatile("syscall"
               : "+a"(ret)
               : "D"(w), "S"(long{FUTEX_WAKE_PRIVATE}), "d"(long{INT_MAX}), "r"(timeout), "r"(uaddr2), "r"(val3)
               : "rcx", "r11", "memory");
#elif defined(__linux__) && defined(__aarch64__) && !LAZYMM_TSAN
  register long x8 asm("x8") = SYS_futex;
  register long x0 asm("x0") = reinterpret_cast<long>(w);
  register long x1 asm("x1") = FUTEX_WAKE_PRIVATE;
  register long x2 asm("x2") = INT_MAX;
  register long x3 asm("x3") = 0;
  register long x4 asm("x4") = 0;
  register long x5 asm("x5") = 0;
  asm volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
#elif defined(__linux__)
  ::syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
  (void)word;
#endif
}
#endif  // !LAZYMM_GENMC

// The barriers and the wait of a domain with backend B, as protocol.hpp calls them.
template <class B>
struct barriers {
  mechanism mech;

  // (2) executor side. The fence backend knows its fence at compile time.
  void light() const noexcept {
    if (fences_at_compile_time() || mech != mechanism::membarrier)
      full_fence();
    else
      compiler_barrier();
  }
  static constexpr bool fences_at_compile_time() noexcept { return std::is_same_v<B, fence_backend> || LAZYMM_GENMC; }

  // (7) reclaimer side.
  void heavy() const noexcept {
#if !LAZYMM_GENMC && defined(__linux__)
    if (mech == mechanism::membarrier) {
      const long r = sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
      LAZYMM_CHECK(r == 0, "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after a successful probe: %s",
                   std::strerror(errno));
      return;
    }
#endif
    full_fence();
  }

  // (8) Returns once r.seq != s, read by an acquire load. Spins a little (a switch is a few
  // hooks long), then sleeps on the futex: a sleeping reclaimer leaves the CPU to an owner that
  // was preempted mid-switch, whatever the two threads' priorities.
  void wait(executor_record& r, std::uint32_t s) const noexcept {
#if LAZYMM_GENMC
    while (r.seq.load(std::memory_order_acquire) == s) {
    }
#else
    for (int spins = 0; spins < 256; ++spins) {
      if (r.seq.load(std::memory_order_acquire) != s) return;
      cpu_pause();
    }
    // B: announce ourselves, then a heavy barrier (Matches B in the owner's (12)): the owner
    // either sees waiters != 0 after its (5) and wakes us, or we see its (5) below.
    r.waiters.fetch_add(1, std::memory_order_seq_cst);
    heavy();
    while (r.seq.load(std::memory_order_acquire) == s) sleep_on(r.seq, s);
    // Relaxed: only a hint for the owner's (12); a stale non-zero costs one spare wake.
    r.waiters.fetch_sub(1, std::memory_order_relaxed);
#endif
  }

  // (12) B, owner side, after (5). Relaxed: the compiler barrier keeps (5) before this load,
  // and a reclaimer that blocks issues a heavy barrier between its waiters increment and its seq
  // check (Matches B), so one of the two sees the other; on the fence mechanism they may cross,
  // and the reclaimer's timed sleep bounds the cost. Absent under GenMC, whose wait never blocks:
  // GenMC would model the compiler barrier as a real fence and check a stronger switch.
  void wake_blocked([[maybe_unused]] executor_record& r) const noexcept {
#if !LAZYMM_GENMC
    compiler_barrier();
    if (r.waiters.load(std::memory_order_relaxed) != 0) [[unlikely]]
      wake_all(r.seq);
#endif
  }
};

// The barriers of an executor's lean switch (executor.hpp), which runs only where the mechanism
// in force is known: the one B names at compile time, or membarrier (an executor of a domain that
// fell back to fences always takes the general switch). So (2) needs no test.
template <class B>
struct lean_barriers : barriers<B> {
  // Whether the lean form applies to this mechanism.
  bool lean() const noexcept { return barriers<B>::fences_at_compile_time() || this->mech == mechanism::membarrier; }
  const barriers<B>& general() const noexcept { return *this; }
  void light() const noexcept {
    if constexpr (barriers<B>::fences_at_compile_time())
      full_fence();
    else
      compiler_barrier();
  }
};

}  // namespace detail
}  // namespace lazymm
