// Shared support of the GenMC harnesses (tests/model/*.cpp). Each harness includes the real
// <lazymm/lazymm.hpp> (built with LAZYMM_GENMC=1) and exercises the public API only.
//
// Compiled with -DMODEL_POLICY=<policy tag> -DMODEL_BACKEND=<backend tag> by tests/model/run.sh.
// What counts as a failure: an assertion (ours or lazymm's checked mode), a non-atomic race
// (GenMC reports any two unordered plain accesses to one location, one of them a write) and an
// access to freed memory.
#pragma once

#include <lazymm/lazymm.hpp>

#include <assert.h>
#include <pthread.h>

#include <atomic>

#ifndef MODEL_POLICY
#error "MODEL_POLICY must name a policy (refcount, explicit_shootdown, implicit_shootdown)"
#endif
#ifndef MODEL_BACKEND
#error "MODEL_BACKEND must name a backend (fence_backend, membarrier_backend)"
#endif

namespace model {

using policy = lazymm::MODEL_POLICY;
using domain = lazymm::domain<policy, lazymm::MODEL_BACKEND>;
using executor = domain::executor_type;

// implicit_shootdown promises more than the others: the teardown runs with no executor holding
// the context, so a deactivate hook may read the contents the teardown destroys. Under
// explicit_shootdown and refcount a lazy holder may outlive the teardown (docs/design.md §3):
// its deactivate may only touch what lives until the free.
inline constexpr bool teardown_excludes_holders = policy::round == lazymm::round_at::owning_zero;

// What happened to context number i (probe::index): plain fields, written by the hooks and read
// by main after the joins, so a second teardown or free is a race or an assertion, and no shared
// counter adds orderings to explore.
inline constexpr int max_contexts = 4;
inline int torn_down[max_contexts], freed[max_contexts];
inline int made = 0;

// A context whose hooks touch plain (non-atomic) fields, so that GenMC reports any hook that is
// not ordered with the teardown (a race on `contents`) or the free (an access to freed memory).
struct probe : lazymm::context {
  probe() : index(made++) {}  // user-provided: no zero-fill memset before it (GenMC)
  int index;
  int contents = 1;  // destroyed by the teardown
  int memory = 1;    // lives until the free
  // Set by a harness that wants on_evict to name a particular attach (record reuse).
  int expect_evicted_generation = 0;

  void on_activate(const lazymm::executor_id&) noexcept {
    // An executor activates only a context it holds an owning reference to: never torn down.
    assert(contents == 1);
  }
  void on_deactivate(const lazymm::executor_id&) noexcept {
    if constexpr (teardown_excludes_holders)
      assert(contents == 1);
    else
      assert(memory == 1);
  }
  void on_teardown() noexcept {
    assert(contents == 1);
    contents = 0;
    assert(torn_down[index] == 0);
    torn_down[index] = 1;
  }
  void on_evict(const lazymm::executor_id& e) noexcept {
    assert(memory == 1);
    if (expect_evicted_generation != 0) assert(static_cast<int>(e.generation) == expect_evicted_generation);
  }
  static void on_free(probe* p) noexcept {
    assert(p->memory == 1);
    p->memory = 0;
    assert(torn_down[p->index] == 1 && freed[p->index] == 0);
    freed[p->index] = 1;
    delete p;
  }
};

using ref = lazymm::owning_ref<probe>;
using sref = lazymm::structural_ref<probe>;

inline domain* dom = nullptr;

// Release/acquire hand-offs between threads of a harness (GenMC turns the wait into an assume).
inline void signal(std::atomic<int>& flag) noexcept { flag.store(1, std::memory_order_release); }
inline void await(std::atomic<int>& flag) noexcept {
  while (flag.load(std::memory_order_acquire) == 0) {
  }
}

inline pthread_t spawn(void* (*f)(void*)) {
  pthread_t t;
  pthread_create(&t, nullptr, f, nullptr);
  return t;
}
inline void join(pthread_t t) { pthread_join(t, nullptr); }

// At the end of every harness (after the joins): every context made was torn down and freed.
inline void expect_all_gone() {
  for (int i = 0; i < made; ++i) assert(torn_down[i] == 1 && freed[i] == 1);
  assert(dom->live_contexts() == 0);
}

}  // namespace model
