// try_upgrade races the last owning drop: an upgrade that succeeds makes a real owner (the
// teardown waits for it, and it may use the contents); one that fails fails for good; the
// teardown and the free run exactly once whoever drops last. A lazy holder is in the picture so
// that the shootdown policies run their round too.
#include "model.hpp"

using namespace model;

namespace {
sref* weak;
ref *holder_x, *dropper_x;

void* upgrader(void*) {
  if (ref o = weak->try_upgrade()) {
    assert(o->contents == 1);  // a real owner: the teardown waits for its drop
  }
  weak->reset();
  return nullptr;
}

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*holder_x);
  e.go_lazy();
  holder_x->reset();
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
  ref x = d.make<probe>();
  sref w = x.structural();
  ref hx = x;
  weak = &w;
  holder_x = &hx;
  dropper_x = &x;
  pthread_t a = spawn(upgrader), b = spawn(holder), c = spawn(dropper);
  join(a);
  join(b);
  join(c);
  expect_all_gone();
}
