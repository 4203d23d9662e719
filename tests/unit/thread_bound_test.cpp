// Thread-bound contexts (issue #18): per-thread state that only the holder's own thread can undo.
// Every load gets its on_deactivate on its holder's thread, after a steal too, before the
// teardown (free, under explicit_shootdown) runs, which then runs on whichever thread gave back
// the last bind: the round itself when nobody else held the context. Typed over every policy x
// backend, the batched policies included.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace lazymm_test;

namespace {

// What happened to bound contexts, and on which thread.
struct bound_log {
  enum kind { activate, deactivate, teardown, free };
  struct event {
    kind k;
    int ctx;
    std::thread::id thread;
  };
  std::mutex m;
  std::vector<event> events;
  void add(kind k, int ctx) {
    std::lock_guard g(m);
    events.push_back({k, ctx, std::this_thread::get_id()});
  }
  int count(kind k, int ctx) {
    std::lock_guard g(m);
    int n = 0;
    for (auto& e : events) n += e.k == k && e.ctx == ctx;
    return n;
  }
  // Index of the first event of kind k for ctx, or -1.
  int first(kind k, int ctx) {
    std::lock_guard g(m);
    for (std::size_t i = 0; i < events.size(); ++i)
      if (events[i].k == k && events[i].ctx == ctx) return static_cast<int>(i);
    return -1;
  }
  std::thread::id thread_of(kind k, int ctx) {
    std::lock_guard g(m);
    for (auto& e : events)
      if (e.k == k && e.ctx == ctx) return e.thread;
    return {};
  }
};

struct bound : lazymm::context {
  static constexpr bool thread_bound = true;
  bound(bound_log& l, int id) : log(&l), id(id) {}
  bound_log* log;
  int id;
  lazymm::owning_ref<bound>* drop_on_undo = nullptr;  // an undo that drops another context
  void on_activate(lazymm::executor_id) noexcept { log->add(bound_log::activate, id); }
  void on_deactivate(lazymm::executor_id) noexcept {
    log->add(bound_log::deactivate, id);
    if (drop_on_undo) drop_on_undo->reset();
  }
  void on_teardown() noexcept { log->add(bound_log::teardown, id); }
  static void on_free(bound* b) noexcept {
    b->log->add(bound_log::free, b->id);
    delete b;
  }
};

using bound_combos = ::testing::Types<
    combo<lazymm::refcount, lazymm::fence_backend>, combo<lazymm::refcount, lazymm::membarrier_backend>,
    combo<lazymm::explicit_shootdown, lazymm::fence_backend>, combo<lazymm::explicit_shootdown, lazymm::membarrier_backend>,
    combo<lazymm::implicit_shootdown, lazymm::fence_backend>, combo<lazymm::implicit_shootdown, lazymm::membarrier_backend>,
    combo<lazymm::batched<lazymm::explicit_shootdown>, lazymm::fence_backend>,
    combo<lazymm::batched<lazymm::implicit_shootdown>, lazymm::membarrier_backend>>;

template <class C>
class thread_bound_test : public ::testing::Test {
 protected:
  using domain = typename C::domain;
  static constexpr bool steals = C::policy::round != lazymm::round_at::never;
  static constexpr bool batches = C::policy::batches;
  // What the teardown waits for: the teardown itself (implicit, refcount) or the free (explicit).
  static constexpr bound_log::kind deferred =
      C::policy::round == lazymm::round_at::structural_zero ? bound_log::free : bound_log::teardown;
  // The final drop, and for batched policies the reclaim that runs its round.
  static void drop(domain& d, lazymm::owning_ref<bound>& x) {
    x.reset();
    if constexpr (batches) d.reclaim();
  }
  // What a holder does to undo a stolen (shootdown) or still loaded (refcount) lazy hold.
  static void let_go(typename domain::executor_type& ex) {
    if constexpr (steals)
      EXPECT_TRUE(ex.poll_stolen());
    else
      ex.switch_to_default();
  }
  bound_log log;
};
TYPED_TEST_SUITE(thread_bound_test, bound_combos, combo_names);

template <class C>
class thread_bound_DeathTest : public thread_bound_test<C> {
 protected:
  thread_bound_DeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};
TYPED_TEST_SUITE(thread_bound_DeathTest, bound_combos, combo_names);

std::vector<lazymm::executor_id> g_nudged;
std::mutex g_nudged_m;
void record_nudge(void*, lazymm::executor_id who) noexcept {
  std::lock_guard g(g_nudged_m);
  g_nudged.push_back(who);
}
std::size_t nudges() {
  std::lock_guard g(g_nudged_m);
  return g_nudged.size();
}

}  // namespace

// The teardown (free, under explicit) of a context a parked worker holds lazily waits for that
// worker's undo, which runs on the worker's own thread; the teardown then runs there, after it.
TYPED_TEST(thread_bound_test, the_teardown_waits_for_a_lazy_holders_undo_on_its_own_thread) {
  typename TestFixture::domain d;
  worker w(d);
  auto x = d.template make<bound>(this->log, 1);
  std::thread::id holder;
  w.run([&](auto& ex) {
    holder = std::this_thread::get_id();
    ex.switch_to(x);
    ex.go_lazy();
  });
  EXPECT_EQ(this->log.thread_of(bound_log::activate, 1), holder);
  TestFixture::drop(d, x);
  EXPECT_EQ(d.pending_teardowns(), 1u);
  EXPECT_EQ(this->log.count(TestFixture::deferred, 1), 0) << "torn down (freed) under a bound holder";
  EXPECT_EQ(this->log.count(bound_log::deactivate, 1), 0);
  w.run([](auto& ex) { TestFixture::let_go(ex); });
  EXPECT_EQ(d.pending_teardowns(), 0u);
  EXPECT_EQ(this->log.count(bound_log::deactivate, 1), 1);
  EXPECT_EQ(this->log.thread_of(bound_log::deactivate, 1), holder) << "the undo runs on the holder's thread";
  EXPECT_EQ(this->log.count(bound_log::teardown, 1), 1);
  EXPECT_EQ(this->log.count(bound_log::free, 1), 1);
  EXPECT_LT(this->log.first(bound_log::deactivate, 1), this->log.first(TestFixture::deferred, 1));
  EXPECT_EQ(this->log.thread_of(TestFixture::deferred, 1), holder) << "the last undo completes, on its thread";
}

// Nobody else held it: the final drop (the reclaim, for batched policies) completes at once.
TYPED_TEST(thread_bound_test, a_context_no_other_thread_holds_is_torn_down_in_its_final_drop) {
  typename TestFixture::domain d;
  worker w(d);
  auto x = d.template make<bound>(this->log, 1);
  w.run([&](auto& ex) {
    ex.switch_to(x);
    ex.switch_to_default();  // the load is undone before the drop
  });
  TestFixture::drop(d, x);
  EXPECT_EQ(d.pending_teardowns(), 0u);
  EXPECT_EQ(this->log.count(bound_log::teardown, 1), 1);
  EXPECT_EQ(this->log.count(bound_log::free, 1), 1);
  EXPECT_EQ(this->log.count(bound_log::activate, 1), 1);
  EXPECT_EQ(this->log.count(bound_log::deactivate, 1), 1);
}

// A round nudges each holder it stole a bound context from, once; every load is undone once.
TYPED_TEST(thread_bound_test, a_round_nudges_each_holder_it_stole_from_once) {
  if constexpr (TestFixture::steals) {
    typename TestFixture::domain d;
    {
      std::lock_guard g(g_nudged_m);
      g_nudged.clear();
    }
    d.set_nudge(&record_nudge, nullptr);
    worker a(d), b(d), idle(d);
    auto x = d.template make<bound>(this->log, 1);
    for (auto* w : {&a, &b}) w->run([&](auto& ex) {
        ex.switch_to(x);
        ex.go_lazy();
      });
    TestFixture::drop(d, x);
    ASSERT_EQ(nudges(), 2u);
    {
      std::lock_guard g(g_nudged_m);
      EXPECT_NE(g_nudged[0].value, g_nudged[1].value);
      for (auto who : g_nudged) EXPECT_TRUE(who == a.id() || who == b.id());
    }
    a.run([](auto& ex) { TestFixture::let_go(ex); });
    EXPECT_EQ(d.pending_teardowns(), 1u);
    EXPECT_EQ(this->log.count(TestFixture::deferred, 1), 0);
    b.run([](auto& ex) { TestFixture::let_go(ex); });
    EXPECT_EQ(d.pending_teardowns(), 0u);
    EXPECT_EQ(this->log.count(bound_log::deactivate, 1), 2);
    EXPECT_EQ(this->log.count(bound_log::teardown, 1), 1);
    EXPECT_EQ(this->log.count(bound_log::free, 1), 1);
  }
}

// Forced: the holder detaches (its thread ends) between the steal and its undo.
TYPED_TEST(thread_bound_test, a_holder_that_detaches_after_the_steal_undoes_then) {
  typename TestFixture::domain d;
  auto x = d.template make<bound>(this->log, 1);
  std::thread::id holder;
  {
    worker w(d);
    w.run([&](auto& ex) {
      holder = std::this_thread::get_id();
      ex.switch_to(x);
      ex.go_lazy();
    });
    TestFixture::drop(d, x);
    EXPECT_EQ(this->log.count(TestFixture::deferred, 1), 0);
  }  // ~worker: the executor detaches on the worker's thread
  EXPECT_EQ(d.pending_teardowns(), 0u);
  EXPECT_EQ(this->log.thread_of(bound_log::deactivate, 1), holder);
  EXPECT_EQ(this->log.count(bound_log::teardown, 1), 1);
  EXPECT_LT(this->log.first(bound_log::deactivate, 1), this->log.first(TestFixture::deferred, 1));
}

// Forced: a thread with a library-managed executor exits between the steal and its undo.
TYPED_TEST(thread_bound_test, a_managed_executor_undoes_at_its_threads_exit) {
  typename TestFixture::domain d;
  auto x = d.template make<bound>(this->log, 1);
  gate loaded, dropped;
  std::thread::id holder;
  std::thread t([&] {
    holder = std::this_thread::get_id();
    auto& ex = d.thread_executor();
    ex.switch_to(x);
    ex.go_lazy();
    loaded.open();
    dropped.wait();
  });  // thread exit: the managed executor detaches here
  ASSERT_TRUE(loaded.wait());
  TestFixture::drop(d, x);
  EXPECT_EQ(this->log.count(TestFixture::deferred, 1), 0);
  dropped.open();
  t.join();
  EXPECT_EQ(d.pending_teardowns(), 0u);
  EXPECT_EQ(this->log.thread_of(bound_log::deactivate, 1), holder);
  EXPECT_EQ(this->log.count(bound_log::teardown, 1), 1);
}

// Forced: fork() between the steal and the undo. The holder's thread does not exist in the
// child: its bind is given back there and the teardown completes in the child; the parent's
// holder still undoes its own load.
TYPED_TEST(thread_bound_test, fork_between_the_steal_and_the_undo_completes_in_the_child) {
  if constexpr (TestFixture::steals) {
    typename TestFixture::domain d;
    worker w(d);
    auto x = d.template make<bound>(this->log, 1);
    w.run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
    TestFixture::drop(d, x);
    ASSERT_EQ(d.pending_teardowns(), 1u);
    const pid_t pid = ::fork();
    if (pid == 0) {
      const bool ok = d.pending_teardowns() == 0 && this->log.count(TestFixture::deferred, 1) == 1 &&
                      this->log.count(bound_log::deactivate, 1) == 0;
      ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child did not complete the teardown";
    EXPECT_EQ(d.pending_teardowns(), 1u) << "the parent's holder still owes its undo";
    w.run([](auto& ex) { TestFixture::let_go(ex); });
    EXPECT_EQ(d.pending_teardowns(), 0u);
    EXPECT_EQ(this->log.count(bound_log::teardown, 1), 1);
  }
}

// An undo may drop references, final ones included: it runs outside the switch protocol.
TYPED_TEST(thread_bound_test, an_undo_that_drops_another_bound_context_completes_both) {
  typename TestFixture::domain d;
  worker w(d);
  auto x = d.template make<bound>(this->log, 1);
  auto y = d.template make<bound>(this->log, 2);
  x->drop_on_undo = &y;
  w.run([&](auto& ex) {
    ex.switch_to(y);
    ex.switch_to(x);
    ex.switch_to_default();  // x's undo drops y (whose load was undone when the worker left it)
  });
  if constexpr (TestFixture::batches) d.reclaim();
  EXPECT_EQ(this->log.count(bound_log::teardown, 2), 1);
  EXPECT_EQ(this->log.count(bound_log::free, 2), 1);
  TestFixture::drop(d, x);
  EXPECT_EQ(d.pending_teardowns(), 0u);
  EXPECT_EQ(this->log.count(bound_log::free, 1), 1);
}

// synchronize() returns once the holder's undo and the deferred teardown have run.
TYPED_TEST(thread_bound_test, synchronize_waits_for_the_holders_undo) {
  if constexpr (TestFixture::batches) {
    typename TestFixture::domain d;
    {
      std::lock_guard g(g_nudged_m);
      g_nudged.clear();
    }
    d.set_nudge(&record_nudge, nullptr);
    worker w(d);
    auto x = d.template make<bound>(this->log, 1);
    w.run([&](auto& ex) {
      ex.switch_to(x);
      ex.go_lazy();
    });
    x.reset();
    std::atomic<bool> returned{false};
    std::thread s([&] {
      d.synchronize();
      returned = true;
    });
    ASSERT_TRUE(eventually([] { return nudges() >= 1; }));
    EXPECT_FALSE(returned.load());
    w.run([](auto& ex) { TestFixture::let_go(ex); });
    s.join();
    EXPECT_EQ(this->log.count(TestFixture::deferred, 1), 1);
  }
}

namespace {
template <class Executor>
struct switches_in_undo : lazymm::context {
  static constexpr bool thread_bound = true;
  inline static Executor* self = nullptr;
  inline static lazymm::owning_ref<bound>* other = nullptr;
  void on_deactivate(lazymm::executor_id) noexcept { self->switch_to(*other); }
};
}  // namespace

// A switch of the holder's executor from inside a thread-bound hook aborts.
TYPED_TEST(thread_bound_DeathTest, a_switch_from_inside_a_thread_bound_undo_aborts) {
  using domain = typename TestFixture::domain;
  using X = switches_in_undo<typename domain::executor_type>;
  EXPECT_DEATH(
      {
        domain d;
        auto ex = d.attach();
        X::self = &ex;
        auto y = d.template make<bound>(this->log, 2);
        X::other = &y;
        auto x = d.template make<X>();
        ex.switch_to(x);
        ex.switch_to_default();
      },
      "lazymm: executor #0: switch called from inside its own on_activate/on_deactivate hook");
}

namespace {
template <class Domain>
void destroy_with_a_holder_that_never_undoes() {
  bound_log log;
  auto* d = new Domain;
  d->set_drain_timeout(50);
  auto x = d->template make<bound>(log, 1);
  gate loaded, never;
  std::thread t([&] {
    auto ex = d->attach();
    ex.switch_to(x);
    ex.go_lazy();
    loaded.open();
    never.wait();
  });
  loaded.wait();
  x.reset();
  if constexpr (Domain::policy::batches) d->reclaim();
  delete d;  // the holder never undoes: abort naming it
}
void nudge_that_drops(void* arg, lazymm::executor_id) noexcept { static_cast<lazymm::owning_ref<bound>*>(arg)->reset(); }
}  // namespace

TYPED_TEST(thread_bound_DeathTest, domain_destroyed_while_a_holder_never_undoes_aborts_naming_it) {
  EXPECT_DEATH(destroy_with_a_holder_that_never_undoes<typename TestFixture::domain>(),
               "executor #0 still owes the undo \\(on_deactivate\\) of thread-bound context");
}

// A nudge that re-enters lazymm (here: a final drop inside the round that called it) aborts.
TYPED_TEST(thread_bound_DeathTest, a_nudge_that_drops_a_context_aborts) {
  if constexpr (TestFixture::steals) {
    using domain = typename TestFixture::domain;
    EXPECT_DEATH(
        {
          bound_log log;
          domain d;
          auto z = d.template make<bound>(log, 3);
          d.set_nudge(&nudge_that_drops, &z);
          worker w(d);
          auto x = d.template make<bound>(log, 1);
          w.run([&](auto& ex) {
            ex.switch_to(x);
            ex.go_lazy();
          });
          TestFixture::drop(d, x);
        },
        "lazymm: final drop inside a nudge \\(set_nudge\\)");
  }
}
