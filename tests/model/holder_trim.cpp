// model-policies: explicit_shootdown implicit_shootdown
// A trim of x's holder set while an executor switches back to x: the executor ran x before (its
// bit is set, stale: it switched away), then switches to x again, finds its bit set and writes
// nothing, and stays on x lazily; meanwhile another owner trims x, then makes the final drop.
// The trim must not remove the executor (its odd seq or its slot shows it), or the round misses
// its lazy hold and x is freed under it (the detach's deactivate then touches freed memory).
// Mutants: HOLDER_TEST_BEFORE_FENCE (CVE-2025-40174's shape), TRIM_SWITCHING (CVE-2025-37964's),
// TRIM_HOLDING (the 2023 hotplug bug's), NO_TRIM_BARRIER.
#include "model.hpp"

using namespace model;

namespace {
ref* x;
std::atomic<int> stale{0}, lazy{0};

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*x);  // sets the bit
  e.switch_to_default();
  signal(stale);
  e.switch_to(*x);  // the bit is set: no write
  e.go_lazy();
  signal(lazy);
  return nullptr;  // detach: drops the lazy hold, or finds it stolen
}

void* trimmer(void*) {
  await(stale);
  dom->trim(*x);  // concurrent with the second switch to x
  await(lazy);
  x->reset();  // the final drop: its round must find the holder
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref rx = d.make<probe>();
  x = &rx;
  pthread_t a = spawn(holder), b = spawn(trimmer);
  join(a);
  join(b);
  expect_all_gone();
}
