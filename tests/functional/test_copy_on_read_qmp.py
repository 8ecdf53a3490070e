"""The copy-on-read filter through QMP, the same script against stratad and
qemu-storage-daemon: blockdev-add with QEMU's options and refusals, an NBD
export of the filter read by qemu-io, and the clusters those reads copied
into the overlay (qemu-img map after the daemon quits) identical on both.
"""
import json
import os

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon, QmpError

MiB = 1 << 20


def chain(d):
    """base.qcow2 <- mid.qcow2 <- top.qcow2, data in base (0x11) and mid (0x22)."""
    base, mid, top = (os.path.join(d, n) for n in ("base.qcow2", "mid.qcow2", "top.qcow2"))
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, "4M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", base])
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", mid])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 2M 1M", mid])
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top])
    return top


def errors(c, top):
    """blockdev-add refusals, as (class, desc)."""
    ro = {"driver": "qcow2", "node-name": "ro", "read-only": True,
          "file": {"driver": "file", "filename": top.replace("top", "base"),
                   "locking": "off"}}
    c.execute("blockdev-add", **ro)
    cases = [{"node-name": "c1", "file": "top", "bottom": "nosuch"},
             {"node-name": "c1"},
             {"node-name": "c1", "file": "top", "x": 1},
             {"node-name": "c1", "file": "ro"}]
    out = []
    for args in cases:
        out.append(c.error("blockdev-add", {"driver": "copy-on-read", **args}))
    c.execute("blockdev-add", driver="copy-on-read", **{"node-name": "c0"}, file="top")
    out.append(c.error("blockdev-add", {"driver": "copy-on-read", "node-name": "c1",
                                        "file": "c0", "bottom": "c0"}))
    c.execute("blockdev-del", **{"node-name": "c0"})
    c.execute("blockdev-del", **{"node-name": "ro"})
    return out


@pytest.mark.parametrize("bottom", [False, True])
def test_copy_on_read_filter_over_qmp(workdir, bottom):
    for tool in ("qemu-storage-daemon", "qemu-img", "qemu-io"):
        require(tool)
    results = {}
    for kind, binary in (("qsd", "qemu-storage-daemon"), ("strata", strata_binary("stratad"))):
        d = os.path.join(str(workdir), kind)
        os.mkdir(d)
        top = chain(d)
        sock = os.path.join(d, "nbd.sock")
        with Daemon(binary, d) as daemon:
            c = daemon.client()
            c.execute("blockdev-add", driver="qcow2", **{"node-name": "top"},
                      file={"driver": "file", "filename": top})
            refusals = errors(c, top)
            cor = {"driver": "copy-on-read", "node-name": "cor", "file": "top"}
            if bottom:
                mid = [n["node-name"] for n in c.execute("query-named-block-nodes")
                       if n["image"]["filename"].endswith("mid.qcow2") and n["drv"] == "qcow2"]
                cor["bottom"] = mid[0]
            c.execute("blockdev-add", **cor)
            c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
            c.execute("block-export-add", type="nbd", id="e", **{"node-name": "cor"}, name="e")
            uri = f"nbd+unix:///e?socket={sock}"
            # (Holes are not read: QEMU's server answers them from block
            # status without reading, Strata's reads and copies zeroes.)
            out = run(["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 100k 64k",
                       "-c", "read -P 0x22 2M 4k", uri]).stdout
            assert "Pattern verification failed" not in out
            c.execute("quit")
            assert daemon.stop() == 0
        assert run(["qemu-img", "check", top], check=False).returncode == 0
        mapped = json.loads(run(["qemu-img", "map", "--output=json", top]).stdout)
        results[kind] = (refusals, [(e["start"], e["length"], e["depth"], e["zero"])
                                    for e in mapped])
    assert results["strata"][0] == results["qsd"][0]
    assert results["strata"][1] == results["qsd"][1]
    copied = [e for e in results["strata"][1] if e[2] == 0]
    # 100k..164k of the base: clusters 1 and 2, unless bottom stops at mid;
    # mid's 2M cluster is copied either way.
    assert any(e[0] <= 2 * MiB < e[0] + e[1] for e in copied)
    assert any(e[0] <= 65536 < e[0] + e[1] for e in copied) is not bottom
