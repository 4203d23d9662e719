// lazymm/detail/diag.hpp: fatal errors with a message (S5).
#pragma once

#include <lazymm/config.hpp>

#include <string_view>

#if LAZYMM_GENMC
#include <assert.h>
#else
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#endif

namespace lazymm::detail {

#if LAZYMM_GENMC
// Under GenMC a failed check is an assertion violation, which the model checker reports.
[[noreturn]] inline void abort_with(const char*, ...) noexcept {
  assert(!"lazymm: check failed");
  __builtin_unreachable();
}
#else

// Prints "lazymm: <message>" to stderr and aborts. Misuse of lazymm is never recoverable:
// the state it would leave behind is a use-after-free waiting to happen.
[[noreturn]] __attribute__((format(printf, 1, 2), cold)) inline void abort_with(const char* fmt, ...) noexcept {
  std::fputs("lazymm: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  std::abort();
}
#endif

// The name of T, for messages, without RTTI.
template <class T>
constexpr std::string_view type_name() noexcept {
  std::string_view p = __PRETTY_FUNCTION__;
  const auto b = p.find("T = ");
  if (b == std::string_view::npos) return "?";
  p.remove_prefix(b + 4);
  const auto e = p.find_first_of(";]");
  return p.substr(0, e);
}

}  // namespace lazymm::detail

// Always-on check: cheap, and on paths that are not hot.
#define LAZYMM_CHECK(cond, ...)                                 \
  do {                                                          \
    if (!(cond)) [[unlikely]] ::lazymm::detail::abort_with(__VA_ARGS__); \
  } while (0)

// Checked-mode check (LAZYMM_CHECKED).
#if LAZYMM_CHECKED
#define LAZYMM_DCHECK(cond, ...) LAZYMM_CHECK(cond, __VA_ARGS__)
#else
#define LAZYMM_DCHECK(cond, ...) \
  do {                           \
  } while (0)
#endif
