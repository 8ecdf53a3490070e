#!/usr/bin/env bash
# bench/bitmap_instructions.sh [BUILD_DIR] [WRITES]
#
# Instructions per random 4 KiB write through a null-co node with 0, 1 and
# 8 recording bitmaps (64 KiB granularity), counted by callgrind: the count
# of a run with 2*WRITES writes minus the count of a run with WRITES writes,
# divided by WRITES, so start-up and the first marking of each granule fall
# out. Unlike timings, the counts do not depend on the load of the machine.
# Needs valgrind.
set -euo pipefail
build="${1:-build}"
writes="${2:-64000}"
bench="$build/bench/bitmap_bench"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

instructions() {  # BITMAPS WRITES
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bench" --only-writes "$1" "$2" \
    2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

base=""
for bitmaps in 0 1 8; do
  one="$(instructions "$bitmaps" "$writes")"
  two="$(instructions "$bitmaps" $((writes * 2)))"
  per=$(((two - one) / writes))
  [ -z "$base" ] && base=$per
  awk -v b="$bitmaps" -v p="$per" -v z="$base" \
    'BEGIN { printf "%d bitmaps: %d instructions per write, overhead %+.2f%%\n", b, p, (p / z - 1) * 100 }'
done
