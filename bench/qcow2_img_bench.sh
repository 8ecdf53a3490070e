#!/bin/sh
# Side-by-side benchmark of strata-img and qemu-img on tmpfs:
#   convert qcow2 -> qcow2 and qcow2 -> raw of a 1 GiB image (random data,
#   with an unallocated and a zero range), and 4 KiB scattered writes into a
#   fresh image (qcow2_write_bench against qemu-img bench, same offsets).
# Runs alternate between the two tools; medians and ratios are printed.
# Usage: bench/qcow2_img_bench.sh BUILD_DIR [ROUNDS]
set -eu
BUILD=${1:?build directory}
ROUNDS=${2:-5}
DIR=${BENCH_DIR:-/dev/shm}/strata-qcow2-bench.$$
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
IMG="$BUILD/tools/strata-img"
WB="$BUILD/bench/qcow2_write_bench"

head -c 900M /dev/urandom > "$DIR/src.raw"
truncate -s 1G "$DIR/src.raw"
qemu-img convert -O qcow2 "$DIR/src.raw" "$DIR/src.qcow2"
qemu-io -f qcow2 -c 'write -z 512M 64M' "$DIR/src.qcow2" > /dev/null
rm "$DIR/src.raw"

now() { date +%s.%N; }
time_cmd() { t0=$(now); "$@" > /dev/null; t1=$(now); echo "$t1 - $t0" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

bench_pair() {  # name, strata command..., "--", qemu command...
  name=$1; shift
  : > "$DIR/s.times"; : > "$DIR/q.times"
  i=0
  while [ $i -lt "$ROUNDS" ]; do
    rm -f "$DIR/dst"
    time_cmd sh -c "$1" >> "$DIR/s.times"
    rm -f "$DIR/dst"
    time_cmd sh -c "$2" >> "$DIR/q.times"
    i=$((i + 1))
  done
  s=$(median < "$DIR/s.times"); q=$(median < "$DIR/q.times")
  printf '%-34s strata %7.3f s   qemu %7.3f s   ratio (qemu/strata) %5.2f\n' "$name" "$s" "$q" \
    "$(echo "$q / $s" | bc -l)"
}

bench_pair "convert qcow2->qcow2 (1 GiB)" \
  "$IMG convert -O qcow2 $DIR/src.qcow2 $DIR/dst" \
  "qemu-img convert -O qcow2 $DIR/src.qcow2 $DIR/dst"
bench_pair "convert qcow2->raw (1 GiB)" \
  "$IMG convert -O raw $DIR/src.qcow2 $DIR/dst" \
  "qemu-img convert -O raw $DIR/src.qcow2 $DIR/dst"
COUNT=100000; STEP=$((4096 * 7919))
bench_pair "4 KiB scattered writes x$COUNT qd32" \
  "qemu-img create -q -f qcow2 $DIR/dst 1G && $WB $DIR/dst $COUNT 32 $STEP" \
  "qemu-img create -q -f qcow2 $DIR/dst 1G && qemu-img bench -w -q -c $COUNT -d 32 -s 4k -S $STEP -t writeback -f qcow2 $DIR/dst"
