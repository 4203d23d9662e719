// lazymm compiles after function-like macros that other libraries define with common names
// (Boost.Fiber's cpu_relax(), <windows.h>'s min/max, the kernel-style likely/unlikely and
// barriers, libcheck's fail() and check()): the headers use no such unprefixed name followed by
// '('. The standard headers
// lazymm includes come first (they are not lazymm's to protect); if a lazymm header used one of
// these names, this file would not compile.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <compare>
#include <concepts>
#include <condition_variable>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#define cpu_relax() macro_clobbered
#define min(a, b) macro_clobbered
#define max(a, b) macro_clobbered
#define likely(x) macro_clobbered
#define unlikely(x) macro_clobbered
#define barrier() macro_clobbered
#define mb() macro_clobbered
#define rmb() macro_clobbered
#define wmb() macro_clobbered
#define smp_mb() macro_clobbered
#define fence() macro_clobbered
#define check(x) macro_clobbered
#define fail(...) macro_clobbered

#include <lazymm/lazymm.hpp>
#include <lazymm/reclaimer.hpp>

#undef cpu_relax
#undef min
#undef max
#undef likely
#undef unlikely
#undef barrier
#undef mb
#undef rmb
#undef wmb
#undef smp_mb
#undef fence
#undef check
#undef fail

#include <gtest/gtest.h>

namespace {
struct plain : lazymm::context {};
}  // namespace

TEST(macro_clobber_test, lazymm_compiles_and_runs_after_common_function_like_macros) {
  lazymm::domain<> d;
  auto ex = d.attach();
  auto x = d.make<plain>();
  ex.switch_to(x);
  ex.go_lazy();
  x.reset();
  ex.switch_to_default();
  EXPECT_EQ(d.live_contexts(), 0);
}
