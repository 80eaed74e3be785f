#!/usr/bin/env bash
# test.sh - what `make test` runs after `make deps`: three builds, each with
# -Werror and its own ctest run, then the install test (test/install).
#
#   build       gcc, Debug                                  all tests + samples
#   build-asan  gcc, Debug, -fsanitize=address,undefined    all tests + samples
#   build-tsan  gcc, Debug, -fsanitize=thread               scenario_*.c only
#                (Criterion 2.4.1 aborts at start-up under TSan)
#   build-fuzz  clang, -fsanitize=fuzzer,address,undefined  test/fuzz, briefly
# then the install test; and first, as a step of its own, scripts/lint.sh
# (clang-tidy and cppcheck on lib/ and transport/).
#
# Environment: JOBS (default 2), CC (default gcc), TSAN_CC (default $CC;
# clang works too). BUILD_SUFFIX goes after "build" in every folder name
# (default "-clang" when CC is clang, else empty), so that `CC=clang make
# test` builds build-clang/, build-clang-asan/, build-clang-tsan/ and never
# reuses a gcc folder. LINT=0 skips the lint step and FUZZ=0 the fuzz
# build (.ci/run does both once).
# Prints "make test: N passed, M failed" and exits non-zero if anything
# failed or did not build.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

JOBS=${JOBS:-2}
CC=${CC:-gcc}
TSAN_CC=${TSAN_CC:-$CC}
case $(basename "$CC") in
  clang*) BUILD_SUFFIX=${BUILD_SUFFIX--clang} ;;
  *) BUILD_SUFFIX=${BUILD_SUFFIX-} ;;
esac
LINT=${LINT:-1}

# Any sanitizer report must fail the test that produced it.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# history_size=7: TSan keeps more of each thread's past accesses, so that a
# report's "previous access" has its stack (at 2, the default, a rare report
# in scenario_soak said only "failed to restore the stack").
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=7:suppressions=$PWD/test/tsan.supp"

passed=0
failed=0
problems=()

# Allocation-failure injection (lib/failpoint.c) in every test build:
# test/scenario_allocfail.c fails each allocation of the main scenarios.
export WEFT_FAILPOINTS=ON

# run_build DIR COMPILER [CMAKE_ARGS...]: configure, build, ctest. DIR is
# build, build-asan or build-tsan; BUILD_SUFFIX goes in after "build".
run_build() {
  local dir=build$BUILD_SUFFIX${1#build} cc=$2
  shift 2
  echo "=== $dir: $cc $*"
  # CC only matters the first time a build folder is configured.
  if ! CC=$cc cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug \
         -DWEFT_WERROR=ON "$@" ||
     ! cmake --build "$dir" -j "$JOBS"; then
    failed=$((failed + 1))
    problems+=("$dir: configure or build failed")
    return
  fi

  local wrap=()
  # gcc 12's TSan cannot map its shadow memory when the kernel uses more
  # than 28 bits of mmap randomness; run without ASLR there.
  if [[ $dir == *tsan* ]] && command -v setarch >/dev/null &&
     [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ] &&
     setarch "$(uname -m)" -R true 2>/dev/null; then
    wrap=(setarch "$(uname -m)" -R)
  fi

  local log=$dir/ctest.log
  # ${wrap[@]+...}: an empty array is "unbound" under set -u before bash 4.4.
  (cd "$dir" && ${wrap[@]+"${wrap[@]}"} ctest --output-on-failure \
     --no-tests=ignore -j "$JOBS") 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line total bad
  line=$(grep -E '[0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    bad=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  else
    bad=0 total=0
  fi
  passed=$((passed + total - bad))
  failed=$((failed + bad))
  if [ "$bad" -ne 0 ]; then
    problems+=("$dir: $bad of $total tests failed")
  elif [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    problems+=("$dir: ctest exited with $rc")
  fi
}

if [ "$LINT" != 0 ]; then
  echo "=== lint: scripts/lint.sh"
  if scripts/lint.sh; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    problems+=("lint: clang-tidy or cppcheck findings (scripts/lint.sh)")
  fi
fi

# test_node's foreign client (test/interop/weft_client.mjs) runs on Node.js
# with the `nats` and `@msgpack/msgpack` packages from npm, at the versions
# of its package-lock.json.
if [ ! -d test/interop/node_modules/nats ]; then
  echo "=== npm ci (test/interop: nats, @msgpack/msgpack)"
  if ! (cd test/interop && npm ci --no-audit --no-fund --silent); then
    failed=$((failed + 1))
    problems+=("npm ci in test/interop failed: test_node's Node.js client cannot run")
  fi
fi

run_build build "$CC"
run_build build-asan "$CC" -DWEFT_SANITIZE=address,undefined
run_build build-tsan "$TSAN_CC" -DWEFT_SANITIZE=thread \
  -DWEFT_BUILD_CRITERION_TESTS=OFF

# --- Fuzzing (test/fuzz) ----------------------------------------------------
# clang + libFuzzer, ASan + UBSan: each target runs FUZZ_SECONDS_SHORT
# (default 5) seconds from its seed corpus as a ctest test; `make fuzz`
# runs them for minutes.
# FUZZ=0 skips it (.ci/run fuzzes once, in the gcc pass).
FUZZ_CC=${FUZZ_CC:-clang}
if [ "${FUZZ:-1}" = 0 ]; then
  echo "=== build-fuzz: skipped (FUZZ=0)"
elif command -v "$FUZZ_CC" >/dev/null; then
  run_build build-fuzz "$FUZZ_CC" -DWEFT_SANITIZE=address,undefined \
    -DWEFT_BUILD_FUZZ=ON -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_SAMPLES=OFF \
    -DWEFT_FUZZ_SECONDS="${FUZZ_SECONDS_SHORT:-5}"
else
  failed=$((failed + 1))
  problems+=("build-fuzz: $FUZZ_CC not found (apt-get install clang libfuzzer-14-dev)")
fi

echo "=== install test"
if [ -f "build$BUILD_SUFFIX/CMakeCache.txt" ] &&
   CC=$CC test/install/run.sh "build$BUILD_SUFFIX"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  problems+=("install test failed")
fi

for p in "${problems[@]+"${problems[@]}"}"; do
  echo "FAILED: $p"
done
echo "make test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
