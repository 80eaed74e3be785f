#!/usr/bin/env bash
# bench/login.sh - the login API under load with wrk, weft
# (samples/login_api.c) vs Node (bench/node/login_api.js), one process and
# cluster mode, with the floor (how many of these scrypt hashes per second
# the cores do, bench/scrypt_rate.c) measured in the same run. bench/run.sh
# calls it; it also runs alone:
#
#   bench/login.sh                      # after make bench (or the build below)
#   BENCH_ROUNDS=1 BENCH_LOGIN_SECONDS=5 bench/login.sh    # a quick look
#
# Per round: Node's hash with fresh pages per hash (as libsodium's: see
# README.md), then for each server (weft, node; who goes first alternates)
# and mode (one process; cluster with --workers = CPUs): measure the floor
# of that server's hash (libsodium in C, or Node's crypto.scrypt), start the
# server on a free port,
# wait for its `listening on http://HOST:PORT` line (fail loudly if it never
# comes), check that a good login answers 200, a wrong password 401 and
# /health 200, probe /health alone for WARMUP s (the "idle" latency), load
# both for WARMUP s (warm-up, discarded), let the pool drain, then run two
# wrk at once for SECONDS: one loading POST /login on 2 x CPUs connections,
# one probing GET /health on 2 connections, each pausing HEALTH_DELAY_MS
# between a response and its next request (bench/wrk/health.lua: a light
# probe, not a closed loop that would take a core from the hashing). Then
# SIGTERM the server (its whole process group after 5 s) and measure the
# floor again (the run is held against the mean of the two). Reports the
# medians over rounds as a markdown table on stdout; progress on stderr.
#
# Environment:
#   BENCH_LOGIN_ROUNDS   rounds (default: BENCH_ROUNDS, else 3)
#   BENCH_LOGIN_SECONDS  length of the measured window (default 15)
#   BENCH_LOGIN_WARMUP   idle probe and warm-up length (default 3)
#   BENCH_LOGIN_FLOOR_SECONDS  length of each floor measurement (default 4)
#   BENCH_LOGIN_SIDES    "weft node" (default) or one of them
#   BENCH_LOGIN_MODES    "single cluster" (default) or one of them
#   BENCH_LOGIN_CONNS    login connections (default 2 x CPUs)
#   BENCH_LOGIN_WORKERS  processes in cluster mode (default: CPUs)
#   BENCH_LOGIN_THREADS  hashing threads per process: weft --threads, Node
#                        UV_THREADPOOL_SIZE (default: each server's best
#                        measured setting: weft its own default, CPUs /
#                        processes; Node CPUs in every process)
#   BENCH_HEALTH_CONNS   /health connections (default 2)
#   BENCH_HEALTH_DELAY_MS  pause per /health connection (default 8; 0 = closed loop)
#   BENCH_QUIET_WAIT     as in run.sh: wait up to this many s for a quiet machine
#   BENCH_LOGIN_OUT      also write the report to this file
#   BENCH_LOGIN_START_TIMEOUT  seconds a server has to print its line (30)
#   WEFT_LOGIN_API       weft server (default build-bench/samples/login_api)
#   WEFT_SCRYPT_RATE     floor binary (default build-bench/bench/scrypt_rate)
#   NODE, WRK            node and wrk binaries
#
# Build: cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release \
#          -DWEFT_BUILD_BENCH=ON -DWEFT_BUILD_TESTS=OFF && cmake --build build-bench
# (what `make bench` does).
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root" || exit 1

CPUS=$(nproc)
ROUNDS=${BENCH_LOGIN_ROUNDS:-${BENCH_ROUNDS:-3}}
SECS=${BENCH_LOGIN_SECONDS:-15}
WARMUP=${BENCH_LOGIN_WARMUP:-3}
FLOOR_SECS=${BENCH_LOGIN_FLOOR_SECONDS:-4}
SIDES=${BENCH_LOGIN_SIDES:-"weft node"}
MODES=${BENCH_LOGIN_MODES:-"single cluster"}
LOGIN_CONNS=${BENCH_LOGIN_CONNS:-$((2 * CPUS))}
WORKERS=${BENCH_LOGIN_WORKERS:-$CPUS}
THREADS=${BENCH_LOGIN_THREADS:-}
HEALTH_CONNS=${BENCH_HEALTH_CONNS:-2}
export HEALTH_DELAY_MS=${BENCH_HEALTH_DELAY_MS:-8}
QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
OUT=${BENCH_LOGIN_OUT:-}
WEFT_LOGIN=${WEFT_LOGIN_API:-build-bench/samples/login_api}
SCRYPT_RATE=${WEFT_SCRYPT_RATE:-build-bench/bench/scrypt_rate}
NODE=${NODE:-node}
WRK=${WRK:-wrk}
START_TIMEOUT=${BENCH_LOGIN_START_TIMEOUT:-30}
GOOD='user=alice&password=wonderland'
BAD='user=alice&password=wonderlant'

say() { echo "$*" >&2; }
die() { say "login.sh: $*"; exit 1; }

command -v "$WRK" >/dev/null 2>&1 || die "wrk not found (scripts/deps.sh --bench installs it)"
command -v "$NODE" >/dev/null 2>&1 || die "node not found ($NODE)"
have_weft=1
if [ ! -x "$WEFT_LOGIN" ]; then
  say "login.sh: no weft login API at $WEFT_LOGIN: the weft rows will say 'pending'"
  have_weft=0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-login.XXXXXX")
server_pid=""
wrk_pids=""
failed=0

# Stop the server we started: SIGTERM to it (it exits 0 and takes its
# cluster children along), then to its process group (setsid made it the
# group's leader: only what it started is in there), then SIGKILL.
is_alive() { # PID: alive and not a zombie
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
stop_server() {
  local pid=$server_pid rc was_alive=0
  [ -n "$pid" ] || return 0
  server_pid=""
  is_alive "$pid" && was_alive=1
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do is_alive "$pid" || break; sleep 0.1; done
  if is_alive "$pid"; then
    say "  server $pid still running 5 s after SIGTERM: killing its process group"
    kill -KILL -- "-$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  rc=$?
  [ "$rc" -ne 0 ] && [ $was_alive -eq 1 ] &&
    say "  note: server $pid exited with status $rc after SIGTERM (expected 0)"
  # Children of a cluster that outlived their primary.
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null
    sleep 1
    kill -KILL -- "-$pid" 2>/dev/null
    say "  note: processes of server $pid's group outlived it: killed"
  fi
  return 0
}
# shellcheck disable=SC2317 # run by the trap below
cleanup() {
  local p
  for p in $wrk_pids; do kill "$p" 2>/dev/null; done
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# cpu_busy and wait_quiet (a quiet machine before each run).
# shellcheck source=bench/cpu_busy.sh
. "$here/cpu_busy.sh"
# shellcheck source=bench/fmt.sh
. "$here/fmt.sh"

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' && return
  fi
  local p
  while p=$((20000 + RANDOM % 40000)); ss -Htln "sport = :$p" | grep -q .; do :; done
  echo "$p"
}

# /proc/stat totals "busy total" (jiffies), all CPUs.
cpu_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# CPU time (jiffies) of every process in process group $1.
group_ticks() {
  local p
  for p in $(pgrep -g "$1"); do cat "/proc/$p/stat"; done 2>/dev/null |
    awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}

# start_server SIDE MODE: sets server_pid and url, or returns 1 (reported).
start_server() {
  local side=$1 mode=$2 port log="$tmp/server.log" line
  local -a cmd
  port=$(free_port)
  case $side in
    weft) cmd=("$WEFT_LOGIN" --host 127.0.0.1 --port "$port"
               ${THREADS:+--threads "$THREADS"}) ;;
    node) cmd=(env "UV_THREADPOOL_SIZE=${THREADS:-$CPUS}" "$NODE" "$here/node/login_api.js"
               --host 127.0.0.1 --port "$port" --threads "${THREADS:-$CPUS}") ;;
  esac
  [ "$mode" = cluster ] && cmd+=(--workers "$WORKERS")
  say "  \$ ${cmd[*]}"
  : >"$log"
  # setsid: the server leads a process group of its own (see stop_server).
  # A background job of a script is no group leader, so setsid execs in
  # place and $! is the server itself.
  setsid "${cmd[@]}" >"$log" 2>&1 </dev/null &
  server_pid=$!
  url=""
  for _ in $(seq $((START_TIMEOUT * 10))); do
    line=$(grep -m1 -o 'listening on http://[^ ]*' "$log")
    if [ -n "$line" ]; then url=${line#listening on }; break; fi
    is_alive "$server_pid" || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    if is_alive "$server_pid"; then
      say "login.sh: FAILED: $side ($mode) printed no 'listening on' line in ${START_TIMEOUT}s; its output:"
    else
      say "login.sh: FAILED: $side ($mode) exited before printing 'listening on'; its output:"
    fi
    sed 's/^/    /' "$log" | tail -n 20 >&2
    stop_server
    return 1
  fi
  return 0
}

# check_server SIDE MODE: two good logins 200, a wrong password 401,
# /health 200 (each on a connection of its own; with Node's http client,
# so that the bench needs no curl).
check_server() {
  local out
  # shellcheck disable=SC2016 # JavaScript, not shell
  if ! out=$("$NODE" -e '
    const http = require("http");
    const [base, good, bad] = process.argv.slice(1);
    const ask = (path, body) => new Promise((resolve, reject) => {
      const req = http.request(base + path, {
        method: body === undefined ? "GET" : "POST", agent: false, timeout: 30000,
        headers: body === undefined ? {} : { "Content-Type": "application/x-www-form-urlencoded" },
      }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); });
      req.on("timeout", () => req.destroy(new Error("no answer in 30 s")));
      req.on("error", reject);
      req.end(body);
    });
    (async () => {
      for (const [path, body, want] of [["/login", good, 200], ["/login", good, 200],
                                        ["/login", bad, 401], ["/health", undefined, 200]]) {
        const code = await ask(path, body);
        if (code !== want) {
          console.log(`answered ${code} to ${body ? "POST" : "GET"} ${path}${body ? " (" + body + ")" : ""} instead of ${want}`);
          process.exit(1);
        }
      }
    })().catch((e) => { console.log(String(e)); process.exit(1); });
  ' "$url" "$GOOD" "$BAD" 2>&1); then
    say "login.sh: FAILED: $1 ($2) $out"
    return 1
  fi
}

# wrk_pair SECONDS TAG: the login load and the /health probe at once;
# with TAG=idle, the probe alone.
wrk_pair() {
  local d=$1 tag=$2 lp="" hp
  if [ "$tag" != idle ]; then
    "$WRK" -t1 -c"$LOGIN_CONNS" -d"${d}s" --timeout 30s -s "$here/wrk/login.lua" \
      "$url/login" >"$tmp/$tag.login" 2>&1 &
    lp=$!
  fi
  "$WRK" -t1 -c"$HEALTH_CONNS" -d"${d}s" --timeout 10s -s "$here/wrk/health.lua" \
    "$url/health" >"$tmp/$tag.health" 2>&1 &
  hp=$!
  wrk_pids="$lp $hp"
  [ -n "$lp" ] && wait "$lp"
  wait "$hp"
  wrk_pids=""
}

# wrk_field FILE KEY: a value from the WRK line of bench/wrk/report.lua.
wrk_field() {
  awk -v k="$2" '$1 == "WRK" { for (i = 2; i <= NF; i++) { split($i, kv, "=");
    if (kv[1] == k) { print kv[2]; exit } } }' "$1"
}

# record SIDE MODE METRIC VALUE (one round)
record() { echo "$1 $2 $3 $4" >>"$tmp/results"; }

run_config() { # SIDE MODE ROUND
  local side=$1 mode=$2 r=$3 c0 c1 g0 g1 f sock hz fl fl2
  say "-- $side, $mode, round $r"
  wait_quiet
  # The floor of this server's hash, right before it runs, so that both
  # see the same machine (it is shared: other work comes and goes).
  fl=$(floor_of "$side")
  say "   floor: ${fl:--} hashes/s ($([ "$side" = weft ] && echo "libsodium, C" || echo "Node crypto.scrypt"), $CPUS threads)"
  if ! start_server "$side" "$mode"; then
    failed=1; echo "$side $mode start" >>"$tmp/failed"; return
  fi
  if ! check_server "$side" "$mode"; then
    failed=1; echo "$side $mode check" >>"$tmp/failed"; stop_server; return
  fi
  wrk_pair "$WARMUP" idle
  wrk_pair "$WARMUP" warm
  sleep 1 # let the hashes of the warm-up's last requests finish
  c0=$(cpu_ticks); g0=$(group_ticks "$server_pid")
  wrk_pair "$SECS" run
  c1=$(cpu_ticks); g1=$(group_ticks "$server_pid")
  stop_server
  # And right after: this host's hash rate drifts by a few % within a
  # minute (one 3-round run: 25.3-28.2 hashes/s), so the run is held
  # against the mean of the floors on both sides of it.
  fl2=$(floor_of "$side")
  say "   floor after: ${fl2:--} hashes/s"
  if [ -n "$fl" ] && [ -n "$fl2" ]; then
    fl=$(awk -v a="$fl" -v b="$fl2" 'BEGIN {print (a + b) / 2}')
  elif [ -z "$fl" ]; then
    fl=$fl2
  fi
  f=$tmp/run.login
  if [ -z "$(wrk_field "$f" requests)" ] || [ -z "$(wrk_field "$tmp/run.health" requests)" ]; then
    say "login.sh: FAILED: wrk gave no result for $side ($mode); its output:"
    cat "$f" "$tmp/run.health" | sed 's/^/    /' >&2
    failed=1; echo "$side $mode wrk" >>"$tmp/failed"; return
  fi
  hz=$(getconf CLK_TCK)
  record "$side" "$mode" logins "$(wrk_field "$f" rps)"
  [ -n "$fl" ] && record "$side" "$mode" pct "$(awk -v l="$(wrk_field "$f" rps)" -v f="$fl" 'BEGIN {print (f > 0) ? 100 * l / f : 0}')"
  record "$side" "$mode" login.p99 "$(awk -v u="$(wrk_field "$f" p99_us)" 'BEGIN {print u / 1000}')"
  record "$side" "$mode" login.non2xx "$(wrk_field "$f" status_errors)"
  sock=$(awk -v a="$(wrk_field "$f" connect)" -v b="$(wrk_field "$f" read)" -v c="$(wrk_field "$f" write)" \
    -v d="$(wrk_field "$f" timeout)" 'BEGIN {print a + b + c + d}')
  record "$side" "$mode" login.sockerr "$sock"
  f=$tmp/run.health
  record "$side" "$mode" health.rps "$(wrk_field "$f" rps)"
  for k in p50 p99 p999 max; do
    record "$side" "$mode" "health.$k" "$(awk -v u="$(wrk_field "$f" "${k}_us")" 'BEGIN {print u / 1000}')"
  done
  record "$side" "$mode" health.non2xx "$(wrk_field "$f" status_errors)"
  sock=$(awk -v a="$(wrk_field "$f" connect)" -v b="$(wrk_field "$f" read)" -v c="$(wrk_field "$f" write)" \
    -v d="$(wrk_field "$f" timeout)" 'BEGIN {print a + b + c + d}')
  record "$side" "$mode" health.sockerr "$sock"
  record "$side" "$mode" idle.p99 "$(awk -v u="$(wrk_field "$tmp/idle.health" p99_us)" 'BEGIN {print u / 1000}')"
  # The machine's busy share, and the server's (all its processes and
  # threads) share of all CPUs, over the measured window.
  record "$side" "$mode" cpu.busy "$(echo "$c0 $c1" | awk '{d = $4 - $2; print (d > 0) ? 100 * ($3 - $1) / d : 0}')"
  record "$side" "$mode" cpu.server "$(awk -v a="$g0" -v b="$g1" -v hz="$hz" -v s="$SECS" -v n="$CPUS" \
    'BEGIN {print 100 * (b - a) / hz / s / n}')"
  say "   logins/s $(wrk_field "$tmp/run.login" rps) (non-2xx $(wrk_field "$tmp/run.login" status_errors)), /health $(wrk_field "$f" rps) req/s p50 $(wrk_field "$f" p50_us) us p99 $(wrk_field "$f" p99_us) us"
}

# floor_of SIDE: the floor of that server's hash, measured now (all CPUs
# hashing, no server), recorded as "floor c|node ..." and echoed (hashes/s;
# empty if it could not be measured).
floor_of() {
  local out
  if [ "$1" = weft ]; then
    [ -x "$SCRYPT_RATE" ] || return 0
    out=$("$SCRYPT_RATE" "$FLOOR_SECS" 1 "$CPUS" 2>/dev/null) ||
      { say "login.sh: $SCRYPT_RATE failed"; return 0; }
    echo "$out" | awk '$1 == "RESULT" {print "floor c", $2, $3}' >>"$tmp/results"
    echo "$out" | awk '$2 == "scrypt.rate" {print $3}'
  else
    out=$("$NODE" "$here/node/scrypt_rate.js" "$FLOOR_SECS" 1 "$CPUS" 2>/dev/null) ||
      { say "login.sh: bench/node/scrypt_rate.js failed"; return 0; }
    echo "$out" | awk '$1 == "RESULT" {print "floor node", $2, $3}' >>"$tmp/results"
    echo "$out" | awk '{print $3}'
  fi
}

# Once per round: Node's hash with glibc's mmap threshold fixed at 128 KiB:
# every 16 MiB buffer of OpenSSL's scrypt is then mapped and unmapped per
# hash, as libsodium does, so every hash page-faults its 4096 fresh pages.
# Tells the cost of the hash's memory from the cost of its arithmetic.
floor_fresh() { # ROUND
  local out
  wait_quiet
  if out=$(MALLOC_MMAP_THRESHOLD_=131072 "$NODE" "$here/node/scrypt_rate.js" "$FLOOR_SECS" 1 "$CPUS" 2>/dev/null); then
    echo "$out" | awk '$1 == "RESULT" {print "floor node_fresh", $2, $3}' >>"$tmp/results"
    say "-- round $1: $(echo "$out" | awk '{print $3}') hashes/s (Node crypto.scrypt, fresh pages per hash)"
  fi
}

touch "$tmp/results"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
say "== login API (bench/login.sh): $ROUNDS rounds, ${SECS}s each, $CPUS CPUs"
for r in $(seq 1 "$ROUNDS"); do
  floor_fresh "$r"
  if [ $((r % 2)) -eq 1 ]; then order=$SIDES; else order=$(echo "$SIDES" | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}'); fi
  for mode in $MODES; do
    for side in $order; do
      [ "$side" = weft ] && [ $have_weft -eq 0 ] && continue
      run_config "$side" "$mode" "$r"
    done
  done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

# --- Report ------------------------------------------------------------
median() { # SIDE MODE METRIC
  awk -v s="$1" -v m="$2" -v k="$3" '$1 == s && $2 == m && $3 == k {print $4}' "$tmp/results" | sort -g |
    awk '{v[NR] = $1} END {if (NR == 0) {print "-"; exit}
         if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
total() { # SIDE MODE METRIC: sum over rounds
  awk -v s="$1" -v m="$2" -v k="$3" '$1 == s && $2 == m && $3 == k {t += $4; n++}
    END {print n ? t : "-"}' "$tmp/results"
}
all() { # SIDE MODE METRIC: every round's value
  awk -v s="$1" -v m="$2" -v k="$3" '$1 == s && $2 == m && $3 == k {printf "%s%s", (n++ ? " " : ""), $4}' "$tmp/results"
}
ratio() { # A B: A/B as "1.23x", or "-"
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a + 0 <= 0 || b + 0 <= 0) print "-";
    else printf "%.2fx\n", a / b }'
}
mode_name() {
  if [ "$1" = single ]; then echo "one process"; else echo "cluster, $WORKERS processes"; fi
}

floor_c=$(median floor c scrypt.rate)
floor_node=$(median floor node node.scrypt.rate)
{
  echo "Login API under wrk, measured $started with \`bench/login.sh\` (BENCH_LOGIN_ROUNDS=$ROUNDS, ${SECS} s per run), medians of $ROUNDS rounds."
  echo "Machine: $CPUS CPUs ($(lscpu | awk -F': *' '/^Model name/ {print $2; exit}')), $(uname -sr), Node $("$NODE" --version), $("$WRK" -v 2>&1 | awk 'NR == 1 {print $1, $2}')."
  if rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null); then
    echo "weft at commit $rev."
  fi
  echo "Load average (1/5/15 min) at start: $load0; at end: $load1."
  [ "$QUIET_WAIT" -gt 0 ] 2>/dev/null && echo "Each run waited up to ${QUIET_WAIT}s for a quiet machine; $( [ -s "$tmp/noisy" ] && wc -l <"$tmp/noisy" || echo 0) started on a busy one anyway."
  [ $have_weft -eq 0 ] && echo "weft login API not found at $WEFT_LOGIN: weft rows pending."
  [ -s "$tmp/failed" ] && echo "FAILED runs (see stderr): $(sort "$tmp/failed" | uniq -c | awk '{printf "%s%s %s %s x%d", (NR > 1 ? ", " : ""), $2, $3, $4, $1}')."
  echo "Load: \`wrk -t1 -c$LOGIN_CONNS\` POST /login (good password) and, at the same time, \`wrk -t1 -c$HEALTH_CONNS\` GET /health with a ${HEALTH_DELAY_MS} ms pause per connection between a response and the next request; $( if [ -n "$THREADS" ]; then echo "every process has $THREADS hashing threads (weft \`--threads $THREADS\`, Node UV_THREADPOOL_SIZE=$THREADS)"; else echo "hashing threads: weft its default, $CPUS in one process and $(( CPUS / WORKERS > 0 ? CPUS / WORKERS : 1 )) per process in cluster mode (as many as cores in all); Node UV_THREADPOOL_SIZE=$CPUS in every process (with fewer, one round of its cluster fell to half its logins/s: bench/README.md)"; fi ); weft's pool at its default SCHED_IDLE."
  echo
  echo "Floor, same run (all $CPUS CPUs hashing, no server; measured right before and right after each server's run, medians): libsodium \`crypto_pwhash_scryptsalsa208sha256_ll\` (bench/scrypt_rate, the weft server's hash) $(fmt "$floor_c") hashes/s ($(fmt "$(median floor c scrypt.hash_ms)") ms per hash per thread, $(fmt "$(median floor c scrypt.faults_per_hash)") page faults per hash); OpenSSL scrypt via Node's \`crypto.scrypt\` (bench/node/scrypt_rate.js, the Node server's hash) $(fmt "$floor_node") hashes/s, and $(fmt "$(median floor node_fresh node.scrypt.rate)") hashes/s when its 16 MiB come from fresh pages every hash as libsodium's do (MALLOC_MMAP_THRESHOLD_=131072)."
  echo
  echo "| server | mode | logins/s | % of its hash's floor | login p99 ms | /health req/s | /health p50 ms | /health p99 ms | /health p99.9 ms | /health p99 ms, no logins | non-2xx (login, health) | socket errors | server CPU % | machine busy % |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for mode in $MODES; do
    for side in $SIDES; do
      if [ "$side" = weft ] && [ $have_weft -eq 0 ]; then
        echo "| $side | $(mode_name "$mode") | pending | | | | | | | | | | | |"
        continue
      fi
      l=$(median "$side" "$mode" logins)
      pct=$(awk -v p="$(median "$side" "$mode" pct)" 'BEGIN { if (p == "-") print "-"; else printf "%.1f%%\n", p }')
      echo "| $side | $(mode_name "$mode") | $(fmt "$l") | $pct | $(fmt "$(median "$side" "$mode" login.p99)") | $(fmt "$(median "$side" "$mode" health.rps)") | $(fmt "$(median "$side" "$mode" health.p50)") | $(fmt "$(median "$side" "$mode" health.p99)") | $(fmt "$(median "$side" "$mode" health.p999)") | $(fmt "$(median "$side" "$mode" idle.p99)") | $(total "$side" "$mode" login.non2xx), $(total "$side" "$mode" health.non2xx) | $(awk -v a="$(total "$side" "$mode" login.sockerr)" -v b="$(total "$side" "$mode" health.sockerr)" 'BEGIN {print (a == "-") ? "-" : a + b}') | $(fmt "$(median "$side" "$mode" cpu.server)") | $(fmt "$(median "$side" "$mode" cpu.busy)") |"
    done
  done
  echo
  echo "(non-2xx and socket errors: totals over all rounds; % of floor: each run's logins/s over the mean of the floors of the server's own hash measured right before and right after it, weft against libsodium's, Node against OpenSSL's, median over rounds; server CPU: all the server's processes and threads, as % of all $CPUS CPUs.)"
  if [ $have_weft -eq 1 ] && [[ " $SIDES " == *" node "* ]]; then
    echo
    echo "| mode | logins/s weft/Node | logins/s weft/Node, each over its hash's floor | /health p99 Node/weft | /health p99 < 2 ms (weft; Node) | logins/s >= 95% of floor (weft; Node) |"
    echo "| --- | ---: | ---: | ---: | --- | --- |"
    for mode in $MODES; do
      wl=$(median weft "$mode" logins); nl=$(median node "$mode" logins)
      wp=$(median weft "$mode" health.p99); np=$(median node "$mode" health.p99)
      aim_p() { awk -v p="$1" 'BEGIN { if (p == "-") print "-"; else print (p < 2) ? "yes" : "no" }'; }
      aim_l() { awk -v p="$1" 'BEGIN { if (p == "-") print "-"; else print (p >= 95) ? "yes" : "no" }'; }
      wpct=$(median weft "$mode" pct); npct=$(median node "$mode" pct)
      echo "| $(mode_name "$mode") | $(ratio "$wl" "$nl") | $(ratio "$wpct" "$npct") | $(ratio "$np" "$wp") | $(aim_p "$wp"); $(aim_p "$np") | $(aim_l "$wpct"); $(aim_l "$npct") |"
    done
  fi
  echo
  echo "Raw values (every round):"
  echo
  echo '```'
  echo "floor  libsodium hashes/s: $(all floor c scrypt.rate)"
  echo "floor  Node crypto.scrypt hashes/s: $(all floor node node.scrypt.rate)"
  echo "floor  the same, fresh pages per hash: $(all floor node_fresh node.scrypt.rate)"
  for mode in $MODES; do
    for side in $SIDES; do
      [ "$side" = weft ] && [ $have_weft -eq 0 ] && continue
      for k in logins pct login.p99 health.rps health.p50 health.p99 health.p999 idle.p99 cpu.server cpu.busy; do
        printf '%-5s %-8s %-12s %s\n' "$side" "$mode" "$k" "$(all "$side" "$mode" "$k")"
      done
    done
  done
  echo '```'
} >"$tmp/report.md"

cat "$tmp/report.md"
if [ -n "$OUT" ]; then
  cp "$tmp/report.md" "$OUT" && say "(written to $OUT)"
fi
exit $failed
