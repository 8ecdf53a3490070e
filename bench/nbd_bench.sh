#!/usr/bin/env bash
# bench/nbd_bench.sh [BUILD_DIR] [RUNS]
# strata-nbd against qemu-nbd on the same qcow2 image (1 GiB of data) on
# tmpfs: sequential read with nbdcopy (1 and 4 connections) and 4 KiB random
# read / write IOPS with fio's nbd engine at queue depth 16. Runs alternate
# between the servers; prints the median of RUNS runs and the ratio
# strata/qemu (higher is better for strata).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build}"
runs="${2:-5}"
strata_nbd="$build/tools/strata-nbd"
dir="$(mktemp -d /dev/shm/nbd-bench.XXXXXX)"
trap 'cat "$dir/fio.err" 2>/dev/null >&2; rm -rf "$dir"' EXIT
img="$dir/disk.qcow2"
qemu-img create -q -f qcow2 "$img" 1G
qemu-io -f qcow2 -c "write -P 0x5a 0 1G" "$img" >/dev/null

start_server() {  # $1: strata|qemu, $2: extra args; prints the pid
  local bin=qemu-nbd
  [ "$1" = strata ] && bin="$strata_nbd"
  rm -f "$dir/sock"
  $bin -t -f qcow2 -e 0 --cache=writeback $2 -k "$dir/sock" "$img" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 200); do [ -S "$dir/sock" ] && break; sleep 0.02; done
  echo "$pid"
}
stop_server() { kill "$1"; wait "$1" 2>/dev/null || true; }

uri="nbd+unix:///?socket=$dir/sock"
seq_read() {  # MiB/s of nbdcopy to null: with $1 connections
  local t0 t1
  t0=$(date +%s.%N)
  nbdcopy --connections="$1" "$uri" null:
  t1=$(date +%s.%N)
  echo "scale=1; 1024 / ($t1 - $t0)" | bc
}
fio_iops() {  # $1: randread|randwrite
  fio --name=b --ioengine=nbd --uri="$uri" --rw="$1" --bs=4k --iodepth=16 --size=1G \
    --runtime=5 --time_based --output-format=json 2>>"$dir/fio.err" |
    python3 -c "import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index('{'):])['jobs'][0]; \
print(round(j['read']['iops'] + j['write']['iops']))"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A results
for test in "seq1" "seq4" "randread" "randwrite"; do
  for server in strata qemu; do : > "$dir/$test.$server"; done
  for _ in $(seq "$runs"); do
    for server in strata qemu; do
      pid=$(start_server "$server" "")
      # (fio prints a line before its JSON; the parser skips it)
      case $test in
        seq1) seq_read 1 ;;
        seq4) seq_read 4 ;;
        *) fio_iops "$test" ;;
      esac >> "$dir/$test.$server"
      stop_server "$pid"
    done
  done
  s=$(median < "$dir/$test.strata")
  q=$(median < "$dir/$test.qemu")
  ratio=$(echo "scale=2; $s / $q" | bc)
  printf "%-10s strata %10s  qemu-nbd %10s  ratio %s\n" "$test" "$s" "$q" "$ratio"
done
