#!/usr/bin/env bash
# CI: the unit suite cross-compiled for aarch64 and run under qemu-user (docs/testing.md, "arm64").
# Needs g++-aarch64-linux-gnu qemu-user googletest cmake ninja-build (.ci/run installs them);
# no binfmt registration. Builds in build/arm64/: GoogleTest from /usr/src/googletest for the
# target (the packaged libgtest is x86-64), then lazymm_unit and lazymm_unchecked, then runs
#   1. lazymm_unit, all of it (membarrier live: qemu passes the syscall to the host kernel),
#   2. lazymm_unit on the fence fallback (every membarrier refused with ENOSYS, as
#      unit.fallback.ENOSYS) and with LAZYMM_NO_MEMBARRIER=1, death tests left out of these two,
#   3. lazymm_unchecked (the checks that stay on with LAZYMM_CHECKED=0).
# About 2 minutes on an idle 2-core VM (3.5 under load), most of it compiling; budget 5.
# Usage: .ci/arm64.sh [all|build|run]: `build` stops after the compile, `run` runs what `build`
# left in build/arm64/ (.ci/run compiles in the background while the matrix runs, then runs).
set -euo pipefail
phase=${1:-all}
case $phase in all|build|run) ;; *) echo "usage: .ci/arm64.sh [all|build|run]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
src=$PWD
b=$src/build/arm64
triplet=aarch64-linux-gnu
sysroot=/usr/$triplet
toolchain=$src/cmake/$triplet.cmake
jobs=${JOBS:-2}
t0=$SECONDS
step() { echo "arm64.sh: [$((SECONDS - t0)) s] $*"; }

if [ "$phase" != run ]; then
  step "GoogleTest for $triplet from /usr/src/googletest"
  cmake -S /usr/src/googletest -B "$b/googletest" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX="$b/gtest" >/dev/null
  cmake --build "$b/googletest" -j"$jobs"
  cmake --install "$b/googletest" >/dev/null

  step "lazymm_unit, lazymm_unchecked for $triplet (-O2, assertions and checked mode on)"
  cmake -S "$src" -B "$b/lazymm" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O2 -DGTest_DIR="$b/gtest/lib/cmake/GTest" \
    -DLAZYMM_BUILD_EXAMPLES=OFF -DLAZYMM_INSTALL=OFF -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST >/dev/null
  cmake --build "$b/lazymm" -j"$jobs" --target lazymm_unit lazymm_unchecked
fi
[ "$phase" != build ] || { step "built"; exit 0; }

# gtest's "threadsafe" death tests (the suite forces that style) re-execute argv[0]. Without
# binfmt the host cannot execute an aarch64 binary, so argv[0] (qemu -0) is a host script that
# runs the binary under qemu again.
for t in lazymm_unit lazymm_unchecked; do
  bin=$b/lazymm/tests/$t
  readelf -h "$bin" | grep -q 'Machine:.*AArch64' || { echo "arm64.sh: $bin is not an aarch64 binary" >&2; exit 1; }
  printf '#!/bin/sh\nexec qemu-aarch64 -L %s -0 "$0" %s "$@"\n' "$sysroot" "$bin" > "$b/$t.qemu"
  chmod +x "$b/$t.qemu"
done
export GTEST_DEATH_TEST_STYLE=threadsafe
step "$(qemu-aarch64 --version | head -1) on $(uname -m), kernel $(uname -r)"

step "1. lazymm_unit, the whole suite, membarrier live"
"$b/lazymm_unit.qemu" --gtest_brief=1
step "2. lazymm_unit on the fence fallback (death tests left out)"
LAZYMM_TEST_FAKE_MEMBARRIER=ENOSYS "$b/lazymm_unit.qemu" --gtest_brief=1 --gtest_filter='-*DeathTest*'
LAZYMM_NO_MEMBARRIER=1 "$b/lazymm_unit.qemu" --gtest_brief=1 --gtest_filter='-*DeathTest*'
step "3. lazymm_unchecked"
"$b/lazymm_unchecked.qemu" --gtest_brief=1
step "PASS (budget: 300 s on the 2-core CI machine)"
