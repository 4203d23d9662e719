// An executor holds x lazily, then switches x -> y -> z, while another thread makes the final
// drop of x (the executor's own reference is dropped too, so either thread may be the last).
// The scenario of the relaxed-odd-store defect: the reclaimer's wait may end on the odd seq of
// the executor's *next* switch, which must still synchronise.
#include "model.hpp"

using namespace model;

namespace {
ref *holder_x, *holder_y, *holder_z, *dropper_x;

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*holder_x);
  e.go_lazy();
  holder_x->reset();  // from here on x is held lazily only
  e.switch_to(*holder_y);
  e.switch_to(*holder_z);
  return nullptr;  // detach
}

void* dropper(void*) {
  dropper_x->reset();
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref x = d.make<probe>(), y = d.make<probe>(), z = d.make<probe>();
  ref hx = x;
  holder_x = &hx;
  dropper_x = &x;
  holder_y = &y;
  holder_z = &z;
  pthread_t a = spawn(holder), b = spawn(dropper);
  join(a);
  join(b);
  y.reset();
  z.reset();
  expect_all_gone();
}
