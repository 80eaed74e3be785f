#!/usr/bin/env bash
# bench/run.sh - run every workload in weft and in Node.js worker_threads,
# R rounds each, alternating the two, and print a table of medians.
#
#   bench/run.sh [path/to/weft_bench]
#
# Environment:
#   BENCH_ROUNDS     rounds per workload (default 5)
#   BENCH_WORKLOADS  space-separated subset (default: all, in table order)
#   WEFT_BENCH       weft binary (default build-bench/bench/weft_bench);
#                    the first argument wins over it
#   NODE             node binary (default: node on PATH)
#   BENCH_TIMEOUT    seconds allowed for one run of one workload (default 180)
#   BENCH_QUIET_WAIT before each run, wait up to this many seconds for the
#                    machine to be quiet (other processes < 15% of the CPUs);
#                    default 0: do not wait
#   BENCH_REV        what to call the weft version in the report (default:
#                    the git commit of this tree)
#   BENCH_OUT        where the table is written (default bench/results.md;
#                    "-" writes nothing)
#   BENCH_CHARTS     where the charts of the run go (bench/chart.sh, with
#                    gnuplot: chart.svg, cpurate.svg); default: the folder
#                    of BENCH_OUT (bench/), none when BENCH_OUT is "-";
#                    "-" writes none
#   WEFT_FLOOR       the floor binary (default build-bench/bench/weft_floor,
#                    bench/floor.c), run first: weft's figures are also
#                    printed as multiples of what this host allows
#   BENCH_LOGIN      1/0: run (default) or skip the login API under wrk
#                    (bench/login.sh; its own knobs are listed there).
#                    "login" in BENCH_WORKLOADS selects it too:
#                    BENCH_WORKLOADS=login runs only it.
#   BENCH_SAVINA     1/0: run (default) or skip the Savina actor benchmarks,
#                    weft vs CAF vs Erlang (bench/savina/run.sh; its knobs
#                    SAVINA_* are listed there). "savina" in
#                    BENCH_WORKLOADS selects it, as "login" does.
#   BENCH_NATS       1/0: run (default) or skip nodes over NATS (issue 10):
#                    weft's remote ports against raw nats.c, Node's fork
#                    IPC and Erlang distribution, two processes through
#                    one nats-server (bench/nats_bench.c,
#                    bench/node/fork_ipc.js, bench/erlang/dist_bench.erl).
#                    "nats" in BENCH_WORKLOADS selects it, as "login" does.
#                    Needs nats-server on PATH; without it, skipped.
#   NATS_BENCH       its binary (default: nats_bench next to weft_bench)
#
# Both programs print lines "RESULT <metric> <value> <unit>"; a unit ending
# in "/s" is higher-is-better, any other unit lower-is-better.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root" || exit 1

ROUNDS=${BENCH_ROUNDS:-5}
WORKLOADS=${BENCH_WORKLOADS:-"pingpong call throughput throughput1cpu fanin fanout copy1m transfer atomics spawn idle tick cpurate trace"}
# Workloads Node has no counterpart for: weft runs them alone. "call" (a
# blocking weft_worker_call() from a thread without a loop) measures
# ping-pong in the same process run and prints the ratio call/ping-pong.
WEFT_ONLY=" call trace "
# The login API under wrk (issue 7, bench/login.sh) runs by default, after
# the others; like the pool's workloads it is skipped when BENCH_WORKLOADS
# is set and does not name it. BENCH_LOGIN=0/1 overrides.
if [[ " $WORKLOADS " == *" savina "* ]]; then
  WORKLOADS=$(echo " $WORKLOADS " | sed 's/ savina / /g; s/^ *//; s/ *$//')
  SAVINA=${BENCH_SAVINA:-1}
elif [ -n "${BENCH_WORKLOADS:-}" ]; then
  SAVINA=${BENCH_SAVINA:-0}
else
  SAVINA=${BENCH_SAVINA:-1}
fi
if [[ " $WORKLOADS " == *" nats "* ]]; then
  WORKLOADS=$(echo " $WORKLOADS " | sed 's/ nats / /g; s/^ *//; s/ *$//')
  NATS=${BENCH_NATS:-1}
elif [ -n "${BENCH_WORKLOADS:-}" ]; then
  NATS=${BENCH_NATS:-0}
else
  NATS=${BENCH_NATS:-1}
fi
if [[ " $WORKLOADS " == *" login "* ]]; then
  WORKLOADS=$(echo " $WORKLOADS " | sed 's/ login / /g; s/^ *//; s/ *$//')
  LOGIN=${BENCH_LOGIN:-1}
elif [ -n "${BENCH_WORKLOADS:-}" ]; then
  LOGIN=${BENCH_LOGIN:-0}
else
  LOGIN=${BENCH_LOGIN:-1}
fi
WEFT_BIN=${1:-${WEFT_BENCH:-build-bench/bench/weft_bench}}
FLOOR_BIN=${WEFT_FLOOR:-$(dirname "$WEFT_BIN")/weft_floor}
NATS_BIN=${NATS_BENCH:-$(dirname "$WEFT_BIN")/nats_bench}
NODE=${NODE:-node}
TIMEOUT=${BENCH_TIMEOUT:-180}
OUT=${BENCH_OUT:-bench/results.md}
QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
if [ "$OUT" = - ]; then CHARTS=${BENCH_CHARTS:--}; else CHARTS=${BENCH_CHARTS:-$(dirname "$OUT")}; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

have_weft=1
if [ ! -x "$WEFT_BIN" ]; then
  echo "run.sh: no weft binary at $WEFT_BIN: the weft column will say 'pending'" >&2
  have_weft=0
fi
if ! command -v "$NODE" >/dev/null 2>&1; then
  echo "run.sh: node not found ($NODE)" >&2
  exit 1
fi

# cpu_busy and wait_quiet (a quiet machine before each run).
# shellcheck source=bench/cpu_busy.sh
. "$here/cpu_busy.sh"
# shellcheck source=bench/fmt.sh
. "$here/fmt.sh"


# run_one SIDE WORKLOAD ROUND: append "<metric> <value> <unit>" lines to
# $tmp/SIDE.results; a failed run is reported and contributes nothing.
# "throughput1cpu" is the throughput workload with both threads on one CPU
# (taskset -c 0): no cache line crosses cores, so what it costs per
# message against the same workload across CPUs shows whether a message
# pays a line's trip (issue 9: within 1.5x). Its metric: throughput.1cpu.
#
# The workloads compared with the floor also get the floor measured right
# before each of their runs (weft_floor 1, under a second): the host's line
# turn-around can change threefold within minutes, so a floor taken at the
# start may belong to another phase than the workload. Each such run adds
# "<metric>.xfloor" (its value over that adjacent floor: a time over the
# line's round trip; for a rate, the time per message over it), which the
# floor table prefers to the ratio against the start's floor.
XFLOOR=" pingpong call throughput atomics "
run_one() {
  local side=$1 wl=$2 r=$3 log="$tmp/$1.$2.$3.log" rc run=$2 pin=() adj=""
  wait_quiet
  if [[ $XFLOOR == *" $wl "* ]] && [ -x "$FLOOR_BIN" ]; then
    adj=$(timeout 60 "$FLOOR_BIN" 1 2>/dev/null | awk '$2 == "floor.spin_rtt" {print $3}')
  fi
  if [ "$wl" = throughput1cpu ]; then
    run=throughput
    pin=(taskset -c 0)
  fi
  if [ "$side" = weft ]; then
    timeout "$TIMEOUT" "${pin[@]}" "$WEFT_BIN" "$run" >"$log" 2>&1
  else
    timeout "$TIMEOUT" "${pin[@]}" "$NODE" "$here/node/bench.js" "$run" >"$log" 2>&1
  fi
  rc=$?
  if [ "$wl" = throughput1cpu ]; then
    sed -i 's/^RESULT throughput /RESULT throughput.1cpu /' "$log"
  fi
  if [ $rc -ne 0 ]; then
    echo "  $side $wl round $r: FAILED (exit $rc$([ $rc -eq 124 ] && echo ', timeout')); last lines:" >&2
    tail -n 5 "$log" | sed 's/^/    /' >&2
    echo "$wl" >>"$tmp/$side.failed"
  fi
  grep '^RESULT ' "$log" | awk '{print $2, $3, $4}' >>"$tmp/$side.results"
  grep '^RESULT ' "$log" | awk -v s="$side" -v r="$r" '{printf "  %-5s r%d  %-15s %s %s\n", s, r, $2, $3, $4}' >&2
  if [ -n "$adj" ]; then
    grep '^RESULT ' "$log" | awk -v f="$adj" -v s="$side" -v r="$r" '
      $2 ~ /^(pingpong\.rtt|call\.rtt|atomics\.rtt|throughput)$/ && $3 + 0 > 0 && f + 0 > 0 {
        x = ($4 ~ /\/s$/) ? (1e6 / $3) / f : $3 / f
        printf "%s.xfloor %.4f x\n", $2, x >> "/dev/stdout"
        printf "  %-5s r%d  %-15s %.2f x (floor just before: %s us)\n", s, r, $2 ".xfloor", x, f > "/dev/stderr"
      }' >>"$tmp/$side.results"
  fi
}

touch "$tmp/weft.results" "$tmp/node.results" "$tmp/floor.results"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)

# The floor first (bench/floor.c): a cache line's round trip between two
# CPUs, on one CPU, a futex wake-up round trip, memcpy bandwidth; medians
# of ROUNDS runs inside the program.
if [ -x "$FLOOR_BIN" ]; then
  echo "== floor ($ROUNDS rounds)" >&2
  wait_quiet
  if timeout "$TIMEOUT" "$FLOOR_BIN" "$ROUNDS" >"$tmp/floor.log" 2>&1; then
    grep '^RESULT ' "$tmp/floor.log" | awk '{print $2, $3, $4}' >>"$tmp/floor.results"
    grep '^RESULT ' "$tmp/floor.log" | awk '{printf "  floor     %-20s %s %s\n", $2, $3, $4}' >&2
  else
    echo "  floor: FAILED; last lines:" >&2
    tail -n 5 "$tmp/floor.log" | sed 's/^/    /' >&2
  fi
else
  echo "run.sh: no floor binary at $FLOOR_BIN: no floor figures" >&2
fi
for wl in $WORKLOADS; do
  echo "== $wl ($ROUNDS rounds)" >&2
  for r in $(seq 1 "$ROUNDS"); do
    # Alternate who goes first so neither side always runs on a warmer machine.
    if [ $((r % 2)) -eq 1 ]; then order="weft node"; else order="node weft"; fi
    for side in $order; do
      [ "$side" = weft ] && [ $have_weft -eq 0 ] && continue
      [ "$side" = node ] && [[ $WEFT_ONLY == *" $wl "* ]] && continue
      run_one "$side" "$wl" "$r"
    done
  done
done

# --- Pool and offload (issue 6): weft_bench pool|offload against
# bench/node/pool.js (Piscina, and plain worker_threads by hand). Runs by
# default; BENCH_POOL_WORKLOADS="" skips it, or names a subset. When
# BENCH_WORKLOADS is set and this is not, it is skipped too. Piscina comes
# from `npm install` in bench/node (bench/node/package.json), done here
# once; without it the Piscina cells say "-".
if [ -n "${BENCH_WORKLOADS:-}" ]; then
  POOL_WORKLOADS=${BENCH_POOL_WORKLOADS:-}
else
  POOL_WORKLOADS=${BENCH_POOL_WORKLOADS-"pool offload"}
fi
if [ -n "$POOL_WORKLOADS" ] && [ ! -d "$here/node/node_modules/piscina" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "== npm install (bench/node: piscina)" >&2
    (cd "$here/node" && npm install --no-audit --no-fund --silent) >&2 ||
      echo "  npm install failed: the Piscina cells will say '-'" >&2
  else
    echo "  npm not found: the Piscina cells will say '-'" >&2
  fi
fi
run_pool_one() { # SIDE WORKLOAD ROUND, as run_one with bench/node/pool.js
  local side=$1 wl=$2 r=$3 log="$tmp/$1.$2.$3.log" rc
  wait_quiet
  if [ "$side" = weft ]; then
    timeout "$TIMEOUT" "$WEFT_BIN" "$wl" >"$log" 2>&1
  else
    timeout "$TIMEOUT" "$NODE" "$here/node/pool.js" "$wl" >"$log" 2>&1
  fi
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "  $side $wl round $r: FAILED (exit $rc); last lines:" >&2
    tail -n 5 "$log" | sed 's/^/    /' >&2
    echo "$wl" >>"$tmp/$side.failed"
  fi
  grep '^RESULT ' "$log" | awk '{print $2, $3, $4}' >>"$tmp/$side.results"
  grep '^RESULT ' "$log" | awk -v s="$side" -v r="$r" '{printf "  %-5s r%d  %-22s %s %s\n", s, r, $2, $3, $4}' >&2
}
for wl in $POOL_WORKLOADS; do
  echo "== $wl ($ROUNDS rounds)" >&2
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="weft node"; else order="node weft"; fi
    for side in $order; do
      [ "$side" = weft ] && [ $have_weft -eq 0 ] && continue
      run_pool_one "$side" "$wl" "$r"
    done
  done
done

# --- Nodes over NATS (issue 10): weft's remote ports against raw nats.c
# (the floor of the engine), Node's fork IPC and Erlang distribution, two
# processes on loopback, 64-byte messages and 1 MiB (bench/nats_bench.c,
# bench/node/fork_ipc.js, bench/erlang/dist_bench.erl).
# One nats-server for the whole section (max_payload 2 MiB, above the
# 1 MiB payload: the default is 1 MiB); each round runs the sides
# (raw, weft, rawasap: raw sending at once, nodeipc, and erlang when erl
# is installed: bench/erlang/dist_bench.erl), reversing the order
# every other round; the NATS sides get a fresh server process
# (nats_bench serve) and client process each. RESULT lines go to
# $tmp/nats.results; the table to $tmp/nats.md, appended to the report.
nats_section() {
  local conf="$tmp/nats.conf" port url npid spid r side order log rc i
  if [ ! -x "$NATS_BIN" ]; then
    echo "  no nats_bench at $NATS_BIN: skipped" >&2
    echo "Skipped: no \`nats_bench\` binary at $NATS_BIN." >"$tmp/nats.skip"
    return 0
  fi
  if ! command -v nats-server >/dev/null 2>&1; then
    echo "  nats-server not found: skipped" >&2
    echo "Skipped: nats-server not found (scripts/deps.sh installs it)." >"$tmp/nats.skip"
    return 0
  fi
  port=$("$NATS_BIN" freeport)
  url="nats://127.0.0.1:$port"
  printf 'listen: 127.0.0.1:%s\nmax_payload: 2097152\n' "$port" >"$conf"
  nats-server -c "$conf" >"$tmp/nats-server.log" 2>&1 &
  npid=$!
  for i in $(seq 100); do
    grep -q 'Server is ready' "$tmp/nats-server.log" && break
    sleep 0.1
  done
  touch "$tmp/nats.results"
  # Erlang distribution (bench/erlang/dist_bench.erl), when erl is there:
  # two nodes on loopback through an epmd of our own on a free port.
  local sides="raw weft rawasap nodeipc" epmd_port=""
  if command -v erlc >/dev/null 2>&1 && command -v epmd >/dev/null 2>&1 &&
     mkdir -p "$tmp/erl" && erlc -o "$tmp/erl" "$here/erlang/dist_bench.erl"; then
    epmd_port=$("$NATS_BIN" freeport)
    epmd -port "$epmd_port" -daemon
    sides="$sides erlang"
  else
    echo "  erl not found or dist_bench.erl did not build: no Erlang column" >&2
  fi
  # ZeroMQ, brokerless (nats_bench's zmq side, when built with libzmq).
  if "$NATS_BIN" 2>&1 | grep -q '|zmq'; then
    sides="$sides zmq"
  else
    echo "  nats_bench was built without libzmq: no ZeroMQ column" >&2
  fi
  for r in $(seq 1 "$ROUNDS"); do
    order=$sides
    [ $((r % 2)) -eq 0 ] && order=$(echo "$sides" | tr ' ' '\n' | tac | tr '\n' ' ')
    for side in $order; do
      log="$tmp/nats.$side.$r.log"
      wait_quiet
      if [ "$side" = nodeipc ]; then
        timeout "$TIMEOUT" "$NODE" "$here/node/fork_ipc.js" all >"$log" 2>&1
        rc=$?
      elif [ "$side" = erlang ]; then
        ERL_EPMD_PORT=$epmd_port erl -name "srv$r@127.0.0.1" -setcookie weftbench \
          -noshell -pa "$tmp/erl" -eval 'dist_bench:serve()' >"$tmp/nats.serve.log" 2>&1 &
        spid=$!
        for i in $(seq 100); do
          grep -q '^ready' "$tmp/nats.serve.log" && break
          sleep 0.1
        done
        ERL_EPMD_PORT=$epmd_port timeout "$TIMEOUT" erl -name "cli$r@127.0.0.1" \
          -setcookie weftbench -noshell -pa "$tmp/erl" \
          -eval "dist_bench:client('srv$r@127.0.0.1', all, 0)" >"$log" 2>&1
        rc=$?
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
      else
        "$NATS_BIN" serve "$side" "$url" >"$tmp/nats.serve.log" 2>&1 &
        spid=$!
        for i in $(seq 100); do
          grep -q '^ready' "$tmp/nats.serve.log" && break
          sleep 0.1
        done
        timeout "$TIMEOUT" "$NATS_BIN" "$side" all "$url" >"$log" 2>&1
        rc=$?
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
      fi
      if [ $rc -ne 0 ]; then
        echo "  $side round $r: FAILED (exit $rc); last lines:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
        echo "nats.$side" >>"$tmp/nats.failed"
      fi
      grep '^RESULT ' "$log" | awk '{print $2, $3, $4}' >>"$tmp/nats.results"
      grep '^RESULT ' "$log" | awk -v r="$r" '{printf "  r%d  %-24s %s %s\n", r, $2, $3, $4}' >&2
    done
  done
  kill "$npid" 2>/dev/null
  wait "$npid" 2>/dev/null
  if [ -n "$epmd_port" ]; then
    # epmd refuses to stop while a node is still registered: give the
    # last server a moment to go.
    for i in $(seq 20); do
      ERL_EPMD_PORT=$epmd_port epmd -port "$epmd_port" -kill >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
}
if [ "$NATS" = 1 ]; then
  echo "== nodes over NATS: raw nats.c, weft, Node fork IPC ($ROUNDS rounds)" >&2
  nats_section
fi

# The section's table (after median() is defined, below).
nats_table() {
  if [ -s "$tmp/nats.skip" ]; then cat "$tmp/nats.skip"; return 0; fi
  # nrow LABEL METRIC AIM TEXT: the ratio is weft / raw (for a time, how
  # many times raw's; for a rate, the share of raw's); AIM "le X" / "ge X"
  # on that ratio, or "-".
  nrow() {
    local rv wv av nv ev zv ratio met=""
    zv=$(median "nats.zmq.$2" "$tmp/nats.results")
    rv=$(median "nats.raw.$2" "$tmp/nats.results")
    wv=$(median "nats.weft.$2" "$tmp/nats.results")
    av=$(median "nats.rawasap.$2" "$tmp/nats.results")
    nv=$(median "nats.nodeipc.$2" "$tmp/nats.results")
    ev=$(median "nats.erlang.$2" "$tmp/nats.results")
    ratio=$(awk -v w="$wv" -v r="$rv" 'BEGIN {
      if (w == "-" || r == "-" || r + 0 <= 0) print "-"; else printf "%.2fx\n", w / r }')
    if [ "$3" != - ] && [ "$ratio" != - ]; then
      met=$(awk -v x="${ratio%x}" -v a="${3#* }" -v k="${3%% *}" 'BEGIN {
        print ((k == "ge" && x >= a) || (k == "le" && x <= a)) ? "yes" : "no" }')
    fi
    echo "| $1 | $(fmt "$rv") | $(fmt "$wv") | $ratio | ${4:-} | $met | $(fmt "$av") | $(fmt "$nv") | $(fmt "$ev") | $(fmt "$zv") |"
  }
  echo "Two processes on loopback through one nats-server ($(nats-server --version 2>/dev/null | head -n 1)), nats.c $(pkg-config --modversion libnats 2>/dev/null || echo '?'), medians of $ROUNDS rounds. raw and weft use nats.c's default options; \"raw, send at once\" is raw with natsOptions_SetSendAsap on both sides (no wait in nats.c's flusher thread). Node's fork IPC is a pipe between parent and child, Erlang distribution a TCP connection between two nodes, ZeroMQ REQ/REP and PUSH/PULL sockets over TCP (none of the three has a broker)."
  [ -s "$tmp/nats.failed" ] && echo "Runs that failed: $(sort "$tmp/nats.failed" | uniq -c | awk '{printf "%s%s x%d", (NR>1?", ":""), $2, $1}')."
  echo
  echo "| measure | raw nats.c | weft | weft / raw | aim | aim met | raw, send at once | Node fork IPC | Erlang distribution | ZeroMQ |"
  echo "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |"
  nrow "round trip 64 B, median, us" rtt "le 1.1" "weft <= 1.1x raw"
  nrow "round trip 64 B, p99, us" rtt_p99 - ""
  nrow "one-way 64 B, received msgs/s" oneway "ge 0.9" "weft >= 0.9x raw"
  nrow "one-way 64 B, sent msgs/s" oneway_sent - ""
  nrow "one-way: posts lost (slow consumer), msgs" oneway_lost - ""
  nrow "one-way: end marker asked again (lost too), requests" oneway_marker_retries - ""
  nrow "round trip 1 MiB, median, us" mib - ""
  echo
  echo '```'
  awk '{v[$1] = v[$1] " " $2; u[$1] = $3; if (!($1 in seen)) {seen[$1]=1; order[++n]=$1}}
    END {for (i = 1; i <= n; i++) printf "%-26s %-7s%s\n", order[i], u[order[i]], v[order[i]]}' \
    "$tmp/nats.results"
  echo '```'
}

# --- The login API under wrk (issue 7): bench/login.sh prints its own
# report (markdown), appended to this one below.
savina_rc=0
if [ "$SAVINA" = 1 ]; then
  echo "== Savina actor benchmarks: weft, CAF, Erlang (bench/savina/run.sh)" >&2
  bash "$here/savina/run.sh" >"$tmp/savina.md"
  savina_rc=$?
  [ $savina_rc -ne 0 ] && echo "  bench/savina/run.sh FAILED (exit $savina_rc): see above" >&2
fi
login_rc=0
if [ "$LOGIN" = 1 ]; then
  echo "== login API under wrk (bench/login.sh)" >&2
  bash "$here/login.sh" >"$tmp/login.md"
  login_rc=$?
  [ $login_rc -ne 0 ] && echo "  bench/login.sh FAILED (exit $login_rc): see above" >&2
fi

# Metrics in table order, with the issue's aim for each:
#   metric | aim kind (le / ge / flat / -) | aim value | aim text
aims() {
  cat <<'AIMS'
pingpong.rtt le 1 <= 1 us
pingpong.rate - - -
call.pingpong.rtt - - -
call.rtt - - -
call.ratio le 2 <= 2x ping-pong (same run)
throughput ge 15000000 >= 15 M msgs/s
throughput.1cpu - - -
fanin - - -
fanout - - -
copy1m ge 12 >= 12 GB/s
transfer.1k flat - flat in size
transfer.1m flat - flat in size
transfer.64m flat - flat in size
atomics.rtt le 1 <= 1 us
spawn.each le 50 <= 50 us
spawn.fresh - - -
spawn.rate - - -
idle8.cpu lt 1 < 1 %core
tick8.cpu - - -
cpurate.1w.100 le_node - <= Node's CPU
cpurate.1w.1k le_node - <= Node's CPU
cpurate.1w.10k le_node - <= Node's CPU
cpurate.1w.100k le_node - <= Node's CPU
cpurate.8w.100 le_node - <= Node's CPU
cpurate.8w.1k le_node - <= Node's CPU
cpurate.8w.10k le_node - <= Node's CPU
trace.pingpong.off - - -
trace.pingpong.on - - -
trace.pingpong.ratio le 1.1 <= 1.1x with tracing on
trace.throughput.off - - -
trace.throughput.on - - -
trace.throughput.ratio le 1.1 <= 1.1x with tracing on
trace.throughput.ratio.first - - -
AIMS
}

median() { # median of the values of metric $1 in file $2
  awk -v m="$1" '$1 == m {print $2}' "$2" | sort -g |
    awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit}
         if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}
unit_of() { awk -v m="$1" '$1 == m {print $3; exit}' "$tmp/weft.results" "$tmp/node.results"; }

t1k=$(median transfer.1k "$tmp/weft.results")
t64m=$(median transfer.64m "$tmp/weft.results")

{
  echo "| workload | weft median | Node median | unit | weft better by | aim | aim met |"
  echo "| --- | ---: | ---: | --- | ---: | --- | --- |"
  aims | while read -r metric kind aimv aimtext; do
    wv=$(median "$metric" "$tmp/weft.results")
    nv=$(median "$metric" "$tmp/node.results")
    [ "$wv" = - ] && [ "$nv" = - ] && continue
    unit=$(unit_of "$metric")
    if [ "$wv" = - ]; then
      ratio=pending
    else
      ratio=$(awk -v w="$wv" -v n="$nv" -v u="$unit" 'BEGIN {
        if (n == "-" || w + 0 <= 0 || n + 0 <= 0) { print "n/a"; exit }
        r = (u ~ /\/s$/) ? w / n : n / w
        if (r >= 100) printf "%.0fx\n", r; else printf "%.1fx\n", r }')
    fi
    if [ "$kind" = - ]; then
      met=""
    elif [ "$wv" = - ]; then
      met=pending
    else
      case $kind in
        le) met=$(awk -v w="$wv" -v a="$aimv" 'BEGIN {print (w <= a) ? "yes" : "no"}') ;;
        lt) met=$(awk -v w="$wv" -v a="$aimv" 'BEGIN {print (w < a) ? "yes" : "no"}') ;;
        le_node) met=$(awk -v w="$wv" -v n="$nv" 'BEGIN {print (n == "-") ? "-" : (w <= n) ? "yes" : "no"}') ;;
        ge) met=$(awk -v w="$wv" -v a="$aimv" 'BEGIN {print (w >= a) ? "yes" : "no"}') ;;
        flat)
          # Flat: the 64 MiB transfer costs at most 2x the 1 KiB one.
          if [ "$t1k" = - ] || [ "$t64m" = - ]; then met=pending
          else met=$(awk -v a="$t1k" -v b="$t64m" 'BEGIN {
            printf "%s (64m/1k = %.2f)\n", (b <= 2 * a) ? "yes" : "no", b / a }'); fi ;;
        *) met="" ;;
      esac
    fi
    [ "$aimtext" = - ] && aimtext=""
    echo "| $metric | $([ "$wv" = - ] && echo pending || fmt "$wv") | $(fmt "$nv") | $unit | $ratio | $aimtext | $met |"
  done
} >"$tmp/table.md"

# weft (and Node) against the floor of this host (issue 9's aims are
# ratios to it, measured in the same run).
floor_table() {
  local spin futex mem rows
  spin=$(median floor.spin_rtt "$tmp/floor.results")
  [ "$spin" = - ] && return 0
  futex=$(median floor.futex_rtt "$tmp/floor.results")
  mem=$(median floor.memcpy1m "$tmp/floor.results")
  # frow LABEL METRIC FLOOR KIND AIM TEXT: KIND "t" (a time: value /
  # floor), "r" (a rate in 1/s: the time per item over the floor's time,
  # e.g. how many line round trips one message costs), "b" (bandwidth:
  # value / floor); AIM "le X" on the weft ratio, or "-".
  frow() {
    local wv nv wr nr met=""
    wv=$(median "$2" "$tmp/weft.results")
    nv=$(median "$2" "$tmp/node.results")
    [ "$wv" = - ] && [ "$nv" = - ] && return 0
    ratio_of() {
      awk -v v="$1" -v f="$2" -v k="$3" 'BEGIN {
        if (v == "-" || f == "-" || v + 0 <= 0 || f + 0 <= 0) { print "-"; exit }
        if (k == "t") r = v / f; else if (k == "r") r = (1e6 / v) / f; else r = v / f
        printf "%.2fx\n", r }'
    }
    wr=$(ratio_of "$wv" "$3" "$4")
    nr=$(ratio_of "$nv" "$3" "$4")
    # The median of the ratios to the floor measured just before each run,
    # when there are (see run_one), for the line round trip's rows.
    if [ "$3" = "$spin" ]; then
      local wa na
      wa=$(median "$2.xfloor" "$tmp/weft.results")
      na=$(median "$2.xfloor" "$tmp/node.results")
      [ "$wa" != - ] && wr=$(awk -v v="$wa" 'BEGIN {printf "%.2fx\n", v}')
      [ "$na" != - ] && nr=$(awk -v v="$na" 'BEGIN {printf "%.2fx\n", v}')
    fi
    if [ "$5" != - ] && [ "$wr" != - ]; then
      met=$(awk -v r="${wr%x}" -v a="${5#le }" 'BEGIN {print (r <= a) ? "yes" : "no"}')
    fi
    echo "| $1 | $(fmt "$wv") | $wr | $(fmt "$nv") | $nr | ${6:-} | $met |"
  }
  # One-way on one CPU over one-way across CPUs: what crossing cores costs
  # per message (aim: at most 1.5x).
  xrow() {
    local w1 wx n1 nx wr nr met=""
    w1=$(median throughput.1cpu "$tmp/weft.results")
    wx=$(median throughput "$tmp/weft.results")
    n1=$(median throughput.1cpu "$tmp/node.results")
    nx=$(median throughput "$tmp/node.results")
    [ "$w1" = - ] && [ "$n1" = - ] && return 0
    ratio2() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 <= 0) print "-"; else printf "%.2fx\n", a / b }'; }
    wr=$(ratio2 "$w1" "$wx")
    nr=$(ratio2 "$n1" "$nx")
    [ "$wr" != - ] && met=$(awk -v r="${wr%x}" 'BEGIN {print (r <= 1.5) ? "yes" : "no"}')
    echo "| one-way msgs/s on one CPU; weft x / Node x: one CPU over across CPUs | $(fmt "$w1") | $wr | $(fmt "$n1") | $nr | <= 1.5x | $met |"
  }
  rows=$(
    frow "ping-pong round trip, us; floor: line round trip" pingpong.rtt "$spin" t "le 2" "<= 2x"
    frow "wait/notify round trip, us; floor: line round trip" atomics.rtt "$spin" t "le 1.5" "<= 1.5x"
    frow "blocking call round trip, us; floor: line round trip" call.rtt "$spin" t - ""
    frow "one-way msgs/s; floor: line round trip per message" throughput "$spin" r - ""
    xrow
    frow "ping-pong round trip, us; floor: futex round trip" pingpong.rtt "$futex" t - ""
    frow "1 MiB copy, GB/s; floor: memcpy" copy1m "$mem" b - ""
  )
  echo
  echo "Floor of this host, same run (bench/floor.c, medians of $ROUNDS): a cache line's round trip between two CPUs $(fmt "$spin") us, on one CPU (threads yielding) $(fmt "$(median floor.spin_rtt_1cpu "$tmp/floor.results")") us, a futex wake-up round trip $(fmt "$futex") us, memcpy of 1 MiB $(fmt "$mem") GB/s$([ -n "$rows" ] && echo ". weft and Node against it (the line round trip's rows: the median over runs of each run's value over the floor measured just before it, as the host's line can change within minutes):")"
  [ -n "$rows" ] || return 0
  echo
  echo "| measure | weft | weft x floor | Node | Node x floor | aim | aim met |"
  echo "| --- | ---: | ---: | ---: | ---: | --- | --- |"
  echo "$rows"
}
floor_table >>"$tmp/table.md"

load1=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
machine="$(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr), Node $("$NODE" --version)"
{
  echo "Measured $started with \`bench/run.sh\` (BENCH_ROUNDS=$ROUNDS), medians of $ROUNDS rounds."
  echo "Machine: $machine."
  if [ -n "${BENCH_REV:-}" ]; then
    echo "weft at commit $BENCH_REV."
  elif rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null); then
    dirty=$(git -C "$root" status --porcelain -- lib transport include 2>/dev/null | wc -l)
    echo "weft at commit $rev$([ "$dirty" -gt 0 ] && echo " with $dirty uncommitted change(s) in lib/, transport/ or include/")."
  fi
  echo "Load average (1/5/15 min) at start: $load0; at end: $load1 (anything else running on the machine skews the numbers, the spinning ones most)."
  [ $have_weft -eq 0 ] && echo "weft binary not found at $WEFT_BIN: weft column pending."
  [ "$QUIET_WAIT" -gt 0 ] 2>/dev/null && echo "Each run waited up to ${QUIET_WAIT}s for the machine to be quiet (< 15% busy); $( [ -s "$tmp/noisy" ] && wc -l <"$tmp/noisy" || echo 0) runs started on a busy machine anyway."
  [ -s "$tmp/weft.failed" ] && echo "weft runs that failed: $(sort "$tmp/weft.failed" | uniq -c | awk '{printf "%s%s x%d", (NR>1?", ":""), $2, $1}')."
  [ -s "$tmp/node.failed" ] && echo "Node runs that failed: $(sort "$tmp/node.failed" | uniq -c | awk '{printf "%s%s x%d", (NR>1?", ":""), $2, $1}')."
  echo
  if [ -n "$WORKLOADS" ]; then cat "$tmp/table.md"; else echo "(no weft_bench workload run)"; fi
  echo
  echo "Raw values (every round):"
  echo
  echo '```'
  for side in floor weft node; do
    awk -v s="$side" '{v[$1] = v[$1] " " $2; u[$1] = $3; if (!($1 in seen)) {seen[$1]=1; order[++n]=$1}}
      END {for (i = 1; i <= n; i++) printf "%-5s %-14s %-9s%s\n", s, order[i], u[order[i]], v[order[i]]}' \
      "$tmp/$side.results"
  done
  echo '```'
} >"$tmp/report.md"

# The pool and offload table (issue 6), after the main one.
pool_table() {
  local w n
  [ -n "$POOL_WORKLOADS" ] || return 0
  # row LABEL WEFT_METRIC NODE_METRIC KIND AIM: KIND "hi" (higher is
  # better: ratio weft/node), "lo" (ratio node/weft), "-" (no ratio);
  # AIM "ge X" / "le X" / "-" on the weft value.
  row() {
    local wv nv ratio met=""
    wv=$(median "$2" "$tmp/weft.results")
    nv=-
    [ "$3" != - ] && nv=$(median "$3" "$tmp/node.results")
    ratio=$(awk -v w="$wv" -v n="$nv" -v k="$4" 'BEGIN {
      if (k == "-" || w == "-" || n == "-" || w + 0 <= 0 || n + 0 <= 0) { print "-"; exit }
      r = (k == "hi") ? w / n : n / w
      if (r >= 100) printf "%.0fx\n", r; else printf "%.2fx\n", r }')
    if [ "$5" != - ] && [ "$wv" != - ]; then
      met=$(awk -v w="$wv" -v a="${5#* }" -v k="${5%% *}" 'BEGIN {
        print ((k == "ge" && w >= a) || (k == "le" && w <= a)) ? "yes" : "no" }')
    fi
    echo "| $1 | $(fmt "$wv") | $(fmt "$nv") | $ratio | ${6:-} | $met |"
  }
  echo
  echo "Pool overhead and offload speedup ($(nproc) CPUs; weft_bench pool|offload vs node bench/node/pool.js):"
  echo
  echo "| measure | weft | Node | weft better by | aim | aim met |"
  echo "| --- | ---: | ---: | ---: | --- | --- |"
  row "empty tasks/s, from a loop; Node: Piscina" pool.tasks pool.tasks hi - ""
  row "per task, us; Node: Piscina" pool.task_us pool.task_us lo - ""
  w=$(median pool.tasks "$tmp/weft.results"); n=$(median pool.tasks "$tmp/node.results")
  met=$(awk -v w="$w" -v n="$n" 'BEGIN { if (w == "-" || n == "-" || n + 0 <= 0) print "-";
        else print (w / n >= 20) ? "yes" : "no" }')
  echo "| overhead vs Piscina's | | | | >= 20x lower | $met |"
  row "empty tasks/s, from a loop; Node: plain worker_threads, round robin" pool.tasks pool.tasks.wt hi - ""
  row "empty tasks/s, futures from a thread with no loop" pool.tasks.future - - - ""
  row "empty work items/s, libuv threadpool (weft_queue_work), from a loop" pool.queue_work - - - ""
  for k in primes mandel; do
    row "$k on one thread, ms" "offload.$k.1t" "offload.$k.1t" lo - ""
    row "$k speedup, warm pool" "offload.$k.warm" "offload.$k.warm" hi "ge 1.95" ">= 1.95x"
    row "$k speedup, counting pool start" "offload.$k.cold" "offload.$k.cold" hi "ge 1.9" ">= 1.9x"
  done
}
pool_table >>"$tmp/report.md"
if [ "$SAVINA" = 1 ]; then
  {
    echo
    echo "### Savina actor benchmarks: weft vs CAF vs Erlang (bench/savina/run.sh)"
    echo
    [ $savina_rc -ne 0 ] && echo "bench/savina/run.sh FAILED (exit $savina_rc); what it measured:" && echo
    cat "$tmp/savina.md"
  } >>"$tmp/report.md"
fi
if [ "$NATS" = 1 ]; then
  {
    echo
    echo "### Nodes over NATS: weft vs raw nats.c, Node's fork IPC, Erlang distribution (bench/nats_bench.c)"
    echo
    nats_table
  } >>"$tmp/report.md"
fi
if [ "$LOGIN" = 1 ]; then
  {
    echo
    echo "### Login API under wrk (bench/login.sh)"
    echo
    [ $login_rc -ne 0 ] && echo "bench/login.sh FAILED (exit $login_rc); what it measured:" && echo
    cat "$tmp/login.md"
  } >>"$tmp/report.md"
fi

echo
cat "$tmp/report.md"
if [ "$OUT" != - ]; then
  cp "$tmp/report.md" "$OUT" && echo && echo "(written to $OUT)"
fi

# --- The charts (bench/chart.sh, gnuplot): the medians of this run, one
# line "<side> <metric> <median> <unit>" each, drawn as SVG. Without
# gnuplot chart.sh says so and the bench is done all the same.
if [ "$CHARTS" != - ]; then
  for side in floor weft node; do
    awk '!seen[$1]++ {print $1, $3}' "$tmp/$side.results" | while read -r metric unit; do
      echo "$side $metric $(median "$metric" "$tmp/$side.results") $unit"
    done
  done >"$tmp/medians.txt"
  if [ -n "${BENCH_REV:-}" ]; then
    chart_rev=$BENCH_REV
  else
    chart_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
    [ "$(git -C "$root" status --porcelain -- lib transport include 2>/dev/null | wc -l)" -gt 0 ] &&
      chart_rev="$chart_rev + uncommitted changes"
  fi
  echo
  bash "$here/chart.sh" "$tmp/medians.txt" "$CHARTS" \
    "weft $chart_rev vs Node $("$NODE" --version) · bench/run.sh, $started, medians of $ROUNDS round$([ "$ROUNDS" -ne 1 ] && echo s) · $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))" ||
    echo "run.sh: bench/chart.sh failed: no charts" >&2
fi
