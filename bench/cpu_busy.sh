# bench/cpu_busy.sh - sourced by run.sh, login.sh and ab.sh: how busy the
# machine is, and waiting for it to be quiet.

# Busy share of all CPUs over 0.5 s, in percent (from /proc/stat).
cpu_busy() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 0.5
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  echo "$a $b" | awk '{d = $4 - $2; print (d > 0) ? int(100 * ($3 - $1) / d) : 0}'
}

# wait_quiet: wait at most $QUIET_WAIT s (0: not at all) until other
# processes use < 15% of the CPUs; if they never do, say so on stderr,
# count the run in $tmp/noisy and go on.
wait_quiet() {
  [ "$QUIET_WAIT" -gt 0 ] 2>/dev/null || return 0
  local start=$SECONDS busy
  while busy=$(cpu_busy); [ "$busy" -ge 15 ]; do
    if [ $((SECONDS - start)) -ge "$QUIET_WAIT" ]; then
      echo "  machine still ${busy}% busy after ${QUIET_WAIT}s: running anyway" >&2
      echo x >>"$tmp/noisy"
      return 0
    fi
    sleep 1
  done
}
