"""A qcow2 overlay opened without a backing file, which QMP blockdev-snapshot
gives one afterwards: reads of unallocated ranges and copy-on-write of
partial-cluster writes must use the backing node attached later."""
import os

from conftest import require, run, strata_binary
from qmp_client import Daemon

MiB = 1 << 20


def qemu_io(fmt, target, *cmds):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    return run(args + [target])


def test_backing_attached_by_blockdev_snapshot(workdir):
    require("qemu-img")
    require("qemu-io")
    base = os.path.join(workdir, "base.raw")
    overlay = os.path.join(workdir, "overlay.qcow2")
    sock = os.path.join(workdir, "nbd.sock")
    run(["qemu-img", "create", "-q", "-f", "raw", base, "4M"])
    qemu_io("raw", base, "write -P 0x11 0 4M")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay, "4M"])
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        c.execute("blockdev-add", driver="raw", **{"node-name": "base", "file": {
            "driver": "file", "filename": base}})
        c.execute("blockdev-add", driver="qcow2", **{"node-name": "q", "backing": None,
                                                     "file": {"driver": "file",
                                                              "filename": overlay}})
        c.execute("blockdev-snapshot", node="base", overlay="q")
        c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        c.execute("block-export-add", type="nbd", id="e", **{"node-name": "q"},
                  writable=True)
        uri = f"nbd+unix:///q?socket={sock}"
        # Unallocated in the overlay: the backing node attached later answers.
        qemu_io("raw", uri, "read -P 0x11 0 4M")
        # Partial-cluster writes: the rest of each cluster is copied from the
        # backing node, not zero-filled.
        qemu_io("raw", uri, "write -P 0x22 1049088 1k", "write -P 0x33 2162152 1000")
        qemu_io("raw", uri, "read -P 0x11 1048576 512", "read -P 0x22 1049088 1k",
                "read -P 0x11 1050112 62976", "read -P 0x11 2097152 65000",
                "read -P 0x33 2162152 1000", "read -P 0x11 2163152 65072")
        c.execute("quit")
        assert d.proc.wait(20) == 0
    res = run(["qemu-img", "check", overlay], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    # Only the two written clusters (three with the write crossing 2M+64k)
    # are allocated in the overlay, each with the backing content around the
    # written bytes.
    model = os.path.join(workdir, "model.raw")
    run(["qemu-img", "create", "-q", "-f", "raw", model, "4M"])
    qemu_io("raw", model, "write -P 0x11 0 4M", "write -P 0x22 1049088 1k",
            "write -P 0x33 2162152 1000")
    res = run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", overlay, model], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    allocated = run(["qemu-img", "map", "--output=json", overlay]).stdout
    assert allocated.count('"depth": 0') == 2, allocated
