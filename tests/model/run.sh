#!/usr/bin/env bash
# The model layer: every GenMC harness in tests/model/ x every policy x the memory models.
# Usage: tests/model/run.sh [--models "rc11 imm"] [--policies "..."] [--until-killed] [-j N]
#                           [--mutant NAME] [HARNESS...] [-- extra clang flags]
#   --mutant NAME   check a copy of include/ with tests/mutants/NAME.patch applied
#   --until-killed  for a mutant: stop at the first run in which GenMC reports an error (a race,
#                   a use of freed memory, an assertion) and name it. Exit 0 if one did, 1 if
#                   the mutant survived every run, 2 if a run failed otherwise (e.g. compiling).
# Prints one line per run (executions explored, time) and a summary; exit 0 when every run
# found no error. GENMC: GenMC's `run` wrapper (default ../shared/tools/genmc/run).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
models="rc11 imm"
policies="refcount explicit_shootdown implicit_shootdown"
until_killed=0
jobs=2
harnesses=()
extra=()
mutant=""
while [ $# -gt 0 ]; do
  case $1 in
    --models) models=$2; shift 2 ;;
    --policies) policies=$2; shift 2 ;;
    --until-killed) until_killed=1; shift ;;
    --mutant) mutant=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) harnesses+=("$1"); shift ;;
  esac
done
# Quickest first, so that --until-killed stops early.
[ ${#harnesses[@]} -gt 0 ] || harnesses=(detach_lazy thread_bound switch_then_reset holder_again record_reuse holder_trim switch_chain
                                          exit_mm attach_race batch_two try_upgrade two_reclaimers)
runs=()
for h in "${harnesses[@]}"; do
  # A harness may restrict its policies with a first line "// model-policies: ...".
  only=$(sed -n 's|^// model-policies: ||p' "$here/$h.cpp")
  for m in $models; do
    for p in $policies; do
      [ -z "$only" ] || [[ " $only " == *" $p "* ]] || continue
      runs+=("$h $p $m")
    done
  done
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ -n "$mutant" ]; then
  "$here/../mutants/apply.sh" "$mutant" "$out/src" || exit 2
  export LAZYMM_MODEL_INCLUDE="$out/src/include"
fi
start=$(date +%s)
failed=0
i=0
for run in "${runs[@]}"; do
  set -- $run
  ( "$here/run_one.sh" "$here/$1.cpp" "$2" membarrier_backend "$3" "${extra[@]}" >"$out/$i.log" 2>&1
    echo $? >"$out/$i.rc" ) &
  i=$((i + 1))
  # Keep at most $jobs runs going; report finished ones in order.
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  if [ $until_killed = 1 ] && grep -qv '^0$' "$out"/*.rc 2>/dev/null; then break; fi
done
wait
for ((k = 0; k < i; k++)); do
  rc=$(cat "$out/$k.rc" 2>/dev/null || echo 1)
  if [ "$rc" = 0 ]; then
    tail -n 1 "$out/$k.log"
  else
    failed=$((failed + 1))
    if [ $until_killed = 1 ]; then
      if verdict=$(grep -m1 -E "^Error: |^Assertion violation" "$out/$k.log"); then
        echo "killed by: ${runs[$k]}: $verdict"
        exit 0
      fi
      tail -n 20 "$out/$k.log"
      echo "model: ${runs[$k]} failed without a GenMC verdict"
      exit 2
    fi
    grep -v -E '^\s*\(|^[^ ]*: \[' "$out/$k.log" | tail -n 25
  fi
done
echo "model: ${#runs[@]} runs, $failed failed, $(( $(date +%s) - start )) s"
if [ $until_killed = 1 ]; then echo "model: SURVIVES every run"; exit 1; fi
[ $failed = 0 ]
