#!/usr/bin/env bash
# The hot-path guard: instructions per iteration of lazymm's hot paths, counted by callgrind
# (exact: the same binary gives the same count on a loaded machine), for every policy x backend,
# against the budgets in tests/perf/budgets.txt. Fails when a count exceeds its budget, or when
# the lazy pair or go_lazy execute a call (their fast path must be inlined into the caller).
#
#   tests/perf/check.sh [--include DIR] [--report FILE]
#
# --include DIR   the headers to measure (default: this tree's include/); the guard's self-test
#                 points it at a copy with a slowed fast path and expects a failure
# --report FILE   also write the table (markdown) there
# Environment: CXX (default g++; the budgets are for Debian's GCC 12 at -O2), PERF_N (iterations,
# default 10000), PERF_POLICIES / PERF_BACKENDS / PERF_CASES (subsets, space-separated). Needs
# valgrind. About 30 s on 2 cores.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
inc="$root/include"
report=""
while [ $# -gt 0 ]; do
  case "$1" in
    --include) inc=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    *) echo "check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "perf: valgrind not installed (apt-get install valgrind)"; exit 2; }
cxx=${CXX:-g++}
n=${PERF_N:-10000}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

policies=${PERF_POLICIES:-"refcount explicit_shootdown implicit_shootdown batched<explicit_shootdown> batched<implicit_shootdown>"}
backends=${PERF_BACKENDS:-"membarrier fence"}
cases=${PERF_CASES:-"lazy_pair go_lazy real_switch final_drop"}

# One binary per policy x backend, two at a time.
build() {  # policy backend
  local tag="$1.$2"; tag=${tag//[<>]/_}
  "$cxx" -std=c++20 -O2 -DNDEBUG -DLAZYMM_CHECKED=0 -I"$inc" \
    "-DPOLICY=lazymm::${1//</<lazymm::}" "-DBACKEND=lazymm::$2_backend" \
    "$here/hotpath.cpp" -o "$work/$tag" -pthread 2>"$work/$tag.log" || { cat "$work/$tag.log"; return 1; }
}
export -f build; export cxx inc here work
for p in $policies; do for b in $backends; do echo "$p $b"; done; done |
  xargs -P 2 -L 1 bash -c 'build "$0" "$1"' || { echo "perf: build failed"; exit 1; }

# Instructions per iteration of case $2 in binary $1, and the functions that had any cost.
count() {
  local out="$work/cg.$(basename "$1").$2"
  valgrind --tool=callgrind --toggle-collect="perf_$2" --callgrind-out-file="$out" "$1" "$2" "$n" >/dev/null 2>"$out.err" ||
    { cat "$out.err"; return 1; }
  local ir; ir=$(grep -oE 'Collected : [0-9]+' "$out.err" | grep -oE '[0-9]+')
  local fns; fns=$(callgrind_annotate "$out" 2>/dev/null | grep -cE '^ *[0-9,]+ +\([ 0-9.]+%\) +[^ ]*:')
  echo "$(( (ir + n / 2) / n )) $fns"
}

fail=0
table="| case | policy | backend | instructions | budget | 0.1 | |
|---|---|---|---:|---:|---:|---|"
first=$(set -- $policies; echo "$1.${backends%% *}"); first=${first//[<>]/_}
floor=$(count "$work/$first" floor | cut -d' ' -f1)
table+=$'\n'"| floor (TLS store pair) | – | – | $floor | – | 5 | |"
for c in $cases; do
  for p in $policies; do
    for b in $backends; do
      tag="$p.$b"; tag=${tag//[<>]/_}
      read -r ir fns < <(count "$work/$tag" "$c") || { fail=1; continue; }
      [ "$c" = real_switch ] && ir=$(( (ir + 1) / 2 ))  # two switches per iteration
      line=$(awk -v c="$c" -v p="$p" -v b="$b" '$1==c && $2==p && $3==b {print $4, $5}' "$here/budgets.txt")
      budget=${line%% *}; old=${line##* }
      verdict=ok
      if [ -z "$line" ]; then verdict="NO BUDGET"; fail=1
      elif [ "$ir" -gt "$budget" ]; then verdict="OVER BUDGET"; fail=1; fi
      if { [ "$c" = lazy_pair ] || [ "$c" = go_lazy ]; } && [ "$fns" -gt 1 ]; then
        verdict="$verdict; CALLS ($fns functions ran)"; fail=1
      fi
      table+=$'\n'"| $c | $p | $b | $ir | ${budget:-?} | ${old:-?} | $verdict |"
    done
  done
done
echo "hot-path instructions per iteration (callgrind, $cxx -O2 -DNDEBUG -DLAZYMM_CHECKED=0, $n iterations; real_switch: one real switch + go_lazy):"
echo "$table"
[ -n "$report" ] && echo "$table" >"$report"
if [ "$fail" -ne 0 ]; then
  echo "perf: FAILED (a count over its budget in tests/perf/budgets.txt, or a call on the fast path)"
  exit 1
fi
echo "perf: every count within its budget; the lazy pair and go_lazy make no call"
