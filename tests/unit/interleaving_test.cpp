// Forced interleavings (S1, S3): an executor is paused inside its switch protocol with
// lazymm_test::pause_at while another thread makes the final drop of the context it holds
// lazily. Each test names the assertion that catches a library that skipped the steal or the
// wait. Plus a small bounded stress of attach/detach racing with final drops.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <functional>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace lazymm_test;
using namespace std::chrono_literals;

namespace {

// How long a drop that must wait is given to (wrongly) complete before we look. Only a broken
// library can make the check after it fail, so the length cannot cause a false failure.
constexpr auto grace = 20ms;


}  // namespace

template <class C>
class interleaving_base : public ::testing::Test {
 protected:
  using domain = typename C::domain;
  static constexpr bool steals = C::policy::round != lazymm::round_at::never;

  event_log log;

  // The executor thread: attach, run a task of x, go lazy on it (keeping no owning ref), then,
  // once `go` opens, either switch to y (detach_instead == false) or detach while lazy. The
  // caller pauses it inside that last step.
  std::thread start_holder(domain& d, const lazymm::owning_ref<counted>& x, const lazymm::owning_ref<counted>& y,
                           bool detach_instead) {
    return std::thread([this, &d, mine = x, &y, detach_instead]() mutable {
      {
        auto ex = d.attach();
        ex.switch_to(mine);
        ex.go_lazy();
        mine.reset();  // only the lazy hold is left
        holder_id = ex.id();
        ready.open();
        go.wait();
        if (detach_instead) {
          // falls out of scope: detach while lazy
        } else {
          ex.switch_to(y);
          loaded_after = ex.loaded();
          ex.go_lazy();
          ex.switch_to_default();
        }
      }
      finished.open();
    });
  }

  // The final drop of x on its own thread; `dropped` opens when it returns.
  std::thread start_drop(lazymm::owning_ref<counted>& x) {
    return std::thread([this, &x] {
      x.reset();
      dropped.open();
    });
  }

  // Shootdown policies: the drop must be inside its wait for the paused executor, and stay
  // there. The waits counter moves just before the reclaimer spins; a library that skips the
  // wait never moves it and completes the drop instead, which the checks below catch.
  void expect_drop_waits(domain& d) {
    EXPECT_TRUE(eventually([&] { return d.stats().waits >= 1 || dropped.is_open(); }));
    std::this_thread::sleep_for(grace);
    EXPECT_FALSE(dropped.is_open()) << "the final drop completed while an executor was paused inside a switch "
                                       "that may still read the context (S1: missing wait)";
    EXPECT_EQ(log.count(event_log::free, 1), 0) << "freed under a paused executor";
    EXPECT_GE(d.stats().waits, 1u);
  }

  // Refcount: the drop does not wait (the holder has a counted reference), and does not free.
  void expect_drop_returns_without_free() {
    EXPECT_TRUE(dropped.wait()) << "refcount: the final drop waited for a paused executor";
    EXPECT_EQ(log.count(event_log::teardown, 1), 1);
    EXPECT_EQ(log.count(event_log::free, 1), 0) << "refcount: freed while a lazy hold is counted";
  }

  // Pauses the holder at `point` inside its last step, makes the final drop of x meanwhile and
  // checks that it waits (shootdown) or returns without a free (refcount), runs `while_paused`,
  // then resumes the holder and joins both threads.
  void drop_while_paused(domain& d, lazymm::owning_ref<counted>& x, std::thread& holder, lazymm::test_point point,
                         const std::function<void()>& while_paused = [] {}) {
    std::thread dropper;
    {
      pause_at p(point, holder_id.value);
      go.open();
      EXPECT_TRUE(p.wait_reached());
      dropper = start_drop(x);
      if constexpr (steals)
        expect_drop_waits(d);
      else
        expect_drop_returns_without_free();
      while_paused();
      p.resume();
      EXPECT_TRUE(finished.wait());
      holder.join();
    }
    dropper.join();
  }

  lazymm::executor_id holder_id;
  const lazymm::context* loaded_after = nullptr;
  gate ready, go, dropped, finished;
};

template <class C>
class interleaving : public interleaving_base<C> {};
TYPED_TEST_SUITE(interleaving, all_combos, combo_names);

using shootdown_combos = ::testing::Types<combo<lazymm::explicit_shootdown, lazymm::fence_backend>,
                                          combo<lazymm::explicit_shootdown, lazymm::membarrier_backend>,
                                          combo<lazymm::implicit_shootdown, lazymm::fence_backend>,
                                          combo<lazymm::implicit_shootdown, lazymm::membarrier_backend>>;
template <class C>
class shootdown_interleaving : public interleaving_base<C> {};
TYPED_TEST_SUITE(shootdown_interleaving, shootdown_combos, combo_names);

// 5a: the holder of x starts a switch to y and is paused after it read x from its slot (its
// hooks have not run). The shootdown round steals the slot, but the executor will still run
// deactivate(x): the drop must wait for the switch to end. Caught if the wait is skipped:
// `dropped` opens during the pause, and the free precedes the deactivate in the log.
TYPED_TEST(interleaving, a_final_drop_waits_for_an_executor_paused_after_reading_its_slot) {
  typename TestFixture::domain d;
  auto x = d.template make<counted>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  auto holder = this->start_holder(d, x, y, false);
  EXPECT_TRUE(this->ready.wait());
  this->drop_while_paused(d, x, holder, lazymm::test_point::switch_after_slot_read, [&] {
    EXPECT_FALSE(this->finished.is_open());
  });
  EXPECT_TRUE(this->dropped.is_open());
  auto& log = this->log;
  EXPECT_EQ(this->loaded_after, y.get());
  const auto deact = log.of(event_log::deactivate, 1);
  ASSERT_EQ(deact.size(), 1u) << "the paused executor had read x: it deactivates it";
  EXPECT_EQ(deact[0].exec, this->holder_id.value);
  EXPECT_LT(log.index(event_log::deactivate, 1), log.index(event_log::free, 1))
      << "x freed before the executor that read it finished with it";
  for (auto& e : log.of(event_log::evict, 1)) EXPECT_EQ(e.exec, this->holder_id.value);
  if constexpr (!TestFixture::steals) {
    EXPECT_EQ(log.count(event_log::evict, 1), 0);
  }
  expect_clean_history(log, 1);
}

// 5b: the holder is paused before it reads its slot. The round steals x, waits, and the
// executor then reads the default context: it never touches x again. Caught if the steal is
// skipped: the executor reads x and runs deactivate(x) (count must be 0) with no evict; if the
// wait is skipped: `dropped` opens during the pause.
TYPED_TEST(interleaving, a_final_drop_steals_from_an_executor_paused_before_reading_its_slot) {
  typename TestFixture::domain d;
  auto x = d.template make<counted>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  auto holder = this->start_holder(d, x, y, false);
  EXPECT_TRUE(this->ready.wait());
  this->drop_while_paused(d, x, holder, lazymm::test_point::switch_before_slot_read);
  auto& log = this->log;
  EXPECT_EQ(this->loaded_after, y.get());
  EXPECT_EQ(log.count(event_log::activate, 2), 1);
  if constexpr (TestFixture::steals) {
    EXPECT_EQ(log.count(event_log::deactivate, 1), 0) << "the executor read x although it had been stolen";
    const auto ev = log.of(event_log::evict, 1);
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].exec, this->holder_id.value);
    EXPECT_LT(log.index(event_log::evict, 1), log.index(event_log::free, 1));
    EXPECT_EQ(d.stats().steals, 1u);
  } else {
    EXPECT_EQ(log.count(event_log::deactivate, 1), 1);
    EXPECT_LT(log.index(event_log::deactivate, 1), log.index(event_log::free, 1));
    EXPECT_EQ(log.count(event_log::evict, 1), 0);
  }
  expect_clean_history(log, 1);
}

// 5c: an executor that detaches while lazy, paused inside the switch to the default context
// that detach starts with. Before its slot read: shootdown steals and waits (a library that
// left the registry first would skip the record: the drop then completes during the pause, and
// checked mode aborts at the free because the record's slot still holds x). After its slot
// read: the drop waits for the deactivate.
TYPED_TEST(interleaving, a_final_drop_waits_for_an_executor_paused_in_its_detach_before_reading_its_slot) {
  typename TestFixture::domain d;
  auto x = d.template make<counted>(this->log, 1);
  lazymm::owning_ref<counted> none;
  auto holder = this->start_holder(d, x, none, true);
  EXPECT_TRUE(this->ready.wait());
  this->drop_while_paused(d, x, holder, lazymm::test_point::switch_before_slot_read, [&] {
    EXPECT_EQ(d.attached_executors(), 1u);
  });
  auto& log = this->log;
  EXPECT_EQ(d.attached_executors(), 0u);
  if constexpr (TestFixture::steals) {
    EXPECT_EQ(log.count(event_log::deactivate, 1), 0);
    const auto ev = log.of(event_log::evict, 1);
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].exec, this->holder_id.value);
  } else {
    EXPECT_EQ(log.count(event_log::deactivate, 1), 1);
    EXPECT_LT(log.index(event_log::deactivate, 1), log.index(event_log::free, 1));
  }
  expect_clean_history(log, 1);
}

TYPED_TEST(interleaving, a_final_drop_waits_for_an_executor_paused_in_its_detach_after_reading_its_slot) {
  typename TestFixture::domain d;
  auto x = d.template make<counted>(this->log, 1);
  lazymm::owning_ref<counted> none;
  auto holder = this->start_holder(d, x, none, true);
  EXPECT_TRUE(this->ready.wait());
  this->drop_while_paused(d, x, holder, lazymm::test_point::switch_after_slot_read);
  auto& log = this->log;
  EXPECT_EQ(d.attached_executors(), 0u);
  EXPECT_EQ(log.count(event_log::deactivate, 1), 1);
  EXPECT_LT(log.index(event_log::deactivate, 1), log.index(event_log::free, 1));
  expect_clean_history(log, 1);
}

// 5c': paused after the detach dropped its lazy hold but before it left the registry. Nothing
// holds x any more, so the drop completes during the pause, under every policy, without a
// wait (S3) and without a steal. Caught if detach left a dangling hold: the drop would wait
// (shootdown) or not free (refcount).
TYPED_TEST(interleaving, a_detach_paused_before_leaving_the_registry_holds_nothing) {
  typename TestFixture::domain d;
  auto x = d.template make<counted>(this->log, 1);
  lazymm::owning_ref<counted> none;
  auto holder = this->start_holder(d, x, none, true);
  EXPECT_TRUE(this->ready.wait());
  std::thread dropper;
  {
    pause_at p(lazymm::test_point::detach_before_unregister, this->holder_id.value);
    this->go.open();
    EXPECT_TRUE(p.wait_reached());
    dropper = this->start_drop(x);
    EXPECT_TRUE(this->dropped.wait()) << "the drop waited for an executor that no longer holds x";
    EXPECT_EQ(this->log.count(event_log::free, 1), 1);
    EXPECT_EQ(d.attached_executors(), 1u) << "the paused executor is still registered";
    EXPECT_EQ(d.stats().waits, 0u);
    EXPECT_EQ(d.stats().steals, 0u);
    p.resume();
    EXPECT_TRUE(this->finished.wait());
    holder.join();
  }
  dropper.join();
  auto& log = this->log;
  EXPECT_EQ(d.attached_executors(), 0u);
  EXPECT_EQ(log.count(event_log::deactivate, 1), 1);
  EXPECT_LT(log.index(event_log::deactivate, 1), log.index(event_log::free, 1));
  EXPECT_EQ(log.count(event_log::evict, 1), 0);
  expect_clean_history(log, 1);
}

// The reclaimer paused between its steals and its heavy barrier: the executor, which was idle
// and lazy when it was stolen from, runs a whole switch in the meantime. It must find the
// default context in its slot and never touch x.
TYPED_TEST(shootdown_interleaving, an_executor_switching_between_the_steal_and_the_barrier_never_touches_x) {
  typename TestFixture::domain d;
  auto x = d.template make<counted>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  auto holder = this->start_holder(d, x, y, false);
  EXPECT_TRUE(this->ready.wait());
  std::thread dropper;
  {
    pause_at p(lazymm::test_point::reclaim_after_steal);
    dropper = this->start_drop(x);
    EXPECT_TRUE(p.wait_reached());
    this->go.open();  // the holder switches to y while the reclaimer is paused
    EXPECT_TRUE(this->finished.wait());
    EXPECT_FALSE(this->dropped.is_open());
    p.resume();
    EXPECT_TRUE(this->dropped.wait());
  }
  holder.join();
  dropper.join();
  auto& log = this->log;
  EXPECT_EQ(this->loaded_after, y.get());
  EXPECT_EQ(log.count(event_log::deactivate, 1), 0) << "the executor read x after it was stolen";
  const auto ev = log.of(event_log::evict, 1);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].exec, this->holder_id.value);
  expect_clean_history(log, 1);
}

// An executor that detaches while lazy leaves no hold behind: the context is then dropped and
// freed (checked mode verifies at the free that no slot, in use or not, holds it).
TYPED_TEST(interleaving, an_executor_detaching_while_lazy_leaves_no_dangling_hold) {
  auto& log = this->log;
  typename TestFixture::domain d;
  auto x = d.template make<counted>(log, 1);
  std::thread([&] {
    auto ex = d.attach();
    ex.switch_to(x);
    ex.go_lazy();
  }).join();
  EXPECT_EQ(d.attached_executors(), 0u);
  EXPECT_EQ(log.count(event_log::deactivate, 1), 1) << "detach switches to the default context first";
  EXPECT_EQ(x->structural_count(), 1) << "no lazy reference left behind (refcount)";
  const auto st = d.stats();
  x.reset();
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_EQ(log.count(event_log::evict, 1), 0) << "nothing to steal from a detached executor";
  EXPECT_EQ(d.stats().steals, st.steals);
  expect_clean_history(log, 1);
}

// Attach/detach (while lazy) on two threads racing with final drops made by a third thread and
// by themselves. Bounded: a few hundred operations, well under a second even under TSan.
TYPED_TEST(interleaving, attach_and_detach_race_with_final_drops_on_other_threads) {
  auto& log = this->log;
  constexpr int contexts = 60, attaches = 25, tasks_per_attach = 4, executors = 2;
  typename TestFixture::domain d;
  std::mutex m;
  lazymm::owning_ref<counted> current = d.template make<counted>(log, 0);
  std::atomic<bool> done{false};

  std::vector<std::thread> ts;
  ts.reserve(executors);
  for (int t = 0; t < executors; ++t)
    ts.emplace_back([&] {
      for (int a = 0; a < attaches; ++a) {
        auto ex = d.attach();
        for (int k = 0; k < tasks_per_attach; ++k) {
          lazymm::owning_ref<counted> task;
          {
            std::lock_guard g(m);
            task = current;
          }
          if (!task) continue;
          ex.switch_to(task);
          EXPECT_EQ(task->canary, counted::alive);
          ex.go_lazy();
          task.reset();  // may be the final drop, made by a lazy holder of the context
        }
        if (a % 3 == 0) ex.switch_to_default();
      }  // detach, usually while lazy
    });
  std::thread producer([&] {
    for (int i = 1; i <= contexts; ++i) {
      auto next = d.template make<counted>(log, i);
      {
        std::lock_guard g(m);
        std::swap(current, next);
      }
      next.reset();  // the old one: often the final drop, racing with lazy holders
      std::this_thread::yield();
    }
    done.store(true);
  });
  producer.join();
  for (auto& t : ts) t.join();
  current.reset();
  EXPECT_EQ(d.attached_executors(), 0u);
  EXPECT_EQ(d.live_contexts(), 0);
  EXPECT_EQ(d.stats().contexts_freed, static_cast<std::uint64_t>(contexts + 1));
  for (int i = 0; i <= contexts; ++i) expect_clean_history(log, i);
  EXPECT_TRUE(done.load());
}
