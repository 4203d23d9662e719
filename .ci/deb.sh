#!/usr/bin/env bash
# CI: build the Debian package liblazymm-dev with dpkg-buildpackage, install it with dpkg -i,
# build and run the consumers against it (CMake find_package, plain make + pkg-config, Meson)
# with no prefix or search path given, then purge it. Needs root (dpkg -i) and the packages
# .ci/run installs: build-essential debhelper cmake pkg-config meson ninja-build.
#
# The package is built from a copy of the working tree in a temporary directory, so that
# dpkg-buildpackage's output (written to the parent directory) and debian/'s build debris stay
# out of the checkout. .ci/deb.sh --keep leaves the package installed and prints where the
# .deb is.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
keep=0; [ "${1:-}" = --keep ] && keep=1
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
work=$(mktemp -d /tmp/lazymm-deb.XXXXXX)
[ $keep = 1 ] || trap 'rm -rf "$work"' EXIT
t0=$SECONDS

fail() { echo "deb.sh: FAIL: $*" >&2; exit 1; }
not_installed() {  # nothing of lazymm where a consumer would find it without being told
  if dpkg -s liblazymm-dev >/dev/null 2>&1; then fail "liblazymm-dev is $1 installed"; fi
  if pkg-config --exists lazymm; then fail "pkg-config finds a lazymm $1: $(pkg-config --variable=pcfiledir lazymm)"; fi
  for d in /usr/include/lazymm /usr/local/include/lazymm /usr/share/lazymm /usr/local/share/lazymm; do
    [ ! -e $d ] || fail "$d exists $1"
  done
}

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
deb=liblazymm-dev_${version}_all.deb
not_installed "before the test:"

# 1. Build: dpkg-buildpackage on a copy (tracked and untracked files, not build/ or .git).
mkdir "$work/lazymm-${version%-*}"
tar -C "$src" --exclude=./build --exclude=./out --exclude=./.git --exclude='./obj-*' -cf - . |
  tar -C "$work/lazymm-${version%-*}" -xf -
(cd "$work/lazymm-${version%-*}" && dpkg-buildpackage -us -uc -b)
[ -f "$work/$deb" ] || fail "dpkg-buildpackage made no $deb"

# 2. What is in it.
[ "$(dpkg-deb -f "$work/$deb" Architecture)" = all ] || fail "$deb is not Architecture: all"
dpkg-deb -c "$work/$deb" | awk '{print $6}' > "$work/contents"
for f in ./usr/include/lazymm/lazymm.hpp ./usr/include/lazymm/version.hpp ./usr/include/lazymm/detail/protocol.hpp \
         ./usr/share/lazymm/cmake/lazymm-config.cmake ./usr/share/lazymm/cmake/lazymm-config-version.cmake \
         ./usr/share/lazymm/cmake/lazymm-targets.cmake ./usr/share/pkgconfig/lazymm.pc \
         ./usr/share/doc/liblazymm-dev/copyright ./usr/share/doc/liblazymm-dev/docs/api.md; do
  grep -qx "$f\(\.gz\)\?" "$work/contents" || fail "$deb lacks $f"  # dh_compress: docs over 4 kB
done
if grep -q '^\./usr/lib/' "$work/contents"; then fail "$deb has files under /usr/lib (arch-dependent)"; fi
echo "deb.sh: $deb: $(grep -vc '/$' "$work/contents") files, Architecture: all"

# 3. Install, build the consumers against the system, purge.
$SUDO dpkg -i "$work/$deb"
[ "$(pkg-config --modversion lazymm)" = "${version%-*}" ] || fail "pkg-config --modversion lazymm: $(pkg-config --modversion lazymm)"
cmake -S tests/consumer/find_package -B "$work/find_package" -G Ninja
cmake --build "$work/find_package"
grep -q '^lazymm_DIR:PATH=/usr/share/lazymm/cmake$' "$work/find_package/CMakeCache.txt" ||
  fail "find_package(lazymm) did not find the package: $(grep ^lazymm_DIR "$work/find_package/CMakeCache.txt")"
"$work/find_package/consumer"
LAZYMM_CONSUMERS_REQUIRED=1 tests/consumer/run.sh make "$work/make"
LAZYMM_CONSUMERS_REQUIRED=1 tests/consumer/run.sh meson "$work/meson"
if [ $keep = 1 ]; then echo "deb.sh: $work/$deb installed (--keep)"; exit 0; fi
$SUDO dpkg --purge liblazymm-dev
not_installed "after the purge:"
echo "deb.sh: PASS ($((SECONDS - t0)) s): built, installed, consumers (find_package, make, by hand, Meson) built against it, purged"
