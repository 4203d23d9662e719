// "The whole suite passes on the fallback": when LAZYMM_TEST_FAKE_MEMBARRIER is ENOSYS, EPERM
// or EINVAL, every membarrier command fails with that errno for the whole run (through the
// lazymm::detail::seams::membarrier test seam), as under an old kernel, gVisor/rr or a
// seccomp profile. Domains of membarrier_backend then fall back to fences at their first
// command (MEMBARRIER_CMD_QUERY). tests/fault/CMakeLists.txt reruns the unit binary this way;
// backend_test.cpp checks that the rerun really was on the fallback.
//
// Any other non-empty value is a configuration error and fails the run before any test.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <lazymm/lazymm.hpp>

namespace {

std::atomic<int> fake_errno{0};

long refuse_every_command(int, unsigned) {
  errno = fake_errno.load();
  return -1;
}

class fake_membarrier_environment final : public ::testing::Environment {
 public:
  void SetUp() override {
    // Before any test runs: no other thread exists.
    const char* v = std::getenv("LAZYMM_TEST_FAKE_MEMBARRIER");  // NOLINT(concurrency-mt-unsafe)
    if (!v || !*v) return;
    const int e = std::strcmp(v, "ENOSYS") == 0   ? ENOSYS
                  : std::strcmp(v, "EPERM") == 0  ? EPERM
                  : std::strcmp(v, "EINVAL") == 0 ? EINVAL
                                                  : 0;
    if (e == 0) FAIL() << "LAZYMM_TEST_FAKE_MEMBARRIER=" << v << ": expected ENOSYS, EPERM or EINVAL";
    fake_errno.store(e);
    previous_ = lazymm::detail::seams::membarrier.exchange(&refuse_every_command);
    installed_ = true;
    std::printf("[ lazymm  ] LAZYMM_TEST_FAKE_MEMBARRIER=%s: every membarrier command fails with %s\n", v, v);
  }

  void TearDown() override {
    if (installed_) lazymm::detail::seams::membarrier.store(previous_);
    installed_ = false;
  }

 private:
  long (*previous_)(int, unsigned) = nullptr;
  bool installed_ = false;
};

// Registered from a static initializer, before gtest_main's main() runs the tests; gtest
// owns (and deletes) the environment.
[[maybe_unused]] ::testing::Environment* const registered =
    ::testing::AddGlobalTestEnvironment(new fake_membarrier_environment);

}  // namespace
