"""The seed talk's hand-made incremental backup (copy.sh in the slides):

    qemu-img create -f qcow2 -b "$1" -F raw "$2"
    nbdinfo --map=qemu:dirty-bitmap:NAME "$1" | while read offset len x type; do
      [ "$type" = dirty ] || continue
      qemu-io -C -c "r $offset $len" -f qcow2 "$2"
    done
    qemu-img rebase -u -f qcow2 -b Full.qcow2 -F qcow2 "$2"

run word for word with strata-img and strata-io in place of qemu-img and
qemu-io, against a live server exporting a disk with a frozen dirty bitmap:
stratad, and qemu-storage-daemon to show both sides interoperate; the same
script with QEMU's own tools against both servers is the reference. The
incremental image, rebased onto the full backup, must equal the disk
(qemu-img compare), pass qemu-img check, name the full backup as its backing
file, and hold only the clusters the bitmap marked dirty (qemu-img map).
"""
import json
import os
import re
import socket
import subprocess

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

MiB = 1 << 20
CLUSTER = 65536
DISK_SIZE = 64 * MiB

COPY_SH = r"""#!/bin/sh
# $1 is source, $2 is destination (as in the slides); $IMG and $IO name the
# tools, $BITMAP the bitmap, $FULL the full backup.
set -e
$IMG create -f qcow2 -b "$1" -F raw "$2"
nbdinfo --map=qemu:dirty-bitmap:$BITMAP "$1" |
while read offset len x type; do
  [ "$type" = dirty ] || continue
  $IO -C -c "r $offset $len" -f qcow2 "$2"
done
$IMG rebase -u -f qcow2 -b "$FULL" -F qcow2 "$2"
"""

# (offset, length, byte) writes of the "guest" before and after the full
# backup; 0 writes zeroes over data the full backup has.
BEFORE = [(0, 4 * MiB, 0x11), (20 * MiB, 3 * MiB, 0x22), (60 * MiB, 64 * 1024, 0x23)]
AFTER = [(1 * MiB + 512, 4096, 0x33), (8 * MiB, 200 * 1024, 0x44), (21 * MiB, 64 * 1024, 0),
         (63 * MiB, CLUSTER, 0x55)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guest_writes(uri, writes):
    """Writes through the live export with qemu-io (a peer of both servers)."""
    cmds = []
    for off, length, byte in writes:
        cmds += ["-c", f"write -z {off} {length}" if byte == 0 else
                 f"write -P {byte} {off} {length}"]
    run(["qemu-io", "-f", "raw", *cmds, uri])


class Server:
    """stratad or qemu-storage-daemon exporting disk.qcow2 as `live`."""

    def __init__(self, workdir, kind, transport):
        self.workdir = str(workdir)
        self.disk = os.path.join(self.workdir, "disk.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", self.disk, str(DISK_SIZE)])
        binary = strata_binary("stratad") if kind == "stratad" else "qemu-storage-daemon"
        self.daemon = Daemon(binary, workdir)
        self.qmp = self.daemon.client()
        self.qmp.execute("blockdev-add", driver="qcow2", **{"node-name": "disk"},
                         file={"driver": "file", "filename": self.disk})
        if transport == "unix":
            self.sock = os.path.join(self.workdir, "nbd.sock")
            addr = {"type": "unix", "data": {"path": self.sock}}
        else:
            self.port = free_port()
            addr = {"type": "inet", "data": {"host": "127.0.0.1", "port": str(self.port)}}
        self.transport = transport
        self.qmp.execute("nbd-server-start", addr=addr)
        self.export("live", writable=True)

    def export(self, name, writable=False, bitmaps=()):
        self.qmp.execute("block-export-add", type="nbd", id=name, **{"node-name": "disk"},
                         name=name, writable=writable, bitmaps=list(bitmaps))

    def uri(self, name):
        if self.transport == "unix":
            return f"nbd+unix:///{name}?socket={self.sock}"
        return f"nbd://127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.qmp.execute("quit")
        assert self.daemon.stop() == 0, self.daemon.read_stderr()


def tools(kind):
    if kind == "strata":
        return strata_binary("strata-img"), strata_binary("strata-io")
    return "qemu-img", "qemu-io"


def dirty_extents(uri, bitmap):
    out = run(["nbdinfo", f"--map=qemu:dirty-bitmap:{bitmap}", uri]).stdout
    extents = []
    for line in out.splitlines():
        offset, length, _, kind = line.split()
        if kind == "dirty":
            extents.append((int(offset), int(length)))
    return extents


TIMING = re.compile(r"^[0-9.]+ (bytes|KiB|MiB), 1 ops; \d\d\.\d\d sec "
                    r"\([0-9.]+ (bytes|KiB|MiB|GiB)/sec and [0-9.]+ ops/sec\)$")


def check_reads_reported(out, extents):
    """strata-io / qemu-io print qemu-io's two lines per read."""
    lines = out.splitlines()
    for offset, length in extents:
        head = f"read {length}/{length} bytes at offset {offset}"
        assert head in lines, out
        timing = lines[lines.index(head) + 1]
        assert TIMING.match(timing), timing


def allocated_clusters(image):
    """Clusters the image itself (depth 0) allocates, from qemu-img map."""
    out = json.loads(run(["qemu-img", "map", "--output=json", image]).stdout)
    clusters = set()
    for e in out:
        if e["depth"] == 0 and (e["data"] or e["zero"]) and e["present"]:
            clusters.update(range(e["start"] // CLUSTER, (e["start"] + e["length"]) // CLUSTER))
    return clusters


def clusters_of(extents):
    out = set()
    for offset, length in extents:
        out.update(range(offset // CLUSTER, (offset + length + CLUSTER - 1) // CLUSTER))
    return out


@pytest.mark.parametrize("server,toolset,transport", [
    ("stratad", "strata", "unix"),
    ("stratad", "strata", "tcp"),
    ("stratad", "qemu", "unix"),
    ("qemu-storage-daemon", "strata", "tcp"),
    ("qemu-storage-daemon", "strata", "unix"),
    ("qemu-storage-daemon", "qemu", "unix"),
])
def test_copy_sh_incremental_backup(workdir, server, toolset, transport):
    for tool in ("qemu-img", "qemu-io", "nbdinfo", "qemu-storage-daemon"):
        require(tool)
    workdir = str(workdir)
    srv = Server(workdir, "stratad" if server == "stratad" else "qsd", transport)
    try:
        guest_writes(srv.uri("live"), BEFORE)
        srv.qmp.execute("block-dirty-bitmap-add", node="disk", name="b0")
        full = os.path.join(workdir, "full.qcow2")
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", srv.uri("live"), full])
        guest_writes(srv.uri("live"), AFTER)
        srv.qmp.execute("block-dirty-bitmap-disable", node="disk", name="b0")
        srv.export("backup", bitmaps=["b0"])
        source = srv.uri("backup")
        extents = dirty_extents(source, "b0")
        assert extents, "the bitmap recorded the guest's writes"

        script = os.path.join(workdir, "copy.sh")
        with open(script, "w") as f:
            f.write(COPY_SH)
        img, io = tools(toolset)
        env = dict(os.environ, IMG=img, IO=io, BITMAP="b0", FULL="full.qcow2")
        # Run from the backup directory: "full.qcow2" is relative, as in the slides.
        res = subprocess.run(["sh", script, source, "inc.qcow2"], cwd=workdir, env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        check_reads_reported(res.stdout, extents)
        inc = os.path.join(workdir, "inc.qcow2")

        info = json.loads(run(["qemu-img", "info", "--output=json", "-U", inc]).stdout)
        assert info["backing-filename"] == "full.qcow2"
        assert info["backing-filename-format"] == "qcow2"
        chk = run(["qemu-img", "check", inc], check=False)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        assert "No errors were found" in chk.stdout
        # Copy-on-read brought exactly the dirty clusters into the overlay.
        assert allocated_clusters(inc) == clusters_of(extents)
        cmp = run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", source, inc], check=False)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    finally:
        srv.stop()
    # And against the disk file itself once the server is gone.
    cmp = run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", srv.disk, inc], check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_strata_io_reports_like_qemu_io(workdir):
    """The copy loop's output, line for line, apart from the timings."""
    image = os.path.join(str(workdir), "t.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1M"])
    cmds = ["w 0 512", "w -P 0x41 4k 32", "r -v 4k 40", "r -q 0 512", "r -C 0 512",
            "readv 0 512 100", "writev -P 3 0 512 512", "w -z 64k 64k", "d 0 512", "l",
            "a 0 64k", "map", "r -P 7 0 512", "bogus", "r 0", "r abc 512", "r 0 3G",
            "w -u 0 512", "r 1M 1", "help r"]
    outs = {}
    for name, tool in (("qemu", "qemu-io"), ("strata", strata_binary("strata-io"))):
        run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1M"])
        args = [tool, "-f", "qcow2"]
        for c in cmds:
            args += ["-c", c]
        res = run(args + [image], check=False)
        outs[name] = (res.returncode, normalise(res.stdout), normalise(res.stderr))
    assert outs["strata"][0] == outs["qemu"][0]
    ours = outs["strata"][1].splitlines()
    theirs = outs["qemu"][1].splitlines()
    # Help texts are Strata's own wording past their first line; everything
    # else is qemu-io's.
    cut = [i for i, line in enumerate(theirs) if line.startswith("r [-abCqv]")][0]
    assert ours[:cut + 1] == theirs[:cut + 1]
    assert outs["strata"][2] == outs["qemu"][2]


def normalise(text):
    """Timings and rates vary: keep their shape, drop their values."""
    text = text.replace("strata-io:", "qemu-io:")
    text = re.sub(r"\d+\.\d\d sec \([0-9.]+ [A-Za-z]+/sec and [0-9.]+ ops/sec\)",
                  "T sec (R/sec and R ops/sec)", text)
    text = re.sub(r"^(\d+),1,0:00:\d\d\.\d\d,[0-9.]+,[0-9.]+$", r"\1,1,T,R,R", text, flags=re.M)
    return text


def test_copy_on_read_allocates_what_qemu_io_allocates(workdir):
    """qemu-io -C and strata-io -C on copies of one overlay: the same reads
    (unaligned, across clusters, the image's partial last cluster, zeroes of
    the backing file, readv, aio_read) leave identical qemu-img maps."""
    d = str(workdir)
    base = os.path.join(d, "base.raw")
    size = MiB + 512
    run(["qemu-img", "create", "-q", "-f", "raw", base, str(size)])
    run(["qemu-io", "-f", "raw", "-c", f"write -P 0x33 0 {size}", "-c", "write -z 640k 128k",
         base])
    cmds = ["r 1048900 100", "r 100 70000", "r -P 0x33 200000 1", "readv 300000 512 512",
            "aio_read 500000 4096", "aio_flush", "r -P 0 660000 70000"]
    maps = {}
    for name, tool in (("qemu", "qemu-io"), ("strata", strata_binary("strata-io"))):
        top = os.path.join(d, f"top-{name}.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top])
        args = [tool, "-C", "-f", "qcow2"]
        for c in cmds:
            args += ["-c", c]
        out = run(args + [top]).stdout
        assert "Pattern verification failed" not in out
        assert run(["qemu-img", "check", top], check=False).returncode == 0
        run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", base, top])
        maps[name] = json.loads(run(["qemu-img", "map", "--output=json", top]).stdout)
    assert [e for e in maps["strata"] if e["depth"] == 0]  # something was copied
    assert maps["strata"] == maps["qemu"]
