#!/usr/bin/env bash
# scripts/serve-demo.sh        start stratad on the demo disk (Ctrl-C stops it)
# scripts/serve-demo.sh demo   start stratad, run the walk-through (scripts/demo_backup.py:
#                              strata-img, strata-io and strata-nbd used as qemu-img,
#                              qemu-io and qemu-nbd in the seed talk), stop it
#
# The demo disk is created under var/ on first run (qcow2, with strata-img
# when it is built, qemu-img otherwise). The QMP socket is var/qmp.sock; the
# disk is exported writable over NBD at nbd+unix:///demo?socket=var/nbd.sock.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${STRATA_BUILD_DIR:-$here/build}"
var="$here/var"
disk="$var/demo.qcow2"
qmp="$var/qmp.sock"
nbd_sock="$var/nbd.sock"
nbd_uri="nbd+unix:///demo?socket=$nbd_sock"
stratad="$build/tools/stratad"

mkdir -p "$var"
if [ ! -e "$disk" ]; then
  if [ -x "$build/tools/strata-img" ] && "$build/tools/strata-img" create -f qcow2 "$disk" 1G >/dev/null 2>&1; then
    echo "Created demo disk $disk (strata-img)"
  else
    qemu-img create -q -f qcow2 "$disk" 1G
    echo "Created demo disk $disk (qemu-img)"
  fi
fi

args=(
  --chardev "socket,id=qmp0,path=$qmp,server=on,wait=off"
  --monitor chardev=qmp0
  --blockdev "driver=file,node-name=demo-file,filename=$disk"
  --blockdev "driver=qcow2,node-name=demo,file=demo-file"
  --nbd-server "addr.type=unix,addr.path=$nbd_sock"
  --export "type=nbd,id=demo,node-name=demo,name=demo,writable=on"
)

if [ "${1:-}" != demo ]; then
  echo "QMP socket: $qmp"
  echo "NBD export: $nbd_uri"
  echo "Try: nbdinfo '$nbd_uri'"
  echo "Try: printf '%s\n' '{\"execute\":\"qmp_capabilities\"}' '{\"execute\":\"query-named-block-nodes\"}' | socat - UNIX-CONNECT:$qmp"
  exec "$stratad" "${args[@]}"
fi

# Demo: the incremental-backup walk-through against a live daemon.
"$stratad" "${args[@]}" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S "$qmp" ] && break; sleep 0.05; done
echo "stratad (pid $pid) serves $disk; QMP socket: $qmp; NBD export: $nbd_uri"
/usr/bin/python3 "$here/scripts/demo_backup.py" "$qmp" "$nbd_sock" "$var" "$build/tools"
wait $pid
trap - EXIT
echo "stratad exited cleanly."
