#!/usr/bin/env bash
# scripts/serve-demo.sh        start stratad on the demo disk (Ctrl-C stops it)
# scripts/serve-demo.sh demo   start stratad, walk through QMP queries, stop it
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

# Demo: a walk through the QMP surface against a live daemon.
"$stratad" "${args[@]}" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S "$qmp" ] && break; sleep 0.05; done
echo "stratad (pid $pid) serves $disk; QMP socket: $qmp; NBD export: $nbd_uri"
PYTHONPATH="$here/tests/functional" python3 - "$qmp" "$var" <<'EOF'
import json, os, sys
from qmp_client import QmpClient

sock, var = sys.argv[1], sys.argv[2]
c = QmpClient(sock)
def show(title, value):
    print(f"\n== {title}")
    print(json.dumps(value, indent=2)[:1500])

show("query-version", c.execute("query-version"))
nodes = c.execute("query-named-block-nodes")
show("query-named-block-nodes (summary)",
     [{k: n[k] for k in ("node-name", "drv", "ro", "file")} for n in nodes])
show("query-block-exports", c.execute("query-block-exports"))
overlay = os.path.join(var, "demo-snap.qcow2")
if os.path.exists(overlay):
    os.unlink(overlay)
# A transaction that fails in its last action changes nothing...
reply = c.request("transaction", {"actions": [
    {"type": "blockdev-snapshot-sync",
     "data": {"node-name": "demo", "snapshot-file": overlay, "snapshot-node-name": "snap"}},
    {"type": "abort", "data": {}}]})
show("transaction ending in 'abort'", reply)
show("nodes after the failed transaction",
     [n["node-name"] for n in c.execute("query-named-block-nodes")])
# ...and a resize is visible at once.
c.execute("block_resize", **{"node-name": "demo", "size": 2 << 30})
show("virtual size after block_resize",
     {n["node-name"]: n["image"]["virtual-size"] for n in c.execute("query-named-block-nodes")})
c.execute("block_resize", **{"node-name": "demo", "size": 1 << 30})
show("bad input is answered, the connection goes on", c.request("no-such-command"))
print("\n== quit")
c.execute("quit")
EOF
wait $pid
trap - EXIT
echo "stratad exited cleanly."
