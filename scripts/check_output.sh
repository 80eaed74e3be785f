#!/bin/sh
# check_output.sh EXPECT_FILE PROGRAM [ARGS...]
#
# Runs PROGRAM and checks that it exits 0 and that every non-empty line of
# EXPECT_FILE appears as a whole line of its standard output, in that order
# (other lines may come in between). Trailing whitespace (and CR) is ignored
# on both sides. The output is echoed so ctest logs show it; stderr passes
# through unchanged.
set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 EXPECT_FILE PROGRAM [ARGS...]" >&2
  exit 2
fi
expect=$1
shift
out=$(mktemp "${TMPDIR:-/tmp}/weft-out.XXXXXX") || exit 2
trap 'rm -f "$out"' EXIT INT TERM

"$@" >"$out"
status=$?
cat "$out"
if [ "$status" -ne 0 ]; then
  echo "check_output: '$1' exited with status $status" >&2
  exit 1
fi

awk -v expect="$expect" '
  BEGIN { n = 0; i = 0 }
  { sub(/[ \t\r]+$/, "") }
  FILENAME == expect { if ($0 != "") want[n++] = $0 ""; next }
  i < n && ($0 "") == want[i] { i++ }
  END {
    if (i < n) {
      printf "check_output: missing line %d of %s (in this order):\n  %s\n",
             i + 1, expect, want[i] > "/dev/stderr"
      exit 1
    }
  }
' "$expect" "$out"
