#!/usr/bin/env bash
# tests/mutants/apply.sh NAME DIR: copies this tree's include/ to DIR/include and applies the
# mutant NAME (tests/mutants/NAME.patch) to the copy; the shipping headers never carry a mutant.
# With --check instead of DIR: exits 0 when every patch (or NAME's) still applies to include/.
# A patch is a small diff against include/ (paths a/include/...); to write one, edit a copy,
# `diff -u` it against include/, and add its name to the kill table in docs/testing.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
command -v patch >/dev/null || { echo "mutants: patch not installed (apt-get install patch)" >&2; exit 2; }
if [ "${1:-}" = --check ]; then
  shift
  names=("$@")
  [ ${#names[@]} -gt 0 ] || names=($(cd "$here" && ls *.patch | sed 's/\.patch$//'))
  bad=0
  for n in "${names[@]}"; do
    if ! patch --dry-run --silent -p1 -d "$root" <"$here/$n.patch" >/dev/null; then
      echo "mutants: $n.patch no longer applies to include/ (update it)"; bad=1
    fi
  done
  [ $bad = 0 ] && echo "mutants: all ${#names[@]} patches apply"
  exit $bad
fi
[ $# -eq 2 ] || { sed -n '2,6p' "$0"; exit 2; }
name=$1 dir=$2
[ -f "$here/$name.patch" ] || { echo "mutants: no mutant $name (tests/mutants/$name.patch)" >&2; exit 2; }
mkdir -p "$dir"
rm -rf "$dir/include"
cp -r "$root/include" "$dir/include"
patch --silent -p1 -d "$dir" <"$here/$name.patch" || { echo "mutants: $name.patch does not apply" >&2; exit 1; }
