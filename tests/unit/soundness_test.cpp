// The defects of 0.1 found by review and by GenMC (tests/model/), each pinned by a test that
// fails on the 0.1 code: refcount's slot, the free count and on_free, the round's own-executor
// steal, evict naming the holder's attach, the sleeping wait, and the misuse checks that are
// now always on.
#include <signal.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "support.hpp"

using namespace lazymm_test;
using namespace std::chrono_literals;

namespace {

template <class C>
class soundness : public ::testing::Test {
 protected:
  using domain = typename C::domain;
  static constexpr bool steals = C::policy::round != lazymm::round_at::never;
};
TYPED_TEST_SUITE(soundness, all_combos, combo_names);

// 0.1 freed x here under refcount: switch_to(r) then r.reset() (not the last reference), and the
// last owner drops on another thread before this executor goes lazy. The slot must keep x's
// memory (refcount) or have it stolen (shootdown), never dangle.
TYPED_TEST(soundness, the_last_owner_dropping_elsewhere_before_go_lazy_frees_nothing_under_the_slot) {
  event_log log;
  typename TestFixture::domain d;
  worker w(d);
  auto x = d.template make<counted>(log, 1);
  auto mine = x;
  w.run([&](auto& ex) {
    ex.switch_to(mine);
    mine.reset();  // not the last: x still owns it
  });
  x.reset();  // the last owning reference, on this thread, while w is active on x
  EXPECT_EQ(log.count(event_log::teardown, 1), 1);
  if constexpr (TestFixture::steals) {
    EXPECT_EQ(log.count(event_log::free, 1), 1) << "the round stole x from w's slot";
  } else {
    EXPECT_EQ(log.count(event_log::free, 1), 0) << "refcount: w's slot holds a structural reference";
  }
  w.run([&](auto& ex) {
    ex.go_lazy();  // 0.1 incremented freed memory here
    ex.switch_to_default();
  });
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  expect_clean_history(log, 1);
}

// The churn case: the only holder is the dropping thread's own executor, which cannot be inside
// a switch; the round steals without a heavy barrier and without a wait. With another thread's
// holder too, one barrier.
TYPED_TEST(soundness, a_round_that_steals_only_from_the_calling_threads_executor_issues_no_barrier) {
  if constexpr (TestFixture::steals) {
    event_log log;
    typename TestFixture::domain d;
    auto ex = d.attach();
    auto x = d.template make<counted>(log, 1);
    ex.switch_to(x);
    ex.go_lazy();
    const auto before = d.stats();
    x.reset();
    const auto after = d.stats();
    EXPECT_EQ(after.steals - before.steals, 1u);
    EXPECT_EQ(after.heavy_barriers - before.heavy_barriers, 0u) << "own executor only: no barrier";
    EXPECT_EQ(after.waits - before.waits, 0u);
    EXPECT_EQ(ex.loaded(), d.default_context());

    worker w(d);
    auto y = d.template make<counted>(log, 2);
    ex.switch_to(y);
    w.run([&](auto& e) {
      e.switch_to(y);
      e.go_lazy();
    });
    ex.go_lazy();
    const auto mid = d.stats();
    y.reset();
    const auto end = d.stats();
    EXPECT_EQ(end.steals - mid.steals, 2u);
    EXPECT_EQ(end.heavy_barriers - mid.heavy_barriers, 1u) << "another thread's holder: one barrier";
    expect_clean_history(log, 1);
    expect_clean_history(log, 2);
  }
}

// 0.1 counted the free after on_free returned: whoever on_free woke could see a live context
// and abort, or destroy the domain under the dropping thread's last increment. on_free here
// blocks until the woken thread has destroyed the domain; ASan reports any later touch of it.
struct wakes_the_destroyer : lazymm::context {
  gate* freed;
  gate* destroyed;
  wakes_the_destroyer(gate* f, gate* dd) : freed(f), destroyed(dd) {}
  static void on_free(wakes_the_destroyer* c) noexcept {
    gate* f = c->freed;
    gate* dd = c->destroyed;
    delete c;
    f->open();
    EXPECT_TRUE(dd->wait());
  }
};

TYPED_TEST(soundness, on_free_may_wake_a_thread_that_destroys_the_domain) {
  gate freed, destroyed;
  auto d = std::make_unique<typename TestFixture::domain>();
  auto x = d->template make<wakes_the_destroyer>(&freed, &destroyed);
  std::thread destroyer([&] {
    EXPECT_TRUE(freed.wait());
    EXPECT_EQ(d->live_contexts(), 0) << "the free is counted before on_free runs";
    d.reset();  // must not abort: nothing is alive
    destroyed.open();
  });
  x.reset();  // the final drop; returns after the domain is gone
  destroyer.join();
  EXPECT_FALSE(d);
}

// 0.1 passed on_evict the record's id, which a new attach may already be using. The round is
// paused after its steal; the holder detaches and a new thread attaches (reusing the record);
// the evict must still name the holder's attach.
struct records_evicts : lazymm::context {
  std::vector<lazymm::executor_id>* evicted;
  explicit records_evicts(std::vector<lazymm::executor_id>* e) : evicted(e) {}
  void on_evict(lazymm::executor_id e) noexcept { evicted->push_back(e); }
};

TYPED_TEST(soundness, on_evict_names_the_holders_attach_even_after_its_record_is_reused) {
  if constexpr (TestFixture::steals) {
    typename TestFixture::domain d;
    std::vector<lazymm::executor_id> evicted;
    auto x = d.template make<records_evicts>(&evicted);
    auto holder = std::make_unique<worker<typename TestFixture::domain>>(d);
    holder->run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
    const lazymm::executor_id held_by = holder->id();
    std::thread dropper;
    lazymm::executor_id reused;
    {
      pause_at p(lazymm::test_point::reclaim_after_steal);
      dropper = std::thread([&] { x.reset(); });
      ASSERT_TRUE(p.wait_reached());
      holder.reset();  // detaches: its record is free again
      worker<typename TestFixture::domain> next(d);
      reused = next.id();
      p.resume();
      dropper.join();
    }
    EXPECT_EQ(reused.value, held_by.value) << "the test needs the record to be reused";
    EXPECT_GT(reused.generation, held_by.generation);
    ASSERT_EQ(evicted.size(), 1u);
    EXPECT_EQ(evicted[0], held_by);
  }
}

std::chrono::nanoseconds thread_cpu_time() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// 0.1 spun and yielded for as long as an executor stayed inside its switch: a SCHED_FIFO
// reclaimer starved an owner preempted on its CPU. The wait now spins briefly and then sleeps:
// over a 300 ms pause of the owner, the reclaimer uses far less than 300 ms of CPU.
TYPED_TEST(soundness, a_final_drop_waiting_for_a_paused_switch_sleeps_instead_of_spinning) {
  if constexpr (TestFixture::steals) {
    event_log log;
    typename TestFixture::domain d;
    auto x = d.template make<counted>(log, 1);
    auto y = d.template make<counted>(log, 2);
    worker w(d);
    w.run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
    std::chrono::nanoseconds cpu{};
    std::thread dropper;
    {
      pause_at p(lazymm::test_point::switch_after_slot_read, w.id().value);
      std::thread switcher([&] { w.run([&](auto& ex) { ex.switch_to(y); }); });
      ASSERT_TRUE(p.wait_reached());
      dropper = std::thread([&] {
        const auto t0 = thread_cpu_time();
        x.reset();  // waits for w's switch, paused after it read x
        cpu = thread_cpu_time() - t0;
      });
      ASSERT_TRUE(eventually([&] { return d.stats().waits >= 1; }));
      std::this_thread::sleep_for(300ms);
      p.resume();
      switcher.join();
      dropper.join();
    }
    EXPECT_LT(cpu, 100ms) << "the reclaimer burnt " << std::chrono::duration<double, std::milli>(cpu).count()
                          << " ms of CPU waiting 300 ms for a paused switch";
    expect_clean_history(log, 1);
    y.reset();
    w.run([](auto& ex) { ex.switch_to_default(); });
  }
}

}  // namespace

// ---- misuse that is now caught in every build ----------------------------------------------

template <class C>
class soundness_DeathTest : public ::testing::Test {
 protected:
  soundness_DeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};
TYPED_TEST_SUITE(soundness_DeathTest, all_combos, combo_names);

namespace {

// A hook that calls its own executor: a second real switch inside the first. (A call that
// finds its context already loaded is the fast path and does nothing: not caught, not harmful.)
template <class Executor>
struct reenters : lazymm::context {
  Executor** ex;
  lazymm::owning_ref<counted>* other;
  reenters(Executor** e, lazymm::owning_ref<counted>* o) : ex(e), other(o) {}
  void on_activate(lazymm::executor_id) noexcept { (*ex)->switch_to(*other); }
};

}  // namespace

TYPED_TEST(soundness_DeathTest, a_switch_hook_that_calls_its_own_executor_aborts) {
  using domain = typename TypeParam::domain;
  EXPECT_DEATH(
      {
        domain d;
        auto ex = d.attach();
        typename domain::executor_type* self = &ex;
        event_log log;
        auto y = d.template make<counted>(log, 1);
        auto x = d.template make<reenters<typename domain::executor_type>>(&self, &y);
        ex.switch_to(x);
      },
      "lazymm: executor #0: switch called from inside its own on_activate/on_deactivate hook");
}

namespace {
// For the signal-handler death test: the only owner of the context the executor holds lazily.
lazymm::context* g_signal_victim = nullptr;
void (*g_drop_victim)() = nullptr;
}  // namespace

// A final drop from a signal handler that interrupted this thread's own switch would steal from
// the executor that the handler interrupted, mid-switch: the round aborts and says so.
TYPED_TEST(soundness_DeathTest, a_final_drop_from_a_signal_handler_inside_a_switch_aborts) {
  using domain = typename TypeParam::domain;
  if constexpr (TypeParam::policy::round != lazymm::round_at::never) {
    EXPECT_DEATH(
        {
          domain d;
          auto ex = d.attach();
          event_log log;
          auto x = d.template make<counted>(log, 1);
          auto y = d.template make<counted>(log, 2);
          ex.switch_to(x);
          ex.go_lazy();
          g_signal_victim = x.release();
          g_drop_victim = [] { lazymm::owning_ref<counted>::adopt(static_cast<counted*>(g_signal_victim)).reset(); };
          ::signal(SIGUSR1, [](int) { g_drop_victim(); });
          lazymm::detail::seams::on_point.store([](lazymm::test_point p, std::uint32_t) {
            if (p == lazymm::test_point::switch_before_slot_read) ::raise(SIGUSR1);
          });
          ex.switch_to(y);  // the signal arrives inside this switch, with x still in the slot
        },
        "lazymm: final drop on a thread whose executor #0 is inside a switch: a signal handler");
  }
}
