// Must not compile: a private hook would silently never be called. Expected: "lazymm: a context
// hook is declared but not public".
#include <lazymm/lazymm.hpp>

struct tenant : lazymm::context {
 private:
  void on_teardown() noexcept {}
};

int main() {
  lazymm::domain<> d;
  auto r = d.make<tenant>();
}
