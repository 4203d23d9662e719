// refcount's defect in 0.1: an executor switches to x and drops its own (not the last) owning
// reference, then goes lazy; the last owner drops on another thread in between. The slot must
// keep x's memory alive (refcount counts the slot) or have it stolen (shootdown policies) before
// the free; the executor then switches away.
#include "model.hpp"

using namespace model;

namespace {
ref *holder_x, *dropper_x, *holder_y;

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*holder_x);
  holder_x->reset();
  e.go_lazy();
  e.switch_to(*holder_y);
  return nullptr;
}

void* dropper(void*) {
  dropper_x->reset();
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref x = d.make<probe>(), y = d.make<probe>();
  ref hx = x;
  holder_x = &hx;
  dropper_x = &x;
  holder_y = &y;
  pthread_t a = spawn(holder), b = spawn(dropper);
  join(a);
  join(b);
  y.reset();
  expect_all_gone();
}
