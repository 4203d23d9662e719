#!/bin/sh
# tests/consumer/run.sh make|meson BUILD_DIR [CXX]
#
# Builds tests/consumer/consumer.cpp with plain make (tests/consumer/pkg-config/Makefile) and the
# compiler alone (`c++ -std=c++20 app.cpp $(pkg-config --cflags --libs lazymm)`), or with
# Meson (tests/consumer/meson/), lazymm found through pkg-config, and runs it. Which lazymm is
# whatever pkg-config finds: ctest sets PKG_CONFIG_LIBDIR to its temporary install prefix,
# .ci/deb.sh leaves it alone so that the installed Debian package is found.
#
# A missing tool is a skip (exit 77, ctest: "Not Run (Skipped)") with the package to install,
# unless LAZYMM_CONSUMERS_REQUIRED=1 (CI), where it is a failure.
set -eu
kind=$1 build=$2
export CXX="${3:-${CXX:-c++}}"
here=$(cd "$(dirname "$0")" && pwd)

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "consumer.$kind: $1 not found: apt-get install $2"
  if [ "${LAZYMM_CONSUMERS_REQUIRED:-0}" = 1 ]; then echo "FAIL (LAZYMM_CONSUMERS_REQUIRED=1)"; exit 1; fi
  echo "skipped"; exit 77
}

need pkg-config pkg-config
echo "pkg-config: lazymm $(pkg-config --modversion lazymm 2>/dev/null || echo '(not found)')" \
     "--cflags --libs: $(pkg-config --cflags --libs lazymm 2>/dev/null || true)"
rm -rf "$build"
mkdir -p "$build"
case $kind in
  make)
    need make make
    make -C "$build" -f "$here/pkg-config/Makefile"
    # and README's by-hand line
    (cd "$build" && set -x && $CXX -std=c++20 -Werror "$here/consumer.cpp" $(pkg-config --cflags --libs lazymm) -o consumer-by-hand)
    "$build/consumer-by-hand"
    ;;
  meson)
    need meson meson
    need ninja ninja-build
    meson setup "$build" "$here/meson"
    meson compile -C "$build"
    ;;
  *) echo "usage: $0 make|meson BUILD_DIR [CXX]" >&2; exit 2 ;;
esac
"$build/consumer"
