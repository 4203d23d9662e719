#include "dso.hpp"

dso_executor* dso_a_attach(dso_domain* d) { return new dso_executor(d->attach()); }

lazymm::context* dso_a_load_lazily(dso_executor* e, dso_domain* d) {
  auto x = d->make<dso_context>();
  e->switch_to(x);
  e->go_lazy();
  return x.release();
}

void dso_a_detach(dso_executor* e) { delete e; }
