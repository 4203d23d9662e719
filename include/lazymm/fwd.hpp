// lazymm/fwd.hpp: forward declarations and the default template arguments, in one place.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/policy.hpp>

namespace lazymm {

class context;
template <class T, class Kind>
class ref;
struct owning_kind;
struct structural_kind;
template <class T>
using owning_ref = ref<T, owning_kind>;
template <class T>
using structural_ref = ref<T, structural_kind>;

// The kernel's x86 choice: one round per context, before teardown.
using default_policy = implicit_shootdown;

template <class Policy = default_policy, class Backend = default_backend>
class domain;
template <class Domain>
class executor;

}  // namespace lazymm
