#!/usr/bin/env bash
# bench/count.sh SOURCE_ROOT OUT_TSV [POLICY...]: instructions per iteration of lazymm's hot paths,
# counted by callgrind (exact: no timing noise). Compiles tests/perf/hotpath.cpp (the hot-path
# guard's program) against SOURCE_ROOT/include (this tree, or an older release extracted beside
# it) with -O2 -DNDEBUG -DLAZYMM_CHECKED=0, counts inside each loop's function only, and writes
# one line per count:
#
#   policy <TAB> backend <TAB> loop <TAB> instructions per iteration <TAB> mechanism under valgrind
#
# loop: floor (a thread-local store pair, policy and backend "-"), pair (the lazy pair: switch_to
# the loaded context + go_lazy), switch (one real switch + go_lazy: half of two of each).
# POLICY defaults to refcount explicit implicit; batched_explicit and batched_implicit need a tree
# that has lazymm::batched. Needs valgrind. About 30 s on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prog="$here/../tests/perf/hotpath.cpp"  # the hot-path guard's program (tests/perf/check.sh)
src=$1 out=$2
shift 2
policies=("$@")
[[ ${#policies[@]} -gt 0 ]] || policies=(refcount explicit implicit)
command -v valgrind >/dev/null || { echo "count.sh: valgrind not installed (apt-get install valgrind)" >&2; exit 2; }
n=${COUNT_N:-10000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A type=([refcount]=refcount [explicit]=explicit_shootdown [implicit]=implicit_shootdown
                 [batched_explicit]="batched<lazymm::explicit_shootdown>"
                 [batched_implicit]="batched<lazymm::implicit_shootdown>")

# one POLICY BACKEND: the lines for that binary (floor only for explicit/membarrier).
one() {
  local bin="$tmp/$1.$2" loop case per
  ${CXX:-c++} -std=c++20 -O2 -DNDEBUG -DLAZYMM_CHECKED=0 -I"$src/include" "-DPOLICY=lazymm::${type[$1]}" \
    "-DBACKEND=lazymm::$2_backend" "$prog" -o "$bin" -pthread
  for loop in floor pair switch; do
    [[ $loop == floor && "$1.$2" != explicit.membarrier ]] && continue
    case $loop in pair) case=lazy_pair ;; switch) case=real_switch ;; *) case=floor ;; esac
    # Exact: callgrind counts only inside the case's function (--toggle-collect).
    valgrind --tool=callgrind --toggle-collect="perf_$case" --callgrind-out-file="$bin.$loop.cg" "$bin" "$case" "$n" \
      >/dev/null 2>"$bin.$loop.err"
    per=$(grep -oE 'Collected : [0-9]+' "$bin.$loop.err" | grep -oE '[0-9]+')
    per=$(((per + n / 2) / n))
    [[ $loop == switch ]] && per=$(((per + 1) / 2))  # two real switches per iteration
    local who=("$1" "$2")
    [[ $loop == floor ]] && who=(- -)
    printf '%s\t%s\t%s\t%s\t%s\n' "${who[@]}" "$loop" "$per" "$(sed -n 's/^mechanism: //p' "$bin.$loop.err")"
  done
}

j=0
for p in "${policies[@]}"; do
  for b in membarrier fence; do
    one "$p" "$b" >"$tmp/line.$(printf %03d "$j")" &
    j=$((j + 1))
    if (($(jobs -rp | wc -l) >= $(nproc))); then wait -n; fi
  done
done
wait
cat "$tmp"/line.* >"$out"
