// Two threads attach at once (each draws a fresh id: the CAS on the next id, the install of its
// record's block, the push on the record list) and hold x lazily; then main's final drop of x
// runs a round. The round must find both records, however the attaches interleaved: a holder it
// missed would run on_deactivate at its detach, after the teardown (an assertion under
// implicit_shootdown) or after the free (a use of freed memory). The other harnesses with two
// executors let them attach in turn (exit_mm, batch_two), so this is where attaches race; a
// detach during a round is detach_lazy's and record_reuse's.
#include "model.hpp"

using namespace model;

namespace {
ref* x;
std::atomic<int> a_lazy{0}, b_lazy{0}, dropped{0};

void hold(std::atomic<int>& lazy) {
  executor e = dom->attach();
  e.switch_to(*x);
  e.go_lazy();
  signal(lazy);
  await(dropped);
}  // detach

void* a(void*) {
  hold(a_lazy);
  return nullptr;
}

void* b(void*) {
  hold(b_lazy);
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref rx = d.make<probe>();
  x = &rx;
  pthread_t ta = spawn(a), tb = spawn(b);
  await(a_lazy);
  await(b_lazy);
  rx.reset();  // the last owner: the round
  signal(dropped);
  join(ta);
  join(tb);
  expect_all_gone();
}
