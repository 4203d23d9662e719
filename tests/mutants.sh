#!/usr/bin/env bash
# Mutation self-check: builds the library with one deliberate protocol defect at a time (the
# patches in tests/mutants/, each applied to a copy of the tree; the shipping headers carry no
# mutant) and shows which tests kill each mutant.
#
# Usage: tests/mutants.sh [--all-flavours] [--release-only] [--model-only] [--keep] [MUTANT...]
#   MUTANT     e.g. NO_WAIT (default: every mutant). "none" builds the unmutated control.
#   --all-flavours  build every mutant in both flavours (default: release for all, TSan too for
#                   the memory-order mutants, which x86 hides at run time)
#   --release-only  build every mutant in the release flavour only (quicker; no TSan builds)
#   --model-only    only the model flavour: the GenMC harnesses of tests/model/ under RC11
#                   (no build; needs GenMC, see tests/model/run_one.sh)
# Every mutant also gets the "model" flavour (tests/model/run.sh --until-killed) unless
# --release-only is given.
#   --keep     keep the build directories (build/mutant-<flavour>-<MUTANT>)
# Each build runs ctest (the unit suite, one ctest test per unit test, and its fault reruns; the
# unchecked and shared-object tests; the fixed-seed torture runs; no examples, consumer or version
# tests, no mutants.patches_apply). Prints a table:
# mutant | flavour | verdict | killed by | how.
# Exit status: 0 when every mutant is killed and every control passes, 1 otherwise.
# Time: about 2-4 minutes per build on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

all_mutants=($(cd tests/mutants && ls *.patch | sed 's/\.patch$//'))
# Defects in memory ordering: on x86 only TSan, weak hardware or the model checker sees them.
memory_order_mutants=" NO_HEAVY_BARRIER STEAL_AFTER_BARRIER RELAXED_SLOT_STORE RELAXED_SEQ_STORE NO_LIGHT_FENCE RELAXED_ODD_STORE RELAXED_GENERATION HOLDER_TEST_BEFORE_FENCE NO_TRIM_BARRIER "

all_flavours=0
release_only=0
model_only=0
keep=0
mutants=()
for a in "$@"; do
  case $a in
    --all-flavours) all_flavours=1 ;;
    --keep) keep=1 ;;
    --release-only) release_only=1 ;;
    --model-only) model_only=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) mutants+=("$a") ;;
  esac
done
[ ${#mutants[@]} -gt 0 ] || mutants=(none "${all_mutants[@]}")

export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:report_signal_unsafe=0
export GTEST_DEATH_TEST_STYLE=threadsafe
unset LAZYMM_NO_MEMBARRIER

preset_of() { case $1 in release) echo gcc-release ;; tsan) echo gcc-tsan ;; esac; }
flags_of() { case $1 in release) echo "" ;; tsan) echo "-O1 -g -fsanitize=thread" ;; esac; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# Summarises a ctest log: failing tests (typed-test parameters folded) and the first message
# that says how they failed.
summarise() {
  python3 - "$1" <<'PY'
import re, sys, collections
log = open(sys.argv[1], errors="replace").read()
failed = re.findall(r"^\s*\d+ - (\S+) \(([^)]*)\)", log.split("The following tests FAILED:")[-1], re.M) \
    if "The following tests FAILED:" in log else []
groups = collections.OrderedDict()
for name, why in failed:
    # suite/param.test -> suite.test
    m = re.match(r"([^/]+)/[^.]+\.(.+)$", name)
    key = f"{m.group(1)}.{m.group(2)}" if m else name
    groups.setdefault(key, []).append(why)
parts = []
for k, whys in groups.items():
    parts.append(k + (f" (x{len(whys)})" if len(whys) > 1 else ""))
tests = "; ".join(parts[:4]) + (f"; ... {len(parts) - 4} more" if len(parts) > 4 else "")
how = ""
for pat in [r"torture: FAIL: [^\n]*", r"lazymm: [^\n]*", r"WARNING: ThreadSanitizer: [^\n(]*",
            r"ERROR: AddressSanitizer: [^\n]*", r"runtime error: [^\n]*", r"\n[^\n]*Failure\n[^\n]*\n[^\n]*",
            r"Timeout"]:
    m = re.search(pat, log)
    if m:
        how = " ".join(m.group(0).split())[:160]
        break
print(f"{len(failed)}\t{tests}\t{how}")
PY
}

for m in "${mutants[@]}"; do
  flavours=(release)
  if [ $all_flavours = 1 ] || [ "$m" = none ] || [[ $memory_order_mutants == *" $m "* ]]; then flavours=(release tsan); fi
  [ $release_only = 0 ] || flavours=(release)
  [ $release_only = 1 ] || flavours+=(model)
  [ $model_only = 0 ] || flavours=(model)
  for f in "${flavours[@]}"; do
    if [ "$f" = model ]; then
      echo "=== mutant $m (model)" >&2
      if [ "$m" = none ]; then
        tests/model/run.sh --models rc11 >"build/mutant-model-none.log" 2>&1
        verdict=$([ $? = 0 ] && echo "control: passes" || echo "CONTROL FAILS")
        printf '%s\t%s\t%s\t%s\t%s\n' "$m" model "$verdict" "every harness, RC11" "$(tail -n 1 build/mutant-model-none.log)" >>"$results"
      else
        line=$(tests/model/run.sh --models rc11 --until-killed --mutant "$m" 2>&1 | tail -n 1)
        case $line in
          "killed by: "*) rest=${line#killed by: }
                          printf '%s\t%s\t%s\t%s\t%s\n' "$m" model "killed" "${rest%%: *}" "${rest#*: }" >>"$results" ;;
          *) printf '%s\t%s\t%s\t%s\t%s\n' "$m" model "SURVIVES" - "$line" >>"$results" ;;
        esac
      fi
      continue
    fi
    dir=$root/build/mutant-$f-$m
    src=$root/build/mutant-src-$m  # the tree with the mutant's patch applied to include/
    echo "=== mutant $m ($f): $dir" >&2
    rm -rf "$src" && mkdir -p "$src"
    tar -c --exclude=./build --exclude=./.git . | tar -x -C "$src"
    [ "$m" = none ] || tests/mutants/apply.sh "$m" "$src" || {
      printf '%s\t%s\tPATCH FAILED\t-\t-\n' "$m" "$f" >>"$results"; continue; }
    # One ctest test per unit test (the kill table names tests); a rerun that a hanging test holds
    # is stopped after 2 minutes.
    if ! (cd "$src" && cmake --preset "$(preset_of $f)" -B "$dir" -DLAZYMM_BUILD_EXAMPLES=OFF \
           -DLAZYMM_UNIT_SHARDS=0 -DLAZYMM_RERUN_TIMEOUT=120 "-DCMAKE_CXX_FLAGS=$(flags_of $f)") >"$dir.configure.log" 2>&1 ||
       ! cmake --build "$dir" -j2 >"$dir.build.log" 2>&1; then  # every test target (examples are off)
      printf '%s\t%s\tBUILD FAILED\t-\tsee %s.build.log\n' "$m" "$f" "$dir" >>"$results"
      continue
    fi
    # Not the consumers and version checks (no protocol in them), nor mutants.patches_apply (in a
    # mutant's copy its own patch is already applied).
    ctest --test-dir "$dir" -j2 --timeout 180 -E '^(consumer|version|mutants)\.' --output-on-failure >"$dir.ctest.log" 2>&1
    IFS=$'\t' read -r nfail tests how < <(summarise "$dir.ctest.log")
    if [ "$m" = none ]; then
      verdict=$([ "$nfail" = 0 ] && echo "control: passes" || echo "CONTROL FAILS")
    else
      verdict=$([ "$nfail" = 0 ] && echo "SURVIVES" || echo "killed ($nfail tests)")
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$m" "$f" "$verdict" "${tests:--}" "${how:--}" >>"$results"
    [ $keep = 1 ] || rm -rf "$dir" "$src"
  done
done

echo
echo "| mutant | flavour | verdict | killed by | how |"
echo "| --- | --- | --- | --- | --- |"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' "$results"

# Exit 1 if a control failed or a mutant survived every flavour it was built in.
python3 - "$results" <<'PY'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
killed = collections.defaultdict(bool)
bad = False
for m, f, verdict, *_ in rows:
    if m == "none":
        bad |= verdict != "control: passes"
    else:
        killed[m] |= verdict.startswith("killed")
survivors = [m for m, k in killed.items() if not k]
if survivors:
    print("\nsurvivors (killed in no flavour):", " ".join(survivors))
sys.exit(1 if bad or survivors else 0)
PY
