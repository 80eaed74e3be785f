# Thin driver over CMake. `make demo` and `make test` install what is
# missing (scripts/deps.sh), build, and run. Compilers: gcc for every build
# unless CC=... (or TSAN_CC=... for build-tsan) is given on first configure.
JOBS ?= 2
PREFIX ?= /usr/local
export JOBS

.PHONY: all deps build demo test soak lint bench install clean
all: build

deps:
	@scripts/deps.sh

build: deps
	CC=$${CC:-gcc} cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug
	cmake --build build -j $(JOBS)

# The flagship: count primes on one thread and on a worker pool
# (weft_pool_for over a shared buffer), with the speedup and the pool's
# statistics. Then the login API (samples/login_api.c): a burst of logins
# hashed on the pool while GET /health is timed on the loop, in one
# process and in a cluster of two (scripts/login_demo.sh). An optimized
# build of its own, so the times mean something.
DEMO_N ?= 20000000
demo: deps
	CC=$${CC:-gcc} cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release \
	  -DWEFT_BUILD_TESTS=OFF
	cmake --build build-demo -j $(JOBS) --target sample_parallel_primes \
	  sample_login_api sample_login_client
	build-demo/samples/parallel_primes $(DEMO_N)
	scripts/login_demo.sh build-demo
	scripts/login_demo.sh build-demo --workers 2

# Lints (scripts/lint.sh), builds build/, build-asan/ and build-tsan/, runs
# ctest in each (scenario_soak runs ~10 s there), then the install test;
# ends with "make test: N passed, M failed". CC=clang: build-clang*/.
test: deps
	@scripts/test.sh

# The long soak: test/scenario_soak.c for SOAK_SECONDS (default 300) in the
# Debug build; fails on any lost, duplicated, reordered or corrupt message
# and, from 60 s on, if RSS grows by more than 32 MiB after the warm-up.
# SOAK_SEED=N replays a run.
SOAK_SECONDS ?= 300
soak: build
	build/test/scenario_soak $(SOAK_SECONDS)

# clang-tidy (.clang-tidy) and cppcheck (.cppcheck-suppressions) on lib/
# and transport/; any finding fails.
lint: deps
	@scripts/lint.sh

bench:
	@scripts/deps.sh --bench
	CC=$${CC:-gcc} cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release \
	  -DWEFT_BUILD_BENCH=ON -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_SAMPLES=ON
	cmake --build build-bench -j $(JOBS)  # weft_bench, weft_floor, scrypt_rate, samples/login_api (bench/login.sh)
	@if [ -f bench/run.sh ]; then bash bench/run.sh; \
	 else echo "make bench: bench/run.sh is missing" >&2; exit 1; fi

# libFuzzer targets (test/fuzz), clang, FUZZ_SECONDS (default 300) per
# target; see scripts/fuzz.sh. `make test` runs each for a few seconds.
.PHONY: fuzz
fuzz: deps
	@scripts/fuzz.sh

# An optimized build of its own (build/ is Debug, for the tests).
install: deps
	CC=$${CC:-gcc} cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release \
	  -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_SAMPLES=OFF
	cmake --build build-release -j $(JOBS)
	cmake --install build-release --prefix $(PREFIX)

clean:
	rm -rf build build-asan build-tsan build-bench build-release build-lint build-demo \
	  build-clang build-clang-asan build-clang-tsan
