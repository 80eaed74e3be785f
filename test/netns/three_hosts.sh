#!/usr/bin/env bash
# three_hosts.sh - issue 10's "3-host variant": three hosts made of network
# namespaces on one machine, joined by a switch (a bridge in a fourth
# namespace), each with a nats-server of one cluster (routes to the other
# two) and a weft node: a (test/netns/link_cut_driver), b and c
# (test/node_app). The driver cuts host 3's link at the switch and restores
# it; see link_cut_driver.c for what it checks.
#
#   three_hosts.sh NODE_APP LINK_CUT_DRIVER
#
# Needs root and iproute2 (`ip netns`); exits 77 (skipped, as ctest's
# SKIP_RETURN_CODE) where the machine does not allow it, and says why.
set -u
NODE_APP=$1
DRIVER=$2
if [ "$(id -u)" != 0 ]; then
  echo "three_hosts: skipped: needs root for ip netns"
  exit 77
fi
if ! command -v ip >/dev/null || ! command -v nats-server >/dev/null; then
  echo "three_hosts: skipped: needs iproute2 and nats-server"
  exit 77
fi
tag=w$$ # Unique names for this run (interface names: 15 chars at most).
sw=${tag}sw
net=10.$((($$ % 200) + 20)).$((($$ / 200) % 250)).
tmp=$(mktemp -d)
pids=()

cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null; done
  sleep 0.2
  for p in "${pids[@]+"${pids[@]}"}"; do kill -9 "$p" 2>/dev/null; done
  for i in 1 2 3; do ip netns del "${tag}h$i" 2>/dev/null; done
  ip netns del "$sw" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! ip netns add "$sw" 2>"$tmp/err"; then
  echo "three_hosts: skipped: ip netns add failed: $(cat "$tmp/err")"
  exit 77
fi
set -e
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
for i in 1 2 3; do
  h=${tag}h$i
  ip netns add "$h"
  ip -n "$h" link set lo up
  ip link add "${tag}e$i" type veth peer name "${tag}s$i"
  ip link set "${tag}e$i" netns "$h"
  ip link set "${tag}s$i" netns "$sw"
  ip -n "$h" addr add "${net}$i/24" dev "${tag}e$i"
  ip -n "$h" link set "${tag}e$i" up
  ip -n "$sw" link set "${tag}s$i" master br0
  ip -n "$sw" link set "${tag}s$i" up
done
set +e

# The servers: each routes to the other two; pings every second, so that a
# cut route is seen within a few seconds.
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do
    [ "$i" = "$j" ] || routes="$routes \"nats-route://${net}$j:6222\","
  done
  cat >"$tmp/s$i.conf" <<CONF
listen: "${net}$i:4222"
server_name: "s$i"
ping_interval: "1s"
ping_max: 2
cluster {
  name: "weftnetns"
  listen: "${net}$i:6222"
  routes: [ ${routes%,} ]
}
CONF
  ip netns exec "${tag}h$i" nats-server -c "$tmp/s$i.conf" >"$tmp/s$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do
    grep -q 'Server is ready' "$tmp/s$i.log" && break
    sleep 0.1
  done
done

ip netns exec "${tag}h2" "$NODE_APP" "nats://${net}2:4222" b 100 >"$tmp/b.log" 2>&1 &
pids+=($!)
ip netns exec "${tag}h3" "$NODE_APP" "nats://${net}3:4222" c 100 >"$tmp/c.log" 2>&1 &
pids+=($!)

ip netns exec "${tag}h1" timeout 180 "$DRIVER" "nats://${net}1:4222" \
  "ip -n $sw link set ${tag}s3 down" "ip -n $sw link set ${tag}s3 up"
rc=$?
if [ "$rc" != 0 ]; then
  echo "--- three_hosts: driver exited $rc; the others' logs:"
  for f in s1 s2 s3 b c; do
    echo "--- $f"
    tail -n 20 "$tmp/$f.log"
  done
fi
exit "$rc"
