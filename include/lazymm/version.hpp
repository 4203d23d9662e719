// lazymm/version.hpp: the library's version, for tests in code.
//
//   #if LAZYMM_VERSION >= 200   // 0.2.0 or later
//
// These must equal the version in CMakeLists.txt's project() (which also goes into the CMake
// package version file, lazymm.pc and debian/changelog); the version.* tests fail if they differ.
#pragma once

#define LAZYMM_VERSION_MAJOR 0
#define LAZYMM_VERSION_MINOR 1
#define LAZYMM_VERSION_PATCH 0

// MAJOR * 10000 + MINOR * 100 + PATCH, as fmt's FMT_VERSION: 0.1.0 is 100, 1.2.3 is 10203.
#define LAZYMM_VERSION (LAZYMM_VERSION_MAJOR * 10000 + LAZYMM_VERSION_MINOR * 100 + LAZYMM_VERSION_PATCH)

#define LAZYMM_VERSION_STRINGIFY_(x) #x
#define LAZYMM_VERSION_STRINGIFY(x) LAZYMM_VERSION_STRINGIFY_(x)
// "MAJOR.MINOR.PATCH"
#define LAZYMM_VERSION_STRING                    \
  LAZYMM_VERSION_STRINGIFY(LAZYMM_VERSION_MAJOR) \
  "." LAZYMM_VERSION_STRINGIFY(LAZYMM_VERSION_MINOR) "." LAZYMM_VERSION_STRINGIFY(LAZYMM_VERSION_PATCH)
