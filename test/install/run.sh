#!/bin/sh
# run.sh BUILD_DIR - install weft from BUILD_DIR into BUILD_DIR/install-root
# and build and run smoke.c against it four ways: the CMake package (shared
# and static targets), pkg-config from CMake, and a plain
# `cc $(pkg-config --cflags --libs weft)`. Exits non-zero on any failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
prefix=$build/install-root
work=$build/install-test
rm -rf "$prefix" "$work"
mkdir -p "$work"

cmake --install "$build" --prefix "$prefix" >"$work/install.log"

step() { echo "install test: $*"; }

for target in weft::weft weft::weft_static; do
  dir=$work/cmake-$(echo "$target" | sed 's/.*:://')
  step "find_package(weft) + $target"
  cmake -S "$here" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" \
    -DWEFT_TARGET="$target" >"$dir.log"
  cmake --build "$dir" >>"$dir.log"
  "$dir/smoke"
done

PKG_CONFIG_PATH=$(dirname "$(find "$prefix" -name weft.pc | head -n 1)")
export PKG_CONFIG_PATH

step "pkg_check_modules(weft) in CMake"
dir=$work/cmake-pkg-config
cmake -S "$here" -B "$dir" -DWEFT_USE_PKG_CONFIG=ON >"$dir.log"
cmake --build "$dir" >>"$dir.log"
"$dir/smoke"

step "cc \$(pkg-config --cflags --libs weft)"
libdir=$(pkg-config --variable=libdir weft)
# shellcheck disable=SC2046 # pkg-config prints words.
${CC:-cc} -o "$work/smoke-cc" "$here/smoke.c" $(pkg-config --cflags --libs weft)
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$work/smoke-cc"
