#!/usr/bin/env bash
# The guard's own test, two mutants of a copy of include/ that must each fail it, while this tree
# passes the same subset:
#   a shared store on the fast path (the record's waiters word, which reclaimers write: the
#   cache-line bounce S4 forbids): lazy_pair OVER BUDGET;
#   go_lazy out of line (noinline): the lazy pair's fast path makes a call (CALLS).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# mutate FILE OLD NEW: replace the one occurrence of OLD (exit 1 if it is not there exactly once).
mutate() {
  python3 - "$@" <<'PY'
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
if s.count(old) != 1: sys.exit(1)
open(p, "w").write(s.replace(old, new))
PY
}
f=lazymm/executor.hpp
anchor='    lazy_ = false;
    // Relaxed load of our own slot: see loaded().'
cp -r "$root/include" "$work/store"
mutate "$work/store/$f" "$anchor" "    rec->waiters.store(0, std::memory_order_relaxed);  // mutant
$anchor" || { echo "selftest: switch_to's anchor in $f is gone; update selftest.sh"; exit 1; }
cp -r "$root/include" "$work/call"
mutate "$work/call/$f" "[[gnu::always_inline]] void go_lazy()" "[[gnu::noinline]] void go_lazy()" ||
  { echo "selftest: go_lazy's declaration in $f changed; update selftest.sh"; exit 1; }

export PERF_POLICIES="implicit_shootdown" PERF_BACKENDS="membarrier" PERF_CASES="lazy_pair"
"$here/check.sh" || { echo "selftest: the unmutated tree fails the subset"; exit 1; }
caught() {  # include-dir pattern what
  local out rc
  out=$("$here/check.sh" --include "$1"); rc=$?
  echo "$out" | grep -E "^\| lazy_pair"
  if [ $rc -ne 0 ] && grep -qE "$2" <<<"$out"; then echo "selftest: the guard caught $3"; return 0; fi
  echo "selftest: the guard did NOT catch $3"; return 1
}
caught "$work/store" "\| lazy_pair \| implicit_shootdown \| membarrier \| [0-9]+ \| 10 \| .*OVER BUDGET" \
  "a shared store on the fast path" || exit 1
caught "$work/call" "\| lazy_pair \| implicit_shootdown \| membarrier \| .*CALLS" "a call on the fast path" || exit 1
