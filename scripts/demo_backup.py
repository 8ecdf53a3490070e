"""The seed talk's incremental backup, against a live stratad.

    demo_backup.py QMP_SOCKET NBD_SOCKET VAR_DIR STRATA_IMG

A "guest" writes through the NBD export `demo`; a full backup is taken
with a persistent dirty bitmap started at the same moment; the guest writes
more; the bitmap is frozen (a transaction disables it and starts the next
one), exported read-only with its dirty-bitmap context, and a pull-mode
client copies only the dirty extents into a qcow2 overlay backed by the full
backup. qemu-img compare then shows that full + incremental equal the disk.
"""
import json
import os
import subprocess
import sys
import time

import nbd  # python3-libnbd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "functional"))
from nbd_extents import flagged_extents  # noqa: E402
from qmp_client import QmpClient  # noqa: E402

MiB = 1 << 20
qmp_sock, nbd_sock, var, strata_img = sys.argv[1:5]


def connect(path):
    # The socket file appears at bind(), a moment before listen().
    for _ in range(200):
        try:
            return QmpClient(path)
        except (ConnectionRefusedError, FileNotFoundError):
            time.sleep(0.05)
    return QmpClient(path)


c = connect(qmp_sock)


def step(title, value=None):
    print(f"\n== {title}")
    if value is not None:
        print(value if isinstance(value, str) else json.dumps(value, indent=2)[:1500])


def uri(export):
    return f"nbd+unix:///{export}?socket={nbd_sock}"


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def guest_writes(pattern_offsets):
    h = nbd.NBD()
    h.connect_uri(uri("demo"))
    for byte, offset, length in pattern_offsets:
        h.pwrite(bytes([byte]) * length, offset)
    h.flush()
    h.shutdown()


def demo_bitmaps():
    node = next(n for n in c.execute("query-named-block-nodes") if n["node-name"] == "demo")
    return node.get("dirty-bitmaps", [])


def fresh(path):
    if os.path.exists(path):
        os.unlink(path)
    return path


step("query-version", c.execute("query-version"))
for b in demo_bitmaps():  # a previous run's bitmaps
    c.execute("block-dirty-bitmap-remove", node="demo", name=b["name"])

guest_writes([(0x11, 0, 4 * MiB), (0x22, 300 * MiB, 2 * MiB)])
full = fresh(os.path.join(var, "backup-full.qcow2"))
c.execute("block-dirty-bitmap-add", node="demo", name="bmap0", persistent=True)
run(strata_img, "convert", "-O", "qcow2", uri("demo"), full)
step("full backup (strata-img convert from the NBD export) with bitmap bmap0 started",
     run("qemu-img", "info", full).splitlines()[:3])

guest_writes([(0x33, 1 * MiB, 64 * 1024), (0x44, 512 * MiB, 1 * MiB), (0x55, 900 * MiB, 4096)])
step("guest wrote 3 ranges; bitmaps", demo_bitmaps())

reply = c.execute("transaction", actions=[
    {"type": "block-dirty-bitmap-add", "data": {"node": "demo", "name": "bmap1",
                                                "persistent": True}},
    {"type": "block-dirty-bitmap-disable", "data": {"node": "demo", "name": "bmap0"}}])
step("transaction: bmap0 frozen, bmap1 records from now on", demo_bitmaps())

c.execute("block-export-add", type="nbd", id="frozen", **{"node-name": "demo"}, name="frozen",
          bitmaps=["bmap0"])
step("nbdinfo --map=qemu:dirty-bitmap:bmap0",
     run("nbdinfo", "--map=qemu:dirty-bitmap:bmap0", uri("frozen")))

inc = fresh(os.path.join(var, "backup-inc.qcow2"))
run(strata_img, "create", "-f", "qcow2", "-b", full, "-F", "qcow2", inc)
c.execute("blockdev-add", driver="qcow2", **{"node-name": "inc"},
          file={"driver": "file", "filename": inc})
c.execute("block-export-add", type="nbd", id="inc", **{"node-name": "inc"}, name="inc",
          writable=True)

src = nbd.NBD()
src.add_meta_context("qemu:dirty-bitmap:bmap0")
src.connect_uri(uri("frozen"))
dst = nbd.NBD()
dst.connect_uri(uri("inc"))
dirty = flagged_extents(src, "qemu:dirty-bitmap:bmap0")
size = src.get_size()
copied = 0
for offset, length in dirty:
    for pos in range(offset, offset + length, 4 * MiB):
        n = min(4 * MiB, offset + length - pos)
        dst.pwrite(src.pread(n, pos), pos)
        copied += n
dst.flush()
src.shutdown()
dst.shutdown()
step("pull-mode copy of the dirty extents",
     f"{len(dirty)} extents, {copied} bytes copied out of a {size}-byte disk")

c.execute("block-export-del", id="frozen")
c.execute("block-export-del", id="inc")
c.execute("blockdev-del", **{"node-name": "inc"})
c.execute("block-dirty-bitmap-remove", node="demo", name="bmap0")
step("qemu-img compare (disk over NBD) against full + incremental",
     run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", uri("demo"), inc))
step("bad input is answered, the connection goes on", c.request("no-such-command"))
step("quit (bitmap bmap1 is stored in demo.qcow2)")
c.execute("quit")
