// Must not compile: on_stolen runs when the context may already be freed, so it is static.
// Expected: "lazymm: on_stolen must be a static member callable as T::on_stolen".
#include <lazymm/lazymm.hpp>

struct tenant : lazymm::context {
  void on_stolen(lazymm::executor_id) noexcept {}
};

int main() {
  lazymm::domain<> d;
  auto r = d.make<tenant>();
}
