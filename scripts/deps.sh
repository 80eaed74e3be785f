#!/bin/sh
# deps.sh [--bench] - install the Debian packages weft needs, only if missing.
#
# Build: build-essential cmake pkg-config libuv1-dev libmsgpack-dev
# libmimalloc-dev libnats-dev (lib/node.c); samples/mandelbrot: libpng-dev;
# samples/login_api: libhttp-parser-dev and libsodium-dev; tests:
# libcriterion-dev and gcc's sanitizer runtimes (libasan8 libtsan2
# libubsan1, which libgcc-12-dev normally pulls in), nats-server and openssl
# (test_node starts its own servers and makes their TLS certificates), and
# nodejs and npm (test/interop: test_node's Node.js client; installed only
# when no `node` or `npm` is on PATH).
# With --bench, also wrk (the login API's load), the Savina peers
# libcaf-dev and erlang-nox, and gnuplot-nox (bench/chart.sh draws the
# charts).
set -eu

pkgs="build-essential cmake pkg-config libuv1-dev libmsgpack-dev libnats-dev nats-server openssl
      libmimalloc-dev libpng-dev libhttp-parser-dev libsodium-dev
      libcriterion-dev libasan8 libtsan2 libubsan1"
# scripts/lint.sh (make test, make lint) and the clang builds of .ci/run.
pkgs="$pkgs clang clang-tidy cppcheck"
# test_node's Node.js client (test/interop): node and npm.
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
if [ "${1:-}" = "--bench" ]; then
  pkgs="$pkgs wrk libcaf-dev erlang-nox gnuplot-nox libzmq3-dev"
fi
# Fuzzing (test/fuzz, `make fuzz` and a short run in `make test`).
pkgs="$pkgs clang libfuzzer-14-dev libclang-rt-14-dev"

if ! command -v dpkg-query >/dev/null 2>&1; then
  # shellcheck disable=SC2086 # $pkgs is a list of words.
  echo "deps.sh: not a Debian system; make sure these are installed:" $pkgs >&2
  exit 0
fi

missing=""
for p in $pkgs; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "deps.sh: all packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1; then
  sudo="sudo"
else
  echo "deps.sh: missing:$missing; run as root or install sudo" >&2
  exit 1
fi

echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
# shellcheck disable=SC2086 # $missing is a list of words.
$sudo env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends $missing
