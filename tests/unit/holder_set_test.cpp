// Holder sets (issue 11): a context's set of executors that may hold it, set by the owner at a
// real switch only when its bit is clear, read by the round, trimmed by domain::trim. Each test
// fails if the claim in its name is false; the mutant it kills is named where there is one.
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace lazymm_test;

namespace {

using holder_combos = ::testing::Types<combo<lazymm::explicit_shootdown, lazymm::fence_backend>,
                                       combo<lazymm::explicit_shootdown, lazymm::membarrier_backend>,
                                       combo<lazymm::implicit_shootdown, lazymm::fence_backend>,
                                       combo<lazymm::implicit_shootdown, lazymm::membarrier_backend>,
                                       combo<lazymm::batched<lazymm::explicit_shootdown>, lazymm::membarrier_backend>,
                                       combo<lazymm::batched<lazymm::implicit_shootdown>, lazymm::fence_backend>>;

template <class C>
class holder_set : public ::testing::Test {
 protected:
  using domain = typename C::domain;
  // A final drop, then (batched) the reclaim that runs its round.
  static void drop(domain& d, lazymm::owning_ref<counted>& x) {
    x.reset();
    if constexpr (C::policy::batches) d.synchronize();
  }
};
TYPED_TEST_SUITE(holder_set, holder_combos, combo_names);

// Counts the shared writes to holder sets (test point holder_set_write).
struct set_writes {
  inline static std::atomic<int> n{0};
  set_writes() {
    n = 0;
    lazymm::detail::seams::on_point.store(+[](lazymm::test_point p, std::uint32_t) {
      if (p == lazymm::test_point::holder_set_write) ++n;
    });
  }
  ~set_writes() { lazymm::detail::seams::on_point.store(nullptr); }
};

// S4 for the set: switching back and forth between two contexts writes each set once.
// Kills HOLDER_SET_AFTER_SLOT (a write at every real switch).
TYPED_TEST(holder_set, a_real_switch_writes_the_set_only_when_its_bit_is_clear) {
  event_log log;
  typename TestFixture::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  set_writes w;
  for (int i = 0; i < 5; ++i) {
    ex.switch_to(x);
    ex.switch_to(y);
  }
  ex.switch_to_default();
  EXPECT_EQ(set_writes::n.load(), 2) << "one write per context, at its first switch";
  EXPECT_EQ(d.holder_count(x), 1u);
  EXPECT_EQ(d.holder_count(y), 1u);
}

// The default context is never in a set, and an executor that never ran x is not in x's set.
TYPED_TEST(holder_set, only_executors_that_switched_to_x_are_members) {
  event_log log;
  typename TestFixture::domain d;
  worker a(d), b(d), c(d);
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  a.run([&](auto& e) { e.switch_to(x); });
  b.run([&](auto& e) { e.switch_to(y); });
  c.run([&](auto& e) { e.switch_to_default(); });
  EXPECT_EQ(d.holder_count(x), 1u);
  EXPECT_EQ(d.holder_count(y), 1u);
  a.run([&](auto& e) { e.go_lazy(); });
  TestFixture::drop(d, x);
  EXPECT_EQ(log.count(event_log::evict, 1), 1) << "the member's lazy hold was stolen";
  EXPECT_EQ(a.loaded(), d.default_context());
  EXPECT_EQ(b.loaded(), static_cast<const lazymm::context*>(y.get())) << "a non-member is left alone";
  b.run([&](auto& e) { e.switch_to_default(); });
}

// Trim removes executors that switched away and keeps the one holding x lazily.
// Kills TRIM_HOLDING.
TYPED_TEST(holder_set, trim_removes_executors_that_switched_away_and_keeps_a_lazy_holder) {
  event_log log;
  typename TestFixture::domain d;
  worker lazy(d), gone(d);
  auto x = d.template make<counted>(log, 1);
  lazy.run([&](auto& e) {
    e.switch_to(x);
    e.go_lazy();
  });
  gone.run([&](auto& e) {
    e.switch_to(x);
    e.switch_to_default();
  });
  EXPECT_EQ(d.holder_count(x), 2u);
  EXPECT_EQ(d.trim(x), 1u);
  EXPECT_EQ(d.holder_count(x), 1u);
  EXPECT_EQ(d.trim(x), 0u) << "nothing more to remove";
  TestFixture::drop(d, x);
  EXPECT_EQ(log.count(event_log::evict, 1), 1) << "the round still found the lazy holder";
  EXPECT_EQ(lazy.loaded(), d.default_context());
  expect_clean_history(log, 1);
}

// A trim never removes an executor caught inside a switch, even one whose slot does not hold x
// yet (CVE-2025-37964's shape): paused after (1), (2) and (15) of a switch back to x, with its
// bit still set from an earlier switch. Kills TRIM_SWITCHING.
TYPED_TEST(holder_set, trim_keeps_an_executor_inside_a_switch_back_to_x) {
  event_log log;
  typename TestFixture::domain d;
  worker w(d);
  auto x = d.template make<counted>(log, 1);
  auto mine = x;
  w.run([&](auto& e) {
    e.switch_to(mine);
    e.switch_to_default();  // the bit stays set: stale
  });
  {
    pause_at p(lazymm::test_point::switch_before_slot_read, w.id().value);
    std::thread t([&] { w.run([&](auto& e) { e.switch_to(mine); }); });
    ASSERT_TRUE(p.wait_reached());
    EXPECT_EQ(d.trim(x), 0u) << "odd seq: the executor may be switching to x";
    EXPECT_EQ(d.holder_count(x), 1u);
    p.resume();
    t.join();
  }
  w.run([&](auto& e) {
    e.go_lazy();
    mine.reset();
  });
  TestFixture::drop(d, x);
  EXPECT_EQ(log.count(event_log::evict, 1), 1);
  EXPECT_EQ(w.loaded(), d.default_context());
  expect_clean_history(log, 1);
}

// Ids past 63 live in an array allocated on first need; every member is found by the round.
TYPED_TEST(holder_set, a_round_finds_members_with_ids_past_63) {
  event_log log;
  typename TestFixture::domain d;
  auto x = d.template make<counted>(log, 1);
  std::vector<std::unique_ptr<worker<typename TestFixture::domain>>> ws;
  for (int i = 0; i < 100; ++i) ws.push_back(std::make_unique<worker<typename TestFixture::domain>>(d));
  for (std::size_t i = 0; i < ws.size(); i += 3)
    ws[i]->run([&](auto& e) {
      e.switch_to(x);
      e.go_lazy();
    });
  EXPECT_EQ(d.holder_count(x), 34u);
  TestFixture::drop(d, x);
  EXPECT_EQ(log.count(event_log::evict, 1), 34);
  for (auto& w : ws) EXPECT_EQ(w->loaded(), d.default_context());
  expect_clean_history(log, 1);
}

// An executor whose id is past the array (attached after it was sized) marks the set overflowed:
// the round then walks every record, and still finds every holder.
TYPED_TEST(holder_set, an_overflowed_set_makes_the_round_walk_every_record) {
  event_log log;
  typename TestFixture::domain d;
  auto x = d.template make<counted>(log, 1);
  std::vector<std::unique_ptr<worker<typename TestFixture::domain>>> ws;
  for (int i = 0; i < 65; ++i) ws.push_back(std::make_unique<worker<typename TestFixture::domain>>(d));
  ws[64]->run([&](auto& e) { e.switch_to(x); });  // sizes the array for 2 x 65 ids (3 words: ids < 256)
  for (int i = 65; i < 260; ++i) ws.push_back(std::make_unique<worker<typename TestFixture::domain>>(d));
  ws[259]->run([&](auto& e) { e.switch_to(x); });  // id 259: past the array
  EXPECT_EQ(d.holder_count(x), 260u) << "overflowed: every registered executor";
  ws[64]->run([&](auto& e) { e.go_lazy(); });
  ws[259]->run([&](auto& e) { e.go_lazy(); });
  TestFixture::drop(d, x);
  EXPECT_EQ(log.count(event_log::evict, 1), 2);
  EXPECT_EQ(ws[64]->loaded(), d.default_context());
  EXPECT_EQ(ws[259]->loaded(), d.default_context());
  expect_clean_history(log, 1);
}

}  // namespace
