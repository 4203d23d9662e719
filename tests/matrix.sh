#!/usr/bin/env bash
# The whole test suite across {GCC, Clang} x {release with assertions, ASan+UBSan, TSan}.
# Usage: tests/matrix.sh [preset...]   (default: all six). Stops at the first failing preset.
# Each preset is a CMake workflow (configure, build, ctest) from CMakePresets.json; the
# sanitizer test presets set halt_on_error, so the first report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(gcc-release gcc-asan gcc-tsan clang-release clang-asan clang-tsan)
summary=()
for p in "${presets[@]}"; do
  start=$(date +%s)
  echo "=== matrix: $p"
  if ! cmake --workflow --preset "$p"; then
    echo "=== matrix: $p FAILED"
    exit 1
  fi
  summary+=("$(printf '%-14s ok  %4ds' "$p" $(( $(date +%s) - start )))")
done
echo "=== matrix summary"
printf '%s\n' "${summary[@]}"
