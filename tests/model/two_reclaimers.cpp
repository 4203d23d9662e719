// One executor holds x lazily, then y lazily; two threads make the final drops of x and of y.
// Two rounds on one slot: each may steal, each waits only for what it stole.
#include "model.hpp"

using namespace model;

namespace {
ref *x, *y;
std::atomic<int> on_x{0}, on_y{0};

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*x);
  e.go_lazy();
  signal(on_x);  // x's last owner may drop it from now on
  e.switch_to(*y);
  e.go_lazy();
  signal(on_y);
  return nullptr;  // detach
}

void* drop_x(void*) {
  await(on_x);
  x->reset();
  return nullptr;
}

void* drop_y(void*) {
  await(on_y);
  y->reset();
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref rx = d.make<probe>(), ry = d.make<probe>();
  x = &rx;
  y = &ry;
  pthread_t a = spawn(holder), b = spawn(drop_x), c = spawn(drop_y);
  join(a);
  join(b);
  join(c);
  expect_all_gone();
}
