#!/usr/bin/env bash
# bench/chart.sh - draw the bench's medians as SVG charts with gnuplot.
#
#   bench/chart.sh MEDIANS OUTDIR "TITLE"
#   bench/chart.sh --report REPORT.md OUTDIR
#
# The second form redraws the charts of an earlier run from its report
# (bench/results.md, or any BENCH_OUT of run.sh): the medians of the raw
# values it lists, the title from its header.
#
# MEDIANS has one line per measured metric, "<side> <metric> <median>
# <unit>", side being weft, node or floor (bench/run.sh writes it from the
# medians of its table, so the charts show the numbers of that same run).
# A metric that is not in the file (workload not run, or every round
# failed) is left out of the charts, never drawn as zero. Writes:
#
#   OUTDIR/chart.svg    weft vs Node: latencies and rates (log scales), CPU
#                       when idle / ticking, weft and Node as multiples of
#                       this host's floor with issue 9's aims, and "weft
#                       better by" for every workload
#   OUTDIR/cpurate.svg  the cpurate sweep: % of a core against messages/s
#                       for 1 and 8 workers, weft and Node, and weft's CPU
#                       over Node's (only if cpurate was run)
#
# Needs gnuplot (scripts/deps.sh --bench installs gnuplot-nox); without it
# this says so and exits 0, so the bench goes on.
set -u
# shellcheck source=bench/fmt.sh
. "$(cd "$(dirname "$0")" && pwd)/fmt.sh"

if [ $# -ne 3 ]; then
  echo "usage: bench/chart.sh MEDIANS OUTDIR TITLE | --report REPORT.md OUTDIR" >&2
  exit 2
fi
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "chart.sh: gnuplot not found (scripts/deps.sh --bench installs gnuplot-nox): no charts" >&2
  exit 0
fi
d=$(mktemp -d "${TMPDIR:-/tmp}/weft-chart.XXXXXX")
trap 'rm -rf "$d"' EXIT
if [ "$1" = --report ]; then
  report=$2 outdir=$3 med="$d/medians.txt"
  [ -r "$report" ] || { echo "chart.sh: cannot read $report" >&2; exit 1; }
  # The raw block: "<side> <metric> <unit> <value>...", one line a metric;
  # the median as run.sh takes it.
  awk '/^Raw values/ {raw = 1; next} raw && /^```/ {if (++fence == 2) exit; next}
       raw && fence == 1 && NF >= 4 {
         n = 0; for (i = 4; i <= NF; i++) v[++n] = $i + 0
         for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
         m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
         print $1, $2, m, $3 }' "$report" >"$med"
  [ -s "$med" ] || { echo "chart.sh: no raw values in $report" >&2; exit 1; }
  title=$(awk '
    /^Measured / {when = $2 " " $3 " " $4; r = $0; sub(/.*BENCH_ROUNDS=/, "", r); sub(/\).*/, "", r)}
    /^Machine: / {m = $0; sub(/^Machine: /, "", m); cpus = m; sub(/\), .*/, ")", cpus)
                  node = m; sub(/.*, Node /, "", node); sub(/\.$/, "", node)}
    /^weft at commit / {rev = $0; sub(/^weft at commit /, "", rev); sub(/\.$/, "", rev)}
    END {printf "weft %s vs Node %s · bench/run.sh, %s, medians of %s round%s · %s\n",
         rev, node, when, r, (r == 1 ? "" : "s"), cpus}' "$report")
else
  med=$1 outdir=$2 title=$3
  [ -r "$med" ] || { echo "chart.sh: cannot read $med" >&2; exit 1; }
fi
mkdir -p "$outdir" || exit 1

# val SIDE METRIC: the median, or nothing if it was not measured (or is not
# a positive number: a log scale cannot show it, and 0 means "not run").
val() {
  awk -v s="$1" -v m="$2" '$1 == s && $2 == m && $3 + 0 > 0 {print $3; exit}' "$med"
}
# gq STRING: STRING as a gnuplot double-quoted string ("\n" stays a newline).
gq() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\\([^n]\)/\\\\\1/g; s/"/\\"/g')"; }
# widen VALUE...: stretch the caller's `lo` and `hi` (empty: unset) over
# the values (bash's dynamic scope: the panel functions' locals).
widen() {
  local v
  for v in "$@"; do
    lo=$(awk -v a="$lo" -v b="$v" 'BEGIN {print (a == "" || b + 0 < a + 0) ? b : a}')
    hi=$(awk -v a="$hi" -v b="$v" 'BEGIN {print (a == "" || b + 0 > a + 0) ? b : a}')
  done
}
# num VALUE: VALUE formatted for a label (fmt.sh).
num() { fmt "$1"; }
# si VALUE: 3.76M, 514k, ... for rates.
si() {
  awk -v v="$1" 'BEGIN {
    if (v >= 1e9) printf "%.3gG\n", v / 1e9
    else if (v >= 1e6) printf "%.3gM\n", v / 1e6
    else if (v >= 1e3) printf "%.3gk\n", v / 1e3
    else printf "%.3g\n", v }'
}
# range LO HI: a log axis "[lo:hi]" around values LO..HI (whole decades,
# headroom above for the value labels).
range() {
  awk -v lo="$1" -v hi="$2" '
    function fl(x) { return (x == int(x) || x > 0) ? int(x) : int(x) - 1 }
    BEGIN {
      a = exp(log(10) * fl(log(lo / 1.2) / log(10)))
      b = exp(log(10) * (fl(log(hi * 4) / log(10)) + 1))
      printf "[%g:%g]\n", a, b }'
}
# lower END OF "[a:b]": a.
lower() { echo "$1" | sed 's/\[\([^:]*\):.*/\1/'; }
# mx VALUE: a multiple or ratio as a label, "4.41x", "15.3x", "1969x".
mx() {
  awk -v r="$1" 'BEGIN {if (r >= 100) printf "%.0fx", r; else if (r >= 10) printf "%.1fx", r;
    else if (r >= 1) printf "%.2fx", r; else printf "%.2gx", r}'
}

gp="$d/chart.gp"
{
  echo "set encoding utf8"
  echo "set terminal svg size 1280,1500 fixed font 'sans,12' background rgb 'white'"
  echo "set output $(gq "$outdir/chart.svg")"
  echo "set termoption noenhanced"
  echo "set datafile missing '?'"
  echo "set style fill solid 0.85 border rgb '#333333'"
  echo "set grid ytics mytics lc rgb '#dddddd' lw 1"
  echo "set key top left opaque box lc rgb '#cccccc'"
  echo "weft = 0x1f6fb4; node = 0xe08a1e; good = 0x2e9e48; bad = 0xc83a32"
  echo "set multiplot title $(gq "$title") font ',14'"
} >"$gp"

# --- grouped bars, weft vs Node: bars NAME YLABEL TITLE "metric|label" ...
# Writes NAME.dat (index, weft, Node, their labels) and the plot commands
# for the current panel. The weft and Node bars of a metric sit side by
# side; a side that did not measure it has no bar.
bars() {
  local name=$1 ylabel=$2 ptitle=$3 spec metric label w n i=0 tics="" lo="" hi=""
  shift 3
  : >"$d/$name.dat"
  for spec in "$@"; do
    metric=${spec%%|*} label=${spec#*|}
    w=$(val weft "$metric") n=$(val node "$metric")
    [ -z "$w" ] && [ -z "$n" ] && continue
    printf '%d %s %s "%s" "%s"\n' "$i" "${w:-?}" "${n:-?}" \
      "$([ -n "$w" ] && num "$w")" "$([ -n "$n" ] && num "$n")" >>"$d/$name.dat"
    tics="$tics${tics:+, }$(gq "$label") $i"
    widen $w $n
    i=$((i + 1))
  done
  echo "set title $(gq "$ptitle")"
  if [ $i -eq 0 ]; then
    empty_panel
    return
  fi
  cat <<EOF
set xtics ($tics) nomirror scale 0
set xrange [-0.6:$((i - 1)).6]
set logscale y
set yrange $(range "$lo" "$hi"); ylo = $(lower "$(range "$lo" "$hi")")
set format y '%.10g'
set ylabel $(gq "$ylabel")
plot '$d/$name.dat' using (\$1-0.2):2:(\$1-0.38):(\$1-0.02):(ylo):2 with boxxyerror lc rgb weft title 'weft', \\
     '' using (\$1+0.2):3:(\$1+0.02):(\$1+0.38):(ylo):3 with boxxyerror lc rgb node title 'Node', \\
     '' using (\$1-0.2):2:4 with labels offset 0,0.7 font ',10' notitle, \\
     '' using (\$1+0.2):3:5 with labels offset 0,0.7 font ',10' notitle
EOF
  reset_panel
}
# A panel whose workloads were not run: its title and a note, no axes.
empty_panel() {
  cat <<'EOF'
unset xtics; unset ytics; unset border; unset grid; unset logscale; unset key
set xrange [0:1]; set yrange [0:1]
set label 1 "not measured in this run" at graph 0.5,0.5 center
plot NaN notitle
unset label 1
EOF
  reset_panel
}
reset_panel() {
  cat <<'EOF'
unset logscale; unset arrow; unset label; unset ylabel; unset xlabel; unset y2tics; unset y2label
set border; unset grid; set grid ytics mytics; set xtics autofreq; set ytics autofreq nomirror
set format x '%g'; set format y '%g'; set xrange [*:*]; set yrange [*:*]; set lmargin -1
set key top left
EOF
}

# Panel 1 (top left): latencies, lower is better.
{
  echo "set origin 0,0.655; set size 0.5,0.31"
  bars lat "µs per operation (log scale; lower is better)" \
    "Latencies: weft vs Node (medians)" \
    "pingpong.rtt|ping-pong\nround trip" \
    "call.rtt|blocking call\n(weft only)" \
    "atomics.rtt|wait/notify\nround trip" \
    "transfer.1k|transfer\n1 KiB" \
    "transfer.1m|transfer\n1 MiB" \
    "transfer.64m|transfer\n64 MiB" \
    "spawn.each|spawn\nto exit"
} >>"$gp"

# Panel 2 (top right): message rates (msgs/s) and the 1 MiB copy (GB/s, on
# the right axis), higher is better.
rates() {
  local spec metric label w n i=0 tics="" lo="" hi="" cw cn cx
  : >"$d/rate.dat"
  for spec in "throughput|one-way\n1 → 1" "fanin|fan-in\n8 → 1" "fanout|fan-out\n1 → 8"; do
    metric=${spec%%|*} label=${spec#*|}
    w=$(val weft "$metric") n=$(val node "$metric")
    [ -z "$w" ] && [ -z "$n" ] && continue
    printf '%d %s %s "%s" "%s"\n' "$i" "${w:-?}" "${n:-?}" \
      "$([ -n "$w" ] && si "$w")" "$([ -n "$n" ] && si "$n")" >>"$d/rate.dat"
    tics="$tics${tics:+, }$(gq "$label") $i"
    widen $w $n
    i=$((i + 1))
  done
  cw=$(val weft copy1m) cn=$(val node copy1m) cx=$i
  : >"$d/copy.dat"
  if [ -n "$cw$cn" ]; then
    printf '%d %s %s "%s" "%s"\n' "$cx" "${cw:-?}" "${cn:-?}" \
      "$([ -n "$cw" ] && num "$cw")" "$([ -n "$cn" ] && num "$cn")" >>"$d/copy.dat"
    tics="$tics${tics:+, }\"copy 1 MiB\\n(GB/s, right axis)\" $cx"
    i=$((i + 1))
  fi
  echo "set title 'Rates: weft vs Node (medians)'"
  if [ $i -eq 0 ]; then empty_panel; return; fi
  echo "set xtics ($tics) nomirror scale 0"
  echo "set xrange [-0.6:$((i - 1)).6]"
  local plots=""
  if [ -s "$d/rate.dat" ]; then
    echo "set logscale y; set yrange $(range "$lo" "$hi"); ylo = $(lower "$(range "$lo" "$hi")")"
    echo "set ylabel 'messages/s (log scale; higher is better)'"
    echo "set format y '%.0s%c'"
    plots="'$d/rate.dat' using (\$1-0.2):2:(\$1-0.38):(\$1-0.02):(ylo):2 with boxxyerror lc rgb weft title 'weft', \
'' using (\$1+0.2):3:(\$1+0.02):(\$1+0.38):(ylo):3 with boxxyerror lc rgb node title 'Node', \
'' using (\$1-0.2):2:4 with labels offset 0,0.7 font ',10' notitle, \
'' using (\$1+0.2):3:5 with labels offset 0,0.7 font ',10' notitle"
  else
    echo "unset ytics"
  fi
  if [ -s "$d/copy.dat" ]; then
    local clo chi
    clo=$(awk '{m = ($2 != "?") ? $2 : $3; if ($3 != "?" && $3 + 0 < m + 0) m = $3; print m}' "$d/copy.dat")
    chi=$(awk '{m = ($2 != "?") ? $2 : $3; if ($3 != "?" && $3 + 0 > m + 0) m = $3; print m}' "$d/copy.dat")
    echo "set logscale y2; set y2range $(range "$clo" "$chi"); y2lo = $(lower "$(range "$clo" "$chi")")"
    echo "set y2tics; set format y2 '%g'; set y2label 'GB/s (copy 1 MiB; log scale)'"
    echo "set arrow from $cx-0.5, graph 0 to $cx-0.5, graph 1 nohead dt 2 lc rgb '#888888'"
    local t1="title 'weft'" t2="title 'Node'"
    [ -n "$plots" ] && t1=notitle t2=notitle
    plots="$plots${plots:+, }'$d/copy.dat' using (\$1-0.2):2:(\$1-0.38):(\$1-0.02):(y2lo):2 axes x1y2 with boxxyerror lc rgb weft $t1, \
'' using (\$1+0.2):3:(\$1+0.02):(\$1+0.38):(y2lo):3 axes x1y2 with boxxyerror lc rgb node $t2, \
'' using (\$1-0.2):2:4 axes x1y2 with labels offset 0,0.7 font ',10' notitle, \
'' using (\$1+0.2):3:5 axes x1y2 with labels offset 0,0.7 font ',10' notitle"
  fi
  echo "plot $plots"
  reset_panel
}
{
  echo "set origin 0.5,0.655; set size 0.5,0.31"
  rates
} >>"$gp"

# Panel 3 (middle left): the floor. Each figure as a multiple of what this
# host allows, measured in the same run (bench/floor.c): ping-pong,
# wait/notify and the blocking call against the round trip of one cache
# line between two CPUs, one-way as the time per message against it, the
# 1 MiB copy against memcpy; issue 9's aims as red marks.
floorpanel() {
  local spin futex mem i=0 tics="" hi=1 lo=1 spec metric label kind aim fl w n wr nr
  spin=$(val floor floor.spin_rtt) futex=$(val floor floor.futex_rtt) mem=$(val floor floor.memcpy1m)
  echo "set title $(gq "weft and Node as multiples of this host's floor (same run)")"
  if [ -z "$spin$mem" ]; then empty_panel; return; fi
  : >"$d/floor.dat"
  : >"$d/aims.dat"
  for spec in "pingpong.rtt|ping-pong\nround trip|t|2|$spin" \
              "atomics.rtt|wait/notify\nround trip|t|1.5|$spin" \
              "call.rtt|blocking call\nround trip|t|-|$spin" \
              "throughput|one-way, time\nper message|r|-|$spin" \
              "copy1m|copy 1 MiB\nvs memcpy|b|-|$mem"; do
    IFS='|' read -r metric label kind aim fl <<<"$spec"
    [ -n "$fl" ] || continue
    w=$(val weft "$metric") n=$(val node "$metric")
    [ -z "$w" ] && [ -z "$n" ] && continue
    # t: time / floor time; r: (1 / rate, in us) / floor time; b: floor
    # bandwidth / bandwidth (how many times the floor's time it takes).
    mult() {
      [ -n "$1" ] || { echo "?"; return; }
      awk -v v="$1" -v f="$fl" -v k="$kind" 'BEGIN {
        if (k == "t") r = v / f; else if (k == "r") r = (1e6 / v) / f; else r = f / v
        printf "%.4g\n", r }'
    }
    wr=$(mult "$w") nr=$(mult "$n")
    # The median ratio to the floor measured just before each run, when
    # run.sh measured one (<metric>.xfloor): the host's line can change
    # within a run, and the start's floor may be another phase's.
    if [ "$fl" = "$spin" ]; then
      local wx nx
      wx=$(val weft "$metric.xfloor") nx=$(val node "$metric.xfloor")
      [ -n "$wx" ] && wr=$wx
      [ -n "$nx" ] && nr=$nx
    fi
    printf '%d %s %s "%s" "%s"\n' "$i" "$wr" "$nr" \
      "$([ "$wr" != "?" ] && mx "$wr")" "$([ "$nr" != "?" ] && mx "$nr")" >>"$d/floor.dat"
    for v in $wr $nr; do
      [ "$v" = "?" ] && continue
      lo=$(awk -v a="$lo" -v b="$v" 'BEGIN {print (b + 0 < a + 0) ? b : a}')
      hi=$(awk -v a="$hi" -v b="$v" 'BEGIN {print (b + 0 > a + 0) ? b : a}')
    done
    if [ "$aim" != - ]; then
      # The aim as a red bar across weft's bar; its value in the tick label.
      echo "$i $aim" >>"$d/aims.dat"
      label="$label\n(aim ≤ ${aim}x)"
    fi
    tics="$tics${tics:+, }$(gq "$label") $i"
    i=$((i + 1))
  done
  if [ $i -eq 0 ]; then empty_panel; return; fi
  # Reference lines (drawn as arrows, named in the key by empty plots).
  local fx="" refs=""
  echo "set arrow from graph 0,first 1 to graph 1,first 1 nohead lw 1.5 lc rgb '#333333' back"
  refs="NaN with lines lw 1.5 lc rgb '#333333' title '1x: the floor'"
  # The aims: red marks across weft's bars, drawn before the value labels
  # (their boxes keep a label readable where the two meet).
  local aimplot=""
  if [ -s "$d/aims.dat" ]; then
    aimplot="'$d/aims.dat' using (\$1-0.42):2:(0.44):(0) with vectors nohead lw 3 lc rgb '#d62020' notitle, "
    refs="$refs, NaN with lines lw 3 lc rgb '#d62020' title 'aim (issue 9)'"
  fi
  if [ -n "$futex" ] && [ -n "$spin" ]; then
    fx=$(awk -v f="$futex" -v s="$spin" 'BEGIN {printf "%.4g\n", f / s}')
    hi=$(awk -v a="$hi" -v b="$fx" 'BEGIN {print (b + 0 > a + 0) ? b : a}')
    echo "set arrow from graph 0,first $fx to graph 1,first $fx nohead dt 2 lw 1.5 lc rgb '#7a4fa0' back"
    refs="$refs, NaN with lines dt 2 lw 1.5 lc rgb '#7a4fa0' title $(gq "futex wake-up round trip, $(num "$futex") µs = $(mx "$fx")")"
  fi
  local parts=""
  [ -n "$spin" ] && parts="a cache line's round trip between the CPUs $(num "$spin") µs at the start$([ -n "$(val weft pingpong.rtt.xfloor)$(val weft atomics.rtt.xfloor)" ] && echo ", each run's own just before it")"
  [ -n "$mem" ] && parts="$parts${parts:+; }memcpy $(num "$mem") GB/s (copy)"
  echo "set title $(gq "weft and Node as multiples of this host's floor (same run)\nfloor: $parts")"
  echo "set xtics ($tics) nomirror scale 0"
  echo "set xrange [-0.6:$((i - 1)).6]"
  # Headroom above the bars for the key.
  hi=$(awk -v h="$hi" 'BEGIN {print h * 30}')
  echo "set logscale y; set yrange $(range "$lo" "$hi"); flo = $(lower "$(range "$lo" "$hi")")"
  echo "set format y '%.10gx'"
  echo "set ylabel 'multiple of the floor (log scale; lower is better)'"
  echo "set key top left font ',10' samplen 2"
  cat <<EOF
set style textbox opaque noborder margins 1,1
plot '$d/floor.dat' using (\$1-0.2):2:(\$1-0.38):(\$1-0.02):(flo):2 with boxxyerror lc rgb weft title 'weft', \\
     '' using (\$1+0.2):3:(\$1+0.02):(\$1+0.38):(flo):3 with boxxyerror lc rgb node title 'Node', \\
     $aimplot'$d/floor.dat' using (\$1-0.2):2:4 with labels boxed offset 0,0.8 font ',10' notitle, \\
     '' using (\$1+0.2):3:5 with labels boxed offset 0,0.8 font ',10' notitle, \\
     $refs
EOF
  reset_panel
}
{
  echo "set origin 0,0.34; set size 0.5,0.31"
  floorpanel
} >>"$gp"

# Panel 4 (middle right): CPU of 8 parked workers, and of 8 workers each
# with a 1 ms interval.
{
  echo "set origin 0.5,0.34; set size 0.5,0.31"
  bars cpu "% of one core, whole process (log scale; lower is better)" \
    "CPU when nothing is sent: weft vs Node (medians)" \
    "idle8.cpu|8 idle workers" \
    "tick8.cpu|8 workers, each\na 1 ms interval"
} >>"$gp"

# Panel 5 (bottom, full width): "weft better by" for every workload that
# both sides measured: weft/Node for rates, Node/weft otherwise (as run.sh's
# table), so right of 1x weft wins and left of it Node does.
ratios() {
  local i=0 tics="" lo=1 hi=1 spec metric label w n u r
  : >"$d/ratio.dat"
  local specs=(
    "pingpong.rtt|ping-pong round trip"
    "atomics.rtt|wait/notify round trip"
    "transfer.1k|transfer 1 KiB"
    "transfer.1m|transfer 1 MiB"
    "transfer.64m|transfer 64 MiB"
    "spawn.each|spawn to exit"
    "throughput|one-way msgs/s"
    "fanin|fan-in msgs/s (8 → 1)"
    "fanout|fan-out msgs/s (1 → 8)"
    "copy1m|copy 1 MiB, GB/s"
    "idle8.cpu|CPU, 8 idle workers"
    "tick8.cpu|CPU, 8 workers ticking 1 ms"
  )
  # Every cpurate configuration measured, in the order of the file.
  local m
  for m in $(awk '$1 == "weft" && $2 ~ /^cpurate\.[0-9]+w\.[0-9]+k?$/ {print $2}' "$med"); do
    specs+=("$m|CPU at $(echo "$m" | awk -F. '{print $3 "/s per worker, " substr($2, 1, length($2) - 1) " worker" ($2 == "1w" ? "" : "s")}')")
  done
  specs+=("pool.tasks|pool: empty tasks/s (Node: Piscina)"
          "offload.primes.cold|primes on the pool, speedup"
          "offload.mandel.cold|Mandelbrot on the pool, speedup")
  for spec in "${specs[@]}"; do
    metric=${spec%%|*} label=${spec#*|}
    w=$(val weft "$metric") n=$(val node "$metric")
    [ -n "$w" ] && [ -n "$n" ] || continue
    u=$(awk -v m="$metric" '$2 == m {print $4; exit}' "$med")
    # Rates (".../s") and speedups ("x") are higher-is-better.
    r=$(awk -v w="$w" -v n="$n" -v u="$u" 'BEGIN {printf "%.4g\n", (u ~ /\/s$/ || u == "x") ? w / n : n / w}')
    printf '%d %s "%s"\n' "$i" "$r" \
      "$(mx "$r")" >>"$d/ratio.dat"
    tics="$tics${tics:+, }$(gq "$label") $i"
    lo=$(awk -v a="$lo" -v b="$r" 'BEGIN {print (b + 0 < a + 0) ? b : a}')
    hi=$(awk -v a="$hi" -v b="$r" 'BEGIN {print (b + 0 > a + 0) ? b : a}')
    i=$((i + 1))
  done
  echo "set title 'weft better by: Node / weft for times and CPU, weft / Node for rates and speedups (medians; right of 1x weft wins)'"
  if [ $i -eq 0 ]; then empty_panel; return; fi
  local xr
  xr=$(awk -v lo="$lo" -v hi="$hi" 'BEGIN {
    a = exp(log(10) * int(log(lo / 1.5) / log(10) - (lo / 1.5 < 1 ? 1 : 0)))
    b = exp(log(10) * (int(log(hi * 3) / log(10)) + 1))
    printf "[%g:%g]\n", a, b }')
  cat <<EOF
unset grid; set grid xtics mxtics lc rgb '#dddddd'
set ytics ($tics) nomirror font ',11'
set yrange [$(( i > 14 ? i : 14 ))-0.4:-0.6]
set logscale x; set xrange $xr
set format x '%gx'
set xtics nomirror
set xlabel 'weft better by (log scale)'
set arrow from 1, graph 0 to 1, graph 1 nohead lw 2 lc rgb '#333333' front
set lmargin 34
plot '$d/ratio.dat' using (\$2 >= 1 ? \$2 : NaN):1:(1):2:(\$1-0.36):(\$1+0.36) with boxxyerror lc rgb good title 'weft faster / cheaper', \\
     '' using (\$2 < 1 ? \$2 : NaN):1:2:(1):(\$1-0.36):(\$1+0.36) with boxxyerror lc rgb bad title 'Node faster / cheaper', \\
     '' using (\$2 >= 1 ? \$2 : NaN):1:3 with labels left offset 0.5,0 font ',10' notitle, \\
     '' using (\$2 < 1 ? \$2 : NaN):1:3 with labels right offset -0.5,0 font ',10' notitle
EOF
  echo "set lmargin -1"
  reset_panel
}
{
  echo "set origin 0,0; set size 1,0.33"
  echo "set key bottom right"
  ratios
  echo "unset multiplot"
} >>"$gp"

wrote="" kept=""
if ! awk '$1 == "weft" || $1 == "node" {found = 1} END {exit !found}' "$med"; then
  kept="chart.svg"
elif gnuplot "$gp" 2>"$d/chart.err"; then
  wrote="$outdir/chart.svg"
else
  echo "chart.sh: gnuplot failed on chart.svg:" >&2
  sed 's/^/  /' "$d/chart.err" >&2
fi

# --- cpurate.svg: % of a core against the messages/s each side got, for 1
# and 8 workers; and weft's CPU over Node's per configuration.
: >"$d/cr.dat"
for m in $(awk '$2 ~ /^cpurate\.[0-9]+w\.[0-9]+k?$/ {print $2}' "$med" | awk '!s[$0]++'); do
  nw=$(echo "$m" | awk -F. '{print substr($2, 1, length($2) - 1)}')
  nominal=$(echo "$m" | awk -F. -v nw="$nw" '{r = $3; if (r ~ /k$/) r = substr(r, 1, length(r) - 1) * 1000; print r * nw}')
  for side in weft node; do
    c=$(val $side "$m")
    [ -n "$c" ] || continue
    x=$(val $side "$m.rate")
    echo "$side $nw $nominal ${x:-$nominal} $c" >>"$d/cr.dat"
  done
done
if [ -s "$d/cr.dat" ]; then
  for side in weft node; do
    for nw in $(awk '{print $2}' "$d/cr.dat" | sort -un); do
      awk -v s=$side -v w="$nw" '$1 == s && $2 == w {print $3, $4, $5}' "$d/cr.dat" | sort -g >"$d/cr.$side.$nw.dat"
    done
  done
  # weft / Node per configuration measured by both.
  awk '$1 == "weft" {w[$2 " " $3] = $5} $1 == "node" {n[$2 " " $3] = $5}
       END {for (k in w) if (k in n) print k, w[k] / n[k]}' "$d/cr.dat" | sort -k1,1n -k2,2g >"$d/cr.ratio.dat"
  {
    echo "set encoding utf8"
    echo "set terminal svg size 1280,560 fixed font 'sans,12' background rgb 'white'"
    echo "set output $(gq "$outdir/cpurate.svg")"
    echo "set termoption noenhanced"
    echo "set multiplot title $(gq "CPU at moderate message rates (cpurate): $title") font ',14'"
    echo "set grid xtics mxtics ytics mytics lc rgb '#dddddd'"
    echo "set key top left opaque box lc rgb '#cccccc'"
    echo "set logscale xy; set format x '%.0s%c'; set format y '%g'"
    echo "set xlabel 'messages/s echoed, all workers (log scale)'"
    echo "set ylabel '% of one core, whole process (log scale)'"
    echo "set title 'main posts [1,\"ping\"] at a fixed rate to 1 or 8 echo workers'"
    echo "set origin 0,0; set size 0.55,0.94"
    # Whole decades around the points, so none sits on the border.
    awk '{print $4; print $3}' "$d/cr.dat" | sort -g | sed -n '1p;$p' | tr '\n' ' ' |
      awk '{printf "set xrange %s\n", "[" 10 ^ int(log($1 / 1.5) / log(10) - ($1 < 1.5 ? 1 : 0)) ":" 10 ^ (int(log($2 * 1.5) / log(10)) + 1) "]"}'
    awk '{print $5}' "$d/cr.dat" | sort -g | sed -n '1p;$p' | tr '\n' ' ' |
      awk '{printf "set yrange %s\n", "[" 10 ^ int(log($1 / 1.5) / log(10) - ($1 < 1.5 ? 1 : 0)) ":" 10 ^ (int(log($2 * 1.5) / log(10)) + 1) "]"}'
    plots="" nws=$(awk '{print $2}' "$d/cr.dat" | sort -un)
    for nw in $nws; do
      dt=1; pt=7
      [ "$nw" -gt 1 ] && dt=2 && pt=5
      ws="s"; [ "$nw" -eq 1 ] && ws=""
      for side in weft node; do
        [ -s "$d/cr.$side.$nw.dat" ] || continue
        lbl="weft"; [ $side = node ] && lbl="Node"
        plots="$plots${plots:+, }'$d/cr.$side.$nw.dat' using 2:3 with linespoints lw 2 dt $dt pt $pt ps 1.1 lc $([ $side = weft ] && echo "rgb '#1f6fb4'" || echo "rgb '#e08a1e'") title '$lbl, $nw worker$ws'"
      done
    done
    echo "plot $plots"
    echo "unset logscale; set logscale x"
    echo "set origin 0.55,0; set size 0.45,0.94"
    echo "set title 'weft CPU / Node CPU at the same nominal rate (aim: ≤ 1)'"
    echo "set xlabel 'messages/s posted (nominal, all workers; log scale)'"
    echo "set ylabel 'weft CPU / Node CPU'"
    echo "set format y '%gx'"
    awk '{print $3}' "$d/cr.dat" | sort -g | sed -n '1p;$p' | tr '\n' ' ' |
      awk '{printf "set xrange [%g:%g]\n", $1 / 2, $2 * 2}'
    awk '{print $3}' "$d/cr.ratio.dat" | sort -g | tail -n 1 |
      awk '{m = $1 * 1.35; if (m < 1.5) m = 1.5; printf "set yrange [0:%g]\n", m}'
    echo "set key top center horizontal"
    echo "set arrow from graph 0,first 1 to graph 1,first 1 nohead lw 2 lc rgb '#d62020'"
    echo "set label 'aim: weft ≤ Node' at graph 0.02,first 1 offset 0,0.6 tc rgb '#d62020' font ',10'"
    plots=""
    for nw in $nws; do
      awk -v w="$nw" '$1 == w {print $2, $3}' "$d/cr.ratio.dat" >"$d/cr.ratio.$nw.dat"
      [ -s "$d/cr.ratio.$nw.dat" ] || continue
      dt=1; pt=7; lc="'#2e9e48'"
      [ "$nw" -gt 1 ] && dt=2 && pt=5 && lc="'#7a4fa0'"
      ws="s"; [ "$nw" -eq 1 ] && ws=""
      plots="$plots${plots:+, }'$d/cr.ratio.$nw.dat' using 1:2 with linespoints lw 2 dt $dt pt $pt ps 1.1 lc rgb $lc title '$nw worker$ws', '' using 1:2:(sprintf('%.2fx', \$2)) with labels offset 0,0.9 font ',10' notitle"
    done
    if [ -n "$plots" ]; then echo "plot $plots"; else
      echo "unset arrow; unset label; set label 'Node did not run cpurate' at graph 0.5,0.5 center; plot NaN notitle"; fi
    echo "unset multiplot"
  } >"$d/cpurate.gp"
  if gnuplot "$d/cpurate.gp" 2>"$d/cpurate.err"; then
    wrote="$wrote${wrote:+ and }$outdir/cpurate.svg"
  else
    echo "chart.sh: gnuplot failed on cpurate.svg:" >&2
    sed 's/^/  /' "$d/cpurate.err" >&2
  fi
fi
[ -s "$d/cr.dat" ] || kept="$kept${kept:+ and }cpurate.svg"
[ -n "$wrote" ] && echo "(charts written to $wrote)"
# A chart whose workloads were not run is left as it was: say so, as its
# title (commit, date) is another run's.
[ -n "$kept" ] && echo "(not redrawn, no workload of theirs in this run: $kept in $outdir; any there is from an earlier run)"
exit 0
