#!/usr/bin/env bash
# bench/nbd_bench.sh [BUILD_DIR] [RUNS] [TESTS]
# strata-nbd against qemu-nbd and qemu-storage-daemon on the same qcow2 image
# (1 GiB of data) on tmpfs: sequential read with nbdcopy (1 and 4
# connections) and 4 KiB random read / write IOPS with fio's nbd engine at
# queue depth 16. Runs alternate between the servers; prints the median of
# RUNS runs and the ratios strata/qemu-nbd and strata/qsd (higher is better
# for strata), and the median CPU time each server used in a run (user +
# system, all threads; lower is better: on a busy machine it moves less than
# the throughput does). TESTS picks some of "seq1 seq4 randread randwrite" (all by
# default), e.g. "seq1 seq4" for a longer read-only pass. With
# NBD_BENCH_RT=1 the servers and the clients run under SCHED_FIFO (chrt -f 1,
# needs root): on a host busy with other work that comes close to a quiet
# machine, where the CPU share a server gets no longer depends on how many
# threads it runs.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build}"
runs="${2:-5}"
tests="${3:-seq1 seq4 randread randwrite}"
strata_nbd="$build/tools/strata-nbd"
dir="$(mktemp -d /dev/shm/nbd-bench.XXXXXX)"
# (under set -e a failing command would end the trap before the rm)
trap 'cat "$dir/fio.err" 2>/dev/null >&2 || true; rm -rf "$dir"' EXIT
img="$dir/disk.qcow2"
prio=()
[ -n "${NBD_BENCH_RT:-}" ] && prio=(chrt -f 1)
qemu-img create -q -f qcow2 "$img" 1G
qemu-io -f qcow2 -c "write -P 0x5a 0 1G" "$img" >/dev/null

start_server() {  # $1: strata|qemu|qsd; prints the pid
  rm -f "$dir/sock"
  if [ "$1" = qsd ]; then
    "${prio[@]}" qemu-storage-daemon --blockdev "driver=file,node-name=f0,filename=$img" \
      --blockdev driver=qcow2,node-name=q0,file=f0 \
      --nbd-server "addr.type=unix,addr.path=$dir/sock" \
      --export type=nbd,id=e0,node-name=q0,name=,writable=on >/dev/null 2>&1 &
  else
    local bin=qemu-nbd
    [ "$1" = strata ] && bin="$strata_nbd"
    "${prio[@]}" $bin -t -f qcow2 -e 0 --cache=writeback -k "$dir/sock" "$img" >/dev/null 2>&1 &
  fi
  local pid=$!
  # Ready once it answers (the socket file appears at bind, before listen).
  for _ in $(seq 500); do
    nbdinfo --size "nbd+unix:///?socket=$dir/sock" >/dev/null 2>&1 && break
    sleep 0.02
  done
  echo "$pid"
}
cpu_seconds() {  # user + system time of process $1 so far
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
stop_server() {  # the server is not this shell's child: poll until it is gone
  kill "$1"
  while kill -0 "$1" 2>/dev/null; do sleep 0.02; done
}

uri="nbd+unix:///?socket=$dir/sock"
seq_read() {  # MiB/s of nbdcopy to null: with $1 connections
  local t0 t1
  t0=$(date +%s.%N)
  "${prio[@]}" nbdcopy --connections="$1" "$uri" null:
  t1=$(date +%s.%N)
  echo "scale=1; 1024 / ($t1 - $t0)" | bc
}
fio_iops() {  # $1: randread|randwrite
  "${prio[@]}" fio --name=b --ioengine=nbd --uri="$uri" --rw="$1" --bs=4k --iodepth=16 --size=1G \
    --runtime=5 --time_based --output-format=json 2>>"$dir/fio.err" |
    python3 -c "import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index('{'):])['jobs'][0]; \
print(round(j['read']['iops'] + j['write']['iops']))"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A results
for test in $tests; do
  for server in strata qemu qsd; do : > "$dir/$test.$server"; : > "$dir/$test.$server.cpu"; done
  for _ in $(seq "$runs"); do
    for server in strata qemu qsd; do
      pid=$(start_server "$server")
      # (fio prints a line before its JSON; the parser skips it)
      case $test in
        seq1) seq_read 1 ;;
        seq4) seq_read 4 ;;
        *) fio_iops "$test" ;;
      esac >> "$dir/$test.$server"
      cpu_seconds "$pid" >> "$dir/$test.$server.cpu"
      stop_server "$pid"
    done
  done
  s=$(median < "$dir/$test.strata")
  q=$(median < "$dir/$test.qemu")
  d=$(median < "$dir/$test.qsd")
  printf "%-10s strata %10s  qemu-nbd %10s  qsd %10s  ratios %s %s\n" "$test" "$s" "$q" "$d" \
    "$(echo "scale=2; $s / $q" | bc)" "$(echo "scale=2; $s / $d" | bc)"
  printf "%-10s server CPU s: strata %s  qemu-nbd %s  qsd %s\n" "" \
    "$(median < "$dir/$test.strata.cpu")" "$(median < "$dir/$test.qemu.cpu")" \
    "$(median < "$dir/$test.qsd.cpu")"
done
