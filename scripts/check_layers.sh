#!/usr/bin/env bash
# check_layers.sh OBJECT... - lib/ is layered: a file calls only files below
# it, so it can be read from the bottom up. From the compiled objects of
# lib/*.c (and transport/, which sits below lib/, its files ordered in
# TRANSPORT), find the file each weft_ call goes to and fail on any call
# that goes up or sideways in LAYERS. A
# lower file reports upward through a callback or a return code (heap.c's
# breach callback, weft__xfer_ops_t for ports in msg.c). actors/ sits above
# all of lib/: its files may call lib/ and each other, and no lib/ or
# transport/ file may call into actors/. ctest: check_layers.
set -euo pipefail

# Bottom first. transport/ is below all of lib/, in its own order.
TRANSPORT=(futex frame mbox mpsc waker jetstream nats_conn nats_batch nats)
LAYERS=(failpoint trace errors heap loop buffer shared msg port worker_thread worker broadcast format cluster request histogram pool pool_parallel wire node_membership node pool_wire pool_server pool_remote node_spawn)

declare -A rank where actor
for i in "${!LAYERS[@]}"; do rank[${LAYERS[$i]}]=$i; done
declare -A trank
for i in "${!TRANSPORT[@]}"; do trank[${TRANSPORT[$i]}]=$((i - 1000)); done

name() { local f=${1##*/}; echo "${f%%.*}"; }

for o in "$@"; do
  f=$(name "$o")
  if [[ $o == */transport/* ]]; then
    if [ -z "${trank[$f]:-}" ]; then
      echo "check_layers: transport/$f.c is not in TRANSPORT" >&2
      exit 1
    fi
    rank[$f]=${trank[$f]}
  elif [[ $o == */actors/* ]]; then
    rank[$f]=1000
    actor[$f]=1
  elif [ -z "${rank[$f]:-}" ]; then
    echo "check_layers: $f.c is not in LAYERS" >&2
    exit 1
  fi
  while read -r sym; do where[$sym]=$f; done \
    < <(nm --defined-only "$o" | awk '$3 ~ /^weft_/ {print $3}')
done

bad=0
for o in "$@"; do
  f=$(name "$o")
  while read -r sym; do
    d=${where[$sym]:-}
    if [ -n "${actor[$f]:-}" ] && [ -n "${actor[$d]:-}" ]; then
      continue # Within actors/.
    fi
    if [ -n "$d" ] && [ "${rank[$d]}" -ge "${rank[$f]}" ]; then
      echo "check_layers: $f.c calls $sym in $d.c, which is not below it"
      bad=1
    fi
  done < <(nm -u "$o" | awk '$2 ~ /^weft_/ {print $2}')
done
[ $bad -eq 0 ] && echo "check_layers: ok (bottom up: ${TRANSPORT[*]} | ${LAYERS[*]})"
exit $bad
