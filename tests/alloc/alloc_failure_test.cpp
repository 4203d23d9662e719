// Allocation failure on the attach paths (issue #19 item 9): when any allocation inside
// thread_executor() or attach() throws std::bad_alloc, the exception reaches the caller, nothing is
// kept (no managed entry, no record, no attached executor) and no executor id is lost: the next
// attempt, with memory available again, succeeds and gets the first id.
//
// A binary of its own: it replaces the global operator new and delete (all of them, so that the
// sanitizers' allocation-kind checks see malloc/free pairs) to make the n-th allocation of the
// calling thread from now throw. Every n is tried, from the first allocation on the path to the
// first n at which the call completes, so the test does not depend on which allocations the
// path makes or in which order.
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <thread>

#include "support.hpp"

namespace {

thread_local int fail_countdown = 0;  // > 0: the fail_countdown-th allocation from now throws
thread_local long live_here = 0;      // allocations minus frees on this thread

void* allocate(std::size_t n, std::size_t align) {
  if (fail_countdown > 0 && --fail_countdown == 0) throw std::bad_alloc();
  if (n == 0) n = 1;
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                              : std::malloc(n);
  if (!p) throw std::bad_alloc();
  ++live_here;
  return p;
}

void* allocate_nothrow(std::size_t n, std::size_t align) noexcept {
  try {
    return allocate(n, align);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}

void release(void* p) noexcept {
  if (!p) return;
  --live_here;
  std::free(p);
}

}  // namespace

void* operator new(std::size_t n) { return allocate(n, 0); }
void* operator new[](std::size_t n) { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_nothrow(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_nothrow(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }

using namespace lazymm_test;

template <class C>
class alloc_failure : public ::testing::Test {};
TYPED_TEST_SUITE(alloc_failure, all_combos, combo_names);

namespace {

// Calls `attempt` with the n-th allocation failing, n = 1, 2, ..., until a call completes; after
// each failure checks that the call kept nothing. Returns how many allocations failed (each one
// threw). Runs on its own thread, so that a managed executor detaches at that thread's exit.
template <class Domain, class Attempt>
int fail_each_allocation_until_success(Domain& d, Attempt attempt) {
  int failures = 0;
  std::thread([&] {
    for (int n = 1;; ++n) {
      const long live_before = live_here;
      fail_countdown = n;
      bool threw = false;
      try {
        attempt();
      } catch (const std::bad_alloc&) {
        threw = true;
      }
      fail_countdown = 0;
      if (!threw) break;
      ++failures;
      EXPECT_EQ(live_here, live_before) << "allocation " << n << " failed: memory kept";
      EXPECT_EQ(d.attached_executors(), 0u) << "allocation " << n << " failed: an executor stayed attached";
      EXPECT_EQ(d.find_thread_executor(), nullptr) << "allocation " << n << " failed";
      ASSERT_LT(n, 100) << "the attach path never completed";
    }
  }).join();
  return failures;
}

}  // namespace

TYPED_TEST(alloc_failure, thread_executor_keeps_nothing_and_loses_no_id_when_an_allocation_throws) {
  typename TypeParam::domain d;
  lazymm::executor_id id{};
  const int failures = fail_each_allocation_until_success(d, [&] {
    auto& e = d.thread_executor();
    id = e.id();
    EXPECT_EQ(d.attached_executors(), 1u);
  });
  EXPECT_GE(failures, 2) << "the managed entry and the registry's block are two allocations";
  EXPECT_EQ(id.value, 0u) << "an id was drawn by a failed attempt and lost";
  EXPECT_EQ(d.attached_executors(), 0u) << "the managed executor detaches at its thread's exit";
}

TYPED_TEST(alloc_failure, attach_keeps_nothing_and_loses_no_id_when_an_allocation_throws) {
  typename TypeParam::domain d;
  lazymm::executor_id id{};
  const int failures = fail_each_allocation_until_success(d, [&] {
    auto e = d.attach();
    id = e.id();
  });
  EXPECT_GE(failures, 1) << "the registry's block is an allocation";
  EXPECT_EQ(id.value, 0u) << "an id was drawn by a failed attempt and lost";
}
