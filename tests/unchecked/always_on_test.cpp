// The checks that stay on in a release build (LAZYMM_CHECKED=0, NDEBUG): each is cheap and on a
// path that is not hot, and each stops a use after free that would otherwise escape. This file
// is the only one built without checked mode (tests/CMakeLists.txt).
#include <gtest/gtest.h>

#include <lazymm/lazymm.hpp>

static_assert(!LAZYMM_CHECKED, "this test must be built with checked mode off");

namespace {

struct plain : lazymm::context {};
using domain = lazymm::domain<lazymm::implicit_shootdown, lazymm::fence_backend>;

class always_on_DeathTest : public ::testing::Test {
 protected:
  always_on_DeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// 0.1 caught this only in checked mode; without it the context escaped its domain's rounds and
// was freed under the other domain's slot.
TEST_F(always_on_DeathTest, switching_to_a_context_of_another_domain_aborts) {
  EXPECT_DEATH(
      {
        domain a;
        domain b;
        auto ex = a.attach();
        auto x = b.make<plain>();
        ex.switch_to(x);
      },
      "lazymm: executor #0: switch_to a context 0x[0-9a-f]+ of another domain");
}

TEST_F(always_on_DeathTest, attaching_the_same_thread_twice_aborts) {
  EXPECT_DEATH(
      {
        domain d;
        auto e1 = d.attach();
        auto e2 = d.attach();
      },
      "lazymm: this thread is already attached to this domain");
}

TEST_F(always_on_DeathTest, destroying_a_domain_with_a_live_context_aborts) {
  EXPECT_DEATH(
      {
        auto* d = new domain;
        auto x = d->make<plain>();
        delete d;
        (void)x.release();
      },
      "lazymm: domain destroyed while 1 context\\(s\\) are still alive");
}

}  // namespace
