"""qemu:dirty-bitmap over NBD and the pull-mode incremental backup of the
seed talk: a qcow2 with a persistent bitmap exported with -B, a client
copies only the dirty extents into a qcow2 backed by the previous backup,
and qemu-img compare shows it equals the source."""
import os
import subprocess

import nbd  # python3-libnbd
import pytest

from conftest import run, strata_binary
from nbd_extents import flagged_extents
from test_nbd_basic import nbdinfo, serve

MiB = 1 << 20


def make_source(workdir):
    src = os.path.join(workdir, "src.qcow2")
    full = os.path.join(workdir, "full.qcow2")
    run(["qemu-img", "create", "-f", "qcow2", src, "64M"])
    run(["qemu-io", "-c", "write -P 1 0 8M", "-c", "write -P 2 32M 4M", src])
    run(["qemu-img", "convert", "-O", "qcow2", src, full])
    run(["qemu-img", "bitmap", "--add", src, "bmap0"])
    run(["qemu-io", "-c", "write -P 3 1M 64k", "-c", "write -P 4 40M 1M", "-c", "write -z 33M 64k",
         "-c", "write -P 5 60M 128k", src])
    return src, full


def strata_can_export_bitmap(src):
    """The qcow2 driver must load persistent bitmaps for -B to find them."""
    r = subprocess.run([strata_binary("strata-nbd"), "-r", "-f", "qcow2", "-B", "bmap0",
                        "-k", "/nonexistent-dir/s", src], capture_output=True, text=True,
                       timeout=30)
    return "is not found" not in r.stderr


def test_dirty_bitmap_map_equals_qemu_and_pull_backup(workdir):
    src, full = make_source(workdir)
    if not strata_can_export_bitmap(src):
        pytest.skip("the qcow2 driver does not load persistent bitmaps yet")
    maps = {}
    for server in ("strata", "qemu"):
        with serve(src, "-r", "-f", "qcow2", "-B", "bmap0", server=server) as s:
            maps[server] = nbdinfo("--map=qemu:dirty-bitmap:bmap0", s.uri)
    assert maps["strata"] == maps["qemu"]
    assert "dirty" in maps["strata"]

    inc = os.path.join(workdir, "inc.qcow2")
    run(["qemu-img", "create", "-f", "qcow2", "-b", full, "-F", "qcow2", inc])
    with serve(src, "-r", "-f", "qcow2", "-B", "bmap0") as s, \
            serve(inc, "-f", "qcow2", server="qemu") as t:
        h = nbd.NBD()
        h.add_meta_context("qemu:dirty-bitmap:bmap0")
        h.connect_uri(s.uri)
        out = nbd.NBD()
        out.connect_uri(t.uri)
        dirty = flagged_extents(h, "qemu:dirty-bitmap:bmap0")
        copied = 0
        for off, length in dirty:
            out.pwrite(h.pread(length, off), off)
            copied += length
        out.flush()
        assert 0 < copied < 4 * MiB
        h.shutdown()
        out.shutdown()
    run(["qemu-img", "compare", src, inc])


def test_bitmap_errors():
    r = run([strata_binary("strata-nbd"), "-f", "raw", "-B", "nope", "-k", "/tmp/x-nbd-none",
             "/dev/null"], check=False, timeout=30)
    assert r.returncode == 1 and "Bitmap 'nope' is not found" in r.stderr
