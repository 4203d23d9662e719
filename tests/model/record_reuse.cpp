// An executor holds x lazily and detaches; a new thread attaches (possibly reusing the record)
// and switches to y; meanwhile the final drop of x runs its round. The round must neither miss
// the first holder nor touch y, and an on_evict names the first attach (generation 1), even if
// the record already serves the second.
#include "model.hpp"

using namespace model;

namespace {
ref *x, *y;
std::atomic<int> lazy{0}, detached{0};

void* first(void*) {
  {
    executor e = dom->attach();
    e.switch_to(*x);
    e.go_lazy();
    signal(lazy);  // x's last owner may drop it from now on
  }
  signal(detached);
  return nullptr;
}

void* second(void*) {
  await(detached);
  executor e = dom->attach();
  e.switch_to(*y);
  e.go_lazy();
  return nullptr;
}

void* dropper(void*) {
  await(lazy);
  x->reset();
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref rx = d.make<probe>(), ry = d.make<probe>();
  rx->expect_evicted_generation = 1;
  x = &rx;
  y = &ry;
  pthread_t a = spawn(first), b = spawn(second), c = spawn(dropper);
  join(a);
  join(b);
  join(c);
  ry.reset();
  expect_all_gone();
}
