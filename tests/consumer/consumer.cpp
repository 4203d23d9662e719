// Built by the consumer tests: proves that a project can use lazymm::lazymm (or lazymm.pc).
// LAZYMM_EXPECT_VERSION, where the build system defines it, is the version the build system
// found (CMake package version file, pkg-config --modversion, Meson's dependency version): it
// must be the version of the headers actually included.
#include <lazymm/lazymm.hpp>

#include <cstdio>
#include <cstring>

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
  std::printf("lazymm consumer: lazymm %s, teardowns=%d\n", LAZYMM_VERSION_STRING, torn);
#ifdef LAZYMM_EXPECT_VERSION
  if (std::strcmp(LAZYMM_EXPECT_VERSION, LAZYMM_VERSION_STRING) != 0) {
    std::printf("lazymm consumer: the build system found lazymm %s but the headers say %s\n", LAZYMM_EXPECT_VERSION,
                LAZYMM_VERSION_STRING);
    return 1;
  }
#endif
  return torn == 1 ? 0 : 1;
}
