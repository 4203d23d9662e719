// Executors: the default context, switch_to_default, ids and registration, executors of two
// domains on one thread, and address reuse (a context allocated where a freed one was must be
// activated: no stale "already loaded" fast path).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace lazymm_test;

namespace {

// One static, suitably aligned buffer that every `reusable` lives in, so that a context
// allocated after the previous one was freed has the same address.
alignas(std::max_align_t) alignas(64) unsigned char reuse_storage[256];
std::atomic<bool> reuse_in_use{false};

struct reusable : lazymm::context {
  reusable(event_log& l, int id) : log(&l), id(id) {}
  event_log* log;
  int id;
  void on_activate(lazymm::executor_id e) noexcept { log->add(event_log::activate, id, e.value); }
  void on_deactivate(lazymm::executor_id e) noexcept { log->add(event_log::deactivate, id, e.value); }
  void on_teardown() noexcept { log->add(event_log::teardown, id); }
  void on_evict(lazymm::executor_id e) noexcept { log->add(event_log::evict, id, e.value); }
  static void on_free(reusable* p) noexcept {
    p->log->add(event_log::free, p->id);
    delete p;  // reusable::operator delete
  }

  static void* operator new(std::size_t n) {
    if (n > sizeof reuse_storage || reuse_in_use.exchange(true)) {
      std::fputs("reusable: the buffer is taken (the previous context was not freed)\n", stderr);
      std::abort();
    }
    return reuse_storage;
  }
  static void operator delete(void* p) noexcept {
    if (p != reuse_storage) std::abort();
    reuse_in_use.store(false);
  }
};
static_assert(alignof(reusable) <= 64);

}  // namespace

template <class C>
class executors : public ::testing::Test {
 protected:
  static constexpr bool counts_slot = C::policy::counts_slot_holds;
};
TYPED_TEST_SUITE(executors, all_combos, combo_names);

TYPED_TEST(executors, a_fresh_executor_has_the_default_context_loaded_and_is_not_lazy) {
  typename TypeParam::domain d;
  EXPECT_EQ(d.attached_executors(), 0u);
  {
    auto ex = d.attach();
    EXPECT_EQ(ex.loaded(), d.default_context());
    EXPECT_FALSE(ex.is_lazy());
    EXPECT_EQ(d.attached_executors(), 1u);
  }
  EXPECT_EQ(d.attached_executors(), 0u);
}

TYPED_TEST(executors, switch_to_default_runs_deactivate_of_the_previous_context) {
  event_log log;
  typename TypeParam::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(log, 1);
  ex.switch_to(x);
  EXPECT_EQ(ex.loaded(), x.get());
  ex.switch_to_default();
  EXPECT_EQ(ex.loaded(), d.default_context());
  const auto deact = log.of(event_log::deactivate, 1);
  ASSERT_EQ(deact.size(), 1u);
  EXPECT_EQ(deact[0].exec, ex.id().value);
  EXPECT_LT(log.index(event_log::activate, 1), log.index(event_log::deactivate, 1));
  // From a lazy hold too: the lazy state ends and the previous context is deactivated.
  ex.switch_to(x);
  ex.go_lazy();
  ex.switch_to_default();
  EXPECT_FALSE(ex.is_lazy());
  EXPECT_EQ(log.count(event_log::deactivate, 1), 2);
  EXPECT_EQ(x->structural_count(), 1) << "no lazy reference left";
  EXPECT_EQ(x->owning_count(), 1);
}

TYPED_TEST(executors, every_executor_of_a_domain_shares_its_default_context) {
  typename TypeParam::domain d1, d2;
  EXPECT_NE(d1.default_context(), d2.default_context());
  std::vector<const lazymm::context*> seen(3);
  std::vector<std::thread> ts;
  ts.reserve(3);
  for (int i = 0; i < 3; ++i)
    ts.emplace_back([&, i] {
      auto ex = d1.attach();
      seen[static_cast<std::size_t>(i)] = ex.loaded();
    });
  for (auto& t : ts) t.join();
  for (auto* p : seen) EXPECT_EQ(p, d1.default_context());
}

// Ids are small and dense per domain (context.hpp); a detached executor's id may be reused.
TYPED_TEST(executors, executors_attached_together_have_distinct_dense_ids) {
  typename TypeParam::domain d;
  constexpr int n = 4;
  std::mutex m;
  std::set<std::uint32_t> ids;
  std::atomic<int> attached{0};
  std::atomic<bool> release{false};
  std::vector<std::thread> ts;
  ts.reserve(n);
  for (int i = 0; i < n; ++i)
    ts.emplace_back([&] {
      auto ex = d.attach();
      {
        std::lock_guard g(m);
        ids.insert(ex.id().value);
      }
      attached.fetch_add(1);
      while (!release.load()) std::this_thread::yield();
    });
  while (attached.load() < n) std::this_thread::yield();
  EXPECT_EQ(d.attached_executors(), static_cast<std::size_t>(n));
  release.store(true);
  for (auto& t : ts) t.join();
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(*ids.rbegin(), static_cast<std::uint32_t>(n - 1)) << "ids are dense: 0..n-1";
  EXPECT_EQ(d.attached_executors(), 0u);
  auto again = d.attach();  // a later attach may reuse a record; it still starts on default
  EXPECT_LT(again.id().value, static_cast<std::uint32_t>(n));
  EXPECT_EQ(again.loaded(), d.default_context());
}

// A thread may be an executor of two domains at once; they do not interfere, and the exit_mm
// handling of one domain leaves the other's executor alone.
TYPED_TEST(executors, one_thread_may_be_an_executor_of_two_domains) {
  event_log log;
  typename TypeParam::domain d1, d2;
  {
    auto e1 = d1.attach();
    auto e2 = d2.attach();
    auto x1 = d1.template make<counted>(log, 1);
    auto x2 = d2.template make<counted>(log, 2);
    e1.switch_to(x1);
    e2.switch_to(x2);
    EXPECT_EQ(e1.loaded(), x1.get());
    EXPECT_EQ(e2.loaded(), x2.get());
    x1.reset();  // exit_mm on e1
    EXPECT_EQ(log.count(event_log::teardown, 1), 1);
    EXPECT_EQ(e2.loaded(), x2.get());
    EXPECT_FALSE(e2.is_lazy());
    EXPECT_EQ(x2->structural_count(), TestFixture::counts_slot ? 2 : 1) << "refcount: the owners' and e2's slot's";
    EXPECT_EQ(log.count(event_log::evict, 2), 0);
    EXPECT_EQ(log.count(event_log::deactivate, 2), 0);
    e1.switch_to_default();
    EXPECT_EQ(log.count(event_log::free, 1), 1);
    e2.go_lazy();
    x2.reset();
    e2.switch_to_default();
    EXPECT_EQ(log.count(event_log::free, 2), 1);
  }
  EXPECT_EQ(d1.attached_executors(), 0u);
  EXPECT_EQ(d2.attached_executors(), 0u);
}

// Address reuse: the executor last had context A loaded; A is freed and B is created at the
// same address. Switching to B must run B's activate hook. A library that left A's address in
// the slot (no steal) would take the "already loaded" fast path and skip it. Under refcount A
// can only be freed once the holder has left it, so the holder switches away first there.
TYPED_TEST(executors, a_context_at_the_address_of_a_freed_one_is_activated) {
  event_log log;
  typename TypeParam::domain d;
  auto ex = d.attach();
  const void* first = nullptr;
  {
    auto a = d.template make<reusable>(log, 1);
    first = a.get();
    ex.switch_to(a);
    ex.go_lazy();
    a.reset();
  }
  if constexpr (TestFixture::counts_slot) {
    EXPECT_EQ(log.count(event_log::free, 1), 0);
    EXPECT_EQ(ex.loaded(), first);
    ex.switch_to_default();
  }
  ASSERT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(ex.loaded(), d.default_context());
  auto b = d.template make<reusable>(log, 2);
  ASSERT_EQ(static_cast<const void*>(b.get()), first) << "the test needs B at A's address";
  ex.switch_to(b);
  const auto act = log.of(event_log::activate, 2);
  ASSERT_EQ(act.size(), 1u) << "B at a reused address was not activated";
  EXPECT_EQ(act[0].exec, ex.id().value);
  EXPECT_EQ(ex.loaded(), b.get());
  ex.switch_to_default();
  EXPECT_EQ(log.count(event_log::deactivate, 2), 1);
}

// The same with the exit_mm case on a worker thread that then sleeps as an idle holder: A's last
// owner is dropped while A is loaded, B reuses the address, and the worker switches to B.
TYPED_TEST(executors, a_context_at_the_address_of_one_freed_under_exit_mm_is_activated) {
  event_log log;
  typename TypeParam::domain d;
  std::mutex m;
  std::condition_variable cv;
  int step = 0;  // 1: A dropped on the worker; 2: B exists, worker may switch to it
  lazymm::owning_ref<reusable> b;
  const void* first = nullptr;
  lazymm::executor_id id;
  std::thread w([&] {
    auto ex = d.attach();
    {
      auto a = d.template make<reusable>(log, 1);
      first = a.get();
      ex.switch_to(a);
      a.reset();  // exit_mm
    }
    if constexpr (TestFixture::counts_slot) ex.switch_to_default();  // refcount frees A here
    std::unique_lock g(m);
    id = ex.id();
    step = 1;
    cv.notify_all();
    cv.wait(g, [&] { return step == 2; });  // idle, blocked
    ex.switch_to(b);
    EXPECT_EQ(ex.loaded(), b.get());
    ex.go_lazy();
    ex.switch_to_default();
  });
  {
    std::unique_lock g(m);
    cv.wait(g, [&] { return step == 1; });
  }
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  b = d.template make<reusable>(log, 2);
  EXPECT_EQ(static_cast<const void*>(b.get()), first) << "the test needs B at A's address";
  {
    std::lock_guard g(m);
    step = 2;
    cv.notify_all();
  }
  w.join();
  const auto act = log.of(event_log::activate, 2);
  ASSERT_EQ(act.size(), 1u) << "B at a reused address was not activated";
  EXPECT_EQ(act[0].exec, id.value);
  b.reset();
  EXPECT_EQ(log.count(event_log::free, 2), 1);
}
