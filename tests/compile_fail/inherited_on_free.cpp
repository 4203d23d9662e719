// Must not compile: an on_free inherited from a base context type would destroy a base, skipping
// the derived destructor. Expected: "lazymm: on_free must be a static member callable as
// T::on_free(T*), declared for T itself".
#include <lazymm/lazymm.hpp>

#include <string>

struct base : lazymm::context {
  static void on_free(base* p) noexcept { delete p; }
};
struct derived : base {
  std::string name = "the destructor of this string would never run";
};

int main() {
  lazymm::domain<> d;
  auto r = d.make<derived>();
}
