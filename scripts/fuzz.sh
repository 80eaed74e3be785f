#!/usr/bin/env bash
# fuzz.sh - what `make fuzz` runs: build the libFuzzer targets of test/fuzz
# with clang (ASan + UBSan, build-fuzz/) and run each for FUZZ_SECONDS.
#
#   FUZZ_SECONDS  seconds per target (default 300)
#   FUZZ_TARGETS  space-separated subset (default: all of test/fuzz/fuzz_*.c)
#   FUZZ_JOBS     parallel fuzzing processes per target (default 1)
#   FUZZ_CC       compiler (default clang; libFuzzer needs clang)
#
# Each target starts from its seed corpus (test/fuzz/corpus/<target>, read
# only) plus what earlier runs found (build-fuzz/corpus/<target>, kept
# between runs). A crash leaves its input as build-fuzz/artifacts/<target>-*
# and fails the run; copy it into test/fuzz/corpus/<target>/regress-NAME and
# replay it in test/test_fuzz_regress.c once fixed. Prints per target the
# executions, coverage (libFuzzer's cov/ft) and corpus size, then
# "make fuzz: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

FUZZ_SECONDS=${FUZZ_SECONDS:-300}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_CC=${FUZZ_CC:-clang}
JOBS=${JOBS:-2}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

if [ -z "${FUZZ_TARGETS:-}" ]; then
  FUZZ_TARGETS=$(cd test/fuzz && ls fuzz_*.c | sed 's/\.c$//' | tr '\n' ' ')
fi

if ! CC=$FUZZ_CC cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug \
       -DWEFT_WERROR=ON -DWEFT_SANITIZE=address,undefined \
       -DWEFT_BUILD_FUZZ=ON -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_SAMPLES=OFF ||
   ! cmake --build build-fuzz -j "$JOBS"; then
  echo "make fuzz: build failed" >&2
  exit 1
fi

passed=0
failed=0
mkdir -p build-fuzz/artifacts
for t in $FUZZ_TARGETS; do
  work=build-fuzz/corpus/$t
  log=build-fuzz/$t.log
  mkdir -p "$work"
  echo "=== $t: ${FUZZ_SECONDS}s"
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=20 -rss_limit_mb=4096
        -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t-")
  if [ "$FUZZ_JOBS" -gt 1 ]; then
    args+=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
  fi
  "build-fuzz/test/fuzz/$t" "${args[@]}" "$work" "test/fuzz/corpus/$t" \
    >"$log" 2>&1
  rc=$?
  execs=$(grep -h 'stat::number_of_executed_units' "$log" |
          awk '{s += $2} END {print s + 0}')
  last=$(grep -hE '^#[0-9]+' "$log" | tail -n 1)
  cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/.*/cov \1, ft \2, corpus \3/p' <<<"$last")
  echo "$t: $execs executions, ${cov:-no coverage line}, rc $rc"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    grep -hE 'ERROR|SUMMARY|check failed|Test unit written' "$log" | head -n 5
  fi
done
echo "make fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
