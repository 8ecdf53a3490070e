#!/usr/bin/env bash
# Sequential read of a 1 GiB raw file from the page cache: dd beside the
# file driver with 1, 4 and 16 requests in flight, alternating run by run.
# Prints the median MiB/s of each and the ratio to dd.
#
#   bench/file_read.sh [BUILD_DIR] [ROUNDS] [BLOCK_KIB]
set -euo pipefail
build="${1:-build}"
rounds="${2:-7}"
block_kib="${3:-1024}"
bench="$build/bench/file_read_bench"
dir=$(mktemp -d /dev/shm/strata-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
img="$dir/disk.raw"
head -c $((1 << 30)) /dev/urandom > "$img"

dd_rate() {
  # dd reports bytes and seconds; compute MiB/s ourselves for precision.
  local start end
  start=$(date +%s%N)
  dd if="$img" of=/dev/null bs=${block_kib}K status=none
  end=$(date +%s%N)
  echo "scale=1; 1024 * 1000000000 / ($end - $start)" | bc
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A results
for ((r = 0; r < rounds; r++)); do
  results[dd]+="$(dd_rate) "
  for depth in 1 4 16; do
    results[$depth]+="$("$bench" "$img" "$depth" $((block_kib * 1024))) "
  done
done
dd_median=$(echo "${results[dd]}" | tr ' ' '\n' | grep . | median)
printf "%-22s %10s %8s\n" "reader" "MiB/s" "vs dd"
printf "%-22s %10.1f %8s\n" "dd bs=${block_kib}K" "$dd_median" "1.00"
for depth in 1 4 16; do
  m=$(echo "${results[$depth]}" | tr ' ' '\n' | grep . | median)
  printf "%-22s %10.1f %8.2f\n" "strata, $depth in flight" "$m" "$(echo "scale=4; $m / $dd_median" | bc)"
done
