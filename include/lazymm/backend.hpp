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
#pragma once

#include <lazymm/config.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/seams.hpp>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace lazymm {

// Portable: seq_cst fences on both sides. Any platform; the automatic choice under TSan.
struct fence_backend {
  static constexpr const char* name = "fence";
};

// Linux membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED). Registered when the domain is created;
// if the kernel refuses (ENOSYS, EPERM, EINVAL), the domain falls back to fences and says why
// (domain::mechanism_reason()), unless LAZYMM_REQUIRE_MEMBARRIER makes that fatal.
struct membarrier_backend {
  static constexpr const char* name = "membarrier";
};

// TSan models neither membarrier nor standalone fences; the fence backend plus the stronger
// orders of LAZYMM_TSAN_ORDER gives it edges it can follow.
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

// Full fence. GCC warns (-Wtsan) that TSan ignores it; the protocol gives TSan its edges
// through LAZYMM_TSAN_ORDER instead, so the warning is silenced here only.
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

#if defined(__linux__)
inline long sys_membarrier(int cmd, unsigned flags) noexcept {
#if LAZYMM_TEST_SEAMS
  if (auto f = seams::membarrier.load(std::memory_order_acquire)) return f(cmd, flags);
#endif
  return ::syscall(__NR_membarrier, cmd, flags, 0);
}
#endif

struct mechanism_choice {
  mechanism mech;
  std::string reason;
};

inline mechanism_choice refused(const char* step, int err) {
  std::string why = std::string("membarrier refused at ") + step + ": " +
                    (err == ENOSYS ? "ENOSYS" : err == EPERM ? "EPERM" : err == EINVAL ? "EINVAL"
                                                                                       : std::strerror(err));
#if LAZYMM_REQUIRE_MEMBARRIER
  fail("%s, and LAZYMM_REQUIRE_MEMBARRIER is set", why.c_str());
#endif
  return {mechanism::fence, why + "; falling back to fences"};
}

// Decides the mechanism for a domain with backend B (registers membarrier if it is used).
template <class B>
mechanism_choice choose_mechanism() {
  if constexpr (std::is_same_v<B, fence_backend>) {
    return {mechanism::fence, "fence backend selected"};
  } else {
    static_assert(std::is_same_v<B, membarrier_backend>, "lazymm: unknown backend");
#if LAZYMM_NO_MEMBARRIER
#if LAZYMM_REQUIRE_MEMBARRIER
    fail("LAZYMM_NO_MEMBARRIER and LAZYMM_REQUIRE_MEMBARRIER are both set");
#endif
    return {mechanism::fence, "membarrier disabled at compile time (LAZYMM_NO_MEMBARRIER)"};
#elif LAZYMM_TSAN
    return {mechanism::fence, "ThreadSanitizer build: TSan does not model membarrier"};
#elif !defined(__linux__)
    return {mechanism::fence, "membarrier is Linux-only"};
#else
    if (const char* env = std::getenv("LAZYMM_NO_MEMBARRIER"); env && *env && std::strcmp(env, "0") != 0) {
#if LAZYMM_REQUIRE_MEMBARRIER
      fail("LAZYMM_NO_MEMBARRIER is set in the environment and LAZYMM_REQUIRE_MEMBARRIER at compile time");
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
    return {mechanism::membarrier, "membarrier MEMBARRIER_CMD_PRIVATE_EXPEDITED registered"};
#endif
  }
}

// Light barrier, executor side: see the table at the top of this file.
inline void light_barrier(mechanism m) noexcept {
  if (m == mechanism::membarrier)
    compiler_barrier();
  else
    full_fence();
}

// Heavy barrier, reclaimer side.
inline void heavy_barrier(mechanism m) noexcept {
#if defined(__linux__)
  if (m == mechanism::membarrier) {
    const long r = sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
    LAZYMM_CHECK(r == 0, "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after registration: %s",
                 std::strerror(errno));
    return;
  }
#endif
  full_fence();
}

}  // namespace detail
}  // namespace lazymm
