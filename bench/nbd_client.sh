#!/usr/bin/env bash
# Sequential read and write through the NBD client driver, beside QEMU's
# client doing the same work on the same export:
#   read:  strata-img convert -O raw nbd+unix://... out  vs  qemu-img convert ...
#   write: strata-img convert -n -O raw src nbd+unix://... vs qemu-img convert -n ...
# The export is qemu-nbd on a raw file in /dev/shm (cache=writeback); the
# runs alternate side by side and the medians of the wall times are compared.
#
#   bench/nbd_client.sh [BUILD_DIR] [ROUNDS] [SIZE_MIB]
set -euo pipefail
build="${1:-build}"
rounds="${2:-7}"
size_mib="${3:-1024}"
strata_img="$build/tools/strata-img"
dir=$(mktemp -d /dev/shm/strata-nbdc-XXXXXX)
sock="$dir/s"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# Mostly data with some holes, so that both sides see block status too.
head -c $((size_mib << 20)) /dev/urandom > "$dir/src.raw"
truncate -s $((size_mib << 20)) "$dir/export.raw"
cp "$dir/src.raw" "$dir/export.raw"
qemu-nbd -t -f raw -x exp -k "$sock" "$dir/export.raw" &
pid=$!
while [ ! -S "$sock" ]; do sleep 0.05; done
uri="nbd+unix:///exp?socket=$sock"

ms() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A t
for ((r = 0; r < rounds; r++)); do
  rm -f "$dir/out.raw"
  t[qemu_read]+="$(ms qemu-img convert -f raw -O raw "$uri" "$dir/out.raw") "
  rm -f "$dir/out.raw"
  t[strata_read]+="$(ms "$strata_img" convert -f raw -O raw "$uri" "$dir/out.raw") "
  t[qemu_write]+="$(ms qemu-img convert -n -f raw -O raw "$dir/src.raw" "$uri") "
  t[strata_write]+="$(ms "$strata_img" convert -n -f raw -O raw "$dir/src.raw" "$uri") "
done
printf "%-8s %12s %12s %10s %10s\n" "work" "qemu-img ms" "strata ms" "MiB/s qemu" "strata/qemu time"
for work in read write; do
  q=$(echo "${t[qemu_$work]}" | tr ' ' '\n' | grep . | median)
  s=$(echo "${t[strata_$work]}" | tr ' ' '\n' | grep . | median)
  printf "%-8s %12s %12s %10.0f %10.2f\n" "$work" "$q" "$s" \
    "$(echo "scale=2; $size_mib * 1000 / $q" | bc)" "$(echo "scale=4; $s / $q" | bc)"
done
