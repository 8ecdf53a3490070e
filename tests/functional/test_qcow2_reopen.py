"""blockdev-reopen of qcow2 nodes between read-only and read-write, as QEMU:
going read-only stores the persistent bitmaps (in-use cleared, qemu-img
sees it at once), flushes and clears the lazy-refcounts dirty bit, and
drops the write lock (qemu-io -r may open the image); going read-write
marks the bitmaps in-use again and takes the write lock. Bitmaps keep
their dirty set across ro -> rw -> ro, data written before reads back, and
qemu-img check stays clean. A reopen that fails after the qcow2 node
prepared leaves everything as it was."""
import json
import os

from conftest import require, run, strata_binary
from qmp_client import Daemon
from test_bitmap_persist import dirty_map, dirty_ranges, image, node_bitmaps, nbd_writes
from test_bitmap_persist import qemu_info_bitmaps, qsd_digests, sha256
from test_nbd_basic import short_dir
from test_nbd_qmp import wait_event

KiB = 1 << 10
MiB = 1 << 20


def add_node(c, path, read_only=False):
    c.execute("blockdev-add", driver="qcow2", **{
        "node-name": "q", "read-only": read_only,
        "file": {"driver": "file", "filename": path}})


def reopen(c, path, read_only):
    c.execute("blockdev-reopen", options=[{
        "driver": "qcow2", "node-name": "q", "read-only": read_only,
        "file": {"driver": "file", "filename": path}}])


def export(c, sock, *writes):
    """Guest writes through a short-lived writable NBD export of q."""
    if not c.execute("query-block-exports") and not os.path.exists(sock):
        c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    c.execute("block-export-add", type="nbd", id="e", **{"node-name": "q"}, writable=True)
    nbd_writes(sock, *writes)
    c.execute("block-export-del", id="e", mode="hard")
    wait_event(c, "BLOCK_EXPORT_DELETED")


def flags(path):
    return {b["name"]: b["flags"] for b in qemu_info_bitmaps(path)}


def qemu_io(path, *commands, read_only=False):
    args = ["qemu-io", "-f", "qcow2"] + (["-r"] if read_only else [])
    for c in commands:
        args += ["-c", c]
    return run(args + [path], check=False)


def dirty_flag(path):
    info = json.loads(run(["qemu-img", "info", "-U", "--output=json", path]).stdout)
    return info["dirty-flag"]


def test_bitmaps_and_locks_follow_read_only_both_ways(workdir):
    path = image(workdir, "a.qcow2")
    run(["qemu-img", "bitmap", "--add", path, "b"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 1M 4k", path])
    sock = os.path.join(short_dir(), "nbd")
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        add_node(c, path)
        c.execute("block-dirty-bitmap-add", node="q", name="new", persistent=True)
        assert flags(path) == {"b": ["in-use", "auto"]}
        assert "lock" in qemu_io(path, "read 0 4k", read_only=True).stderr
        export(c, sock, "write -P 2 2M 4k")

        reopen(c, path, True)
        assert flags(path) == {"new": ["auto"], "b": ["auto"]}
        info = node_bitmaps(c)
        assert info["b"]["count"] == 2 * 64 * KiB and info["new"]["count"] == 64 * KiB
        assert info["b"]["recording"] and info["b"]["persistent"]
        # Read-only bitmaps refuse changes, as in QEMU.
        assert c.error("block-dirty-bitmap-clear", {"node": "q", "name": "b"})[0] == (
            "GenericError")
        # No write lock any more: QEMU reads the data and the stored bitmaps.
        r = qemu_io(path, "read -P 1 1M 4k", "read -P 2 2M 4k", read_only=True)
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r
        assert "lock" in qemu_io(path, "write 0 4k").stderr
        run(["qemu-img", "check", path])
        assert dirty_ranges(dirty_map(path, "b")) == [(1 * MiB, 64 * KiB), (2 * MiB, 64 * KiB)]

        reopen(c, path, False)
        assert flags(path) == {"new": ["in-use", "auto"], "b": ["in-use", "auto"]}
        assert "lock" in qemu_io(path, "read 0 4k", read_only=True).stderr
        c.execute("block-dirty-bitmap-clear", node="q", name="new")
        export(c, sock, "write -P 3 3M 4k")

        reopen(c, path, True)
        assert flags(path) == {"new": ["auto"], "b": ["auto"]}
        run(["qemu-img", "check", path])
        assert dirty_ranges(dirty_map(path, "b")) == [
            (1 * MiB, 64 * KiB), (2 * MiB, 64 * KiB), (3 * MiB, 64 * KiB)]
        assert dirty_ranges(dirty_map(path, "new")) == [(3 * MiB, 64 * KiB)]
        digests = {n: sha256(c, n) for n in ("b", "new")}
        c.execute("quit")
        assert d.proc.wait(20) == 0
    assert flags(path) == {"new": ["auto"], "b": ["auto"]}
    assert qsd_digests(workdir, path, ["b", "new"]) == digests
    r = qemu_io(path, "read -P 1 1M 4k", "read -P 2 2M 4k", "read -P 3 3M 4k", read_only=True)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r


def test_opened_read_only_then_written(workdir):
    path = image(workdir, "b.qcow2")
    run(["qemu-img", "bitmap", "--add", "-g", "4096", path, "b"])
    sock = os.path.join(short_dir(), "nbd")
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        add_node(c, path, read_only=True)
        assert flags(path) == {"b": ["auto"]}
        assert node_bitmaps(c)["b"]["count"] == 0
        reopen(c, path, False)
        assert flags(path) == {"b": ["in-use", "auto"]}
        export(c, sock, "write -P 5 5M 8k")
        assert node_bitmaps(c)["b"]["count"] == 8 * KiB
        c.execute("quit")
        assert d.proc.wait(20) == 0
    assert flags(path) == {"b": ["auto"]}
    run(["qemu-img", "check", path])
    assert dirty_ranges(dirty_map(path, "b")) == [(5 * MiB, 8 * KiB)]


def test_failed_reopen_leaves_bitmaps_in_use_and_recording(workdir):
    path = image(workdir, "c.qcow2")
    run(["qemu-img", "bitmap", "--add", path, "b"])
    sock = os.path.join(short_dir(), "nbd")
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        add_node(c, path)
        c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        c.execute("block-export-add", type="nbd", id="e", **{"node-name": "q"}, writable=True)
        # The export needs write permission: the switch fails after the
        # qcow2 node prepared (and stored its bitmaps), so it is undone.
        err = c.error("blockdev-reopen", {"options": [{
            "driver": "qcow2", "node-name": "q", "read-only": True,
            "file": {"driver": "file", "filename": path}}]})
        assert err[0] == "GenericError"
        assert flags(path) == {"b": ["in-use", "auto"]}
        nbd_writes(sock, "write -P 9 9M 4k")
        assert node_bitmaps(c)["b"]["count"] == 64 * KiB
        c.execute("quit")
        assert d.proc.wait(20) == 0
    assert flags(path) == {"b": ["auto"]}
    run(["qemu-img", "check", path])
    assert dirty_ranges(dirty_map(path, "b")) == [(9 * MiB, 64 * KiB)]


def test_read_only_clears_the_lazy_refcounts_dirty_bit(workdir):
    require("qemu-img")
    path = os.path.join(str(workdir), "d.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "16M"])
    sock = os.path.join(short_dir(), "nbd")
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        add_node(c, path)
        export(c, sock, "write -P 4 1M 64k")
        assert dirty_flag(path) is True
        reopen(c, path, True)
        assert dirty_flag(path) is False
        run(["qemu-img", "check", path])
        r = qemu_io(path, "read -P 4 1M 64k", read_only=True)
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r
        reopen(c, path, False)
        export(c, sock, "write -P 6 2M 64k")
        c.execute("quit")
        assert d.proc.wait(20) == 0
    assert dirty_flag(path) is False
    run(["qemu-img", "check", path])


def test_corrupt_image_stays_read_only(workdir):
    path = image(workdir, "e.qcow2", "1M")
    with open(path, "r+b") as f:  # incompatible feature bit 1: corrupt
        f.seek(72)
        f.write((2).to_bytes(8, "big"))
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        add_node(c, path, read_only=True)
        assert c.error("blockdev-reopen", {"options": [{
            "driver": "qcow2", "node-name": "q", "read-only": False,
            "file": {"driver": "file", "filename": path}}]}) == (
            "GenericError", "qcow2: Image is corrupt; cannot be opened read/write")
        ro = [n for n in c.execute("query-named-block-nodes") if n["node-name"] == "q"]
        assert ro[0]["ro"] is True
