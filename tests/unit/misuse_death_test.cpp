// S5: misuse that lazymm can detect cheaply aborts with a "lazymm: ..." message instead of
// corrupting memory. Every case runs under every policy x backend combination, in a child
// process ("threadsafe" death tests re-execute the binary, which works under ASan and TSan).
//
// Each death statement builds everything it needs itself: in "threadsafe" style the parent
// skips the statement, so nothing half-destroyed ever reaches the parent's clean-up.
#include <cstddef>
#include <memory>
#include <new>
#include <thread>
#include <utility>

#include "support.hpp"

using namespace lazymm_test;

namespace {

// ---- the context_type concept, checked at compile time -----------------------------------

struct good_context : lazymm::context {
  void on_activate(lazymm::executor_id) noexcept {}
  void on_deactivate(lazymm::executor_id) noexcept {}
  void on_teardown() noexcept {}
  void on_evict(lazymm::executor_id) noexcept {}
  static void on_free(good_context* p) noexcept { delete p; }
};
struct hookless_context : lazymm::context {};
struct not_derived {
  void on_teardown() noexcept {}
};
struct privately_derived : private lazymm::context {};
struct activate_with_wrong_signature : lazymm::context {
  void on_activate(lazymm::executor_id, int) noexcept {}
};
struct teardown_with_wrong_signature : lazymm::context {
  void on_teardown(int) noexcept {}
};
struct non_static_on_free : lazymm::context {
  void on_free(non_static_on_free*) noexcept {}
};
struct teardown_not_noexcept : lazymm::context {
  void on_teardown() {}
};
struct evict_not_noexcept : lazymm::context {
  void on_evict(lazymm::executor_id) {}
};
struct on_free_not_noexcept : lazymm::context {
  static void on_free(on_free_not_noexcept* p) { delete p; }
};

// Issue #9's sharp edges: an inherited on_free(Base*), private or protected hooks (not in a final
// type, where the language cannot find them), a non-static on_stolen.
struct on_free_base : lazymm::context {
  static void on_free(on_free_base* p) noexcept { delete p; }
};
struct inherits_on_free : on_free_base {};
struct redeclares_on_free : on_free_base {
  static void on_free(redeclares_on_free* p) noexcept { delete p; }
};
struct private_teardown : lazymm::context {
 private:
  void on_teardown() noexcept {}
};
struct protected_activate : lazymm::context {
 protected:
  void on_activate(lazymm::executor_id) noexcept {}
};
struct inherits_private_teardown : private_teardown {};
struct final_private_teardown final : lazymm::context {
 private:
  void on_teardown() noexcept {}
};
struct static_on_stolen : lazymm::context {
  static void on_stolen(lazymm::executor_id) noexcept {}
};
struct member_on_stolen : lazymm::context {
  void on_stolen(lazymm::executor_id) noexcept {}
};
struct on_stolen_not_noexcept : lazymm::context {
  static void on_stolen(lazymm::executor_id) {}
};
static_assert(!lazymm::context_type<inherits_on_free>, "an inherited on_free(Base*) would skip the derived destructor");
static_assert(lazymm::context_type<redeclares_on_free>);
static_assert(!lazymm::context_type<private_teardown>, "a private hook is never called");
static_assert(!lazymm::context_type<protected_activate>, "a protected hook is never called");
static_assert(!lazymm::context_type<inherits_private_teardown>, "an inherited private hook is never called");
static_assert(lazymm::context_type<final_private_teardown>, "not detectable in a final type (documented)");
static_assert(lazymm::context_type<static_on_stolen>);
static_assert(!lazymm::context_type<member_on_stolen>, "on_stolen must be static");
static_assert(!lazymm::context_type<on_stolen_not_noexcept>, "hooks must be noexcept");

static_assert(lazymm::context_type<good_context>);
static_assert(lazymm::context_type<hookless_context>);
static_assert(lazymm::context_type<counted>);
static_assert(!lazymm::context_type<not_derived>, "a context type must derive from lazymm::context");
static_assert(!lazymm::context_type<privately_derived>, "the derivation must be public");
static_assert(!lazymm::context_type<int>);
static_assert(!lazymm::context_type<activate_with_wrong_signature>, "hook with the wrong signature");
static_assert(!lazymm::context_type<teardown_with_wrong_signature>, "hook with the wrong signature");
static_assert(!lazymm::context_type<non_static_on_free>, "on_free must be static");
static_assert(!lazymm::context_type<teardown_not_noexcept>, "hooks must be noexcept");
static_assert(!lazymm::context_type<evict_not_noexcept>, "hooks must be noexcept");
static_assert(!lazymm::context_type<on_free_not_noexcept>, "hooks must be noexcept");

// ---- a context whose free does not give its memory back ----------------------------------

// Lives in a static buffer (class-specific operator new), and on_free leaves the object in
// place: after the free its header stays readable, so a second drop meets checked mode's
// poison instead of a heap use-after-free (which ASan would report first). One per process.
struct static_slot : lazymm::context {
  static void* operator new(std::size_t n) {
    if (n > sizeof(storage)) throw std::bad_alloc();
    return storage;
  }
  static void operator delete(void*) noexcept {}
  static void on_free(static_slot*) noexcept { ++frees; }

  alignas(std::max_align_t) inline static unsigned char storage[256];
  inline static int frees = 0;
};

}  // namespace

template <class C>
class misuse_DeathTest : public ::testing::Test {
 protected:
  // fork() without exec is unsafe once threads exist and confuses TSan: re-execute instead.
  misuse_DeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};
TYPED_TEST_SUITE(misuse_DeathTest, all_combos, combo_names);

TYPED_TEST(misuse_DeathTest, switching_to_a_reset_reference_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto ex = d.attach();
        auto r = d.template make<counted>(log, 1);
        r.reset();
        ex.switch_to(r);
      },
      "lazymm: executor #0: switch_to with an empty owning_ref \\(released, reset or moved from\\)");
}

TYPED_TEST(misuse_DeathTest, switching_to_a_moved_from_reference_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto ex = d.attach();
        auto r = d.template make<counted>(log, 1);
        auto keep = std::move(r);
        ex.switch_to(r);  // NOLINT(bugprone-use-after-move): the point of the test
      },
      "lazymm: executor #0: switch_to with an empty owning_ref");
}

TYPED_TEST(misuse_DeathTest, switching_to_a_released_reference_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto ex = d.attach();
        auto r = d.template make<counted>(log, 1);
        auto keep = decltype(r)::adopt(r.release());
        ex.switch_to(r);
      },
      "lazymm: executor #0: switch_to with an empty owning_ref");
}

TYPED_TEST(misuse_DeathTest, attaching_the_same_thread_twice_to_one_domain_aborts) {
  EXPECT_DEATH(
      {
        typename TypeParam::domain d;
        auto first = d.attach();
        auto second = d.attach();
      },
      "lazymm: this thread is already attached to this domain as executor #0");
}

// The counterpart that must not die: one thread may be an executor of two domains at once.
TYPED_TEST(misuse_DeathTest, attaching_one_thread_to_two_domains_is_allowed) {
  typename TypeParam::domain a, b;
  auto ea = a.attach();
  auto eb = b.attach();
  EXPECT_EQ(a.attached_executors(), 1u);
  EXPECT_EQ(b.attached_executors(), 1u);
}

TYPED_TEST(misuse_DeathTest, going_lazy_on_an_executor_of_another_thread_aborts) {
  EXPECT_DEATH(
      {
        typename TypeParam::domain d;
        auto ex = d.attach();
        std::thread([&ex] { ex.go_lazy(); }).join();
      },
      "lazymm: executor #0 used from a thread that does not own it \\(go_lazy\\)");
}

TYPED_TEST(misuse_DeathTest, switching_an_executor_of_another_thread_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto ex = d.attach();
        auto r = d.template make<counted>(log, 1);
        std::thread([&ex, &r] { ex.switch_to(r); }).join();
      },
      "lazymm: executor #0 used from a thread that does not own it \\(switch_to\\)");
}

TYPED_TEST(misuse_DeathTest, switching_to_default_on_an_executor_of_another_thread_aborts) {
  EXPECT_DEATH(
      {
        typename TypeParam::domain d;
        auto ex = d.attach();
        std::thread([&ex] { ex.switch_to_default(); }).join();
      },
      "lazymm: executor #0 used from a thread that does not own it \\(switch_to_default\\)");
}

TYPED_TEST(misuse_DeathTest, detaching_an_executor_from_another_thread_aborts) {
  EXPECT_DEATH(
      {
        typename TypeParam::domain d;
        auto* ex = new auto(d.attach());  // guaranteed elision: the executor never moves
        std::thread([ex] { delete ex; }).join();
      },
      "lazymm: executor #0 used from a thread that does not own it \\(detach\\)");
}

TYPED_TEST(misuse_DeathTest, destroying_a_domain_with_an_attached_executor_aborts) {
  EXPECT_DEATH(
      {
        auto d = std::make_unique<typename TypeParam::domain>();
        auto ex = d->attach();
        d.reset();
      },
      "lazymm: domain destroyed while executor #0 is still attached");
}

TYPED_TEST(misuse_DeathTest, destroying_a_domain_with_an_executor_attached_on_another_thread_aborts) {
  EXPECT_DEATH(
      {
        auto d = std::make_unique<typename TypeParam::domain>();
        auto here = d->attach();
        std::unique_ptr<typename TypeParam::domain::executor_type> there;
        std::thread([&] { there.reset(new auto(d->attach())); }).join();
        // Executor #0 (here) is still attached too; the registry is a stack, so #1 is named.
        d.reset();
      },
      "lazymm: domain destroyed while executor #1 is still attached");
}

TYPED_TEST(misuse_DeathTest, destroying_a_domain_with_a_live_context_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        auto d = std::make_unique<typename TypeParam::domain>();
        auto r = d->template make<counted>(log, 1);
        d.reset();
      },
      "lazymm: domain destroyed while 1 context\\(s\\) are still alive");
}

TYPED_TEST(misuse_DeathTest, destroying_a_domain_with_only_a_structural_reference_left_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        auto d = std::make_unique<typename TypeParam::domain>();
        auto r = d->template make<counted>(log, 1);
        auto s = r.structural();
        r.reset();  // torn down, not freed
        d.reset();
      },
      "lazymm: domain destroyed while 1 context\\(s\\) are still alive");
}

// One owning reference dropped twice (release + adopt twice) while a structural reference
// keeps the memory: the second drop meets a torn-down header.
TYPED_TEST(misuse_DeathTest, dropping_an_owning_reference_twice_aborts_as_double_teardown) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto r = d.template make<counted>(log, 1);
        auto s = r.structural();
        counted* p = r.release();
        lazymm::owning_ref<counted>::adopt(p).reset();
        lazymm::owning_ref<counted>::adopt(p).reset();
      },
      "lazymm: owning reference dropped on context 0x[0-9a-f]+ after its teardown: double teardown");
}

// The same with a lazy holder on another executor, so that the first drop runs a real round
// (shootdown policies) or leaves a counted lazy hold (refcount) before the second drop.
TYPED_TEST(misuse_DeathTest, dropping_an_owning_reference_twice_with_a_lazy_holder_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto r = d.template make<counted>(log, 1);
        auto s = r.structural();
        auto ex = d.attach();
        ex.switch_to(r);
        ex.go_lazy();
        counted* p = r.release();
        lazymm::owning_ref<counted>::adopt(p).reset();
        lazymm::owning_ref<counted>::adopt(p).reset();
      },
      "double teardown");
}

TYPED_TEST(misuse_DeathTest, copying_an_owning_reference_resurrected_after_teardown_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto r = d.template make<counted>(log, 1);
        auto s = r.structural();
        counted* p = r.release();
        lazymm::owning_ref<counted>::adopt(p).reset();
        auto dead = lazymm::owning_ref<counted>::adopt(p);
        auto copy = dead;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the misuse
      },
      "lazymm: owning reference copied from context 0x[0-9a-f]+ after its teardown or free");
}

// A structural reference dropped twice on a context whose memory outlives its free: the second
// drop reads the poisoned header.
TYPED_TEST(misuse_DeathTest, dropping_a_structural_reference_twice_aborts_as_double_free) {
  EXPECT_DEATH(
      {
        typename TypeParam::domain d;
        auto r = d.template make<static_slot>();
        auto s = r.structural();
        r.reset();  // teardown; s keeps the memory
        static_slot* p = s.release();
        lazymm::structural_ref<static_slot>::adopt(p).reset();  // the free
        if (static_slot::frees != 1) std::abort();              // (not the expected message)
        lazymm::structural_ref<static_slot>::adopt(p).reset();
      },
      "lazymm: structural reference dropped on freed context 0x[0-9a-f]+: double free");
}

TYPED_TEST(misuse_DeathTest, copying_a_structural_reference_to_a_freed_context_aborts) {
  EXPECT_DEATH(
      {
        typename TypeParam::domain d;
        auto r = d.template make<static_slot>();
        auto s = r.structural();
        r.reset();
        static_slot* p = s.release();
        lazymm::structural_ref<static_slot>::adopt(p).reset();  // the free
        auto stale = lazymm::structural_ref<static_slot>::adopt(p);
        auto copy = stale;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the misuse
      },
      "lazymm: structural reference copied from freed context 0x[0-9a-f]+");
}

// Not a death test: what the two tests above rely on. A freed header is poisoned, and the
// context's own free hook ran exactly once.
TYPED_TEST(misuse_DeathTest, a_freed_header_is_poisoned_in_checked_mode) {
  static_assert(LAZYMM_CHECKED, "the unit tests are built in checked mode");
  typename TypeParam::domain d;
  const int frees_before = static_slot::frees;
  auto r = d.template make<static_slot>();
  static_slot* p = r.get();
  auto s = r.structural();
  r.reset();
  EXPECT_EQ(p->owning_count(), 0);
  EXPECT_EQ(p->structural_count(), 1);
  s.reset();
  EXPECT_EQ(static_slot::frees, frees_before + 1);
  EXPECT_EQ(p->owning_count(), -1);
  EXPECT_EQ(p->structural_count(), -1);
  EXPECT_EQ(d.live_contexts(), 0);
}

// An owning reference adopted after the teardown (its owning count is zero): switching to it
// must not load a dead context.
TYPED_TEST(misuse_DeathTest, switching_to_a_dead_context_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain d;
        auto ex = d.attach();
        auto r = d.template make<counted>(log, 1);
        auto s = r.structural();
        counted* p = r.release();
        lazymm::owning_ref<counted>::adopt(p).reset();  // teardown; s keeps the memory
        auto dead = lazymm::owning_ref<counted>::adopt(p);
        ex.switch_to(dead);
      },
      "lazymm: executor #0: switch_to a dead context 0x[0-9a-f]+");
}

TYPED_TEST(misuse_DeathTest, switching_to_a_context_of_another_domain_aborts) {
  EXPECT_DEATH(
      {
        event_log log;
        typename TypeParam::domain a;
        typename TypeParam::domain b;
        auto ex = a.attach();
        auto r = b.template make<counted>(log, 1);
        ex.switch_to(r);
      },
      "lazymm: executor #0: switch_to a context 0x[0-9a-f]+ of another domain");
}
