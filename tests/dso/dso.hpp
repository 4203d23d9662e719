// Two shared objects built with -fvisibility=hidden (dso_a.cpp, dso_b.cpp) and one program
// (dso_main.cpp) share a domain: the per-thread executor list must be one list per thread for
// the whole process, or the double-attach check, the hook-drop check and the round's
// "own executor" test would each see only the executors attached through their own object.
#pragma once

#include <lazymm/lazymm.hpp>

using dso_domain = lazymm::domain<lazymm::implicit_shootdown, lazymm::fence_backend>;
using dso_executor = dso_domain::executor_type;
// plugin.cpp / dlopen_main.cpp: a domain type whose thread_executor() only the plugin instantiates.
using dso_domain2 = lazymm::domain<lazymm::refcount, lazymm::fence_backend>;
struct dso_context : lazymm::context {};

#define DSO_API extern "C" __attribute__((visibility("default")))
// dso_a.cpp: attaches and loads; dso_b.cpp: owns the domain (its round code and vtable), drops.
DSO_API dso_executor* dso_a_attach(dso_domain* d);
DSO_API lazymm::context* dso_a_load_lazily(dso_executor* e, dso_domain* d);  // returns the only owner
DSO_API void dso_a_detach(dso_executor* e);
DSO_API dso_domain* dso_b_make_domain();
DSO_API void dso_b_destroy_domain(dso_domain* d);
DSO_API dso_executor* dso_b_attach(dso_domain* d);
DSO_API void dso_b_drop(lazymm::context* owner);
