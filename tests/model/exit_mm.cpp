// The exit_mm case: a task drops the last owning reference to x on its own executor while x is
// loaded (not lazy), then the executor goes lazy and switches away; meanwhile a second executor
// holds x lazily and switches to y. The round runs on the first executor's thread: its own
// slot is stolen without a barrier, the other's with one.
// The two attaches take turns, the other executor's first (attached): two attaches at once are
// attach_race's scenario, and here they only multiplied the executions (26 -> 1051 since attach
// draws ids with a CAS loop; 258 s under IMM) without killing any mutant more.
#include "model.hpp"

using namespace model;

namespace {
ref *last_x, *other_x, *other_y, *last_y;
std::atomic<int> other_lazy{0}, attached{0};

void* exiting(void*) {
  await(attached);
  executor e = dom->attach();
  e.switch_to(*last_x);
  await(other_lazy);
  last_x->reset();  // the last owner, dropped while loaded
  e.go_lazy();
  e.switch_to(*last_y);
  return nullptr;
}

void* other(void*) {
  executor e = dom->attach();
  signal(attached);
  e.switch_to(*other_x);
  e.go_lazy();
  other_x->reset();
  signal(other_lazy);
  e.switch_to(*other_y);
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  ref x = d.make<probe>(), y = d.make<probe>();
  ref ox = x, y2 = y;
  last_x = &x;
  other_x = &ox;
  other_y = &y;
  last_y = &y2;
  pthread_t a = spawn(exiting), b = spawn(other);
  join(a);
  join(b);
  y.reset();
  y2.reset();
  expect_all_gone();
}
