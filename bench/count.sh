#!/usr/bin/env bash
# bench/count.sh SOURCE_ROOT OUT_TSV [POLICY...]: instructions per iteration of lazymm's hot paths,
# counted by callgrind (exact: no timing noise). Compiles bench/count_instructions.cpp against
# SOURCE_ROOT/include (this tree, or an older release extracted beside it) with -O2 -DNDEBUG
# -DLAZYMM_CHECKED=0, runs each loop with N and 2N iterations, and writes one line per count:
#
#   policy <TAB> backend <TAB> loop <TAB> instructions per iteration <TAB> mechanism under valgrind
#
# loop: floor (a thread-local store pair, policy and backend "-"), pair (the lazy pair: switch_to
# the loaded context + go_lazy), switch (one real switch + go_lazy: half of two of each).
# POLICY defaults to refcount explicit implicit; batched_explicit and batched_implicit need a tree
# that has lazymm::batched (COUNT_BATCHED=1). Needs valgrind. About 1 minute on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$1 out=$2
shift 2
policies=("$@")
[[ ${#policies[@]} -gt 0 ]] || policies=(refcount explicit implicit)
command -v valgrind >/dev/null || { echo "count.sh: valgrind not installed (apt-get install valgrind)" >&2; exit 2; }
n=${COUNT_N:-100000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${CXX:-c++} -std=c++20 -O2 -DNDEBUG -DLAZYMM_CHECKED=0 -DLAZYMM_TEST_SEAMS=0 \
  -DLAZYMM_COUNT_BATCHED="${COUNT_BATCHED:-0}" -I"$src/include" "$here/count_instructions.cpp" \
  -o "$tmp/count" -pthread

# ir POLICY BACKEND LOOP ITERATIONS: instructions of one whole run (and the mechanism, in $tmp).
ir() {
  local f="$tmp/$1.$2.$3.$4"
  valgrind --tool=callgrind --callgrind-out-file="$f.cg" "$tmp/count" "$@" >/dev/null 2>"$f.err"
  sed -n 's/^mechanism: //p' "$f.err" >"$f.mech"
  grep -oE 'Collected : [0-9]+' "$f.err" | grep -oE '[0-9]+'
}
# one POLICY BACKEND LOOP: the line for that count.
one() {
  local a b per
  a=$(ir "$1" "$2" "$3" "$n")
  b=$(ir "$1" "$2" "$3" $((2 * n)))
  per=$(((b - a) / n))
  if [[ $3 == switch ]]; then per=$(((b - a) / (2 * n))); fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$per" "$(cat "$tmp/$1.$2.$3.$n.mech")"
}

todo=()
todo+=("explicit membarrier floor")
for p in "${policies[@]}"; do
  for b in membarrier fence; do
    todo+=("$p $b pair" "$p $b switch")
  done
done
# Counts are exact, so the runs go in parallel, one per core.
for j in "${!todo[@]}"; do
  # shellcheck disable=SC2086
  one ${todo[$j]} >"$tmp/line.$(printf %03d "$j")" &
  if (($(jobs -rp | wc -l) >= $(nproc))); then wait -n; fi
done
wait
cat "$tmp"/line.* | sed 's/^explicit\tmembarrier\tfloor/-\t-\tfloor/' >"$out"
