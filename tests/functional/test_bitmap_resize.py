"""block_resize of qcow2 nodes with persistent bitmaps, side by side with
qemu-storage-daemon on copies of one image: an inconsistent (in-use)
bitmap refuses the resize with QEMU's message and leaves the image as it
was; otherwise the bitmaps follow the new size with the same digests as
QEMU's and are stored at the new size (qemu-img info, check, and the dirty
map through qemu-nbd -B)."""
import json
import os
import shutil

from conftest import require, run, strata_binary
from qmp_client import Daemon
from test_bitmap_persist import QSD, blockdev_args, dirty_map, image, node_bitmaps
from test_bitmap_persist import qemu_info_bitmaps, sha256

KiB = 1 << 10
MiB = 1 << 20


def virtual_size(path):
    return json.loads(run(["qemu-img", "info", "-U", "--output=json", path]).stdout)[
        "virtual-size"]


def both(workdir, mine, theirs, script):
    """Runs script(client) in stratad on `mine` and qemu-storage-daemon on
    `theirs`, each ending with a clean quit; returns both results."""
    require(QSD)
    out = []
    for binary, path, sock in ((strata_binary("stratad"), mine, "s.sock"),
                               (QSD, theirs, "q.sock")):
        with Daemon(binary, workdir, args=blockdev_args(path), name=sock) as d:
            c = d.client()
            out.append(script(c))
            c.execute("quit")
            assert d.proc.wait(20) == 0
    return out


def test_inconsistent_bitmap_refuses_resize_as_qemu(workdir):
    mine = image(workdir, "a.qcow2")
    run(["qemu-img", "bitmap", "--add", mine, "b"])
    with Daemon(strata_binary("stratad"), workdir, args=blockdev_args(mine)) as d:
        assert "b" in node_bitmaps(d.client())  # opened: the bitmap is in-use on disk
        d.proc.kill()  # leaves the bitmap in-use: inconsistent at the next open
        d.proc.wait()
    theirs = os.path.join(str(workdir), "b.qcow2")
    shutil.copy(mine, theirs)

    def resize(c):
        return (c.error("block_resize", {"node-name": "q", "size": 128 * MiB}),
                node_bitmaps(c)["b"]["inconsistent"])

    ours, qemu = both(workdir, mine, theirs, resize)
    assert ours == qemu
    assert ours[0] == ("GenericError", "Bitmap 'b' is inconsistent and cannot be used")
    assert virtual_size(mine) == 64 * MiB
    assert qemu_info_bitmaps(mine) == qemu_info_bitmaps(theirs)
    run(["qemu-img", "check", mine])


def test_bitmaps_follow_grow_and_shrink_as_qemu(workdir):
    mine = image(workdir, "c.qcow2")
    run(["qemu-img", "bitmap", "--add", mine, "b"])
    run(["qemu-img", "bitmap", "--add", "-g", "4096", mine, "small"])
    run(["qemu-img", "bitmap", "--add", "--disable", mine, "off"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 1M 4k", "-c", "write 40M 100k",
         "-c", "write 63M 1M", mine])
    theirs = os.path.join(str(workdir), "d.qcow2")
    shutil.copy(mine, theirs)
    names = ("b", "small", "off")

    def grow_then_shrink(c):
        c.execute("block_resize", **{"node-name": "q", "size": 100 * MiB})
        grown = ({n: sha256(c, n) for n in names},
                 {n: b["count"] for n, b in node_bitmaps(c).items()})
        c.execute("block_resize", **{"node-name": "q", "size": 48 * MiB})
        shrunk = ({n: sha256(c, n) for n in names},
                  {n: b["count"] for n, b in node_bitmaps(c).items()})
        return grown, shrunk

    ours, qemu = both(workdir, mine, theirs, grow_then_shrink)
    assert ours == qemu
    # 64M..65M grew with the disk and is cut at 48M; 1M and 40M..40M+100k stay.
    assert ours[0][1] == {"b": 19 * 64 * KiB, "small": 282 * 4 * KiB, "off": 0}
    assert ours[1][1] == {"b": 3 * 64 * KiB, "small": 26 * 4 * KiB, "off": 0}
    assert virtual_size(mine) == virtual_size(theirs) == 48 * MiB
    assert qemu_info_bitmaps(mine) == qemu_info_bitmaps(theirs)
    run(["qemu-img", "check", mine])
    for n in names:
        assert dirty_map(mine, n) == dirty_map(theirs, n)
