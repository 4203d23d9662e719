// lazymm/lazymm.hpp: the whole public API.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/config.hpp>
#include <lazymm/context.hpp>
#include <lazymm/domain.hpp>
#include <lazymm/executor.hpp>
#include <lazymm/fwd.hpp>
#include <lazymm/policy.hpp>
#include <lazymm/scoped_switch.hpp>
#include <lazymm/version.hpp>
