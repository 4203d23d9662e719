// Built by the consumer tests: proves that a project can use lazymm::lazymm.
#include <lazymm/lazymm.hpp>

#include <cstdio>

struct sandbox : lazymm::context {
  int* torn = nullptr;
  void on_teardown() noexcept { ++*torn; }
};

int main() {
  int torn = 0;
  {
    lazymm::domain<> d;
    auto ex = d.attach();
    auto s = d.make<sandbox>();
    s->torn = &torn;
    ex.switch_to(s);
    ex.go_lazy();
    s.reset();  // final drop while the executor holds it lazily
  }
  std::printf("lazymm consumer: teardowns=%d\n", torn);
  return torn == 1 ? 0 : 1;
}
