// The switch path after the hot-path rework (issue #16) and the switch-path items of issue #19:
// the lean real switch (no hooks) and the general one (hooks) run the same protocol; a steal
// noticed inside a lean switch runs on_stolen once, after it; a switch from inside the
// executor's own hook or from a signal handler that interrupted its switch aborts, also when a
// steal landed between (3) and (4) (#19 item 4) and under every policy (#19 item 10); statistics
// come from the switch counter. Typed over every policy x backend.
#include <atomic>
#include <csignal>
#include <thread>

#include "support.hpp"

using namespace lazymm_test;

namespace {

// Types for the lean and the general switch: no hooks; on_stolen only (still lean); on_activate
// only (general on the way in); on_deactivate only (general on the way out).
std::atomic<int> g_stolen_calls{0};
struct plain : lazymm::context {};
struct stolen_only : lazymm::context {
  static void on_stolen(lazymm::executor_id) noexcept { g_stolen_calls.fetch_add(1); }
};
std::atomic<int> g_activations{0}, g_deactivations{0};
struct activates : lazymm::context {
  void on_activate(lazymm::executor_id) noexcept { g_activations.fetch_add(1); }
};
struct deactivates : lazymm::context {
  void on_deactivate(lazymm::executor_id) noexcept { g_deactivations.fetch_add(1); }
};

template <class C>
class switch_path_test : public ::testing::Test {
 protected:
  static constexpr bool steals = C::policy::round != lazymm::round_at::never;
  switch_path_test() {
    g_stolen_calls = 0;
    g_activations = 0;
    g_deactivations = 0;
  }
};
TYPED_TEST_SUITE(switch_path_test, all_combos, combo_names);

template <class C>
class switch_path_DeathTest : public switch_path_test<C> {
 protected:
  switch_path_DeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};
TYPED_TEST_SUITE(switch_path_DeathTest, all_combos, combo_names);

}  // namespace

// Hooks of each kind run exactly as often whichever form of the switch runs them.
TYPED_TEST(switch_path_test, hooks_run_once_per_switch_in_and_out_of_a_context_whatever_the_form) {
  typename TypeParam::domain d;
  auto ex = d.attach();
  auto p = d.template make<plain>();
  auto a = d.template make<activates>();
  auto q = d.template make<deactivates>();
  for (int i = 0; i < 3; ++i) {
    ex.switch_to(p);  // lean
    ex.switch_to(a);  // general in (on_activate)
    ex.go_lazy();
    ex.switch_to(a);  // fast path: nothing
    ex.switch_to(q);  // lean
    ex.switch_to(p);  // general out (on_deactivate)
  }
  ex.switch_to_default();
  EXPECT_EQ(g_activations.load(), 3);
  EXPECT_EQ(g_deactivations.load(), 3);
  EXPECT_EQ(ex.stats().real_switches, 11u);  // 4, then 3 per round (p is loaded at its start), + default
}

// Forced interleaving: a holder of a type with on_stolen and no other hook is paused inside a
// lean switch (odd seq, before (3)); the round steals its lazily held x and waits. The holder
// then reads the default context at (3): on_stolen runs once, after the switch, and not again.
TYPED_TEST(switch_path_test, a_steal_inside_a_lean_switch_runs_on_stolen_once_after_it) {
  if constexpr (TestFixture::steals) {
    typename TypeParam::domain d;
    auto x = d.template make<stolen_only>();
    auto y = d.template make<plain>();
    gate held, go;
    std::atomic<std::uint32_t> id{~0u};
    int seen_after_switch = -1;
    std::thread t([&] {
      auto ex = d.attach();
      ex.switch_to(x);
      ex.go_lazy();
      id = ex.id().value;
      held.open();
      go.wait();
      ex.switch_to(y);
      seen_after_switch = g_stolen_calls.load();
      EXPECT_FALSE(ex.poll_stolen());
      ex.switch_to_default();
      EXPECT_EQ(ex.stats().steals_seen, 1u);
    });
    ASSERT_TRUE(held.wait());
    {
      pause_at p(lazymm::test_point::switch_before_slot_read, id.load());
      go.open();
      ASSERT_TRUE(p.wait_reached());
      std::thread drop([&] { x.reset(); });
      ASSERT_TRUE(eventually([&] { return d.stats().waits >= 1; }));
      p.resume();
      drop.join();
      t.join();
    }
    EXPECT_EQ(seen_after_switch, 1);
    EXPECT_EQ(g_stolen_calls.load(), 1);
  }
}

namespace {
// #19 item 4: on_deactivate asks for the default context. Without a steal that is a real switch
// from inside the hook; with a steal between (3) and (4) the slot already holds the default
// context, which 0.2 took for a fast path (running on_stolen for the load on_deactivate was
// undoing, and clearing the hook flag under the running hook).
template <class Executor>
struct leaves_from_deactivate : lazymm::context {
  inline static Executor* self = nullptr;
  void on_deactivate(lazymm::executor_id) noexcept { self->switch_to_default(); }
};
}  // namespace

// The holder thread's switch from x to y: (3) reads x, the round steals x and waits, then
// on_deactivate(x) asks for the default context.
template <class Domain>
void leave_from_on_deactivate_after_a_steal() {
  using X = leaves_from_deactivate<typename Domain::executor_type>;
  Domain d;
  auto x = d.template make<X>();
  auto y = d.template make<plain>();
  gate held;
  gate go;
  std::atomic<std::uint32_t> id{~0u};
  std::thread t([&] {
    auto ex = d.attach();
    X::self = &ex;
    ex.switch_to(x);
    ex.go_lazy();
    id = ex.id().value;
    held.open();
    go.wait();
    ex.switch_to(y);
  });
  held.wait();
  pause_at p(lazymm::test_point::switch_after_slot_read, id.load());
  go.open();
  p.wait_reached();
  std::thread drop([&] { x.reset(); });
  eventually([&] { return d.stats().waits >= 1; });
  p.resume();
  t.join();
  drop.join();
}

TYPED_TEST(switch_path_DeathTest, switch_to_default_from_on_deactivate_aborts_also_after_a_steal_mid_switch) {
  if constexpr (TestFixture::steals) {
    EXPECT_DEATH(leave_from_on_deactivate_after_a_steal<typename TypeParam::domain>(),
                 "lazymm: executor #0: switch called from inside its own on_activate/on_deactivate hook");
  }
}

namespace {
// #19 item 10: a signal handler that interrupted this executor's switch calls switch_to.
void* g_executor = nullptr;
const void* g_target = nullptr;
void (*g_switch)() = nullptr;
lazymm::test_point g_at;
}  // namespace

template <class Domain>
void switch_from_a_signal_handler_at(lazymm::test_point at) {
  using executor_type = typename Domain::executor_type;
  Domain d;
  auto ex = d.attach();
  auto x = d.template make<plain>();
  auto y = d.template make<plain>();
  auto z = d.template make<plain>();
  ex.switch_to(x);
  g_executor = &ex;
  g_target = &z;
  g_switch = [] {
    static_cast<executor_type*>(g_executor)->switch_to(*static_cast<const lazymm::owning_ref<plain>*>(g_target));
  };
  ::signal(SIGUSR1, [](int) { g_switch(); });
  g_at = at;
  lazymm::detail::seams::on_point.store([](lazymm::test_point p, std::uint32_t) {
    if (p == g_at) ::raise(SIGUSR1);
  });
  ex.switch_to(y);  // lean: no hooks on either side
}

TYPED_TEST(switch_path_DeathTest, switch_to_from_a_signal_handler_inside_the_switch_aborts_under_every_policy) {
  for (auto at : {lazymm::test_point::switch_before_slot_read, lazymm::test_point::switch_after_slot_read})
    EXPECT_DEATH(switch_from_a_signal_handler_at<typename TypeParam::domain>(at),
                 "lazymm: executor #0: switch called from inside its own on_activate/on_deactivate hook \\(or on_stolen, "
                 "or a signal handler that interrupted its switch\\)");
}

// The fast path and poll_stolen count nothing: real_switches moves only on real switches.
TYPED_TEST(switch_path_test, the_fast_path_and_poll_stolen_leave_the_switch_count_alone) {
  typename TypeParam::domain d;
  auto ex = d.attach();
  auto x = d.template make<plain>();
  ex.switch_to(x);
  const auto before = ex.stats();
  for (int i = 0; i < 100; ++i) {
    ex.switch_to(x);
    ex.go_lazy();
    EXPECT_FALSE(ex.poll_stolen());
  }
  EXPECT_EQ(ex.stats().real_switches, before.real_switches);
  ex.switch_to_default();
}
