// lazymm/detail/seams.hpp: test seams, compiled only with LAZYMM_TEST_SEAMS=1.
#pragma once

#include <lazymm/config.hpp>

#include <atomic>
#include <cstdint>

namespace lazymm {

// Points inside the protocol where a test can pause a thread (tests/support.hpp: pause_at).
// Declared in every build; the points exist only with LAZYMM_TEST_SEAMS=1.
enum class test_point : std::uint8_t {
  switch_before_slot_read,  // executor: seq is odd and the light barrier passed; slot not read
  switch_after_slot_read,   // executor: slot read into prev; hooks not yet run
  reclaim_after_steal,      // reclaimer: steals done, heavy barrier not yet issued
  detach_before_unregister, // executor: lazy hold dropped, record still in the registry
  holder_set_write,         // executor: about to set its bit in a context's holder set
  trim_before_clear,        // trim: members chosen for removal, their bits not yet cleared (17)
};

namespace detail {

#if LAZYMM_TEST_SEAMS
struct seams {
  // Called at every test_point with the executor id (reclaim points: ~0u).
  inline static std::atomic<void (*)(test_point, std::uint32_t)> on_point{nullptr};
  // Replaces the membarrier syscall: returns what the syscall would, sets errno on -1.
  inline static std::atomic<long (*)(int cmd, unsigned flags)> membarrier{nullptr};
};
inline void hit(test_point p, std::uint32_t id) noexcept {
  if (auto f = seams::on_point.load(std::memory_order_acquire)) f(p, id);
}
#define LAZYMM_TEST_POINT(p, id) ::lazymm::detail::hit(::lazymm::test_point::p, (id))
#else
#define LAZYMM_TEST_POINT(p, id) ((void)0)
#endif

}  // namespace detail
}  // namespace lazymm
