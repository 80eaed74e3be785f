#!/usr/bin/env bash
# bench/savina/run.sh - the Savina workloads in weft, CAF and Erlang, R rounds
# each, peers alternated, and a markdown table of medians (README.md).
#
#   bench/savina/run.sh [ROUNDS]
#
# Environment:
#   SAVINA_ROUNDS     rounds (default 3; the first argument wins over it)
#   SAVINA_WORKLOADS  space-separated subset of: pingpong counting threadring
#                     fjthroughput fjcreation big chameneos idle (default all)
#   SAVINA_PEERS      space-separated subset of: weft caf caf2 erlang
#                     erlang_offheap weft_before (default all but
#                     weft_before)
#   SAVINA_TIMEOUT    seconds allowed for one run (default 300)
#   SAVINA_BUILD      the bench build directory (default build-bench)
#   SAVINA_WEFT       weft's binary (default $SAVINA_BUILD/bench/savina_weft)
#   SAVINA_WEFT_BEFORE  another build of savina_weft (an older commit's),
#                     run as peer weft_before to compare a change side by
#                     side; never counted as the best peer
#   SAVINA_CAF        CAF's binary (default $SAVINA_BUILD/bench/savina_caf)
#   ERL, ERLC         the Erlang runtime and compiler (default erl, erlc)
#   SAVINA_OFFHEAP_WORKLOADS  the workloads erlang_offheap runs (default
#                     "fjthroughput fjcreation")
#
# Peers: weft = savina_weft <workload>; caf = savina_caf <workload> (CAF's
# default scheduler count); caf2 = the same with --scheduler.max-threads=2;
# erlang = erl -noshell +P 4000000 (default schedulers); erlang_offheap =
# the same with +hmqd off_heap (every process's mailbox off its heap), only
# for the workloads where a mailbox grows long: fjthroughput (the workers')
# and fjcreation (the driver's); SAVINA_OFFHEAP_WORKLOADS changes that list.
# Every program prints "RESULT savina.<workload> <value> <unit>" (ms or
# B/actor, both lower-is-better) and exits non-zero when its check fails.
# A peer whose program is missing shows "n/a"; a run that fails or times out
# is "fail" (all rounds) or counted next to the median of the others.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root" || exit 1

ROUNDS=${1:-${SAVINA_ROUNDS:-3}}
ALL_WORKLOADS="pingpong counting threadring fjthroughput fjcreation big chameneos idle"
WORKLOADS=${SAVINA_WORKLOADS:-$ALL_WORKLOADS}
PEERS=${SAVINA_PEERS:-"weft caf caf2 erlang erlang_offheap"}
TIMEOUT=${SAVINA_TIMEOUT:-300}
BUILD=${SAVINA_BUILD:-build-bench}
WEFT_BIN=${SAVINA_WEFT:-$BUILD/bench/savina_weft}
CAF_BIN=${SAVINA_CAF:-$BUILD/bench/savina_caf}
ERL=${ERL:-erl}
ERLC=${ERLC:-erlc}
OFFHEAP_WORKLOADS=${SAVINA_OFFHEAP_WORKLOADS:-"fjthroughput fjcreation"}

case $ROUNDS in
  ''|*[!0-9]*|0) echo "run.sh: ROUNDS must be a positive integer" >&2; exit 2 ;;
esac
for w in $WORKLOADS; do
  [[ " $ALL_WORKLOADS " == *" $w "* ]] || { echo "run.sh: unknown workload $w" >&2; exit 2; }
done
for p in $PEERS; do
  [[ " weft caf caf2 erlang erlang_offheap weft_before " == *" $p "* ]] || { echo "run.sh: unknown peer $p" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/savina.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# Which peers can run here; the Erlang module is compiled into $tmp.
declare -A avail
[ -x "$WEFT_BIN" ] && avail[weft]=1
[ -n "${SAVINA_WEFT_BEFORE:-}" ] && [ -x "$SAVINA_WEFT_BEFORE" ] && avail[weft_before]=1
[ -x "$CAF_BIN" ] && { avail[caf]=1; avail[caf2]=1; }
if command -v "$ERL" >/dev/null 2>&1 && command -v "$ERLC" >/dev/null 2>&1; then
  if "$ERLC" -o "$tmp" "$here/erlang/savina.erl"; then
    avail[erlang]=1
    avail[erlang_offheap]=1
  else
    echo "run.sh: erlc failed: erlang is n/a" >&2
  fi
fi
for p in $PEERS; do
  [ -n "${avail[$p]:-}" ] || echo "run.sh: $p is n/a (no program: see bench/savina/README.md)" >&2
done

# peer_cmd PEER WORKLOAD: the command line of one run.
peer_cmd() {
  case $1 in
    weft) echo "$WEFT_BIN $2" ;;
    weft_before) echo "$SAVINA_WEFT_BEFORE $2" ;;
    caf) echo "$CAF_BIN $2" ;;
    caf2) echo "$CAF_BIN $2 --scheduler.max-threads=2" ;;
    erlang) echo "$ERL -noshell +P 4000000 -pa $tmp -run savina main $2" ;;
    erlang_offheap) echo "$ERL -noshell +P 4000000 +hmqd off_heap -pa $tmp -run savina main $2" ;;
  esac
}

# applies PEER WORKLOAD: whether that peer runs that workload at all.
applies() {
  [ "$1" != erlang_offheap ] || [[ " $OFFHEAP_WORKLOADS " == *" $2 "* ]]
}

declare -A vals fails units info
start=$(date +%s)
echo "run.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS round(s), workloads: $WORKLOADS; peers: $PEERS" >&2

for w in $WORKLOADS; do
  # The peers that run this workload, in table order; each round starts one
  # further along, so that no peer always runs first (or right after the
  # same other one).
  order=()
  for p in $PEERS; do
    applies "$p" "$w" && [ -n "${avail[$p]:-}" ] && order+=("$p")
  done
  n=${#order[@]}
  for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
      p=${order[$(((i + r) % n))]}
      # shellcheck disable=SC2046 # the command line is split into words.
      timeout -k 10 "$TIMEOUT" $(peer_cmd "$p" "$w") >"$tmp/out" 2>"$tmp/err"
      rc=$?
      line=$(grep -m1 "^RESULT savina\.$w " "$tmp/out")
      if [ $rc -eq 0 ] && [ -n "$line" ]; then
        # shellcheck disable=SC2086 # split the line into its fields.
        set -- $line
        vals[$w,$p]="${vals[$w,$p]:-} $3"
        units[$w]=$4
        echo "  $w $p round $((r + 1)): $3 $4" >&2
        # What the runtime said about its threads (savina_caf and savina.erl
        # print it on stderr), once per peer.
        [ -n "${info[$p]:-}" ] || info[$p]=$(grep -m1 -i 'scheduler' "$tmp/err")
      else
        fails[$w,$p]=$((${fails[$w,$p]:-0} + 1))
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then why="timed out after ${TIMEOUT}s"; else why="exit $rc"; fi
        echo "  $w $p round $((r + 1)): FAIL ($why): $(tail -n 3 "$tmp/err" | tr '\n' ' ')" >&2
      fi
    done
  done
done

# median V...: the middle value (the mean of the two middle ones if even).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "| workload | unit |$(for p in $PEERS; do printf ' %s |' "$p"; done) weft vs best peer |"
echo "| --- | --- |$(for p in $PEERS; do printf ' ---: |'; done) ---: |"
for w in $WORKLOADS; do
  row="| $w | ${units[$w]:-?} |"
  best=""; best_peer=""; weft_med=""
  for p in $PEERS; do
    if ! applies "$p" "$w"; then
      cell="-"
    elif [ -z "${avail[$p]:-}" ]; then
      cell="n/a"
    elif [ -z "${vals[$w,$p]:-}" ]; then
      cell="fail"
    else
      # shellcheck disable=SC2086 # the values are a list of words.
      m=$(median ${vals[$w,$p]})
      cell=$m
      [ -n "${fails[$w,$p]:-}" ] && cell="$m (${fails[$w,$p]} fail)"
      if [ "$p" = weft ]; then
        weft_med=$m
      elif [ "$p" = weft_before ]; then
        : # weft itself, not a peer
      elif [ -z "$best" ] || awk -v a="$m" -v b="$best" 'BEGIN { exit !(a < b) }'; then
        best=$m; best_peer=$p
      fi
    fi
    row="$row $cell |"
  done
  # Both units are lower-is-better: best peer / weft, above 1x weft wins.
  if [ -n "$weft_med" ] && [ -n "$best" ]; then
    ratio=$(awk -v b="$best" -v x="$weft_med" -v p="$best_peer" \
      'BEGIN { if (x > 0) printf "%.2fx (%s)", b / x, p; else print "?" }')
  else
    ratio="n/a"
  fi
  echo "$row $ratio |"
done
echo
echo "Medians of $ROUNDS round(s); \"weft vs best peer\" = best of CAF and Erlang / weft (above 1x: weft better)."
for p in $PEERS; do
  [ -n "${avail[$p]:-}" ] || continue
  line="- $p: $(peer_cmd "$p" '<workload>' | sed "s|$tmp|<ebin>|")"
  [ -n "${info[$p]:-}" ] && line="$line (${info[$p]})"
  echo "$line"
done
[ -n "${SAVINA_SCALE:-}" ] && echo "SAVINA_SCALE=$SAVINA_SCALE: every size divided by $SAVINA_SCALE (not the Savina sizes)."
echo "Total time: $(($(date +%s) - start)) s."
