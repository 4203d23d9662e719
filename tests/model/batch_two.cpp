// model-policies: explicit_shootdown implicit_shootdown
// Batched retirement: a batch of two contexts, x and y, each held lazily by its own executor;
// both final drops only queue; a third thread's reclaim() runs one round for the batch while both
// holders detach. One walk must steal both, one barrier and one wait pass must cover both.
// The two attaches take turns (attached): two attaches at once are attach_race's scenario.
#include "model.hpp"

using namespace model;

namespace {
using bdomain = lazymm::domain<lazymm::batched<policy>, lazymm::MODEL_BACKEND>;
bdomain* bdom;
lazymm::owning_ref<probe> *x, *y;
std::atomic<int> x_lazy{0}, y_lazy{0}, attached{0};

void* holder_x(void*) {
  bdomain::executor_type e = bdom->attach();
  signal(attached);
  e.switch_to(*x);
  e.go_lazy();
  signal(x_lazy);
  return nullptr;  // detach
}

void* holder_y(void*) {
  await(attached);
  bdomain::executor_type e = bdom->attach();
  e.switch_to(*y);
  e.go_lazy();
  signal(y_lazy);
  return nullptr;  // detach
}

void* reclaimer(void*) {
  await(x_lazy);
  await(y_lazy);
  x->reset();  // queued
  y->reset();  // queued
  bdom->reclaim();
  return nullptr;
}
}  // namespace

int main() {
  bdomain d;
  bdom = &d;
  lazymm::owning_ref<probe> rx = d.make<probe>(), ry = d.make<probe>();
  x = &rx;
  y = &ry;
  pthread_t a = spawn(holder_x), b = spawn(holder_y), c = spawn(reclaimer);
  join(a);
  join(b);
  join(c);
  for (int i = 0; i < made; ++i) assert(torn_down[i] == 1 && freed[i] == 1);
  assert(d.live_contexts() == 0);
}
