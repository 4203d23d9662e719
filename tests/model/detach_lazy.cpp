// An executor holds x lazily and detaches, while another thread makes the final drop of x: the
// detach must drop the lazy hold before the record leaves the registry (the Linux 2023 hotplug
// bug; mutant DETACH_EARLY).
#include "model.hpp"

using namespace model;

namespace {
ref* x;
std::atomic<int> lazy{0};

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*x);
  e.go_lazy();
  signal(lazy);  // x's last owner may drop it from now on
  return nullptr;  // detach while lazy
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
  ref rx = d.make<probe>();
  x = &rx;
  pthread_t a = spawn(holder), b = spawn(dropper);
  join(a);
  join(b);
  expect_all_gone();
}
