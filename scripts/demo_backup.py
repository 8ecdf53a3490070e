"""The seed talk's walk-through with Strata's tools in QEMU's places.

    demo_backup.py QMP_SOCKET NBD_SOCKET VAR_DIR TOOLS_DIR

Part 1 (offline, the "qemu-img bitmap" and "qemu-nbd -B" slides): an image
with a persistent bitmap, written to, served by strata-nbd, its dirty
extents listed by nbdinfo.

Part 2 (live, the "copy.sh" slide): stratad serves the disk `demo`; a guest
writes; a full backup is taken while a bitmap starts; the guest writes again;
a transaction freezes the bitmap and the disk is exported with it; then the
slide's copy.sh runs with strata-img and strata-io: an overlay whose backing
file is the NBD export, one copy-on-read `strata-io -C -c "r OFF LEN"` per
dirty extent, a rebase onto the full backup, and strata-img compare.

Every command is printed as a user would type it (in VAR_DIR), with its
output shortened.
"""
import os
import shlex
import subprocess
import sys
import time

import nbd  # python3-libnbd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "functional"))
from qmp_client import QmpClient  # noqa: E402

MiB = 1 << 20
qmp_sock, nbd_sock, var, tools = sys.argv[1:5]
os.chdir(var)
env = dict(os.environ, PATH=tools + os.pathsep + os.environ["PATH"])
NBD_SOCK = os.path.relpath(nbd_sock)


def say(text):
    print(f"\n# {text}")


def sh(*cmd, lines=6, background=False):
    """Prints `$ cmd`, runs it, prints the first `lines` lines of its output."""
    print("$ " + shlex.join(cmd) + (" &" if background else ""))
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out = (res.stdout + res.stderr).splitlines()
    for line in out[:lines]:
        print("  " + line)
    if len(out) > lines:
        print(f"  ... ({len(out) - lines} more lines)")
    if res.returncode != 0:
        raise SystemExit(f"demo: {cmd[0]} failed with exit status {res.returncode}")
    return res.stdout


def fresh(*names):
    for name in names:
        if os.path.exists(name):
            os.unlink(name)


def wait_for_socket(path):
    for _ in range(200):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise SystemExit(f"demo: {path} did not appear")


def offline_part():
    say("Part 1, offline: a qcow2 image with a persistent dirty bitmap, as in the slides")
    fresh("Base2.qcow2", "base2.sock")
    sh("strata-img", "create", "-f", "qcow2", "Base2.qcow2", "100M")
    sh("strata-img", "bitmap", "-f", "qcow2", "--add", "Base2.qcow2", "bmap0")
    say("a 'guest' writes three ranges (strata-io takes qemu-io's commands)")
    sh("strata-io", "-f", "qcow2", "-c", "w -P 0x61 0 64k", "-c", "w -P 0x62 256k 64k",
       "-c", "w -q -P 0x63 448k 128k", "Base2.qcow2", lines=4)
    say("strata-nbd serves it as qemu-nbd would; nbdinfo lists what the bitmap marked")
    server = sh("strata-nbd", "-f", "qcow2", "-B", "bmap0", "-k", "base2.sock", "Base2.qcow2",
                background=True)
    wait_for_socket("base2.sock")
    sh("nbdinfo", "--map=qemu:dirty-bitmap:bmap0", "nbd+unix:///?socket=base2.sock")
    server.wait(timeout=20)  # without -t it stops after its last client


def guest_writes(writes):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///demo?socket={nbd_sock}")
    for byte, offset, length in writes:
        h.pwrite(bytes([byte]) * length, offset)
    h.flush()
    h.shutdown()


def reset_bitmaps(c):
    node = next(n for n in c.execute("query-named-block-nodes") if n["node-name"] == "demo")
    for b in node.get("dirty-bitmaps", []):  # a previous run's
        c.execute("block-dirty-bitmap-remove", node="demo", name=b["name"])


def full_backup(c, live):
    say("Part 2, live: stratad serves the disk 'demo'; a guest writes through NBD")
    guest_writes([(0x11, 0, 4 * MiB), (0x22, 300 * MiB, 2 * MiB)])
    say("full backup while bitmap bmap0 starts recording (QMP block-dirty-bitmap-add)")
    c.execute("block-dirty-bitmap-add", node="demo", name="bmap0", persistent=True)
    fresh("Full.qcow2")
    sh("strata-img", "convert", "-f", "raw", "-O", "qcow2", live, "Full.qcow2")
    say("the guest writes again: 64 KiB at 1 MiB, 1 MiB at 512 MiB, 4 KiB at 900 MiB")
    guest_writes([(0x33, 1 * MiB, 64 * 1024), (0x44, 512 * MiB, 1 * MiB),
                  (0x55, 900 * MiB, 4096)])
    say("a transaction freezes bmap0 and starts bmap1; the disk is exported with bmap0")
    c.execute("transaction", actions=[
        {"type": "block-dirty-bitmap-add", "data": {"node": "demo", "name": "bmap1",
                                                    "persistent": True}},
        {"type": "block-dirty-bitmap-disable", "data": {"node": "demo", "name": "bmap0"}}])
    c.execute("block-export-add", type="nbd", id="vda", **{"node-name": "demo"}, name="vda",
              bitmaps=["bmap0"])


def copy_sh(source):
    say("the slide's copy.sh, with strata-img and strata-io in qemu-img's and qemu-io's places")
    fresh("IncBack.qcow2")
    sh("strata-img", "create", "-f", "qcow2", "-b", source, "-F", "raw", "IncBack.qcow2")
    out = sh("nbdinfo", "--map=qemu:dirty-bitmap:bmap0", source, lines=8)
    say("one copy-on-read per dirty extent: each read pulls its clusters into IncBack.qcow2")
    for line in out.splitlines():
        offset, length, _, kind = line.split()
        if kind == "dirty":
            sh("strata-io", "-C", "-c", f"r {offset} {length}", "-f", "qcow2", "IncBack.qcow2")
    sh("strata-img", "rebase", "-u", "-f", "qcow2", "-b", "Full.qcow2", "-F", "qcow2",
       "IncBack.qcow2")
    say("IncBack.qcow2 holds only what changed, and Full.qcow2 is its backing file")
    sh("strata-img", "info", "IncBack.qcow2", lines=8)
    sh("strata-img", "map", "IncBack.qcow2", lines=8)
    say("the disk (over NBD) equals full + incremental")
    sh("strata-img", "compare", "-f", "raw", "-F", "qcow2", source, "IncBack.qcow2")


def wait_export_deleted(c, export):
    def seen():
        return any(e["event"] == "BLOCK_EXPORT_DELETED" and e["data"]["id"] == export
                   for e in c.events)
    while not seen():
        msg = c.read_message()
        if "event" in msg:
            c.events.append(msg)


def main():
    offline_part()
    c = QmpClient(qmp_sock)
    reset_bitmaps(c)
    live = f"nbd+unix:///demo?socket={NBD_SOCK}"
    full_backup(c, live)
    copy_sh(f"nbd+unix:///vda?socket={NBD_SOCK}")
    # The last client has just exited; the server may not have seen its
    # disconnect yet (a safe removal refuses an export in use). The export
    # is gone, and its bitmap free, once BLOCK_EXPORT_DELETED arrives.
    c.execute("block-export-del", id="vda", mode="hard")
    wait_export_deleted(c, "vda")
    c.execute("block-dirty-bitmap-remove", node="demo", name="bmap0")
    say("stratad quits (QMP quit); bmap1 stays in demo.qcow2 for the next backup")
    c.execute("quit")


main()
