#!/usr/bin/env bash
# bench/holders.sh: the holder-set figures (docs/benchmarks.md, "Holder sets"), from one run.
# Builds lazymm_bench and lazymm_bench_noset (the same benchmarks with LAZYMM_NO_HOLDER_SET=1:
# every round walks every record, a real switch writes no set), runs the final-drop, real-switch
# and lazy-pair workloads of the shootdown policies on membarrier in both, interleaved, and
# prints a Markdown table: each final drop in units of one bare membarrier call timed in the same
# iterations (unit_p50_ns), and the switch costs of both builds side by side.
#
#   bench/holders.sh                 # about 4 minutes on 2 cores, plus the build
#   BENCH_REPS=3 BENCH_BUILD_DIR=build/bench bench/holders.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${BENCH_BUILD_DIR:-build/bench}
reps=${BENCH_REPS:-3}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAZYMM_BUILD_BENCH=ON -DLAZYMM_BUILD_TESTS=OFF \
  -DLAZYMM_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j2 --target lazymm_bench lazymm_bench_noset >/dev/null
drops='^drop_idle/lazymm\.(explicit|implicit)\.membarrier/busy:0/executors:(1024|16)/'
switches='^(switch|lazy_pair)/lazymm\.(explicit|implicit)\.membarrier(/K:(2|16))?/real_time/threads:1$'
out="$build/holders"
mkdir -p "$out"
for r in $(seq 1 "$reps"); do
  for b in lazymm_bench lazymm_bench_noset; do
    echo "+ $b (repetition $r of $reps)" >&2
    "$build/bench/$b" --benchmark_filter="$drops|$switches" --benchmark_format=json \
      --benchmark_min_time=0.2 >"$out/$b.$r.json" 2>/dev/null
  done
done
{ echo "machine: $(nproc) cores, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/env.txt"
python3 - "$out" "$reps" <<'PY'
import json, statistics, sys, re
out, reps = sys.argv[1], int(sys.argv[2])
def load(b):
    rows = {}
    for r in range(1, reps + 1):
        d = json.load(open(f"{out}/{b}.{r}.json"))
        for x in d["benchmarks"]:
            if x.get("error_occurred"):
                raise SystemExit(f"{b}: {x['name']}: {x.get('error_message')}")
            rows.setdefault(x["name"], []).append(x)
    return rows
on, off = load("lazymm_bench"), load("lazymm_bench_noset")
med = lambda xs: statistics.median(xs)
print(open(f"{out}/env.txt").read().strip().replace("\n", "  \n"))
print()
print("| final drop, membarrier | holder sets: ns | x membarrier | without (0.2 walk): ns | x membarrier |")
print("|---|---:|---:|---:|---:|")
cases = [("1024 registered (parked), none holding", "executors:1024/holding:0/holders:0"),
         ("1024 registered (parked), 2 holding", "executors:1024/holding:2/holders:2"),
         ("1024 registered (parked), 1024 holding", "executors:1024/holding:1/holders:1024"),
         ("16 registered (parked), 2 holding", "executors:16/holding:2/holders:2")]
for pol in ("explicit", "implicit"):
    for label, args in cases:
        cells = []
        for rows in (on, off):
            ks = [k for k in rows if k.startswith(f"drop_idle/lazymm.{pol}.membarrier/busy:0/{args}/")]
            if not ks:
                cells += ["-", "-"]; continue
            xs = rows[ks[0]]
            ns, unit = med([x["p50_ns"] for x in xs]), med([x["unit_p50_ns"] for x in xs])
            cells += [f"{ns:,.0f}", f"{ns / unit:.2f}"]
        print(f"| {pol}: {label} | " + " | ".join(cells) + " |")
print()
print("| per iteration, 1 thread | holder sets: ns | without: ns | difference |")
print("|---|---:|---:|---:|")
for k in sorted(on):
    if not k.startswith(("switch/", "lazy_pair/")) or k not in off:
        continue
    a, b = med([x["real_time"] for x in on[k]]), med([x["real_time"] for x in off[k]])
    print(f"| {k} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
PY
