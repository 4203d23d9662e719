// Usage: lazymm_dso own-steal | double-attach (see dso.hpp).
#include "dso.hpp"

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  dso_domain* d = dso_b_make_domain();
  dso_executor* e = dso_a_attach(d);  // listed by dso_a's copy of the thread's executor list
  if (std::strcmp(argv[1], "double-attach") == 0) {
    dso_b_attach(d);  // must abort: this thread is attached already
    std::puts("dso: FAIL: a second attach through another shared object was accepted");
    return 1;
  }
  // The final drop runs dso_b's round; the only holder is this thread's executor (attached in
  // dso_a), so the round must steal without a heavy barrier.
  dso_b_drop(dso_a_load_lazily(e, d));
  const auto st = d->stats();
  dso_a_detach(e);
  dso_b_destroy_domain(d);
  if (st.steals != 1 || st.heavy_barriers != 0) {
    std::printf("dso: FAIL: %llu steals, %llu heavy barriers (expected 1 and 0: the round did not see this "
                "thread's executor attached through another shared object)\n",
                static_cast<unsigned long long>(st.steals), static_cast<unsigned long long>(st.heavy_barriers));
    return 1;
  }
  std::puts("dso: own-steal across shared objects: PASS");
  return 0;
}
