// Issue #19 ("Soundness, round 2"): the code around the protocol, attacked as a runtime author
// would combine it: several batched domains of one type, thread exit against a reclaim, hooks
// that drop many contexts, batch_options at their limits, a reclaimer across fork(), late
// thread_local destructors, drop latency under implicit, deep teardown chains.
//
// A test whose failure mode is a hang runs in a child process (EXPECT_EXIT, "threadsafe" style)
// with an alarm, so that the hang fails the test instead of the suite.
#include <linux/membarrier.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

// Runs body() in a child with an alarm of `secs`: the child exits 0 if body returns.
#define EXPECT_RETURNS_WITHIN(secs, body)                      \
  EXPECT_EXIT(                                                 \
      {                                                        \
        ::alarm(secs);                                         \
        body;                                                  \
        std::fflush(nullptr);                                  \
        ::_exit(0);                                            \
      },                                                       \
      ::testing::ExitedWithCode(0), "")

// A context whose free runs a callback (one per process: the hook is static), then frees.
void (*g_on_free)(int) = nullptr;
struct calls_on_free : lazymm::context {
  int id;
  explicit calls_on_free(int i) : id(i) {}
  static void on_free(calls_on_free* c) noexcept {
    const int id = c->id;
    delete c;
    if (g_on_free) g_on_free(id);
  }
};

}  // namespace

// ---- item 2: "this thread runs a reclaim of D" per domain, not per domain type ------------------

template <class C>
class round2_batched : public ::testing::Test {
 protected:
  round2_batched() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
  using domain = typename C::domain;
};
TYPED_TEST_SUITE(round2_batched, batched_combos, combo_names);

namespace {
template <class Domain>
struct two_domains {
  inline static Domain* a = nullptr;
  inline static Domain* b = nullptr;
  inline static int what = 0;  // in b's hook: 0 drop many into a, 1 a->synchronize(), 2 fork
};
}  // namespace

// A's reclaim frees context 1, whose on_free reclaims B; B's reclaim frees context 2, whose on_free
// acts on A (held by this very thread, two reclaims down).
template <class Domain>
void nested_reclaims_of_one_type(int what) {
  using two = two_domains<Domain>;
  Domain a(lazymm::batch_options{.backlog = 1});  // every drop past 2 would wait for the lock
  Domain b;
  two::a = &a;
  two::b = &b;
  two::what = what;
  g_on_free = [](int id) {
    if (id == 1) two::b->reclaim();
    if (id != 2) return;
    if (two::what == 0) {
      for (int i = 0; i < 4; ++i) two::a->template make<calls_on_free>(100 + i).reset();
    } else if (two::what == 1) {
      two::a->synchronize();
    } else {
      const pid_t pid = ::fork();
      if (pid == 0) ::_exit(0);
      int st = 0;
      ::waitpid(pid, &st, 0);
    }
  };
  b.template make<calls_on_free>(2).reset();  // queued in B
  a.template make<calls_on_free>(1).reset();  // backlog 1: reclaims A now, on this thread
  while (a.reclaim() || b.reclaim()) {
  }
  g_on_free = nullptr;
}

TYPED_TEST(round2_batched, a_drop_into_a_from_a_hook_of_bs_reclaim_nested_in_as_does_not_wait_for_itself) {
  EXPECT_RETURNS_WITHIN(10, nested_reclaims_of_one_type<typename TestFixture::domain>(0));
}

TYPED_TEST(round2_batched, synchronize_of_a_from_a_hook_of_bs_reclaim_nested_in_as_aborts) {
  EXPECT_DEATH(
      {
        ::alarm(10);
        nested_reclaims_of_one_type<typename TestFixture::domain>(1);
      },
      "lazymm: synchronize\\(\\) called from a hook run by a reclaim of the same domain");
}

TYPED_TEST(round2_batched, a_fork_from_a_hook_of_bs_reclaim_nested_in_as_does_not_wait_for_itself) {
  EXPECT_RETURNS_WITHIN(10, nested_reclaims_of_one_type<typename TestFixture::domain>(2));
}

// ---- item 7: the backlog bound holds for drops made by hooks of the running reclaim -------------

namespace {
template <class Domain>
struct fans_out : lazymm::context {
  Domain* d;
  int n;
  fans_out(Domain* dd, int nn) : d(dd), n(nn) {}
  static void on_free(fans_out* c) noexcept {
    for (int i = 0; i < c->n; ++i) c->d->template make<calls_on_free>(i).reset();
    delete c;
  }
};
}  // namespace

TYPED_TEST(round2_batched, a_hook_that_drops_many_contexts_of_its_own_domain_keeps_the_backlog_bounded) {
  using domain = typename TestFixture::domain;
  domain d(lazymm::batch_options{.backlog = 4});
  d.template make<fans_out<domain>>(&d, 1000).reset();
  d.synchronize();
  d.synchronize();
  // 2 x backlog not yet taken, plus the context whose hook drops (taken, not yet counted off).
  EXPECT_LE(d.stats().peak_backlog, 2u * 4u + 1u);
  EXPECT_EQ(d.live_contexts(), 0);
}

// ---- item 6: max_age_us at its limits ------------------------------------------------------------

TYPED_TEST(round2_batched, reclaim_if_due_never_reclaims_by_age_when_max_age_is_size_max) {
  typename TestFixture::domain d(lazymm::batch_options{.threshold = 4, .max_age_us = SIZE_MAX});
  d.template make<calls_on_free>(1).reset();
  std::this_thread::sleep_for(2ms);
  EXPECT_FALSE(d.reclaim_if_due()) << "SIZE_MAX means never by age";
  for (int i = 0; i < 3; ++i) d.template make<calls_on_free>(1).reset();
  EXPECT_TRUE(d.reclaim_if_due()) << "the threshold still counts";
}

TYPED_TEST(round2_batched, reclaim_if_due_with_a_max_age_past_int64_nanoseconds_never_reclaims_by_age) {
  typename TestFixture::domain d(
      lazymm::batch_options{.threshold = 4, .max_age_us = static_cast<std::size_t>(INT64_MAX / 1000) + 1});
  d.template make<calls_on_free>(1).reset();
  std::this_thread::sleep_for(2ms);
  EXPECT_FALSE(d.reclaim_if_due());
  d.reclaim();
}

TYPED_TEST(round2_batched, a_reclaimer_with_max_age_size_max_reclaims_at_the_threshold) {
  using domain = typename TestFixture::domain;
  domain d(lazymm::batch_options{.threshold = 1, .max_age_us = SIZE_MAX});
  lazymm::reclaimer<domain> r(d);
  d.template make<calls_on_free>(1).reset();
  EXPECT_TRUE(eventually([&] { return d.live_contexts() == 0; }));
}

// ---- item 5: a reclaimer across fork() ------------------------------------------------------------

TYPED_TEST(round2_batched, a_forked_child_can_destroy_its_copy_of_a_reclaimer_and_reclaim) {
  using domain = typename TestFixture::domain;
  EXPECT_RETURNS_WITHIN(10, {
    domain d;
    auto r = std::make_unique<lazymm::reclaimer<domain>>(d);
    std::this_thread::sleep_for(20ms);  // the reclaimer thread waits on its condition variable by now
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(5);
      d.template make<calls_on_free>(1).reset();
      r.reset();  // no reclaimer thread here: must neither join nor hang, and must reclaim
      ::_exit(d.live_contexts() == 0 ? 0 : 3);
    }
    int st = -1;
    ::waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "child status %d\n", st);
      std::_Exit(1);
    }
    r.reset();
  });
}

// ---- item 10, second half: final drops from a signal handler that interrupted a reclaim ---------

namespace {
// The handler drops the last owners of four contexts of the domain whose reclaim it interrupted,
// on the thread that holds that reclaim's lock. The signal is raised at a test point inside the
// round (after its walk, before its barrier and wait), synchronously, so the handler interrupts
// no allocation; what it must not do is wait for the lock its own thread holds.
struct drops_in_a_signal_handler {
  inline static std::vector<lazymm::owning_ref<calls_on_free>>* refs = nullptr;
  inline static volatile sig_atomic_t raised = 0, handled = 0;
  static void handler(int) {
    for (auto& r : *refs) r.reset();
    handled = 1;
  }
  static void at_point(lazymm::test_point p, std::uint32_t) {
    if (p != lazymm::test_point::reclaim_after_steal || raised) return;
    raised = 1;
    ::raise(SIGUSR1);
  }
};
}  // namespace

TYPED_TEST(round2_batched, final_drops_in_a_signal_handler_that_interrupted_this_threads_reclaim_do_not_wait_for_it) {
  using domain = typename TestFixture::domain;
  using sd = drops_in_a_signal_handler;
  EXPECT_RETURNS_WITHIN(10, {
    domain d(lazymm::batch_options{.backlog = 1});  // from 2 queued on, a drop reclaims: the lock
    std::vector<lazymm::owning_ref<calls_on_free>> refs;
    for (int i = 0; i < 4; ++i) refs.push_back(d.template make<calls_on_free>(10 + i));
    sd::refs = &refs;
    struct sigaction sa {};
    sa.sa_handler = &sd::handler;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGUSR1, &sa, nullptr);
    lazymm::detail::seams::on_point.store(&sd::at_point);
    d.template make<calls_on_free>(1).reset();  // backlog 1: reclaims now, on this thread
    lazymm::detail::seams::on_point.store(nullptr);
    if (!sd::raised || !sd::handled) ::_exit(2);
    d.synchronize();
    ::_exit(d.live_contexts() == 0 ? 0 : 3);
  });
}

// ---- item 9: reclaim_if_due() from a switch hook ----------------------------------------------------

namespace {
template <class Domain>
struct reclaims_if_due_in_a_hook : lazymm::context {
  Domain* d;
  explicit reclaims_if_due_in_a_hook(Domain* dd) : d(dd) {}
  void on_activate(lazymm::executor_id) noexcept { (void)d->reclaim_if_due(); }
};
}  // namespace

TYPED_TEST(round2_batched, reclaim_if_due_inside_a_switch_hook_aborts_even_with_nothing_due) {
  using domain = typename TestFixture::domain;
  EXPECT_DEATH(
      {
        domain d;
        auto ex = d.attach();
        auto x = d.template make<reclaims_if_due_in_a_hook<domain>>(&d);
        ex.switch_to(x);  // nothing queued: used to return false silently
      },
      "lazymm: reclaim_if_due\\(\\) inside a switch hook \\(on_activate, on_deactivate or on_stolen\\) of "
      "executor #0");
}

// ---- item 3: thread exit and ~domain against a reclaim whose hook takes the process lock ---------

namespace {
using rc_domain = lazymm::domain<lazymm::refcount, lazymm::fence_backend>;
using batch_domain = lazymm::domain<lazymm::batched<lazymm::implicit_shootdown>, lazymm::fence_backend>;
using other_domain = lazymm::domain<lazymm::implicit_shootdown, lazymm::fence_backend>;

other_domain* g_other = nullptr;
// A context of the batched domain whose free (in the reclaim, under its lock) attaches the
// reclaiming thread to another domain: thread_executor() takes the process lock.
struct attaches_on_free : lazymm::context {
  static void on_free(attaches_on_free* c) noexcept {
    g_other->thread_executor();
    delete c;
  }
};
// A context of the refcount domain whose free drops the last reference to a context of the
// batched domain, past twice its backlog: that drop waits for the reclaim lock.
struct plain : lazymm::context {};
struct drops_on_free : lazymm::context {
  lazymm::owning_ref<lazymm::context> late;
  static void on_free(drops_on_free* c) noexcept {
    c->late.reset();
    delete c;
  }
};

// how: 0 the thread holding r exits (its managed executor detaches), 1 ~domain releases it.
void exit_or_destroy_against_a_reclaim(int how) {
  auto rc = std::make_unique<rc_domain>();
  batch_domain a(lazymm::batch_options{.backlog = 1});
  other_domain other;
  g_other = &other;
  auto r = rc->make<drops_on_free>();
  r->late = a.make<plain>();
  gate held, leave;
  std::thread holder([&] {
    auto& ex = rc->thread_executor();
    ex.switch_to(r);
    ex.go_lazy();  // the slot keeps r's memory: its free runs at this executor's release
    held.open();
    leave.wait();
  });
  held.wait();
  r.reset();  // torn down; the slot holds the last (structural) reference
  std::thread reclaiming;
  {
    pause_at p(lazymm::test_point::reclaim_after_steal);
    reclaiming = std::thread([&] {
      a.make<attaches_on_free>().reset();  // backlog 1: reclaims here, pauses holding A's lock
    });
    p.wait_reached();
    // Release r: its free drops `late`, backlog 2 = 2 x 1 with A's lock busy: it waits for it.
    std::thread releaser([&] {
      if (how == 0) {
        leave.open();
        holder.join();  // the exit detach frees r
      } else {
        rc.reset();  // releases the live thread's managed executor, frees r
      }
    });
    std::this_thread::sleep_for(100ms);  // the release is waiting for A's lock by now
    p.resume();  // A's reclaim frees its context: thread_executor() takes the process lock
    releaser.join();
    reclaiming.join();
  }
  if (how == 1) {
    leave.open();
    holder.join();
  }
  while (a.reclaim()) {
  }
  g_other = nullptr;
}
}  // namespace

TEST(round2_DeathTest, a_thread_exit_detach_waiting_for_a_reclaim_whose_hook_takes_the_process_lock_finishes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_RETURNS_WITHIN(10, exit_or_destroy_against_a_reclaim(0));
}

TEST(round2_DeathTest, a_domain_destroyed_while_a_reclaim_hook_takes_the_process_lock_finishes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_RETURNS_WITHIN(10, exit_or_destroy_against_a_reclaim(1));
}

// ---- item 11: thread_executor() after the thread's managed detach ---------------------------------

namespace {
template <class Domain>
struct late_user {
  Domain* d = nullptr;
  ~late_user() {
    if (d) d->thread_executor();
  }
};
}  // namespace

template <class C>
class round2 : public ::testing::Test {
 protected:
  round2() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
  using domain = typename C::domain;
  static constexpr bool steals = C::policy::round != lazymm::round_at::never;
  static constexpr bool implicit = C::policy::round == lazymm::round_at::owning_zero;
  event_log log;
};
TYPED_TEST_SUITE(round2, all_combos, combo_names);

TYPED_TEST(round2, thread_executor_from_a_thread_local_destroyed_after_the_managed_detach_aborts_and_says_what_to_do) {
  using domain = typename TestFixture::domain;
  EXPECT_DEATH(
      {
        domain d;
        std::thread([&] {
          thread_local late_user<domain> u;  // constructed first: destroyed after the detach
          u.d = &d;
          d.thread_executor();
        }).join();
      },
      "lazymm: thread_executor\\(\\) on a thread whose library-managed executors were already detached at its "
      "exit");
}

// ---- item 9: drop latency under implicit with a structural reference kept --------------------------

namespace {
struct slow_teardown : lazymm::context {
  void on_teardown() noexcept { std::this_thread::sleep_for(20ms); }
};
}  // namespace

TYPED_TEST(round2, drop_latency_includes_the_teardown_even_when_a_structural_reference_outlives_the_owners) {
  typename TestFixture::domain d;
  auto x = d.template make<slow_teardown>();
  auto s = x.structural();
  x.reset();  // the last owning drop: teardown (20 ms); under implicit the sample starts here
  s.reset();  // the free
  const auto l = d.drop_latency();
  EXPECT_EQ(l.count, 1u);
  if constexpr (TestFixture::implicit) {
    EXPECT_GE(l.max_ns, 20'000'000u) << "implicit: the sample runs from the last owning drop";
  }
}

// ---- item 13: deep teardown chains ------------------------------------------------------------------

namespace {
struct chain_link : lazymm::context {
  lazymm::owning_ref<chain_link> next;
  void on_teardown() noexcept { next.reset(); }  // drops the last reference to the next link
};
template <class Domain>
void drop_a_chain(int n) {
  Domain d;
  lazymm::owning_ref<chain_link> head = d.template make<chain_link>();
  chain_link* tail = head.get();
  for (int i = 1; i < n; ++i) {
    tail->next = d.template make<chain_link>();
    tail = tail->next.get();
  }
  head.reset();
  if constexpr (Domain::policy::batches)
    while (d.reclaim()) {  // each teardown queues the next link
    }
  if (d.live_contexts() != 0) std::_Exit(4);
}
}  // namespace

// On a thread with a 1 MiB stack (a pool thread's, or a fiber's, is often smaller than main's).
template <class Domain>
void drop_a_chain_on_a_small_stack(int n) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1u << 20);
  pthread_t t;
  static int links;
  links = n;
  if (pthread_create(&t, &attr, [](void*) -> void* { drop_a_chain<Domain>(links); return nullptr; }, nullptr) != 0)
    std::_Exit(5);
  pthread_join(t, nullptr);
  pthread_attr_destroy(&attr);
}

TYPED_TEST(round2, a_teardown_chain_of_a_hundred_thousand_links_runs_in_a_small_stack) {
  EXPECT_RETURNS_WITHIN(60, drop_a_chain_on_a_small_stack<typename TestFixture::domain>(100'000));
}

TYPED_TEST(round2_batched, a_teardown_chain_of_a_hundred_thousand_links_runs_in_a_small_stack) {
  EXPECT_RETURNS_WITHIN(60, drop_a_chain_on_a_small_stack<typename TestFixture::domain>(100'000));
}

// ---- item 9: trim() ---------------------------------------------------------------------------------

// Two trims that both chose one stale member: only the one whose clear found the bit set counts it.
TYPED_TEST(round2, two_concurrent_trims_count_a_removed_member_once) {
  if constexpr (TestFixture::steals) {
    using domain = typename TestFixture::domain;
    domain d;
    worker<domain> w(d);
    auto x = d.template make<counted>(this->log, 1);
    w.run([&](auto& e) {
      e.switch_to(x);
      e.switch_to_default();  // the bit stays set: stale
    });
    std::size_t first = 0, second = 0;
    {
      pause_at p(lazymm::test_point::trim_before_clear);
      std::thread t([&] { first = d.trim(x); });
      ASSERT_TRUE(p.wait_reached());
      second = d.trim(x);  // chooses the same member and clears it
      p.resume();
      t.join();
    }
    EXPECT_EQ(first + second, 1u) << "one member removed, counted " << first + second << " times";
    EXPECT_EQ(d.holder_count(x), 0u);
  }
}

namespace {
std::atomic<int> g_expedited{0};
long counting_membarrier(int cmd, unsigned) {
  if (cmd == MEMBARRIER_CMD_QUERY) return MEMBARRIER_CMD_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
  if (cmd == MEMBARRIER_CMD_PRIVATE_EXPEDITED) g_expedited.fetch_add(1);
  return 0;
}
}  // namespace

// A trim whose only chosen member switched back to x before the clear puts its bit back at once
// and issues no heavy barrier (there is nothing left to check after one).
TEST(round2_trim, a_trim_whose_chosen_members_all_switched_back_issues_no_barrier) {
  using domain = lazymm::domain<lazymm::explicit_shootdown, lazymm::membarrier_backend>;
  auto* const previous = lazymm::detail::seams::membarrier.exchange(&counting_membarrier);
  {
    domain d;
    if (d.mechanism() != lazymm::mechanism::membarrier) {
      lazymm::detail::seams::membarrier.store(previous);
      GTEST_SKIP() << "membarrier forced off in this run";
    }
    event_log log;
    worker<domain> w(d);
    auto x = d.make<counted>(log, 1);
    auto mine = x;
    w.run([&](auto& e) {
      e.switch_to(mine);
      e.switch_to_default();  // stale bit
    });
    std::size_t removed = 99;
    const int before = g_expedited.load();
    {
      pause_at p(lazymm::test_point::trim_before_clear);
      std::thread t([&] { removed = d.trim(x); });
      ASSERT_TRUE(p.wait_reached());
      w.run([&](auto& e) { e.switch_to(mine); });  // holds x again (its bit was still set: no write)
      p.resume();
      t.join();
    }
    EXPECT_EQ(removed, 0u);
    EXPECT_EQ(d.holder_count(x), 1u) << "the holder's bit is back";
    EXPECT_EQ(g_expedited.load() - before, 0) << "a barrier for a trim that removed nothing";
    w.run([&](auto& e) { e.switch_to_default(); });
  }
  lazymm::detail::seams::membarrier.store(previous);
}

// ---- item 9: a fork from a switch hook while a reclaimer is blocked on that switch ------------------

namespace {
std::atomic<int> g_fork_status{-1};
template <class Domain>
struct forks_in_activate : lazymm::context {
  Domain* d;
  explicit forks_in_activate(Domain* dd) : d(dd) {}
  void on_activate(lazymm::executor_id) noexcept {
    // Wait until a round is blocked on this very switch (its waiter count is up), then fork. A
    // round that never waits (the NO_WAIT mutant) fails the test after 10 s instead of hanging it.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (lazymm::detail::executor_link::this_thread->rec->waiters.load() == 0) {
      if (std::chrono::steady_clock::now() > give_up) {
        g_fork_status = 101;
        return;
      }
      std::this_thread::yield();
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      // Nobody waits on this switch in the child: no futex wake per switch from now on.
      const auto w = lazymm::detail::executor_link::this_thread->rec->waiters.load();
      ::_exit(w == 0 ? 0 : 3);
    }
    int st = -1;
    ::waitpid(pid, &st, 0);
    g_fork_status = WIFEXITED(st) ? WEXITSTATUS(st) : 100;
  }
};
}  // namespace

TYPED_TEST(round2, a_fork_from_a_switch_hook_leaves_no_waiter_count_on_the_childs_record) {
  if constexpr (TestFixture::steals) {
    using domain = typename TestFixture::domain;
    domain d;
    worker<domain> w(d);
    auto y = d.template make<counted>(this->log, 1);
    auto x = d.template make<forks_in_activate<domain>>(&d);
    w.run([&](auto& e) {
      e.switch_to(y);
      e.go_lazy();
    });
    g_fork_status = -1;
    std::thread t([&] { w.run([&](auto& e) { e.switch_to(x); }); });
    // The switch to x read y and runs on_activate(x); drop y: the round steals it and blocks on
    // the odd seq until on_activate returns (after the fork).
    ASSERT_TRUE(eventually([&] { return this->log.count(event_log::deactivate, 1) == 1; }));
    y.reset();
    t.join();
    EXPECT_NE(g_fork_status.load(), 101) << "no round waited for the switch to x";
    EXPECT_EQ(g_fork_status.load(), 0) << "the child's record kept the parent's waiter count";
    w.run([&](auto& e) { e.switch_to_default(); });
  }
}
