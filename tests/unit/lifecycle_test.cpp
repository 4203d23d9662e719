#include "support.hpp"

using namespace lazymm_test;

template <class C>
class lifecycle : public ::testing::Test {};
TYPED_TEST_SUITE(lifecycle, all_combos, combo_names);

TYPED_TEST(lifecycle, teardown_then_free_run_once_with_a_lazy_holder) {
  event_log log;
  {
    typename TypeParam::domain d;
    auto ex = d.attach();
    auto c = d.template make<counted>(log, 1);
    ex.switch_to(c);
    ex.go_lazy();
    c.reset();
    ex.switch_to_default();
  }
  EXPECT_EQ(log.count(event_log::teardown, 1), 1);
  EXPECT_EQ(log.count(event_log::free, 1), 1);
  EXPECT_LT(log.index(event_log::teardown, 1), log.index(event_log::free, 1));
}
