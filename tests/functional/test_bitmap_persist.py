"""Persistent dirty bitmaps in qcow2 between Strata and QEMU: bitmaps QEMU
wrote are read by stratad with exactly the dirty clusters and QEMU's
digests; bitmaps stratad creates, filled by writes through Strata
(strata-io, and stratad's own NBD export where stratad has one), are stored
at a clean shutdown with QEMU's flags and read back by qemu-nbd -B; a kill -9
leaves them in-use, and reopened they are inconsistent until removed."""
import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon
from test_nbd_basic import nbdinfo, serve, short_dir

QSD = "qemu-storage-daemon"
KiB = 1 << 10
MiB = 1 << 20


def image(workdir, name, size="64M"):
    require("qemu-img")
    path = os.path.join(str(workdir), name)
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, size])
    return path


def qemu_info_bitmaps(path):
    out = run(["qemu-img", "info", "-U", "--output=json", path]).stdout
    return json.loads(out)["format-specific"]["data"].get("bitmaps", [])


def blockdev_args(path, read_only=False):
    ro = "on" if read_only else "off"
    return ["--blockdev", f"driver=file,node-name=f,filename={path},read-only={ro}",
            "--blockdev", f"driver=qcow2,node-name=q,file=f,read-only={ro},discard=unmap"]


def node_bitmaps(client, node="q"):
    for n in client.execute("query-named-block-nodes"):
        if n["node-name"] == node:
            return {b["name"]: b for b in n.get("dirty-bitmaps", [])}
    raise KeyError(node)


def sha256(client, name, node="q"):
    return client.execute("x-debug-block-dirty-bitmap-sha256", node=node, name=name)["sha256"]


def qsd_digests(workdir, path, names):
    """The digests qemu-storage-daemon reports for the image's bitmaps."""
    require(QSD)
    with Daemon(QSD, workdir, args=blockdev_args(path, read_only=True), name="qsd.sock") as d:
        c = d.client()
        return {n: sha256(c, n) for n in names}


def nbd_writes(sock, *commands):
    """Guest writes through an NBD export (qemu-io as the client)."""
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    run(args + [f"nbd+unix:///q?socket={sock}"])


def start_export(client, sock):
    """A writable NBD export of node q; False if the daemon has no NBD server."""
    reply = client.request("nbd-server-start",
                           {"addr": {"type": "unix", "data": {"path": sock}}})
    if reply.get("error", {}).get("class") == "CommandNotFound":
        return False
    assert "return" in reply, reply
    client.execute("block-export-add", type="nbd", id="e", **{"node-name": "q"}, writable=True)
    return True


def strata_io(path, *commands):
    """Writes through Strata's block layer (bitmaps record, stored at close)."""
    args = [strata_binary("strata-io"), "-f", "qcow2"]
    for c in commands:
        args += ["-c", c]
    run(args + [path])


def create_bitmaps(workdir, path, *adds):
    """block-dirty-bitmap-add in stratad, then a clean quit (stores them)."""
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path)) as d:
        c = d.client()
        for a in adds:
            c.execute("block-dirty-bitmap-add", node="q", **a)
        c.execute("quit")
        assert d.proc.wait(20) == 0


def dirty_map(path, name):
    """qemu:dirty-bitmap:NAME of the image as qemu-nbd serves it."""
    require("qemu-nbd")
    with serve(path, "-r", "-f", "qcow2", "-B", name, server="qemu") as s:
        return nbdinfo(f"--map=qemu:dirty-bitmap:{name}", s.uri)


def dirty_ranges(map_text):
    out = []
    for line in map_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "1":
            out.append((int(fields[0]), int(fields[1])))
    return out


def test_qemu_bitmap_read_with_exactly_the_dirty_clusters(workdir):
    path = image(workdir, "a.qcow2")
    run(["qemu-img", "bitmap", "--add", path, "b64k"])
    run(["qemu-img", "bitmap", "--add", "-g", "4096", path, "b4k"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 0 4k", "-c", "write 1M 64k",
         "-c", "write 10M 1k", "-c", "write 5000000 777", "-c", "write 63M 1M", path])
    want = qsd_digests(workdir, path, ["b64k", "b4k"])
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path, read_only=True)) as d:
        c = d.client()
        info = node_bitmaps(c)
        # 64 KiB granules: 0, 1M, 10M, 4980736 (5000000 and its tail), 63M..64M.
        assert info["b64k"]["count"] == (1 + 1 + 1 + 1 + 16) * 64 * KiB
        # 4 KiB granules: 1 + 16 + 1 + 2 (5000000..5000777 crosses one) + 256.
        assert info["b4k"]["count"] == (1 + 16 + 1 + 1 + 256) * 4 * KiB
        assert info["b64k"]["persistent"] and info["b64k"]["recording"]
        assert {n: sha256(c, n) for n in want} == want


def test_strata_bitmap_stored_with_qemu_flags_and_contents(workdir):
    path = image(workdir, "b.qcow2")
    create_bitmaps(workdir, path, {"name": "cbt", "persistent": True},
                   {"name": "off", "persistent": True, "granularity": 512, "disabled": True},
                   {"name": "ram"})
    # New bitmaps enter the directory newest first, as QEMU stores them.
    assert qemu_info_bitmaps(path) == [{"name": "off", "granularity": 512, "flags": []},
                                       {"name": "cbt", "granularity": 65536, "flags": ["auto"]}]
    strata_io(path, "write -P 7 0 4k", "write -P 8 20M 100k", "write -z 40M 64k",
              "discard 50M 64k")
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path, True)) as d:
        c = d.client()
        info = node_bitmaps(c)
        assert set(info) == {"cbt", "off"}
        digest, count = sha256(c, "cbt"), info["cbt"]["count"]
    assert qemu_info_bitmaps(path) == [{"name": "off", "granularity": 512, "flags": []},
                                       {"name": "cbt", "granularity": 65536, "flags": ["auto"]}]
    run(["qemu-img", "check", path])
    ranges = dirty_ranges(dirty_map(path, "cbt"))
    assert ranges == [(0, 64 * KiB), (20 * MiB, 128 * KiB), (40 * MiB, 64 * KiB),
                      (50 * MiB, 64 * KiB)]
    assert sum(r[1] for r in ranges) == count
    assert dirty_ranges(dirty_map(path, "off")) == []
    assert qsd_digests(workdir, path, ["cbt"]) == {"cbt": digest}


def test_guest_writes_through_stratad_export_are_stored(workdir):
    path = image(workdir, "g.qcow2")
    sock = os.path.join(short_dir(), "nbd")
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path)) as d:
        c = d.client()
        c.execute("block-dirty-bitmap-add", node="q", name="cbt", persistent=True)
        if not start_export(c, sock):
            pytest.skip("stratad has no NBD server in this build")
        nbd_writes(sock, "write -P 7 0 4k", "write -P 8 20M 100k")
        digest = sha256(c, "cbt")
        c.execute("quit")
        assert d.proc.wait(20) == 0
    assert qemu_info_bitmaps(path) == [{"name": "cbt", "granularity": 65536, "flags": ["auto"]}]
    assert dirty_ranges(dirty_map(path, "cbt")) == [(0, 64 * KiB), (20 * MiB, 128 * KiB)]
    assert qsd_digests(workdir, path, ["cbt"]) == {"cbt": digest}


@pytest.mark.parametrize("how", ["quit", "sigterm"])
def test_clean_shutdown_leaves_auto_and_the_same_dirty_set(workdir, how):
    path = image(workdir, "c.qcow2")
    run(["qemu-img", "bitmap", "--add", path, "b"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 3M 4k", path])
    strata_io(path, "write 7M 8k", "write 33M 1")
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path)) as d:
        c = d.client()
        digest = sha256(c, "b")
        assert node_bitmaps(c)["b"]["count"] == 3 * 64 * KiB
        assert qemu_info_bitmaps(path)[0]["flags"] == ["in-use", "auto"]
        if how == "quit":
            c.execute("quit")
        else:
            d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0
    assert qemu_info_bitmaps(path) == [{"name": "b", "granularity": 65536, "flags": ["auto"]}]
    run(["qemu-img", "check", path])
    assert dirty_ranges(dirty_map(path, "b")) == [(3 * MiB, 64 * KiB), (7 * MiB, 64 * KiB),
                                                  (33 * MiB, 64 * KiB)]
    assert qsd_digests(workdir, path, ["b"]) == {"b": digest}
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path)) as d:
        c = d.client()
        assert sha256(c, "b") == digest
        assert "inconsistent" not in node_bitmaps(c)["b"]


def test_kill_leaves_in_use_and_reopen_is_inconsistent(workdir):
    path = image(workdir, "d.qcow2")
    sock = os.path.join(short_dir(), "nbd")
    create_bitmaps(workdir, path, {"name": "b", "persistent": True})
    assert qemu_info_bitmaps(path)[0]["flags"] == ["auto"]
    strata_io(path, "write 1M 4k")
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path)) as d:
        c = d.client()
        assert node_bitmaps(c)["b"]["count"] == 64 * KiB
        if start_export(c, sock):
            nbd_writes(sock, "write 2M 4k")
        d.proc.kill()
        d.proc.wait()
    assert qemu_info_bitmaps(path)[0]["flags"] == ["in-use", "auto"]
    # QEMU agrees the bitmap cannot be trusted.
    r = run(["qemu-img", "convert", "--bitmaps", "-O", "qcow2", path,
             os.path.join(str(workdir), "x.qcow2")], check=False)
    assert r.returncode != 0
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(path)) as d:
        c = d.client()
        info = node_bitmaps(c)["b"]
        assert info["inconsistent"] is True and info["recording"] is False
        assert info["count"] == 0
        for cmd in ("block-dirty-bitmap-enable", "block-dirty-bitmap-clear"):
            assert c.error(cmd, {"node": "q", "name": "b"}) == (
                "GenericError", "Bitmap 'b' is inconsistent and cannot be used")
        c.execute("block-dirty-bitmap-remove", node="q", name="b")
        assert qemu_info_bitmaps(path) == []
        c.execute("quit")
        assert d.proc.wait(20) == 0
    assert qemu_info_bitmaps(path) == []
    run(["qemu-img", "check", path])


def test_same_digests_as_qemu_for_the_same_writes(workdir):
    require(QSD)
    mine = image(workdir, "e.qcow2", "100M")
    theirs = os.path.join(str(workdir), "f.qcow2")
    shutil.copy(mine, theirs)
    grans = (512, 65536, 1 << 20)
    writes = ["write 0 1", "write 12345 54321", "write 64M 3M", "write 99M 1M",
              "write -z 30M 200k", "discard 80M 1M"]
    create_bitmaps(workdir, mine, *({"name": f"g{g}", "granularity": g, "persistent": True}
                                    for g in grans))
    strata_io(mine, *writes)
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(mine, True)) as d:
        c = d.client()
        ours = {g: sha256(c, f"g{g}") for g in grans}
    sock = os.path.join(short_dir(), "nbd")
    with Daemon(QSD, workdir, args=blockdev_args(theirs), name="q.sock") as d:
        c = d.client()
        for g in grans:
            c.execute("block-dirty-bitmap-add", node="q", name=f"g{g}", granularity=g,
                      persistent=True)
        assert start_export(c, sock)
        nbd_writes(sock, *writes)
        assert {g: sha256(c, f"g{g}") for g in grans} == ours
        c.execute("quit")
        assert d.proc.wait(20) == 0
    # Each program's stored bitmaps read the same.
    assert qemu_info_bitmaps(mine) == qemu_info_bitmaps(theirs)
    for g in grans:
        assert dirty_map(mine, f"g{g}") == dirty_map(theirs, f"g{g}")
