#!/usr/bin/env bash
# login_demo.sh BUILD_DIR [LOGIN_API_ARGS...] - the end of `make demo`:
# start samples/login_api on a free port, run a burst of logins with
# samples/login_client while it times GET /health, then stop the server
# with SIGTERM and check that it exited 0 (a graceful stop).
#
# Environment: LOGINS (default 40), CONCURRENCY (default 8).
set -euo pipefail
dir=${1:?usage: login_demo.sh BUILD_DIR [LOGIN_API_ARGS...]}
shift
out=$(mktemp "${TMPDIR:-/tmp}/login_api.XXXXXX")
"$dir/samples/login_api" --port 0 "$@" >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT

# The server prints "listening on http://HOST:PORT" once it is ready.
port=
for _ in $(seq 600); do
  port=$(sed -n 's|^listening on http://.*:\([0-9]*\)$|\1|p' "$out")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "login_demo: login_api ended" >&2; exit 1; }
  sleep 0.05
done
[ -n "$port" ] || { echo "login_demo: login_api did not start" >&2; exit 1; }

echo "== login_api${*:+ $*} on port $port: ${LOGINS:-40} logins, ${CONCURRENCY:-8} at a time, GET /health every 5 ms"
rc=0
"$dir/samples/login_client" --port "$port" --logins "${LOGINS:-40}" \
  --concurrency "${CONCURRENCY:-8}" --health-interval-ms 5 || rc=$?

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
trap 'rm -f "$out"' EXIT
if [ "$status" -ne 0 ]; then
  echo "login_demo: login_api exited with status $status after SIGTERM" >&2
  exit 1
fi
echo "login_api stopped on SIGTERM with exit code 0"
exit "$rc"
