#!/usr/bin/env bash
# bench/report.sh: rebuild the benchmarks, run them, and rewrite docs/benchmarks.md and
# docs/benchmarks-lazy-pair.svg from that run. Run from anywhere; needs cmake, ninja, a C++20
# compiler, Google Benchmark (libbenchmark-dev), liburcu (liburcu-dev) and python3.
#
#   bench/report.sh                 # the documented command
#
# Environment (all optional):
#   CXX=clang++          compiler (default: the system c++)
#   BENCH_REPS=3         repetitions per benchmark (the report uses the median)
#   BENCH_MIN_TIME=0.2   seconds per repetition for the time-based workloads
#   BENCH_FILTER=regex   run a subset (the report then has gaps; for quick checks only)
#   BENCH_BUILD_DIR=build/bench
#   BENCH_JSON=<path>    skip build and run; regenerate the report from this JSON (and its .env)
#   BENCH_SECTION=retire run only the retire workload (bench_retire.cpp) and rewrite only its
#                        section of docs/benchmarks.md, leaving the rest of the page as it is;
#                        defaults then BENCH_REPS=5, BENCH_MIN_TIME=0.5, repetitions randomly
#                        interleaved (load that comes and goes hits every variant alike); about
#                        2 minutes
#
# On a 2-core machine the full run takes about 5 minutes, plus the build.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=${BENCH_BUILD_DIR:-build/bench}
section=${BENCH_SECTION:-}
extra=()
case "$section" in
  "") reps=${BENCH_REPS:-3}; min_time=${BENCH_MIN_TIME:-0.2}; filter=${BENCH_FILTER:-} ;;
  retire) reps=${BENCH_REPS:-5}; min_time=${BENCH_MIN_TIME:-0.5}; filter=${BENCH_FILTER:-^retire/}
          extra=(--benchmark_enable_random_interleaving=true) ;;
  *) echo "BENCH_SECTION: unknown section '$section' (known: retire)" >&2; exit 2 ;;
esac
json=${BENCH_JSON:-}

if [[ -z "$json" ]]; then
  configure=(cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAZYMM_BUILD_BENCH=ON
             -DLAZYMM_BUILD_TESTS=OFF -DLAZYMM_BUILD_EXAMPLES=OFF)
  if [[ -n "${CXX:-}" ]]; then configure+=(-DCMAKE_CXX_COMPILER="$CXX"); fi
  echo "+ ${configure[*]}" >&2
  "${configure[@]}" >/dev/null
  echo "+ cmake --build $build -j2" >&2
  cmake --build "$build" -j2 >/dev/null

  json="$build/results${section:+-$section}.json"
  # The file gets every repetition and the aggregates (the report uses medians, and worst cases
  # where it says so); the console only the aggregates.
  run=("$build/bench/lazymm_bench" --benchmark_format=json --benchmark_out="$json"
       --benchmark_out_format=json --benchmark_repetitions="$reps"
       --benchmark_display_aggregates_only=true --benchmark_min_time="$min_time" "${extra[@]}")
  if [[ -n "$filter" ]]; then run+=(--benchmark_filter="$filter"); fi

  # What the report says about the machine and the run.
  env_file="$json.env"
  {
    echo "nproc=$(nproc)"
    echo "cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel=$(uname -srm)"
    cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
    echo "compiler=$("$cxx" --version | head -n1)"
    echo "benchmark_version=$(dpkg-query -W -f='${Version}' libbenchmark-dev 2>/dev/null || echo unknown)"
    echo "urcu_version=$(pkg-config --modversion liburcu-memb 2>/dev/null || echo unknown)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -z "$(git status --porcelain -- include bench 2>/dev/null)" ]] || echo ' (with uncommitted changes in include/ or bench/)')"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "reps=$reps"
    echo "min_time=$min_time"
    echo "run_command=${run[*]}"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$env_file"
  # CPU time the whole machine spent busy (user, nice, system, irq, softirq, steal), in ticks,
  # and CPU time of this shell's finished children, in seconds: their difference over the run is
  # what other processes took while the benchmark ran.
  machine_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
  # (`times` must run in this shell, not in a $(...) subshell, to see this shell's children.)
  times_file="$build/times.txt"
  children_cpu() { awk 'NR==2{for(i=1;i<=2;i++){split($i,a,/[ms]/);t+=a[1]*60+a[2]}print t}' "$times_file"; }
  echo "+ ${run[*]}" >&2
  times >"$times_file"; busy0=$(machine_busy); kids0=$(children_cpu); start=$(date +%s.%N)
  "${run[@]}" >/dev/null
  times >"$times_file"; busy1=$(machine_busy); kids1=$(children_cpu); end=$(date +%s.%N)
  {
    echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
    awk -v b0="$busy0" -v b1="$busy1" -v k0="$kids0" -v k1="$kids1" -v s="$start" -v e="$end" \
        -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" 'BEGIN{
      d = e - s; own = k1 - k0; other = (b1 - b0) / hz - own; if (other < 0) other = 0;
      printf "duration_s=%.0f\nbench_cpu_s=%.1f\nother_cpu_s=%.1f\nother_cpu_pct=%.0f\n", d, own, other, 100 * other / (d * n) }'
  } >>"$env_file"
fi

echo "+ python3 bench/report.py $json" >&2
if [[ -n "$section" ]]; then
  python3 bench/report.py --json "$json" --env "$json.env" --markdown docs/benchmarks.md --section "$section"
  echo "rewrote the $section section of docs/benchmarks.md" >&2
else
  python3 bench/report.py --json "$json" --env "$json.env" \
    --markdown docs/benchmarks.md --svg docs/benchmarks-lazy-pair.svg
  echo "wrote docs/benchmarks.md and docs/benchmarks-lazy-pair.svg" >&2
fi
