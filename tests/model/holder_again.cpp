// model-policies: explicit_shootdown implicit_shootdown
// The conditional set of the holder bit, without trims: an executor switches to x (sets its
// bit), to y, back to x (its bit is set: it writes nothing shared), goes lazy and drops its own
// reference, while another thread drops the other one. Whichever drop is final runs x's round,
// which reads x's holder set: it must see the bit written by the first switch and steal the lazy
// hold (edge (16): the drops order every switch to x before the round).
#include "model.hpp"

using namespace model;

namespace {
ref *x, *xe, *y;

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*xe);
  e.switch_to(*y);
  e.switch_to(*xe);
  e.go_lazy();
  xe->reset();  // maybe the final drop of x (on the holder's own thread)
  return nullptr;
}

void* dropper(void*) {
  x->reset();  // maybe the final drop of x
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref rx = d.make<probe>();
  ref rxe = rx;
  ref ry = d.make<probe>();
  x = &rx;
  xe = &rxe;
  y = &ry;
  pthread_t a = spawn(holder), b = spawn(dropper);
  join(a);
  join(b);
  ry.reset();
  expect_all_gone();
}
