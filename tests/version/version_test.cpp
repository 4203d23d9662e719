// version.header_matches_project: include/lazymm/version.hpp against CMakeLists.txt's project()
// version (passed in as LAZYMM_EXPECT_VERSION_*). A run-time check, so that a forgotten bump is a
// failing test that prints both versions rather than a build error.
#include <lazymm/lazymm.hpp>

#include <cstdio>
#include <cstring>

static_assert(LAZYMM_VERSION == LAZYMM_VERSION_MAJOR * 10000 + LAZYMM_VERSION_MINOR * 100 + LAZYMM_VERSION_PATCH);
static_assert(LAZYMM_VERSION_MINOR < 100 && LAZYMM_VERSION_PATCH < 100, "the combined number has two digits each");

int main() {
  const bool same = LAZYMM_VERSION_MAJOR == LAZYMM_EXPECT_VERSION_MAJOR &&
                    LAZYMM_VERSION_MINOR == LAZYMM_EXPECT_VERSION_MINOR &&
                    LAZYMM_VERSION_PATCH == LAZYMM_EXPECT_VERSION_PATCH &&
                    std::strcmp(LAZYMM_VERSION_STRING, LAZYMM_EXPECT_VERSION_STRING) == 0;
  std::printf("lazymm/version.hpp: %s (LAZYMM_VERSION %d); CMakeLists.txt project(): %s\n", LAZYMM_VERSION_STRING,
              LAZYMM_VERSION, LAZYMM_EXPECT_VERSION_STRING);
  if (!same) std::printf("FAIL: update include/lazymm/version.hpp or project(VERSION) so that they agree\n");
  return same ? 0 : 1;
}
