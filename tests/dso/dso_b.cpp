#include "dso.hpp"

dso_domain* dso_b_make_domain() { return new dso_domain; }
void dso_b_destroy_domain(dso_domain* d) { delete d; }
dso_executor* dso_b_attach(dso_domain* d) { return new dso_executor(d->attach()); }
void dso_b_drop(lazymm::context* owner) { lazymm::owning_ref<dso_context>::adopt(static_cast<dso_context*>(owner)).reset(); }
