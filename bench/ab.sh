#!/usr/bin/env bash
# bench/ab.sh - the same weft workloads from two builds of weft_bench, A and
# B, alternating in one run (who goes first alternates too), medians of R
# rounds and the ratio B/A. For "did this change make weft slower": build
# the old commit and the new one, then compare them side by side on the
# same machine at the same time, as hosts of one machine kind differ.
#
#   bench/ab.sh OLD_BIN NEW_BIN [workload...]
#
# Workloads default to "pingpong throughput spawn". Environment:
# BENCH_ROUNDS (default 7), BENCH_N_<workload> (N passed to the binary;
# defaults below), BENCH_QUIET_WAIT (seconds to wait for other processes
# to use < 15% of the CPUs before each run; default 60).
#
# Example (what bench/README.md's before/after table came from):
#   git worktree add /tmp/old 3a695aa
#   cmake -S /tmp/old -B /tmp/old/b -DCMAKE_BUILD_TYPE=Release \
#     -DWEFT_BUILD_BENCH=ON -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_SAMPLES=OFF
#   cmake --build /tmp/old/b --target weft_bench
#   make bench   # or build build-bench/ the same way
#   bench/ab.sh /tmp/old/b/bench/weft_bench build-bench/bench/weft_bench
set -u

if [ $# -lt 2 ]; then
  echo "usage: $0 OLD_BIN NEW_BIN [workload...]" >&2
  exit 2
fi
A=$1 B=$2
shift 2
WORKLOADS=${*:-pingpong throughput spawn}
ROUNDS=${BENCH_ROUNDS:-7}
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
for bin in "$A" "$B"; do
  [ -x "$bin" ] || { echo "ab.sh: $bin is not executable" >&2; exit 2; }
done

n_of() {
  case $1 in
    pingpong) echo "${BENCH_N_pingpong:-200000}" ;;
    throughput) echo "${BENCH_N_throughput:-2000000}" ;;
    spawn) echo "${BENCH_N_spawn:-1000}" ;;
    *) eval "echo \${BENCH_N_${1//-/_}:-}" ;; # pingpong-int: BENCH_N_pingpong_int
  esac
}

# cpu_busy: busy share of all CPUs over 0.5 s, in percent.
# shellcheck source=bench/cpu_busy.sh
. "$(dirname "${BASH_SOURCE[0]}")/cpu_busy.sh"

wait_quiet() {
  local start=$SECONDS
  while [ "$(cpu_busy)" -ge 15 ]; do
    [ $((SECONDS - start)) -ge "$QUIET_WAIT" ] && {
      echo "  (machine still busy after ${QUIET_WAIT}s: running anyway)" >&2
      return
    }
    sleep 1
  done
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-ab.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for wl in $WORKLOADS; do
  n=$(n_of "$wl")
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for side in $order; do
      if [ "$side" = A ]; then bin=$A; else bin=$B; fi
      wait_quiet
      # shellcheck disable=SC2086 # $n is empty or one number.
      timeout 300 "$bin" "$wl" $n | awk -v s="$side" '$1 == "RESULT" {print s, $2, $3, $4}' \
        >>"$tmp/results" || echo "ab.sh: $side $wl round $r failed" >&2
    done
  done
done

printf '%-16s %14s %14s %8s  %s\n' metric "A median" "B median" "B/A" unit
awk '{print $2}' "$tmp/results" | sort -u | while read -r metric; do
  med() {
    grep -E "^$1 $metric " "$tmp/results" | awk '{print $3}' | sort -g |
      awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
  }
  unit=$(grep -m1 -E "^A $metric " "$tmp/results" | awk '{print $4}')
  a=$(med A) b=$(med B)
  all_a=$(grep -E "^A $metric " "$tmp/results" | awk '{printf "%s ", $3}')
  all_b=$(grep -E "^B $metric " "$tmp/results" | awk '{printf "%s ", $3}')
  printf '%-16s %14s %14s %8s  %s\n' "$metric" "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", (a > 0) ? b / a : 0}')" "$unit"
  echo "  A: $all_a" >>"$tmp/raw"
  echo "  B: $all_b  ($metric)" >>"$tmp/raw"
done
echo "raw values:"
cat "$tmp/raw"
