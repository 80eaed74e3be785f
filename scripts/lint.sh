#!/usr/bin/env bash
# lint.sh - static analysis of lib/, transport/ and actors/: clang-tidy with the
# checks in .clang-tidy, then cppcheck with .cppcheck-suppressions. Any
# finding fails (exit 1). Run by `make lint` and as one step of `make test`.
#
# clang-tidy reads the compile flags from the compile_commands.json of a
# configure-only build in build-lint/ (CMAKE_EXPORT_COMPILE_COMMANDS=ON,
# clang when installed, so the flags are clang's). cppcheck gets the same
# include directories and definitions as lib/ (CMakeLists.txt).
#
# Environment: JOBS (default 2): files checked in parallel; LINT_DIR
# (default build-lint).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

JOBS=${JOBS:-2}
LINT_DIR=${LINT_DIR:-build-lint}

tidy=$(command -v clang-tidy || command -v clang-tidy-14 || true)
if [ -z "$tidy" ] || ! command -v cppcheck >/dev/null; then
  echo "lint: clang-tidy and cppcheck are needed (Debian: apt-get install" \
       "clang-tidy cppcheck; scripts/deps.sh installs them)" >&2
  exit 1
fi

cc=gcc
command -v clang >/dev/null && cc=clang
# Configure only: compile_commands.json is written at configure time.
mkdir -p "$LINT_DIR"
if ! CC=$cc cmake -S . -B "$LINT_DIR" -DCMAKE_BUILD_TYPE=Debug \
       -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DWEFT_BUILD_TESTS=OFF \
       -DWEFT_BUILD_SAMPLES=OFF >"$LINT_DIR/configure.log" 2>&1; then
  cat "$LINT_DIR/configure.log" >&2
  echo "lint: cmake configure of $LINT_DIR failed" >&2
  exit 1
fi

sources=(lib/*.c transport/*.c actors/*.c)
status=0

echo "lint: $("$tidy" --version | grep -m1 -o 'version [0-9.]*') on" \
     "${#sources[@]} files (checks from .clang-tidy)"
# One file per process, JOBS at a time; --quiet drops the "N warnings
# suppressed" noise, the exit code says whether anything was reported.
if ! printf '%s\n' "${sources[@]}" |
     xargs -P "$JOBS" -n 1 "$tidy" -p "$LINT_DIR" --quiet 2>/dev/null; then
  echo "lint: clang-tidy reported findings (above)" >&2
  status=1
fi

echo "lint: $(cppcheck --version) on lib/ transport/ actors/"
# -D: what CMakeLists.txt defines for lib/, and the compiler and platform
# (so cppcheck checks the configuration that is built, not every #ifdef).
if ! cppcheck --std=c11 --platform=unix64 --quiet -j "$JOBS" \
       --enable=warning,style,performance,portability \
       --inline-suppr --suppressions-list=.cppcheck-suppressions \
       --error-exitcode=1 \
       -Iinclude -Ilib -Itransport \
       -D_GNU_SOURCE -D_POSIX_C_SOURCE=200809L \
       -D__GNUC__ -D__linux__ -D__x86_64__ \
       --template='{file}:{line}: {severity}: {message} [{id}]' \
       lib transport actors; then
  echo "lint: cppcheck reported findings (above)" >&2
  status=1
fi

if [ "$status" -eq 0 ]; then
  echo "lint: clean (clang-tidy, cppcheck)"
fi
exit "$status"
