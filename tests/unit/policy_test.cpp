// What each policy does with a lazy holder when a context dies, and the fast paths.
//   refcount            a lazy hold is a structural reference: it keeps the memory alive after the
//                       last owner, until the holder switches away; nothing is ever stolen.
//   explicit_shootdown  lazy holds are not counted; the holders are stolen at the free (the last
//                       structural ref), after the teardown.
//   implicit_shootdown  the holders are stolen when the owning count reaches zero, before the
//                       teardown; the free needs no round of its own.
#include <algorithm>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace lazymm_test;

namespace {


std::vector<std::uint32_t> evicted_executors(event_log& log, int ctx) {
  std::vector<std::uint32_t> r;
  for (auto& e : log.of(event_log::evict, ctx)) r.push_back(e.exec);
  std::sort(r.begin(), r.end());
  return r;
}

std::vector<std::uint32_t> sorted_ids(const std::vector<lazymm::executor_id>& ids) {
  std::vector<std::uint32_t> r;
  r.reserve(ids.size());
  for (auto i : ids) r.push_back(i.value);
  std::sort(r.begin(), r.end());
  return r;
}

// Every evict of ctx comes after `after` (an event index, -1 for none) and before `before`.
void expect_evicts_between(event_log& log, int ctx, int after, int before) {
  std::lock_guard g(log.m);
  for (std::size_t i = 0; i < log.events.size(); ++i)
    if (log.events[i].k == event_log::evict && log.events[i].ctx == ctx) {
      EXPECT_GT(static_cast<int>(i), after) << "evict of " << ctx << " too early";
      EXPECT_LT(static_cast<int>(i), before) << "evict of " << ctx << " too late";
    }
}

void expect_same_stats(const lazymm::domain_stats& a, const lazymm::domain_stats& b) {
  EXPECT_EQ(a.contexts_created, b.contexts_created);
  EXPECT_EQ(a.contexts_freed, b.contexts_freed);
  EXPECT_EQ(a.rounds, b.rounds);
  EXPECT_EQ(a.heavy_barriers, b.heavy_barriers);
  EXPECT_EQ(a.steals, b.steals);
  EXPECT_EQ(a.waits, b.waits);
}

std::size_t events(event_log& log) {
  std::lock_guard g(log.m);
  return log.events.size();
}

using refcount_combos = ::testing::Types<combo<lazymm::refcount, lazymm::fence_backend>,
                                         combo<lazymm::refcount, lazymm::membarrier_backend>>;
using explicit_combos = ::testing::Types<combo<lazymm::explicit_shootdown, lazymm::fence_backend>,
                                         combo<lazymm::explicit_shootdown, lazymm::membarrier_backend>>;
using implicit_combos = ::testing::Types<combo<lazymm::implicit_shootdown, lazymm::fence_backend>,
                                         combo<lazymm::implicit_shootdown, lazymm::membarrier_backend>>;
using shootdown_combos = ::testing::Types<combo<lazymm::explicit_shootdown, lazymm::fence_backend>,
                                          combo<lazymm::explicit_shootdown, lazymm::membarrier_backend>,
                                          combo<lazymm::implicit_shootdown, lazymm::fence_backend>,
                                          combo<lazymm::implicit_shootdown, lazymm::membarrier_backend>>;

}  // namespace

// ---- refcount ---------------------------------------------------------------------------------

template <class C>
class refcount_policy : public ::testing::Test {};
TYPED_TEST_SUITE(refcount_policy, refcount_combos, combo_names);

TYPED_TEST(refcount_policy, a_lazy_holder_keeps_the_memory_alive_after_the_last_owner_goes) {
  event_log log;
  typename TypeParam::domain d;
  worker w(d);
  auto x = d.template make<counted>(log, 1);
  const lazymm::context* const xp = x.get();
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
  });
  EXPECT_EQ(x->structural_count(), 2) << "the lazy hold is a structural reference";
  x.reset();
  EXPECT_EQ(log.count(event_log::teardown, 1), 1);
  EXPECT_EQ(log.count(event_log::free, 1), 0) << "freed under a lazy holder";
  EXPECT_EQ(w.loaded(), xp);
  w.run([&](auto& ex) {
    EXPECT_TRUE(ex.is_lazy());
    ex.switch_to_default();  // leaves the lazy state: the free happens here, on the holder
    EXPECT_EQ(log.count(event_log::free, 1), 1);
  });
  EXPECT_LT(log.index(event_log::teardown, 1), log.index(event_log::deactivate, 1));
  EXPECT_LT(log.index(event_log::deactivate, 1), log.index(event_log::free, 1));
  EXPECT_EQ(log.count(event_log::evict, 1), 0);
  EXPECT_EQ(d.stats().rounds, 0u);
  EXPECT_EQ(d.stats().steals, 0u);
  EXPECT_EQ(d.stats().heavy_barriers, 0u);
}

TYPED_TEST(refcount_policy, every_lazy_holder_counts_and_the_last_to_switch_away_frees) {
  event_log log;
  typename TypeParam::domain d;
  worker w1(d), w2(d);
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  for (auto* w : {&w1, &w2}) {
    w->run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
  }
  EXPECT_EQ(x->structural_count(), 3);
  EXPECT_EQ(x->owning_count(), 1);
  x.reset();
  EXPECT_EQ(log.count(event_log::free, 1), 0);
  w1.run([&](auto& ex) { ex.switch_to(y); });  // to another context, not only to default
  EXPECT_EQ(log.count(event_log::free, 1), 0) << "w2 still holds it lazily";
  w2.run([&](auto& ex) { ex.switch_to(y); });
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(log.count(event_log::deactivate, 1), 2);
  EXPECT_EQ(log.count(event_log::evict, 1), 0);
  for (auto* w : {&w1, &w2}) {
    w->run([&](auto& ex) { ex.go_lazy(); });
  }
  y.reset();
  EXPECT_EQ(log.count(event_log::free, 2), 0);
  w1.detach();
  EXPECT_EQ(log.count(event_log::free, 2), 0);
  w2.detach();
  EXPECT_EQ(log.count(event_log::free, 2), 1);
}

// ---- explicit shootdown -----------------------------------------------------------------------

template <class C>
class explicit_policy : public ::testing::Test {};
TYPED_TEST_SUITE(explicit_policy, explicit_combos, combo_names);

TYPED_TEST(explicit_policy, lazy_holders_are_taken_away_at_the_free_not_at_the_teardown) {
  event_log log;
  typename TypeParam::domain d;
  worker w1(d), w2(d), w3(d);
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  const lazymm::context* const xp = x.get();
  for (auto* w : {&w1, &w2}) {
    w->run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
  }
  w3.run([&](auto& ex) {
    ex.switch_to(y);
    ex.go_lazy();
  });
  EXPECT_EQ(x->structural_count(), 1) << "lazy holds are not counted";
  auto s = x.structural();
  x.reset();
  EXPECT_EQ(log.count(event_log::teardown, 1), 1);
  EXPECT_EQ(log.count(event_log::evict, 1), 0) << "stolen at the teardown: that is implicit shootdown";
  EXPECT_EQ(w1.loaded(), xp) << "a torn-down context stays loaded until its free";
  EXPECT_EQ(w2.loaded(), xp);
  EXPECT_EQ(d.stats().rounds, 0u);

  s.reset();  // the free: one round steals from both holders
  EXPECT_EQ(evicted_executors(log, 1), sorted_ids({w1.id(), w2.id()}));
  expect_evicts_between(log, 1, log.index(event_log::teardown, 1), log.index(event_log::free, 1));
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(w1.loaded(), d.default_context());
  EXPECT_EQ(w2.loaded(), d.default_context());
  EXPECT_EQ(w3.loaded(), y.get()) << "an executor that did not hold x is left alone";
  EXPECT_EQ(log.count(event_log::evict, 2), 0);
  EXPECT_EQ(d.stats().rounds, 1u);
  EXPECT_EQ(d.stats().steals, 2u);
  EXPECT_EQ(d.stats().heavy_barriers, 1u);
}

TYPED_TEST(explicit_policy, a_last_owner_with_no_structural_ref_runs_teardown_evict_free_in_one_drop) {
  event_log log;
  typename TypeParam::domain d;
  worker w(d);
  auto x = d.template make<counted>(log, 1);
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
  });
  x.reset();
  EXPECT_EQ(evicted_executors(log, 1), sorted_ids({w.id()}));
  expect_evicts_between(log, 1, log.index(event_log::teardown, 1), log.index(event_log::free, 1));
  EXPECT_EQ(log.count(event_log::free, 1), 1);
}

// ---- implicit shootdown -----------------------------------------------------------------------

template <class C>
class implicit_policy : public ::testing::Test {};
TYPED_TEST_SUITE(implicit_policy, implicit_combos, combo_names);

TYPED_TEST(implicit_policy, lazy_holders_are_taken_away_when_the_owners_are_gone_before_the_teardown) {
  event_log log;
  typename TypeParam::domain d;
  worker w1(d), w2(d), w3(d);
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  for (auto* w : {&w1, &w2}) {
    w->run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
  }
  w3.run([&](auto& ex) {
    ex.switch_to(y);
    ex.go_lazy();
  });
  EXPECT_EQ(x->structural_count(), 1) << "lazy holds are not counted";
  auto s = x.structural();
  x.reset();  // owning count reaches zero: the round, then the teardown
  EXPECT_EQ(evicted_executors(log, 1), sorted_ids({w1.id(), w2.id()}));
  expect_evicts_between(log, 1, -1, log.index(event_log::teardown, 1));
  EXPECT_EQ(log.count(event_log::teardown, 1), 1);
  EXPECT_EQ(log.count(event_log::free, 1), 0) << "s keeps the memory";
  EXPECT_EQ(w1.loaded(), d.default_context());
  EXPECT_EQ(w2.loaded(), d.default_context());
  EXPECT_EQ(w3.loaded(), y.get());
  EXPECT_EQ(d.stats().rounds, 1u);
  EXPECT_EQ(d.stats().steals, 2u);

  s.reset();  // the free: no round of its own
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(log.count(event_log::evict, 1), 2);
  EXPECT_EQ(d.stats().rounds, 1u) << "implicit shootdown needs no second round at the free";
  EXPECT_EQ(d.stats().steals, 2u);
}

// ---- both shootdown policies ------------------------------------------------------------------

template <class C>
class shootdown_policy : public ::testing::Test {};
TYPED_TEST_SUITE(shootdown_policy, shootdown_combos, combo_names);

TYPED_TEST(shootdown_policy, each_lazy_holder_is_stolen_once_and_the_evict_hook_names_its_executor) {
  event_log log;
  typename TypeParam::domain d;
  worker w1(d), w2(d), w3(d), w4(d);
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  for (auto* w : {&w1, &w2, &w3}) {
    w->run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
  }
  w4.run([&](auto& ex) { ex.switch_to(y); });  // running y, not lazy: not a holder of x
  x.reset();
  EXPECT_EQ(evicted_executors(log, 1), sorted_ids({w1.id(), w2.id(), w3.id()}));
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(d.stats().steals, 3u);
  EXPECT_EQ(d.stats().heavy_barriers, 1u) << "one barrier covers every steal of a round";
  for (auto* w : {&w1, &w2, &w3}) EXPECT_EQ(w->loaded(), d.default_context());
  EXPECT_EQ(w4.loaded(), y.get());
  EXPECT_EQ(log.count(event_log::deactivate, 1), 0) << "a stolen context is not deactivated";
}

TYPED_TEST(shootdown_policy, after_a_steal_the_executor_is_on_the_default_context_and_moves_on) {
  event_log log;
  typename TypeParam::domain d;
  worker w(d);
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
  });
  x.reset();
  const auto before = events(log);
  w.run([&](auto& ex) {
    EXPECT_EQ(ex.loaded(), d.default_context());
    ex.switch_to_default();  // already there: no hook of any context
    ex.switch_to(y);
  });
  const auto of_y = log.of(event_log::activate, 2);
  ASSERT_EQ(of_y.size(), 1u);
  EXPECT_EQ(of_y[0].exec, w.id().value);
  EXPECT_EQ(events(log), before + 1) << "only y's activate ran";
  EXPECT_EQ(log.count(event_log::deactivate, 1), 0);
}

TYPED_TEST(shootdown_policy, a_round_with_no_holder_steals_nothing_and_issues_no_heavy_barrier) {
  event_log log;
  typename TypeParam::domain d;
  worker w(d);
  auto x = d.template make<counted>(log, 1);
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
    ex.switch_to_default();
  });
  x.reset();
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(log.count(event_log::evict, 1), 0);
  EXPECT_EQ(d.stats().rounds, 1u);
  EXPECT_EQ(d.stats().steals, 0u);
  EXPECT_EQ(d.stats().heavy_barriers, 0u);
}

// ---- fast paths, every policy -----------------------------------------------------------------

template <class C>
class fast_path : public ::testing::Test {
 protected:
  static constexpr bool counts_slot = C::policy::counts_slot_holds;
};
TYPED_TEST_SUITE(fast_path, all_combos, combo_names);

TYPED_TEST(fast_path, a_real_switch_runs_deactivate_of_the_previous_then_activate_of_the_next) {
  event_log log;
  typename TypeParam::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(log, 1);
  auto y = d.template make<counted>(log, 2);
  ex.switch_to(x);
  ex.switch_to(y);
  {
    std::lock_guard g(log.m);
    ASSERT_EQ(log.events.size(), 3u);
    EXPECT_EQ(log.events[0].k, event_log::activate);
    EXPECT_EQ(log.events[0].ctx, 1);
    EXPECT_EQ(log.events[1].k, event_log::deactivate);
    EXPECT_EQ(log.events[1].ctx, 1);
    EXPECT_EQ(log.events[2].k, event_log::activate);
    EXPECT_EQ(log.events[2].ctx, 2);
    for (auto& e : log.events) EXPECT_EQ(e.exec, ex.id().value);
  }
  ex.switch_to_default();
}

TYPED_TEST(fast_path, switching_to_the_loaded_context_runs_no_hook_and_changes_nothing) {
  event_log log;
  typename TypeParam::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(log, 1);
  ex.switch_to(x);
  const auto n = events(log);
  const auto st = d.stats();
  const auto users = x->owning_count(), count = x->structural_count();
  ex.switch_to(x);
  ex.switch_to(x);
  EXPECT_EQ(events(log), n);
  expect_same_stats(d.stats(), st);
  EXPECT_EQ(x->owning_count(), users);
  EXPECT_EQ(x->structural_count(), count);
  EXPECT_EQ(ex.loaded(), x.get());
  EXPECT_FALSE(ex.is_lazy());
  ex.switch_to_default();
}

TYPED_TEST(fast_path, switching_to_the_default_context_when_it_is_loaded_does_nothing) {
  event_log log;
  typename TypeParam::domain d;
  auto ex = d.attach();
  const auto st = d.stats();
  ex.switch_to_default();
  ex.go_lazy();
  ex.switch_to_default();
  EXPECT_EQ(events(log), 0u);
  expect_same_stats(d.stats(), st);
  EXPECT_EQ(ex.loaded(), d.default_context());
}

TYPED_TEST(fast_path, go_lazy_then_back_to_the_same_context_runs_no_hook) {
  event_log log;
  typename TypeParam::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(log, 1);
  ex.switch_to(x);
  const auto n = events(log);
  const auto st = d.stats();
  const auto users = x->owning_count(), count = x->structural_count();

  ex.go_lazy();
  EXPECT_TRUE(ex.is_lazy());
  EXPECT_EQ(ex.loaded(), x.get()) << "going lazy keeps the context loaded";
  EXPECT_EQ(x->owning_count(), users);
  if constexpr (TestFixture::counts_slot) {
    EXPECT_EQ(count, 2) << "refcount: the slot holds one structural reference besides the owners' one";
  }
  EXPECT_EQ(x->structural_count(), count) << "going lazy takes no reference (refcount counted the slot already)";

  ex.switch_to(x);  // back to a task of the same context
  EXPECT_FALSE(ex.is_lazy());
  EXPECT_EQ(x->owning_count(), users);
  EXPECT_EQ(x->structural_count(), count) << "switching back to the loaded context changes no count";
  EXPECT_EQ(events(log), n) << "no activate/deactivate on the lazy round trip";
  expect_same_stats(d.stats(), st);
  ex.switch_to_default();
}

TYPED_TEST(fast_path, going_lazy_twice_takes_no_reference) {
  event_log log;
  typename TypeParam::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(log, 1);
  ex.switch_to(x);
  const auto count = x->structural_count();
  ex.go_lazy();
  ex.go_lazy();
  EXPECT_EQ(x->structural_count(), count);
  x.reset();
  ex.switch_to_default();
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(d.live_contexts(), 0);
}
