#!/bin/bash
# nats_ab.sh - two builds of nats_bench side by side, interleaved, through one
# nats-server: raw nats.c, raw sending at once, weft from OLD, weft from NEW.
#   bench/nats_ab.sh OLD/nats_bench NEW/nats_bench [ROUNDS] [rtt|oneway|mib|all]
# Prints "<side> RESULT <metric> <value> <unit>" per round (old, new: weft).
set -u
OLD=$1 NEW=$2 ROUNDS=${3:-3} WL=${4:-rtt}
tmp=$(mktemp -d)
port=$("$NEW" freeport)
url=nats://127.0.0.1:$port
nats-server -a 127.0.0.1 -p "$port" >"$tmp/server.log" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do grep -q 'Server is ready' "$tmp/server.log" && break; sleep 0.1; done
run() { # binary side label
  "$1" serve "$2" "$url" >"$tmp/serve.log" 2>&1 &
  local p=$!
  for _ in $(seq 50); do grep -q '^ready' "$tmp/serve.log" && break; sleep 0.1; done
  timeout 120 "$1" "$2" "$WL" "$url" | grep RESULT | sed "s|^|$3 |"
  kill $p
  wait $p 2>/dev/null
}
for _ in $(seq "$ROUNDS"); do
  run "$OLD" raw raw
  run "$OLD" rawasap rawasap
  run "$OLD" weft old
  run "$NEW" weft new
done
