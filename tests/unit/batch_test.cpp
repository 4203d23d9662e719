// Batched retirement (batched<P>): the final drop queues, reclaim() runs one round for a batch.
// Typed over batched<explicit|implicit> x {fence, membarrier}.
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <lazymm/reclaimer.hpp>

#include "support.hpp"

using namespace lazymm_test;
using namespace std::chrono_literals;

namespace {

using batched_combos = ::testing::Types<combo<lazymm::batched<lazymm::explicit_shootdown>, lazymm::fence_backend>,
                                        combo<lazymm::batched<lazymm::explicit_shootdown>, lazymm::membarrier_backend>,
                                        combo<lazymm::batched<lazymm::implicit_shootdown>, lazymm::fence_backend>,
                                        combo<lazymm::batched<lazymm::implicit_shootdown>, lazymm::membarrier_backend>>;

template <class C>
class batch : public ::testing::Test {
 protected:
  using domain = typename C::domain;
  static constexpr bool implicit = C::policy::round == lazymm::round_at::owning_zero;
};
TYPED_TEST_SUITE(batch, batched_combos, combo_names);

// A worker that holds `x` lazily and parks.
template <class Domain>
std::unique_ptr<worker<Domain>> lazy_holder(Domain& d, const lazymm::owning_ref<counted>& x) {
  auto w = std::make_unique<worker<Domain>>(d);
  w->run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
  });
  return w;
}

TYPED_TEST(batch, a_final_drop_only_queues_and_reclaim_runs_the_policys_round) {
  event_log log;
  typename TestFixture::domain d;
  auto x = d.template make<counted>(log, 1);
  auto holder = lazy_holder(d, x);
  const lazymm::context* raw = x.get();
  const auto before = d.stats();
  x.reset();  // the final drop: queued, nothing else
  auto mid = d.stats();
  EXPECT_EQ(mid.backlog, 1u);
  EXPECT_EQ(mid.rounds, before.rounds) << "the drop ran no round";
  EXPECT_EQ(mid.heavy_barriers, before.heavy_barriers);
  EXPECT_EQ(log.count(event_log::free, 1), 0);
  if constexpr (TestFixture::implicit) {
    EXPECT_EQ(log.count(event_log::teardown, 1), 0) << "implicit: the teardown waits for the round";
  } else {
    EXPECT_EQ(log.count(event_log::teardown, 1), 1) << "explicit: the teardown is not deferred, the free is";
  }
  EXPECT_EQ(holder->loaded(), raw) << "the drop stole nothing";
  EXPECT_EQ(d.reclaim(), 1u);
  const auto after = d.stats();
  EXPECT_EQ(after.backlog, 0u);
  EXPECT_EQ(after.rounds - mid.rounds, 1u);
  EXPECT_EQ(after.steals - mid.steals, 1u);
  EXPECT_EQ(after.heavy_barriers - mid.heavy_barriers, 1u);
  EXPECT_EQ(holder->loaded(), d.default_context());
  expect_clean_history(log, 1);
}

// One registry walk, one heavy barrier and one wait pass for the whole batch: many contexts, each
// held lazily by its own parked executor, reclaimed at once.
TYPED_TEST(batch, one_round_and_one_barrier_reclaim_a_batch_held_by_many_executors) {
  event_log log;
  typename TestFixture::domain d;
  constexpr int n = 6;
  std::vector<std::unique_ptr<worker<typename TestFixture::domain>>> holders;
  for (int i = 0; i < n; ++i) {
    auto x = d.template make<counted>(log, i);
    holders.push_back(lazy_holder(d, x));
  }  // each x: its final drop, queued
  const auto mid = d.stats();
  EXPECT_EQ(mid.backlog, static_cast<std::uint64_t>(n));
  EXPECT_EQ(d.reclaim(), static_cast<std::size_t>(n));
  const auto after = d.stats();
  EXPECT_EQ(after.rounds - mid.rounds, 1u);
  EXPECT_EQ(after.heavy_barriers - mid.heavy_barriers, 1u);
  EXPECT_EQ(after.steals - mid.steals, static_cast<std::uint64_t>(n));
  for (int i = 0; i < n; ++i) {
    expect_clean_history(log, i);
    EXPECT_EQ(holders[static_cast<std::size_t>(i)]->loaded(), d.default_context());
    const auto ev = log.of(event_log::evict, i);
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].exec, holders[static_cast<std::size_t>(i)]->id().value) << "each context evicted from its holder";
  }
}

// The churn case in batches: the only holder is the reclaiming thread's own executor.
TYPED_TEST(batch, a_batch_held_only_by_the_reclaiming_threads_executor_needs_no_barrier) {
  event_log log;
  typename TestFixture::domain d;
  auto ex = d.attach();
  for (int i = 0; i < 3; ++i) {
    auto x = d.template make<counted>(log, i);
    ex.switch_to(x);
    ex.go_lazy();
  }
  const auto mid = d.stats();
  EXPECT_EQ(d.reclaim(), 3u);
  const auto after = d.stats();
  EXPECT_EQ(after.steals - mid.steals, 1u) << "the last one was still loaded";
  EXPECT_EQ(after.heavy_barriers - mid.heavy_barriers, 0u);
  for (int i = 0; i < 3; ++i) expect_clean_history(log, i);
}

// Forced interleaving: a holder paused inside its switch after reading x from its slot; the batch
// round steals x and must wait for that switch before the teardown/free.
TYPED_TEST(batch, a_reclaim_waits_for_an_executor_paused_after_reading_its_slot) {
  event_log log;
  typename TestFixture::domain d;
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  auto z = d.template make<counted>(log, 3);
  worker w(d);
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
  });
  gate reclaimed;
  std::thread reclaimer;
  {
    pause_at p(lazymm::test_point::switch_after_slot_read, w.id().value);
    std::thread switcher([&] { w.run([&](auto& ex) { ex.switch_to(y); }); });
    ASSERT_TRUE(p.wait_reached());
    x.reset();
    z.reset();  // a batch of two; z is held by nobody
    reclaimer = std::thread([&] {
      d.reclaim();
      reclaimed.open();
    });
    ASSERT_TRUE(eventually([&] { return d.stats().waits >= 1 || reclaimed.is_open(); }));
    std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(reclaimed.is_open()) << "the reclaim completed while an executor was inside a switch that read x";
    EXPECT_EQ(log.count(event_log::free, 1), 0) << "x freed under a paused executor";
    p.resume();
    switcher.join();
    reclaimer.join();
  }
  EXPECT_LT(log.index(event_log::deactivate, 1), log.index(event_log::free, 1));
  expect_clean_history(log, 1);
  expect_clean_history(log, 3);
  y.reset();
  w.run([](auto& ex) { ex.switch_to_default(); });
  d.reclaim();
  expect_clean_history(log, 2);
}

// Back-pressure: past the backlog bound the dropping thread reclaims itself.
TYPED_TEST(batch, past_the_backlog_bound_the_dropping_thread_reclaims) {
  event_log log;
  typename TestFixture::domain d(lazymm::batch_options{.backlog = 8});
  for (int i = 0; i < 7; ++i) d.template make<counted>(log, i).reset();
  EXPECT_EQ(d.stats().backlog, 7u);
  d.template make<counted>(log, 7).reset();  // the 8th: helps
  EXPECT_EQ(d.stats().backlog, 0u);
  EXPECT_EQ(d.stats().peak_backlog, 8u);
  for (int i = 0; i < 8; ++i) expect_clean_history(log, i);
}

// Past twice the bound a final drop waits for the running reclaim: the backlog stays bounded
// however slow the reclaimer is.
TYPED_TEST(batch, past_twice_the_bound_a_final_drop_waits_for_the_running_reclaim) {
  event_log log;
  typename TestFixture::domain d(lazymm::batch_options{.backlog = 4});
  std::thread slow;
  gate eighth_done;
  std::thread dropper;
  {
    pause_at p(lazymm::test_point::reclaim_after_steal);
    d.template make<counted>(log, 100).reset();
    slow = std::thread([&] { d.reclaim(); });  // takes context 100 and pauses holding the lock
    ASSERT_TRUE(p.wait_reached());
    // Backlogs 2..7 (100 is counted until its reclaim ends): from 4 on the lock is busy and the
    // backlog under twice the bound, so these return.
    for (int i = 0; i < 6; ++i) d.template make<counted>(log, i).reset();
    EXPECT_EQ(d.stats().backlog, 7u);
    dropper = std::thread([&] {
      d.template make<counted>(log, 7).reset();  // backlog 8 = 2 x 4: must wait
      eighth_done.open();
    });
    std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(eighth_done.is_open()) << "a drop past twice the bound returned while the backlog grew";
    p.resume();
    slow.join();
    dropper.join();
  }
  EXPECT_TRUE(eighth_done.is_open());
  EXPECT_EQ(d.stats().peak_backlog, 8u);
  d.reclaim();
  for (int i = 0; i < 6; ++i) expect_clean_history(log, i);
  expect_clean_history(log, 7);
  expect_clean_history(log, 100);
}

TYPED_TEST(batch, reclaim_if_due_waits_for_the_threshold_or_the_age) {
  event_log log;
  typename TestFixture::domain d(lazymm::batch_options{.threshold = 4, .max_age_us = 200000});
  EXPECT_EQ(d.threshold(), 4u);
  EXPECT_FALSE(d.reclaim_if_due()) << "nothing queued";
  for (int i = 0; i < 3; ++i) d.template make<counted>(log, i).reset();
  EXPECT_FALSE(d.reclaim_if_due()) << "3 < threshold and younger than 200 ms";
  d.template make<counted>(log, 3).reset();
  EXPECT_TRUE(d.reclaim_if_due()) << "threshold reached";
  EXPECT_EQ(d.stats().backlog, 0u);
  d.template make<counted>(log, 4).reset();
  EXPECT_FALSE(d.reclaim_if_due());
  std::this_thread::sleep_for(250ms);
  EXPECT_TRUE(d.reclaim_if_due()) << "older than max_age";
  for (int i = 0; i < 5; ++i) expect_clean_history(log, i);
}

TYPED_TEST(batch, the_automatic_threshold_scales_with_the_executors) {
  typename TestFixture::domain d;
  EXPECT_EQ(d.threshold(), 64u);
  std::vector<std::unique_ptr<worker<typename TestFixture::domain>>> ws;
  for (int i = 0; i < 20; ++i) ws.push_back(std::make_unique<worker<typename TestFixture::domain>>(d));
  EXPECT_EQ(d.threshold(), 80u);
}

// rcu_barrier: synchronize() returns only once everything retired before it is freed, including
// what a reclaim in progress on another thread took.
TYPED_TEST(batch, synchronize_waits_for_a_reclaim_in_progress_elsewhere) {
  event_log log;
  typename TestFixture::domain d;
  auto x = d.template make<counted>(log, 1);
  auto holder = lazy_holder(d, x);
  x.reset();
  gate synced;
  std::thread first, second;
  {
    pause_at p(lazymm::test_point::reclaim_after_steal);
    first = std::thread([&] { d.reclaim(); });
    ASSERT_TRUE(p.wait_reached());  // the first reclaim took x and is paused in its round
    second = std::thread([&] {
      d.synchronize();
      synced.open();
    });
    std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(synced.is_open()) << "synchronize returned while x, retired before it, was not freed";
    p.resume();
    first.join();
    second.join();
  }
  EXPECT_TRUE(synced.is_open());
  expect_clean_history(log, 1);
}

TYPED_TEST(batch, destroying_the_domain_drains_the_queue) {
  event_log log;
  {
    typename TestFixture::domain d;
    for (int i = 0; i < 5; ++i) d.template make<counted>(log, i).reset();
    EXPECT_EQ(d.stats().backlog, 5u);
  }
  for (int i = 0; i < 5; ++i) expect_clean_history(log, i);
}

TYPED_TEST(batch, the_reclaimer_thread_frees_without_anyone_calling_reclaim) {
  event_log log;
  typename TestFixture::domain d(lazymm::batch_options{.max_age_us = 2000});
  lazymm::reclaimer<typename TestFixture::domain> r(d);
  auto x = d.template make<counted>(log, 1);
  auto holder = lazy_holder(d, x);
  x.reset();
  EXPECT_TRUE(eventually([&] { return log.count(event_log::free, 1) == 1; }));
  expect_clean_history(log, 1);
}

// More contexts than one round takes (256): several rounds, every context freed once.
TYPED_TEST(batch, a_backlog_larger_than_a_chunk_takes_several_rounds) {
  event_log log;
  typename TestFixture::domain d;
  auto holder_ctx = d.template make<counted>(log, 9999);
  constexpr int n = 600;
  for (int i = 0; i < n; ++i) d.template make<counted>(log, i).reset();
  const auto mid = d.stats();
  EXPECT_EQ(d.reclaim(), static_cast<std::size_t>(n));
  EXPECT_EQ(d.stats().rounds - mid.rounds, 3u);
  for (int i = 0; i < n; i += 97) expect_clean_history(log, i);
  EXPECT_EQ(log.count(event_log::free, n - 1), 1);
}

}  // namespace

// ---- bad input --------------------------------------------------------------------------------

template <class C>
class batch_DeathTest : public ::testing::Test {
 protected:
  batch_DeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};
TYPED_TEST_SUITE(batch_DeathTest, batched_combos, combo_names);

TYPED_TEST(batch_DeathTest, a_backlog_bound_of_zero_is_refused) {
  EXPECT_DEATH({ typename TypeParam::domain d(lazymm::batch_options{.backlog = 0}); },
               "lazymm: batch_options::backlog must be at least 1");
}

namespace {
template <class Domain>
struct reclaims_in_a_hook : lazymm::context {
  Domain* d;
  explicit reclaims_in_a_hook(Domain* dd) : d(dd) {}
  void on_activate(lazymm::executor_id) noexcept { d->reclaim(); }
};
template <class Domain>
struct synchronizes_in_free : lazymm::context {
  Domain* d;
  explicit synchronizes_in_free(Domain* dd) : d(dd) {}
  static void on_free(synchronizes_in_free* c) noexcept { c->d->synchronize(); }
};
}  // namespace

TYPED_TEST(batch_DeathTest, a_reclaim_inside_a_switch_hook_aborts) {
  using domain = typename TypeParam::domain;
  EXPECT_DEATH(
      {
        domain d;
        auto ex = d.attach();
        auto x = d.template make<reclaims_in_a_hook<domain>>(&d);
        ex.switch_to(x);
      },
      "lazymm: reclaim\\(\\) inside a switch hook \\(on_activate, on_deactivate or on_stolen\\) of executor #0");
}

TYPED_TEST(batch_DeathTest, synchronize_from_a_hook_run_by_a_reclaim_aborts) {
  using domain = typename TypeParam::domain;
  EXPECT_DEATH(
      {
        domain d;
        d.template make<synchronizes_in_free<domain>>(&d).reset();
        d.reclaim();  // runs on_free, which calls synchronize(): it would wait for itself
      },
      "lazymm: synchronize\\(\\) called from a hook run by a reclaim of the same domain");
}
