# fmt.sh - sourced by run.sh, chart.sh and login.sh: one way to print a
# measured number.
#
# fmt VALUE: VALUE with 3 significant digits and thousands separated
# (12,409,513; 0.245; 2.67), or "-" for a missing one.
fmt() {
  awk -v v="$1" 'BEGIN {
    if (v == "-" || v == "") { print "-"; exit }
    a = v < 0 ? -v : v
    if (a >= 1000) { s = sprintf("%.0f", v); n = length(s); o = "";
      for (i = n; i > 0; i -= 3) { st = i - 2; if (st < 1) st = 1;
        o = substr(s, st, i - st + 1) (o == "" ? "" : "," o) } print o }
    else if (a >= 100) printf "%.0f\n", v
    else if (a >= 10) printf "%.1f\n", v
    else if (a >= 1) printf "%.2f\n", v
    else if (a >= 0.01) printf "%.3f\n", v
    else printf "%.2g\n", v }'
}
