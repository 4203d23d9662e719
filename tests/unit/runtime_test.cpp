// Runtimes lazymm does not own (issue #9): this thread's executor and library-managed executors,
// threads that exit attached, fork(), nested tasks (scoped_switch), the holder-side steal hook
// (on_stolen, poll_stolen), executor and drop-latency statistics. Typed over every policy x
// backend; fork also over the batched policies.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace lazymm_test;
using namespace std::chrono_literals;

namespace {

// A context whose static on_stolen records where and for whom it ran. One process-wide log
// (the hook is static); each test resets it.
struct stolen_log {
  std::mutex m;
  std::vector<std::pair<lazymm::executor_id, std::thread::id>> calls;
  void reset() {
    std::lock_guard g(m);
    calls.clear();
  }
  std::size_t size() {
    std::lock_guard g(m);
    return calls.size();
  }
};
stolen_log g_stolen;

struct watched : counted {
  using counted::counted;
  static void on_stolen(lazymm::executor_id e) noexcept {
    std::lock_guard g(g_stolen.m);
    g_stolen.calls.emplace_back(e, std::this_thread::get_id());
  }
  static void on_free(watched* c) noexcept {
    c->log->add(event_log::free, c->id);
    c->canary = 0xdeadull;
    delete c;
  }
};

// An evict hook that takes a while: a round's latency that drop_latency() must see.
struct slow_evict : lazymm::context {
  void on_evict(lazymm::executor_id) noexcept { std::this_thread::sleep_for(2ms); }
};

}  // namespace

template <class C>
class runtime_test : public ::testing::Test {
 protected:
  using domain = typename C::domain;
  using executor_type = typename domain::executor_type;
  static constexpr bool steals = C::policy::round != lazymm::round_at::never;
  runtime_test() { g_stolen.reset(); }
  event_log log;
};
TYPED_TEST_SUITE(runtime_test, all_combos, combo_names);

// ---- 1. this thread's executor ---------------------------------------------------------------

TYPED_TEST(runtime_test, find_thread_executor_never_attaches) {
  typename TestFixture::domain d;
  EXPECT_EQ(d.find_thread_executor(), nullptr);
  EXPECT_EQ(d.attached_executors(), 0u);
}

TYPED_TEST(runtime_test, thread_executor_returns_the_raii_executor_of_the_thread) {
  typename TestFixture::domain d;
  auto ex = d.attach();
  EXPECT_EQ(&d.thread_executor(), &ex);
  EXPECT_EQ(d.find_thread_executor(), &ex);
  EXPECT_EQ(d.attached_executors(), 1u);
}

TYPED_TEST(runtime_test, thread_executor_attaches_once_per_thread_and_domain) {
  typename TestFixture::domain a, b;
  std::thread([&] {
    auto& e1 = a.thread_executor();
    auto& e2 = a.thread_executor();
    EXPECT_EQ(&e1, &e2);
    EXPECT_EQ(a.find_thread_executor(), &e1);
    EXPECT_EQ(a.attached_executors(), 1u);
    auto& other = b.thread_executor();  // one per domain
    EXPECT_NE(static_cast<void*>(&other), static_cast<void*>(&e1));
    EXPECT_EQ(b.attached_executors(), 1u);
  }).join();
  EXPECT_EQ(a.attached_executors(), 0u) << "a managed executor outlived its thread";
  EXPECT_EQ(b.attached_executors(), 0u);
}

// The detach at thread exit is a real detach: the lazy hold is dropped (on_deactivate on that
// thread; under refcount the slot's reference goes) before the record is released, and the
// domain can then be destroyed (it would abort with "still attached" otherwise).
TYPED_TEST(runtime_test, a_managed_executor_detaches_at_thread_exit_and_the_domain_can_be_destroyed) {
  auto d = std::make_unique<typename TestFixture::domain>();
  auto x = d->template make<counted>(this->log, 1);
  std::thread([&] {
    auto& ex = d->thread_executor();
    ex.switch_to(x);
    ex.go_lazy();
  }).join();
  EXPECT_EQ(d->attached_executors(), 0u);
  EXPECT_EQ(this->log.count(event_log::deactivate, 1), 1) << "the thread-exit detach dropped no lazy hold";
  EXPECT_EQ(x->structural_count(), 1) << "the slot still counts the context";
  x.reset();
  d.reset();  // aborts if the exited thread's executor were still attached
}

// Thread-exit order: a thread_local constructed after the first thread_executor() is destroyed
// before the managed executor detaches, so it may still use it.
namespace {
template <class Domain>
struct uses_executor_at_exit {
  Domain* d = nullptr;
  bool* found = nullptr;
  ~uses_executor_at_exit() {
    if (d) *found = d->find_thread_executor() != nullptr;
  }
};
}  // namespace

TYPED_TEST(runtime_test, thread_locals_made_after_the_first_thread_executor_call_die_before_its_detach) {
  using domain = typename TestFixture::domain;
  domain d;
  bool found = false;
  std::thread([&] {
    d.thread_executor();
    thread_local uses_executor_at_exit<domain> later;
    later.d = &d;
    later.found = &found;
  }).join();
  EXPECT_TRUE(found);
  EXPECT_EQ(d.attached_executors(), 0u);
}

// ~domain with a managed executor of a live thread: no abort; the thread's exit later does not
// touch the dead domain (ASan would see it), and a new domain (possibly at the same address)
// does not mistake the orphaned executor for one of its own.
TYPED_TEST(runtime_test, a_domain_destroyed_before_a_thread_that_uses_it_through_thread_executor) {
  using domain = typename TestFixture::domain;
  auto d = std::make_unique<domain>();
  gate attached, destroyed;
  std::unique_ptr<domain> d2;
  bool clean = false;
  std::thread t([&] {
    auto& ex = d->thread_executor();
    auto x = d->template make<counted>(this->log, 1);
    ex.switch_to(x);
    ex.switch_to_default();
    x.reset();
    attached.open();
    destroyed.wait();
    clean = d2->find_thread_executor() == nullptr;
    auto ex2 = d2->attach();  // no "already attached" from the orphan
    clean = clean && d2->find_thread_executor() == &ex2;
  });
  ASSERT_TRUE(attached.wait());
  EXPECT_EQ(d->attached_executors(), 1u);
  d.reset();  // detaches the managed executor of the live thread
  d2 = std::make_unique<domain>();
  destroyed.open();
  t.join();
  EXPECT_TRUE(clean);
  EXPECT_EQ(d2->attached_executors(), 0u);
}

// Under refcount the managed executor's slot counts its context: ~domain drops that reference
// (the free runs in ~domain, and the domain is then destroyable).
TYPED_TEST(runtime_test, a_domain_destroyed_with_a_managed_executor_holding_a_context_lazily) {
  using domain = typename TestFixture::domain;
  auto d = std::make_unique<domain>();
  gate held, destroyed;
  auto x = d->template make<counted>(this->log, 1);
  std::thread t([&] {
    auto& ex = d->thread_executor();
    ex.switch_to(x);
    ex.go_lazy();
    held.open();
    destroyed.wait();
  });
  ASSERT_TRUE(held.wait());
  x.reset();  // shootdown: the round steals the lazy hold; refcount: the slot keeps it alive
  EXPECT_EQ(this->log.count(event_log::free, 1), TestFixture::steals ? 1 : 0);
  d.reset();
  EXPECT_EQ(this->log.count(event_log::free, 1), 1);
  destroyed.open();
  t.join();
}

template <class C>
class runtime_DeathTest : public runtime_test<C> {
 protected:
  runtime_DeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};
TYPED_TEST_SUITE(runtime_DeathTest, all_combos, combo_names);

TYPED_TEST(runtime_DeathTest, attach_after_thread_executor_aborts_and_says_what_to_use) {
  EXPECT_DEATH(
      {
        typename TestFixture::domain d;
        d.thread_executor();
        auto ex = d.attach();
      },
      "lazymm: this thread is already attached to this domain as executor #0 \\(use domain::thread_executor\\(\\) "
      "to get it\\)");
}

// ---- 2. fork ---------------------------------------------------------------------------------

namespace {
// Runs child() in a forked child (alarm: a hang fails instead of blocking) and returns its exit
// status (0: every check held).
template <class F>
int in_forked_child(F child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(10);
    ::_exit(child() ? 0 : 1);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

#define CHILD_CHECK(c)                                             \
  do {                                                             \
    if (!(c)) {                                                    \
      std::fprintf(stderr, "child: check failed: %s\n", #c);      \
      return false;                                                \
    }                                                              \
  } while (0)
}  // namespace

// A thread attached and holding x lazily at the fork does not exist in the child: its record is
// released there, so the child's executors work, the final drop of x does not wait for it, and
// the child's domain can be destroyed.
template <class Domain>
void fork_with_a_lazy_holder(event_log& log) {
  auto d = std::make_unique<Domain>();
  auto& main_ex = d->thread_executor();
  auto x = d->template make<counted>(log, 1);
  gate held, done;
  std::thread t([&] {
    auto ex = d->attach();
    ex.switch_to(x);
    ex.go_lazy();
    held.open();
    done.wait();
  });
  ASSERT_TRUE(held.wait());
  EXPECT_EQ(d->attached_executors(), 2u);
  const int status = in_forked_child([&] {
    CHILD_CHECK(d->attached_executors() == 1);
    CHILD_CHECK(d->find_thread_executor() == &main_ex);
    auto y = d->template make<counted>(log, 2);
    main_ex.switch_to(y);
    main_ex.go_lazy();
    y.reset();
    main_ex.switch_to_default();
    x.reset();  // the parent thread's lazy hold is gone in the child: nothing to wait for
    if constexpr (Domain::policy::batches) d->reclaim();
    CHILD_CHECK(d->live_contexts() == 0);
    d.reset();  // the managed main executor is detached by ~domain; nothing else is attached
    return true;
  });
  EXPECT_EQ(status, 0);
  done.open();
  t.join();
  x.reset();
  if constexpr (Domain::policy::batches) d->reclaim();
  EXPECT_EQ(d->live_contexts(), 0);
}

TYPED_TEST(runtime_test, a_forked_child_releases_the_executors_of_threads_it_does_not_have) {
  fork_with_a_lazy_holder<typename TestFixture::domain>(this->log);
}

// The same with the other thread paused inside a switch (odd seq) at the fork: the child's final
// drop of the context it was reading must not wait for it (shootdown policies; under refcount
// such a thread leaves one structural reference unaccounted in the child, documented).
TYPED_TEST(runtime_test, a_forked_child_does_not_wait_for_a_thread_caught_inside_a_switch) {
  if constexpr (TestFixture::steals) {
    using domain = typename TestFixture::domain;
    domain d;
    auto x = d.template make<counted>(this->log, 1);
    auto y = d.template make<counted>(this->log, 2);
    gate held, go;
    std::atomic<std::uint32_t> id{~0u};
    std::thread t([&] {
      auto ex = d.attach();
      ex.switch_to(x);
      ex.go_lazy();
      id = ex.id().value;
      held.open();
      go.wait();
      ex.switch_to(y);  // paused inside, after reading x
      ex.switch_to_default();
    });
    ASSERT_TRUE(held.wait());
    {
      pause_at p(lazymm::test_point::switch_after_slot_read, id.load());
      go.open();
      ASSERT_TRUE(p.wait_reached());
      const int status = in_forked_child([&] {
        lazymm::detail::seams::on_point.store(nullptr);
        x.reset();  // would wait forever on the paused thread's odd seq
        y.reset();
        CHILD_CHECK(d.live_contexts() == 0);
        CHILD_CHECK(d.attached_executors() == 0);
        return true;
      });
      EXPECT_EQ(status, 0);
      p.resume();
      t.join();  // before p dies: the paused thread still reads it as it wakes
    }
  }
}

template <class C>
class runtime_batched_test : public ::testing::Test {
 protected:
  event_log log;
};
using batched_combos = ::testing::Types<combo<lazymm::batched<lazymm::explicit_shootdown>, lazymm::fence_backend>,
                                        combo<lazymm::batched<lazymm::implicit_shootdown>, lazymm::membarrier_backend>>;
TYPED_TEST_SUITE(runtime_batched_test, batched_combos, combo_names);

TYPED_TEST(runtime_batched_test, a_forked_child_of_a_batched_domain_can_reclaim_and_be_destroyed) {
  fork_with_a_lazy_holder<typename TypeParam::domain>(this->log);
}

// A context whose free (run by a reclaim, under the domain's reclaim lock) takes the process
// lock: it attaches the reclaiming thread through thread_executor().
namespace {
void (*g_in_free)() = nullptr;
struct attaches_in_free : counted {
  using counted::counted;
  static void on_free(attaches_in_free* c) noexcept {
    if (g_in_free) g_in_free();
    c->log->add(event_log::free, c->id);
    delete c;
  }
};
}  // namespace

// A reclaim in progress on another thread at the fork: the prepare handler waits for it, so the
// child's reclaim lock is free and its queue whole (a child that inherited the lock held would
// hang in reclaim()). The reclaim's on_free takes the process lock meanwhile (thread_executor()):
// a prepare handler that held the process lock while it waited for the reclaim lock would
// deadlock with it.
TYPED_TEST(runtime_batched_test, a_fork_during_a_reclaim_on_another_thread_waits_for_it) {
  using domain = typename TypeParam::domain;
  domain d;
  static domain* dp;
  dp = &d;
  g_in_free = [] { dp->thread_executor(); };
  worker<domain> w(d);
  auto x = d.template make<attaches_in_free>(this->log, 1);
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
  });
  x.reset();  // queued
  pause_at p(lazymm::test_point::reclaim_after_steal);
  std::thread reclaimer([&] { d.reclaim(); });
  ASSERT_TRUE(p.wait_reached());
  std::thread resume([&] {
    std::this_thread::sleep_for(50ms);  // fork is blocked in prepare by now (or soon)
    p.resume();
  });
  const int status = in_forked_child([&] {
    lazymm::detail::seams::on_point.store(nullptr);
    auto y = d.template make<counted>(this->log, 2);
    y.reset();
    d.reclaim();
    CHILD_CHECK(d.live_contexts() == 0);
    return true;
  });
  EXPECT_EQ(status, 0);
  resume.join();
  reclaimer.join();
  g_in_free = nullptr;
  EXPECT_EQ(this->log.count(event_log::free, 1), 1);
  EXPECT_EQ(d.live_contexts(), 0);
  EXPECT_EQ(d.attached_executors(), 1u) << "the reclaimer's managed executor outlived its thread";
}

// ---- 3. scoped_switch ------------------------------------------------------------------------

TYPED_TEST(runtime_test, scoped_switch_restores_a_context_that_was_loaded_and_keeps_it_alive) {
  typename TestFixture::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  ex.switch_to(x);
  {
    lazymm::scoped_switch s(ex, y);
    EXPECT_EQ(ex.loaded(), y.get());
    EXPECT_EQ(x->owning_count(), 2) << "the scoped switch must own the context it restores";
  }
  EXPECT_EQ(ex.loaded(), x.get());
  EXPECT_FALSE(ex.is_lazy());
  EXPECT_EQ(x->owning_count(), 1);
  EXPECT_EQ(this->log.count(event_log::activate, 1), 2);
  EXPECT_EQ(this->log.count(event_log::deactivate, 2), 1);
  ex.switch_to_default();
}

TYPED_TEST(runtime_test, scoped_switch_restores_the_lazy_state_without_reloading_the_lazy_context) {
  typename TestFixture::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  ex.switch_to(x);
  ex.go_lazy();
  {
    lazymm::scoped_switch s(ex, y);
    EXPECT_FALSE(ex.is_lazy());
    x.reset();  // nobody owns x now: it must never be loaded again
  }
  EXPECT_TRUE(ex.is_lazy());
  EXPECT_EQ(ex.loaded(), y.get());
  EXPECT_EQ(this->log.count(event_log::activate, 1), 1);
  EXPECT_EQ(this->log.count(event_log::free, 1), 1);
  ex.switch_to_default();
}

TYPED_TEST(runtime_test, scoped_switch_restores_the_default_context_and_nests) {
  typename TestFixture::domain d;
  auto ex = d.attach();
  auto x = d.template make<counted>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  {
    lazymm::scoped_switch outer(ex, x);
    {
      lazymm::scoped_switch inner(ex, y);
      EXPECT_EQ(ex.loaded(), y.get());
    }
    EXPECT_EQ(ex.loaded(), x.get());
  }
  EXPECT_EQ(ex.loaded(), d.default_context());
  EXPECT_EQ(x->owning_count(), 1);
  EXPECT_EQ(y->owning_count(), 1);
}

TYPED_TEST(runtime_DeathTest, scoped_switches_ended_out_of_order_abort) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TestFixture::domain d;
        auto ex = d.attach();
        auto x = d.template make<counted>(log, 1);
        auto y = d.template make<counted>(log, 2);
        using S = lazymm::scoped_switch<typename TestFixture::executor_type>;
        auto* outer = new S(ex, x);
        auto* inner = new S(ex, y);
        delete outer;
        delete inner;
      },
      "lazymm: executor #0: scoped_switch ended out of LIFO order");
}

// ---- 4. on_stolen and poll_stolen ------------------------------------------------------------

// The worker holds x lazily, the last owner drops it on the test thread: a round steals it.
// The worker's own thread then sees the steal exactly once, at its next switch, and never runs
// on_deactivate for x.
TYPED_TEST(runtime_test, on_stolen_runs_once_on_the_holder_thread_at_its_next_switch) {
  using domain = typename TestFixture::domain;
  domain d;
  worker<domain> w(d);
  auto x = d.template make<watched>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  std::thread::id worker_thread;
  w.run([&](auto& ex) {
    worker_thread = std::this_thread::get_id();
    ex.switch_to(x);
    ex.go_lazy();
  });
  x.reset();
  w.run([&](auto& ex) {
    ex.switch_to(y);
    ex.go_lazy();
    ex.switch_to_default();
    ex.switch_to(y);
    ex.switch_to_default();
  });
  if constexpr (TestFixture::steals) {
    ASSERT_EQ(g_stolen.size(), 1u);
    EXPECT_EQ(g_stolen.calls[0].first, w.id());
    EXPECT_EQ(g_stolen.calls[0].second, worker_thread);
    EXPECT_EQ(this->log.count(event_log::deactivate, 1), 0);
    EXPECT_EQ(this->log.count(event_log::evict, 1), 1);
  } else {
    EXPECT_EQ(g_stolen.size(), 0u) << "refcount never steals";
    EXPECT_EQ(this->log.count(event_log::deactivate, 1), 1);
  }
}

TYPED_TEST(runtime_test, poll_stolen_sees_a_steal_once) {
  using domain = typename TestFixture::domain;
  domain d;
  worker<domain> w(d);
  auto x = d.template make<watched>(this->log, 1);
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.go_lazy();
    EXPECT_FALSE(ex.poll_stolen());
  });
  x.reset();
  bool first = false, second = true;
  std::size_t after_poll = 0;
  w.run([&](auto& ex) {
    first = ex.poll_stolen();
    after_poll = g_stolen.size();
    second = ex.poll_stolen();
    ex.switch_to_default();
  });
  EXPECT_EQ(first, TestFixture::steals);
  EXPECT_EQ(after_poll, TestFixture::steals ? 1u : 0u) << "on_stolen must run inside poll_stolen";
  EXPECT_FALSE(second);
  EXPECT_EQ(g_stolen.size(), TestFixture::steals ? 1u : 0u) << "a later switch ran on_stolen again";
}

// switch_to_default after a steal finds the default context in the slot (the fast path): the
// steal is still seen there; and a thread that exits after a steal sees it at its detach.
TYPED_TEST(runtime_test, on_stolen_runs_at_switch_to_default_and_at_thread_exit) {
  using domain = typename TestFixture::domain;
  domain d;
  for (int at_exit = 0; at_exit < 2; ++at_exit) {
    g_stolen.reset();
    auto x = d.template make<watched>(this->log, 10 + at_exit);
    gate held, dropped;
    std::size_t seen_before_exit = 99;
    std::thread t([&] {
      auto& ex = d.thread_executor();
      ex.switch_to(x);
      ex.go_lazy();
      held.open();
      dropped.wait();
      if (!at_exit) ex.switch_to_default();
      seen_before_exit = g_stolen.size();
    });
    ASSERT_TRUE(held.wait());
    x.reset();
    dropped.open();
    t.join();
    const std::size_t want = TestFixture::steals ? 1u : 0u;
    EXPECT_EQ(seen_before_exit, at_exit ? 0u : want);
    EXPECT_EQ(g_stolen.size(), want);
  }
}

// Forced interleaving: the holder is paused inside a switch after its odd seq, before it reads
// the slot; the round steals x meanwhile (and waits for the holder). The holder then reads the
// default context at (3) and runs on_stolen there, once, instead of on_deactivate.
TYPED_TEST(runtime_test, a_steal_inside_the_holders_switch_runs_on_stolen_there_once) {
  if constexpr (TestFixture::steals) {
    using domain = typename TestFixture::domain;
    domain d;
    auto x = d.template make<watched>(this->log, 1);
    auto y = d.template make<counted>(this->log, 2);
    gate held, go;
    std::atomic<std::uint32_t> id{~0u};
    std::size_t seen_in_switch = 99;
    std::thread t([&] {
      auto ex = d.attach();
      ex.switch_to(x);
      ex.go_lazy();
      id = ex.id().value;
      held.open();
      go.wait();
      ex.switch_to(y);
      seen_in_switch = g_stolen.size();
      ex.switch_to_default();
      EXPECT_FALSE(ex.poll_stolen());
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
      t.join();  // before p dies: the paused thread still reads it as it wakes
    }
    EXPECT_EQ(seen_in_switch, 1u);
    EXPECT_EQ(g_stolen.size(), 1u);
    EXPECT_EQ(this->log.count(event_log::deactivate, 1), 0);
    EXPECT_EQ(this->log.count(event_log::evict, 1), 1);
  }
}

// on_stolen is a hook of the switch: the executor may not switch from inside it.
namespace {
template <class Executor>
struct switches_in_on_stolen : lazymm::context {
  inline static Executor* self = nullptr;
  inline static const lazymm::owning_ref<counted>* other = nullptr;
  static void on_stolen(lazymm::executor_id) noexcept { self->switch_to(*other); }
};
}  // namespace

TYPED_TEST(runtime_DeathTest, a_switch_from_inside_on_stolen_aborts) {
  if constexpr (TestFixture::steals) {
    using X = switches_in_on_stolen<typename TestFixture::executor_type>;
    EXPECT_DEATH(
        {
          event_log log;
          typename TestFixture::domain d;
          auto ex = d.attach();
          X::self = &ex;
          auto x = d.template make<X>();
          auto y = d.template make<counted>(log, 2);
          auto z = d.template make<counted>(log, 3);
          X::other = &z;
          ex.switch_to(x);
          ex.go_lazy();
          x.reset();  // the exit_mm case: the round steals our own slot
          ex.switch_to(y);
        },
        "lazymm: executor #0: switch called from inside its own on_activate/on_deactivate hook");
  }
}

// ---- 5. statistics ---------------------------------------------------------------------------

TYPED_TEST(runtime_test, executor_stats_count_real_switches_and_steals) {
  using domain = typename TestFixture::domain;
  domain d;
  worker<domain> w(d);
  auto x = d.template make<watched>(this->log, 1);
  auto y = d.template make<counted>(this->log, 2);
  w.run([&](auto& ex) {
    ex.switch_to(x);   // real 1
    ex.go_lazy();
    ex.switch_to(x);   // fast path: not counted
    ex.switch_to(x);
    ex.switch_to(y);   // real 2
    ex.switch_to(x);   // real 3
    ex.go_lazy();
  });
  x.reset();
  w.run([&](auto& ex) {
    ex.switch_to_default();  // after a steal: the default is loaded, the steal is seen
  });
  lazymm::executor_stats s{};
  w.run([&](auto& ex) { s = ex.stats(); });
  if constexpr (TestFixture::steals) {
    EXPECT_EQ(s.real_switches, 3u);
    EXPECT_EQ(s.steals_seen, 1u);
  } else {
    EXPECT_EQ(s.real_switches, 4u);
    EXPECT_EQ(s.steals_seen, 0u);
  }
}

TYPED_TEST(runtime_test, drop_latency_has_one_sample_per_free_and_sees_a_slow_round) {
  using domain = typename TestFixture::domain;
  domain d;
  EXPECT_EQ(d.drop_latency().count, 0u);
  for (int i = 0; i < 3; ++i) d.template make<counted>(this->log, i).reset();
  auto l = d.drop_latency();
  EXPECT_EQ(l.count, 3u);
  std::uint64_t sum = 0;
  for (auto b : l.log2_ns) sum += b;
  EXPECT_EQ(sum, 3u);
  if constexpr (TestFixture::steals) {
    // A lazy holder on another thread makes the round steal; its evict hook sleeps 2 ms inside
    // the timed window.
    worker<domain> w(d);
    auto s = d.template make<slow_evict>();
    w.run([&](auto& ex) {
      ex.switch_to(s);
      ex.go_lazy();
    });
    s.reset();
    l = d.drop_latency();
    EXPECT_EQ(l.count, 4u);
    EXPECT_GE(l.max_ns, 2'000'000u);
    EXPECT_GE(l.percentile_ns(1.0), 2'000'000u);
    EXPECT_LE(l.percentile_ns(0.5), l.max_ns);
  }
}

TEST(drop_latency_test, percentile_is_an_upper_bound_within_a_factor_of_two) {
  lazymm::drop_latency l;
  EXPECT_EQ(l.percentile_ns(0.5), 0u);
  l.count = 10;
  l.log2_ns[3] = 9;   // [8, 16) ns
  l.log2_ns[20] = 1;  // [1 Mi, 2 Mi) ns
  l.max_ns = 1'500'000;
  EXPECT_EQ(l.percentile_ns(0.5), 15u);
  EXPECT_EQ(l.percentile_ns(0.9), 15u);
  EXPECT_EQ(l.percentile_ns(0.95), 1'500'000u);
  EXPECT_EQ(l.percentile_ns(1.0), 1'500'000u);
}

// ---- 6. a final drop from a signal handler that interrupted the switch ------------------------
// (every policy; the shootdown-only version of 0.2 is in soundness_test.cpp)

namespace {
lazymm::context* g_victim = nullptr;
void (*g_drop)() = nullptr;
}  // namespace

TYPED_TEST(runtime_DeathTest, a_final_drop_from_a_signal_handler_inside_a_switch_aborts_under_every_policy) {
  EXPECT_DEATH(
      {
        typename TestFixture::domain d;
        auto ex = d.attach();
        event_log log;
        auto x = d.template make<counted>(log, 1);
        auto y = d.template make<counted>(log, 2);
        auto z = d.template make<counted>(log, 3);
        ex.switch_to(x);
        g_victim = z.release();  // a context nobody holds: its final drop needs no round at all
        g_drop = [] { lazymm::owning_ref<counted>::adopt(static_cast<counted*>(g_victim)).reset(); };
        ::signal(SIGUSR1, [](int) { g_drop(); });
        lazymm::detail::seams::on_point.store([](lazymm::test_point p, std::uint32_t) {
          if (p == lazymm::test_point::switch_after_slot_read) ::raise(SIGUSR1);
        });
        ex.switch_to(y);
      },
      "lazymm: final drop on a thread whose executor #0 is inside a switch: a signal handler that interrupted "
      "switch_to must not drop the last reference to a context");
}
