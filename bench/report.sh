#!/usr/bin/env bash
# bench/report.sh: one run that regenerates every section of docs/benchmarks.md, and its plots,
# from this tree; 0.1 (commit f2baa1d) is built beside it for the trend rows. Run from anywhere.
# Needs cmake, ninja, a C++20 compiler, Google Benchmark (libbenchmark-dev), liburcu
# (liburcu-dev), valgrind, git, and Debian's python3-matplotlib (run with /usr/bin/python3).
#
#   bench/report.sh                  # the documented run: about 10 minutes on 2 cores, build included
#   BENCH_QUICK=1 bench/report.sh    # smoke check of the whole pipeline: about 2 minutes plus the
#                                    # build; its figures are noise, some rows are left out, and the
#                                    # page says so (never commit its page)
#
# (Times: the steps of a run with the full filters but 1 repetition of 0.01 s took 64 s (main),
# 4 s (retire), 4 s (holders), 1 s (trend) and 20 s (counts) on the 2-core VM; the documented
# settings multiply main by about 4, retire by about 20, holders by about 8, trend by about 40.)
#
# What it does, in order (all results under $BENCH_BUILD_DIR/report/):
#   1. extracts 0.1's include/ (git archive, nothing downloaded) and builds lazymm_bench,
#      lazymm_bench_noset (LAZYMM_NO_HOLDER_SET=1), lazymm_trend and lazymm_trend_base (the
#      lazy-pair and real-switch sources compiled against this tree and against 0.1);
#   2. main.json: lazymm_bench, every workload but retire (sections 1-4);
#   3. retire.json: the retire workload, repetitions in random interleaved order (section 5);
#   4. holders/: lazymm_bench and lazymm_bench_noset alternately (section 6);
#   5. trend/: lazymm_trend and lazymm_trend_base alternately, 1 thread (the trend section);
#   6. counts-today.tsv, counts-base.tsv: instructions per iteration (bench/count.sh, callgrind);
#   6a. jemalloc.txt: examples/jemalloc_tenants --bench (section 7; needs libjemalloc-dev and
#      libasio-dev, skipped without them), built in $BENCH_BUILD_DIR-jemalloc;
#   7. bench/report.py writes docs/benchmarks.md and docs/benchmarks-*.svg from all of it.
#
# Environment (all optional):
#   CXX                  compiler (default: the system c++)
#   BENCH_BUILD_DIR      build directory (default build/bench)
#   BENCH_BASE_COMMIT    the older release for the trend rows (default f2baa1d, 0.1)
#   BENCH_REPS, BENCH_MIN_TIME        main run: repetitions (medians reported), seconds each (3, 0.2)
#   RETIRE_REPS, RETIRE_MIN_TIME      retire run (5, 0.5)
#   HOLDER_REPS, TREND_REPS           alternating repetitions of each build pair (3, 7)
#   JEMALLOC_MS          each timed run of jemalloc_tenants --bench, in ms (2000; quick: 300)
#   BENCH_REPORT_ONLY=1  skip build and runs; rewrite the page from the last results
#   BENCH_PAGE           where to write the page (default docs/benchmarks.md; plots beside it)
#   BENCH_BUDGETS        the written instruction budgets the page judges the counts against
#                        (default: the hot-path guard's, tests/perf/budgets.txt; same format)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=${BENCH_BUILD_DIR:-build/bench}
base_commit=${BENCH_BASE_COMMIT:-f2baa1d}
out=$build/report
page=${BENCH_PAGE:-docs/benchmarks.md}
quick=${BENCH_QUICK:-}
if [[ -n $quick ]]; then
  reps=${BENCH_REPS:-1} min_time=${BENCH_MIN_TIME:-0.01} retire_reps=${RETIRE_REPS:-1}
  retire_min_time=${RETIRE_MIN_TIME:-0.05} holder_reps=${HOLDER_REPS:-1} trend_reps=${TREND_REPS:-2}
  # No drop with 256 or 1024 executors: starting those threads is most of a run's time.
  main_filter='^(lazy_pair|switch|churn|drop_busy)/|^drop_idle/[^/]+/busy:0/executors:(1|2|16)/'
  holder_drops='executors:16'
  jemalloc_ms=${JEMALLOC_MS:-300} jemalloc_rounds=10
else
  reps=${BENCH_REPS:-3} min_time=${BENCH_MIN_TIME:-0.2} retire_reps=${RETIRE_REPS:-5}
  retire_min_time=${RETIRE_MIN_TIME:-0.5} holder_reps=${HOLDER_REPS:-3} trend_reps=${TREND_REPS:-7}
  main_filter='^(lazy_pair|switch|drop_idle|drop_busy|churn)/'
  holder_drops='executors:(1024|16)'
  jemalloc_ms=${JEMALLOC_MS:-2000} jemalloc_rounds=100
fi
holder_filter="^drop_idle/lazymm\.(explicit|implicit)\.membarrier/busy:0/$holder_drops/|^(switch|lazy_pair)/lazymm\.(explicit|implicit)\.membarrier(/K:(2|16))?/real_time/threads:1\$"
trend_filter='^(lazy_pair|switch)/(floor|lazymm\.[a-z]+\.[a-z]+)(/K:16)?/real_time/threads:1$'
bin=$build/bench
gbench=(--benchmark_format=json --benchmark_out_format=json)

# log NAME: appends what the report says about the run so far to env.txt.
log() { printf '%s=%s\n' "$1" "$2" >>"$out/env.txt"; }

build_all() {
  local base=$build/base-$base_commit
  local sha
  sha=$(git rev-parse "$base_commit^{commit}")
  if [[ $(cat "$base/.commit" 2>/dev/null) != "$sha" ]]; then  # (re)extract only when it changed
    rm -rf "$base" && mkdir -p "$base"
    git archive "$sha" include | tar -x -C "$base"
    echo "$sha" >"$base/.commit"
  fi
  local configure=(cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAZYMM_BUILD_BENCH=ON
                   -DLAZYMM_BUILD_TESTS=OFF -DLAZYMM_BUILD_EXAMPLES=OFF "-DLAZYMM_BENCH_BASELINE_DIR=$root/$base")
  if [[ -n ${CXX:-} ]]; then configure+=(-DCMAKE_CXX_COMPILER="$CXX"); fi
  echo "+ ${configure[*]}" >&2
  "${configure[@]}" >/dev/null
  echo "+ cmake --build $build -j2 --target lazymm_bench lazymm_bench_noset lazymm_trend lazymm_trend_base" >&2
  nice -n 5 cmake --build "$build" -j2 --target lazymm_bench lazymm_bench_noset lazymm_trend lazymm_trend_base >/dev/null
  # Section 7: the jemalloc example, release without checks, in its own build directory.
  local je=("${configure[@]}" -B "$build-jemalloc" -DLAZYMM_BUILD_EXAMPLES=ON -DLAZYMM_BUILD_BENCH=OFF)
  if "${je[@]}" >/dev/null 2>&1 && nice -n 5 cmake --build "$build-jemalloc" -j2 --target jemalloc_tenants >/dev/null; then
    jemalloc_bin=$build-jemalloc/examples/jemalloc_tenants/jemalloc_tenants
  else
    echo "bench/report.sh: jemalloc_tenants not built (libjemalloc-dev, libasio-dev?): section 7 is skipped" >&2
  fi
}
jemalloc_bin=""

# timed STEP COMMAND...: runs it and logs its wall time, the load average before and after, and the
# CPU time other processes took meanwhile (the machine's busy time less this shell's children's).
timed() {
  local step=$1 t0 t1 b0 b1 k0 k1 l0
  shift
  # `times` runs in this shell (a $(...) subshell starts its counts from zero).
  times >"$out/.times"; k0=$(kids); b0=$(busy); l0=$(cut -d' ' -f1-3 /proc/loadavg); t0=$(date +%s.%N)
  echo "+ $*" >&2
  "$@"
  t1=$(date +%s.%N); b1=$(busy); times >"$out/.times"; k1=$(kids)
  log "step.$step" "$(awk -v t0="$t0" -v t1="$t1" -v b0="$b0" -v b1="$b1" -v k0="$k0" -v k1="$k1" \
    -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" -v l0="$l0" -v l1="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN{
    d = t1 - t0; other = (b1 - b0) / hz - (k1 - k0); if (other < 0) other = 0;
    printf "%.0f s; load %s before, %s after; other processes %.0f%% of the machine", d, l0, l1, 100 * other / (d * n) }')"
}
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
kids() { awk 'NR==2{for(i=1;i<=2;i++){split($i,a,/[ms]/);t+=a[1]*60+a[2]}print t}' "$out/.times"; }

# alternate DIR REPS FILTER MIN_TIME BINARY...: REPS rounds of every binary, the order reversed
# every other round (ABBA), so that load which comes and goes hits both builds alike.
alternate() {
  local dir=$1 n=$2 filter=$3 mt=$4 r b
  shift 4
  local bins=("$@")
  mkdir -p "$dir"
  for r in $(seq 1 "$n"); do
    for b in "${bins[@]}"; do
      "$bin/$b" --benchmark_filter="$filter" --benchmark_min_time="$mt" "${gbench[@]}" \
        --benchmark_out="$dir/$b.$r.json" >/dev/null 2>&1
    done
    mapfile -t bins < <(printf '%s\n' "${bins[@]}" | tac)
  done
}

run_all() {
  rm -rf "$out" && mkdir -p "$out"
  local dirty=""
  [[ -z $(git status --porcelain -- include bench 2>/dev/null) ]] || dirty=" (with uncommitted changes in include/ or bench/)"
  log commit "$(git rev-parse --short HEAD)$dirty"
  log base_commit "$(git rev-parse --short "$base_commit")"
  log date "$(date -u '+%Y-%m-%d %H:%M UTC')"
  log quick "${quick:-0}"
  log nproc "$(nproc)"
  log cpu_model "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  log kernel "$(uname -srm)"
  log compiler "$("$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")" --version | head -n1)"
  log benchmark_version "$(dpkg-query -W -f='${Version}' libbenchmark-dev 2>/dev/null || echo unknown)"
  log urcu_version "$(pkg-config --modversion liburcu-memb 2>/dev/null || echo unknown)"
  log valgrind_version "$(valgrind --version 2>/dev/null || echo none)"
  log reps "$reps"; log min_time "$min_time"; log retire_reps "$retire_reps"
  log retire_min_time "$retire_min_time"; log holder_reps "$holder_reps"; log trend_reps "$trend_reps"
  local main=("$bin/lazymm_bench" "--benchmark_filter=$main_filter" "--benchmark_repetitions=$reps"
              --benchmark_display_aggregates_only=true "--benchmark_min_time=$min_time" "${gbench[@]}"
              "--benchmark_out=$out/main.json")
  local retire=("$bin/lazymm_bench" --benchmark_filter=^retire/ "--benchmark_repetitions=$retire_reps"
                --benchmark_display_aggregates_only=true "--benchmark_min_time=$retire_min_time"
                --benchmark_enable_random_interleaving=true "${gbench[@]}" "--benchmark_out=$out/retire.json")
  log cmd.main "${main[*]}"
  log cmd.retire "${retire[*]}"
  log cmd.holders "lazymm_bench, lazymm_bench_noset alternately, $holder_reps rounds: --benchmark_filter='$holder_filter' --benchmark_min_time=$min_time"
  log cmd.trend "lazymm_trend, lazymm_trend_base alternately, $trend_reps rounds: --benchmark_filter='$trend_filter' --benchmark_min_time=$min_time"
  timed main "${main[@]}" >/dev/null
  timed retire "${retire[@]}" >/dev/null
  timed holders alternate "$out/holders" "$holder_reps" "$holder_filter" "$min_time" lazymm_bench lazymm_bench_noset
  timed trend alternate "$out/trend" "$trend_reps" "$trend_filter" "$min_time" lazymm_trend lazymm_trend_base
  timed counts count_both
  if [[ -n $jemalloc_bin ]]; then
    local je=("$jemalloc_bin" --bench --duration-ms "$jemalloc_ms" --teardown-rounds "$jemalloc_rounds")
    log cmd.jemalloc "${je[*]}"
    timed jemalloc "${je[@]}" >"$out/jemalloc.txt" || true  # a failed check shows on the page
  fi
}

# The instruction counts. This is the one place to point at another counter (e.g. tests/perf): it
# must write the two TSV files in bench/count.sh's format.
count_both() {
  bench/count.sh . "$out/counts-today.tsv" refcount explicit implicit batched_explicit batched_implicit
  bench/count.sh "$build/base-$base_commit" "$out/counts-base.tsv" refcount explicit implicit
}

# Everything the run needs, checked before the first minute is spent on it.
preflight() {
  local missing=()
  for tool in cmake ninja git valgrind pkg-config; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  /usr/bin/python3 -c 'import matplotlib' 2>/dev/null || missing+=("python3-matplotlib (for /usr/bin/python3)")
  git rev-parse --verify -q "$base_commit^{commit}" >/dev/null || missing+=("commit $base_commit in this clone")
  if ((${#missing[@]})); then
    printf 'bench/report.sh: missing: %s\n' "${missing[@]}" >&2
    exit 2
  fi
}

preflight
if [[ -z ${BENCH_REPORT_ONLY:-} ]]; then
  start=$(date +%s)
  build_all
  run_all
  log duration_s "$(($(date +%s) - start))"
fi
mkdir -p "$(dirname "$page")"
echo "+ /usr/bin/python3 bench/report.py $out $page" >&2
/usr/bin/python3 bench/report.py "$out" "$page"
