"""Dirty bitmap QMP commands: the same script against qemu-storage-daemon and
stratad must give the same replies (errors, digests, dirty-bitmaps queries,
transactions rolled back); persistent bitmaps QEMU wrote are read with the
digests QEMU reports."""
import os
import shutil

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

QSD = "qemu-storage-daemon"


def make_image(workdir, name):
    """A qcow2 image with two bitmaps filled by qemu-io writes."""
    require("qemu-img")
    path = os.path.join(str(workdir), name)
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "10487296"])
    run(["qemu-img", "bitmap", "--add", path, "b64k"])
    run(["qemu-img", "bitmap", "--add", "-g", "512", path, "b512"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 0 4k", "-c", "write 1M 64k", "-c",
         "write 10M 1k", "-c", "write 5000000 777", path])
    return path


def blockdevs(image):
    return ["--blockdev", "driver=null-co,node-name=n1,size=1048576",
            "--blockdev", "driver=null-co,node-name=n2,size=2097152",
            "--blockdev", f"driver=file,node-name=f,filename={image},read-only=on",
            "--blockdev", "driver=qcow2,node-name=q,file=f,read-only=on"]


def bitmaps_view(reply):
    if "return" not in reply:
        return reply
    return {n["node-name"]: n.get("dirty-bitmaps") for n in reply["return"]}


def script():
    add = lambda **a: ("block-dirty-bitmap-add", a)  # noqa: E731
    bm = lambda cmd, node, name: (cmd, {"node": node, "name": name})  # noqa: E731
    return [
        add(node="n1", name="a"),
        add(node="n1", name="b", granularity=512, disabled=True),
        add(node="n2", name="c"),
        add(node="n1", name=""),
        add(node="nonode", name="x"),
        add(node="n1", name="x", granularity=1000),
        add(node="n1", name="x", granularity=256),
        add(node="n1", name="a"),
        add(node="n1", name="y" * 1024),
        add(node="n1", name="p", persistent=True),
        add(node="n1", name="big", granularity=2 ** 31),
        bm("block-dirty-bitmap-clear", "n1", "nothere"),
        bm("block-dirty-bitmap-clear", "nonode", "a"),
        bm("block-dirty-bitmap-enable", "n1", "b"),
        bm("block-dirty-bitmap-disable", "n1", "b"),
        ("block-dirty-bitmap-merge", {"node": "n1", "target": "a",
                                      "bitmaps": [{"node": "n2", "name": "c"}]}),
        ("block-dirty-bitmap-merge", {"node": "n1", "target": "a", "bitmaps": ["b", "zz"]}),
        ("block-dirty-bitmap-merge", {"node": "n1", "target": "a",
                                      "bitmaps": [{"node": "nx", "name": "c"}]}),
        ("block-dirty-bitmap-merge", {"node": "n1", "target": "a", "bitmaps": ["b"]}),
        bm("x-debug-block-dirty-bitmap-sha256", "n1", "a"),
        bm("x-debug-block-dirty-bitmap-sha256", "n1", "b"),
        bm("x-debug-block-dirty-bitmap-sha256", "q", "b64k"),
        bm("x-debug-block-dirty-bitmap-sha256", "q", "b512"),
        bm("block-dirty-bitmap-clear", "q", "b512"),
        bm("block-dirty-bitmap-remove", "q", "b512"),
        # A failing transaction changes nothing.
        ("transaction", {"actions": [
            {"type": "block-dirty-bitmap-add", "data": {"node": "n1", "name": "t1"}},
            {"type": "block-dirty-bitmap-disable", "data": {"node": "n1", "name": "a"}},
            {"type": "block-dirty-bitmap-clear", "data": {"node": "n1", "name": "nope"}}]}),
        # A good one: add disabled D, merge A+B into it (iotest 236).
        ("transaction", {"actions": [
            {"type": "block-dirty-bitmap-add",
             "data": {"node": "n1", "name": "d", "disabled": True}},
            {"type": "block-dirty-bitmap-merge",
             "data": {"node": "n1", "target": "d", "bitmaps": ["a", "b"]}}]}),
        bm("x-debug-block-dirty-bitmap-sha256", "n1", "d"),
        ("query-named-block-nodes", {}),
        bm("block-dirty-bitmap-remove", "n1", "a"),
        bm("block-dirty-bitmap-remove", "n1", "a"),
        ("query-named-block-nodes", {}),
    ]


def run_script(binary, workdir, image, name):
    replies = []
    with Daemon(binary, workdir, args=blockdevs(image), name=name) as d:
        c = d.client()
        for command, args in script():
            reply = c.request(command, args)
            if command == "query-named-block-nodes":
                reply = bitmaps_view(reply)
            replies.append((command, reply))
    return replies


def test_same_replies_as_qemu_storage_daemon(workdir):
    require(QSD)
    image = make_image(workdir, "a.qcow2")
    image_copy = os.path.join(str(workdir), "b.qcow2")
    shutil.copy(image, image_copy)
    theirs = run_script(QSD, workdir, image, "qsd.sock")
    ours = run_script(strata_binary("stratad"), workdir, image_copy, "strata.sock")
    for (command, want), (_, got) in zip(theirs, ours):
        assert got == want, command
    # The digests are QEMU's for these contents (also checked above).
    digests = {r["return"]["sha256"] for c, r in ours if "return" in r and "sha256" in r["return"]}
    assert "39c678ffcbece821ad359685c14a99ae6fbcb7575e57f434500a6287e8be7c1e" in digests
    assert "de369442e3ece6e4b15b1d33d6da70d3300fae029714de78719cf042f08e4b4b" in digests


def test_populate_from_allocation(workdir):
    require("qemu-img")
    base = os.path.join(str(workdir), "base.qcow2")
    top = os.path.join(str(workdir), "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, "4M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 1M 64k", base])
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top])
    run(["qemu-io", "-f", "qcow2", "-c", "write 3M 4k", top])
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        c.execute("blockdev-add", driver="qcow2", **{"node-name": "top"},
                  file={"driver": "file", "filename": top})
        c.execute("block-dirty-bitmap-add", node="top", name="all", disabled=True)
        c.execute("block-dirty-bitmap-add", node="top", name="above", disabled=True)
        c.execute("block-dirty-bitmap-populate", node="top", name="all")
        backing = c.execute("query-named-block-nodes")
        base_node = [n["node-name"] for n in backing if n["node-name"] != "top"
                     and n["drv"] == "qcow2"][0]
        c.execute("block-dirty-bitmap-populate", node="top", name="above", base=base_node)
        info = {b["name"]: b for n in c.execute("query-named-block-nodes")
                if n["node-name"] == "top" for b in n["dirty-bitmaps"]}
        assert info["all"]["count"] == 2 * 65536
        assert info["above"]["count"] == 65536
        assert c.error("block-dirty-bitmap-populate",
                       {"node": "top", "name": "all", "base": "top"}) == (
            "GenericError", "Node 'top' is not a backing image of 'top'")
