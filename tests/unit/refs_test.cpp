// Reference handles: owning_ref and structural_ref. Copy adds a reference, move transfers it,
// reset drops it, upcasts convert, release()/adopt() round-trip, empty refs hold nothing.
#include <type_traits>
#include <utility>

#include "support.hpp"

using namespace lazymm_test;

namespace {

// A base and a derived context type; only the derived type is ever created. Its free hook counts.
struct base_ctx : lazymm::context {
  int tag = 1;
};
struct derived_ctx final : base_ctx {
  explicit derived_ctx(int& frees, int& teardowns) : frees(&frees), teardowns(&teardowns) {}
  int* frees;
  int* teardowns;
  int extra = 2;
  void on_teardown() noexcept { ++*teardowns; }
  static void on_free(derived_ctx* p) noexcept {
    ++*p->frees;
    delete p;
  }
};

using owning_base = lazymm::owning_ref<base_ctx>;
using owning_derived = lazymm::owning_ref<derived_ctx>;
using structural_base = lazymm::structural_ref<base_ctx>;
using structural_derived = lazymm::structural_ref<derived_ctx>;

// Upcasts convert implicitly, as with shared_ptr; downcasts and kind changes do not.
static_assert(std::is_convertible_v<const owning_derived&, owning_base>);
static_assert(std::is_convertible_v<owning_derived&&, owning_base>);
static_assert(std::is_convertible_v<const structural_derived&, structural_base>);
static_assert(!std::is_constructible_v<owning_derived, owning_base>);
static_assert(!std::is_constructible_v<structural_base, owning_base>);
static_assert(!std::is_constructible_v<owning_base, structural_base>);
static_assert(std::is_nothrow_copy_constructible_v<owning_base>);
static_assert(std::is_nothrow_move_constructible_v<owning_base>);
static_assert(std::is_nothrow_move_assignable_v<structural_base>);

}  // namespace

template <class C>
class refs : public ::testing::Test {
 protected:
  typename C::domain d;
  int frees = 0, teardowns = 0;
  owning_derived make() { return d.template make<derived_ctx>(frees, teardowns); }
};
TYPED_TEST_SUITE(refs, all_combos, combo_names);

TYPED_TEST(refs, copying_an_owning_ref_adds_an_owner) {
  auto a = this->make();
  EXPECT_EQ(a->owning_count(), 1);
  EXPECT_EQ(a->structural_count(), 1) << "all owners together hold one structural reference";
  {
    auto b = a;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the point
    EXPECT_EQ(b, a);
    EXPECT_EQ(a->owning_count(), 2);
    EXPECT_EQ(a->structural_count(), 1);
    owning_derived c;
    c = b;
    EXPECT_EQ(a->owning_count(), 3);
  }
  EXPECT_EQ(a->owning_count(), 1);
  EXPECT_EQ(this->teardowns, 0);
  a.reset();
  EXPECT_EQ(this->teardowns, 1);
  EXPECT_EQ(this->frees, 1);
}

TYPED_TEST(refs, moving_transfers_the_reference) {
  auto a = this->make();
  derived_ctx* p = a.get();
  auto b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is specified empty
  EXPECT_EQ(a.get(), nullptr);
  EXPECT_EQ(b.get(), p);
  EXPECT_EQ(p->owning_count(), 1);
  owning_derived c;
  c = std::move(b);
  EXPECT_FALSE(b);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.get(), p);
  EXPECT_EQ(p->owning_count(), 1);
  EXPECT_EQ(this->teardowns, 0);
  c.reset();
  EXPECT_EQ(this->frees, 1);
}

TYPED_TEST(refs, reset_drops_the_reference_and_leaves_the_ref_empty) {
  auto a = this->make();
  auto b = a;
  a.reset();
  EXPECT_FALSE(a);
  EXPECT_EQ(b->owning_count(), 1);
  a.reset();  // resetting an empty ref is a no-op
  EXPECT_EQ(b->owning_count(), 1);
  EXPECT_EQ(this->teardowns, 0);
  b.reset();
  EXPECT_EQ(this->teardowns, 1);
  EXPECT_EQ(this->frees, 1);
}

TYPED_TEST(refs, assigning_over_a_ref_drops_what_it_held) {
  auto a = this->make();
  auto b = this->make();
  derived_ctx* pb = b.get();
  b = a;  // b's old context loses its only owner
  EXPECT_EQ(this->teardowns, 1);
  EXPECT_EQ(this->frees, 1);
  EXPECT_EQ(a->owning_count(), 2);
  EXPECT_NE(b.get(), pb);
  auto& same = b;
  b = same;  // self-assignment keeps the count
  EXPECT_EQ(a->owning_count(), 2);
  b = owning_derived{};
  EXPECT_EQ(a->owning_count(), 1);
}

TYPED_TEST(refs, an_owning_ref_to_derived_converts_to_an_owning_ref_to_base) {
  auto a = this->make();
  owning_base copied = a;  // copy upcast: one more owner
  EXPECT_EQ(copied.get(), static_cast<base_ctx*>(a.get()));
  EXPECT_EQ(a->owning_count(), 2);
  EXPECT_EQ(copied->tag, 1);
  owning_base moved = std::move(a);  // move upcast: the same owner
  EXPECT_FALSE(a);                   // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(moved->owning_count(), 2);
  EXPECT_EQ(moved, copied);
  copied.reset();
  EXPECT_EQ(this->teardowns, 0);
  moved.reset();  // freed through a ref to the base: the derived type's hooks still run
  EXPECT_EQ(this->teardowns, 1);
  EXPECT_EQ(this->frees, 1);
}

TYPED_TEST(refs, a_structural_ref_to_derived_converts_to_one_to_base) {
  auto a = this->make();
  structural_derived s = a.structural();
  structural_base sb = s;
  EXPECT_EQ(a->structural_count(), 3);
  structural_base sm = std::move(s);
  EXPECT_FALSE(s);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a->structural_count(), 3);
  a.reset();
  EXPECT_EQ(this->teardowns, 1);
  EXPECT_EQ(this->frees, 0);
  EXPECT_FALSE(sb.try_upgrade());
  sb.reset();
  EXPECT_EQ(this->frees, 0);
  sm.reset();
  EXPECT_EQ(this->frees, 1);
}

TYPED_TEST(refs, release_then_adopt_round_trips_without_touching_the_counts) {
  auto a = this->make();
  auto s = a.structural();
  derived_ctx* p = a.release();
  EXPECT_FALSE(a);
  EXPECT_EQ(p->owning_count(), 1) << "release gives up the handle, not the reference";
  EXPECT_EQ(this->teardowns, 0);
  auto back = owning_derived::adopt(p);
  EXPECT_EQ(back.get(), p);
  EXPECT_EQ(p->owning_count(), 1);

  derived_ctx* q = s.release();
  EXPECT_EQ(q, p);
  EXPECT_EQ(p->structural_count(), 2);
  auto s2 = structural_derived::adopt(q);
  EXPECT_EQ(p->structural_count(), 2);

  back.reset();
  EXPECT_EQ(this->teardowns, 1);
  EXPECT_EQ(this->frees, 0);
  s2.reset();
  EXPECT_EQ(this->frees, 1);

  owning_derived empty;
  EXPECT_EQ(empty.release(), nullptr);
  EXPECT_FALSE(owning_derived::adopt(nullptr));
}

TYPED_TEST(refs, structural_and_try_upgrade_add_the_right_kind_of_reference) {
  auto a = this->make();
  auto s = a.structural();
  EXPECT_EQ(s.get(), a.get());
  EXPECT_EQ(a->owning_count(), 1);
  EXPECT_EQ(a->structural_count(), 2);
  auto s2 = s;
  EXPECT_EQ(a->structural_count(), 3);
  {
    auto up = s.try_upgrade();
    ASSERT_TRUE(up);
    EXPECT_EQ(up, a);
    EXPECT_EQ(a->owning_count(), 2);
    EXPECT_EQ(a->structural_count(), 3) << "an upgrade adds an owner, not a structural ref";
  }
  EXPECT_EQ(a->owning_count(), 1);
  a.reset();
  EXPECT_FALSE(s.try_upgrade());
  EXPECT_FALSE(s2.try_upgrade());
  EXPECT_EQ(s->owning_count(), 0);
  EXPECT_EQ(s->extra, 2) << "the memory stays alive for structural refs";
  s.reset();
  s2.reset();
  EXPECT_EQ(this->frees, 1);
}

TYPED_TEST(refs, empty_refs_hold_nothing) {
  owning_derived o;
  structural_derived s;
  EXPECT_FALSE(o);
  EXPECT_FALSE(s);
  EXPECT_EQ(o.get(), nullptr);
  EXPECT_EQ(s.get(), nullptr);
  EXPECT_EQ(o, owning_derived{});
  EXPECT_FALSE(o.structural());
  EXPECT_FALSE(s.try_upgrade());
  auto o2 = o;
  auto s2 = s;
  EXPECT_FALSE(o2);
  EXPECT_FALSE(s2);
  owning_base ob = o;
  EXPECT_FALSE(ob);
  o.reset();
  s.reset();
  auto a = this->make();
  EXPECT_NE(a, o);
  EXPECT_EQ(this->d.live_contexts(), 1);
  a.reset();
  EXPECT_EQ(this->d.live_contexts(), 0);
  EXPECT_EQ(this->frees, 1);
}

TYPED_TEST(refs, dereferencing_reaches_the_context) {
  auto a = this->make();
  EXPECT_EQ((*a).extra, 2);
  EXPECT_EQ(a->extra, 2);
  a->extra = 7;
  auto s = a.structural();
  EXPECT_EQ(s->extra, 7);
  EXPECT_EQ(&*s, a.get());
}

TYPED_TEST(refs, make_context_is_domain_make) {
  auto a = lazymm::make_context<derived_ctx>(this->d, this->frees, this->teardowns);
  static_assert(std::is_same_v<decltype(a), owning_derived>);
  EXPECT_EQ(a->owning_count(), 1);
  EXPECT_EQ(this->d.stats().contexts_created, 1u);
}
