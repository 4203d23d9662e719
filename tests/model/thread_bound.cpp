// model-policies: explicit_shootdown implicit_shootdown
// Thread-bound contexts (issue #18): an executor holds x lazily, having written per-thread state
// in on_activate; another thread makes the final drop, whose round steals the lazy hold. The
// holder's undo (on_deactivate, on its own thread: at poll_stolen() if the steal came first,
// else at its detach) writes plain data that the deferred completion (the teardown under
// implicit, the free under both) reads: the undo must happen before it, and the completion must
// run exactly once, on whichever thread gives back the last bind. Mutants, each killed here:
// BOUND_TEARDOWN_EARLY (the round completes without waiting for the undo: a race),
// BOUND_ACK_TWICE (an undo gives back two binds: completed while x is still owned, then again),
// BOUND_LOST_AT_DETACH (a detach forgets the undo: never completed).
#include "model.hpp"

using namespace model;

namespace {
struct bound_probe : lazymm::context {
  static constexpr bool thread_bound = true;
  int bound = 0;   // the holder's per-thread state: set by on_activate, cleared by the undo
  int undone = 0;  // the undo ran
  int completions = 0;
  bound_probe() {}  // user-provided: no zero-fill memset (GenMC)
  void on_activate(const lazymm::executor_id&) noexcept { bound = 1; }
  void on_deactivate(const lazymm::executor_id&) noexcept {
    bound = 0;
    undone = 1;
  }
  // The undo happens before: plain reads, so an unordered undo is a race.
  void check_undone() const noexcept { assert(undone == 1 && bound == 0); }
  void on_teardown() noexcept {
    if constexpr (teardown_excludes_holders) check_undone();
  }
  static void on_free(bound_probe* p) noexcept {
    p->check_undone();
    assert(p->completions == 0);
    p->completions = 1;
    freed[0] = 1;
    delete p;
  }
};

lazymm::owning_ref<bound_probe>* x;
std::atomic<int> loaded{0};

void* holder(void*) {
  executor e = dom->attach();
  e.switch_to(*x);
  e.go_lazy();
  signal(loaded);
  e.poll_stolen();  // the undo, if the steal has happened (else at the detach below)
  return nullptr;
}
void* dropper(void*) {
  await(loaded);
  x->reset();
  return nullptr;
}
}  // namespace

int main() {
  domain d;
  dom = &d;
  auto rx = d.make<bound_probe>();
  x = &rx;
  pthread_t a = spawn(holder), c = spawn(dropper);
  join(a);
  join(c);
  assert(freed[0] == 1);  // completed, by someone
  assert(d.pending_teardowns() == 0);
}
