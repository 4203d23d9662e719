#!/usr/bin/env bash
# Runs one GenMC harness for one policy, backend and memory model.
# Usage: tests/model/run_one.sh HARNESS.cpp POLICY BACKEND MODEL [extra clang flags...]
#   MODEL: rc11 (the C++20 model) or imm (hardware). GENMC: the `run` wrapper of GenMC 0.10.3
#   (default: ../shared/tools/genmc/run beside the repository).
# Prints "executions N, T s" on success; GenMC's report and exit status 1 on any error.
# Checked mode is off (the build that ships, and a third of the state space); GenMC itself
# reports any use of freed memory and any unordered plain access. LAZYMM_MODEL_CHECKED=1 turns it on.
# LAZYMM_MODEL_INCLUDE: the headers to check (default: this tree's include/; run.sh --mutant sets it).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
genmc=${GENMC:-$root/../shared/tools/genmc/run}
[ $# -ge 4 ] || { sed -n '2,6p' "$0"; exit 2; }
harness=$1 policy=$2 backend=$3 model=$4
shift 4
[ -x "$genmc" ] || { echo "model: GenMC not found at $genmc (set GENMC)" >&2; exit 2; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$genmc" "--$model" --disable-instruction-caching --disable-estimation -- \
  -x c++ -std=c++20 -fno-rtti -fno-exceptions -DLAZYMM_GENMC=1 -DLAZYMM_CHECKED=${LAZYMM_MODEL_CHECKED:-0} \
  "-DMODEL_POLICY=$policy" "-DMODEL_BACKEND=$backend" "-I${LAZYMM_MODEL_INCLUDE:-$root/include}" "$@" "$harness" >"$log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "No errors were detected" "$log"; then
  echo "$(basename "$harness" .cpp) $policy $backend $model: executions $(sed -n 's/.*executions explored: //p' "$log"), $(sed -n 's/.*wall-clock time: //p' "$log")"
  exit 0
fi
cat "$log"
echo "model: $(basename "$harness" .cpp) $policy $backend $model: FAILED (genmc exit $rc)"
exit 1
