"""The NBD server and block export QMP commands, as a differential test: the
same script runs against qemu-storage-daemon and stratad, and the replies and
BLOCK_EXPORT_DELETED events must match once paths and timestamps are
normalised."""
import json
import os
import shutil
import time

import nbd

from conftest import require, run, strata_binary
from qmp_client import Daemon
from test_nbd_basic import short_dir

QSD = "qemu-storage-daemon"


def make_image(workdir):
    require("qemu-img")
    path = os.path.join(str(workdir), "q.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "4M"])
    run(["qemu-img", "bitmap", "--add", path, "b64k"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 64k 64k", path])
    return path


def blockdevs(image):
    return ["--blockdev", "driver=null-co,node-name=n1,size=1048576",
            "--blockdev", "driver=null-co,node-name=n2,size=2097152",
            "--blockdev", "driver=null-co,node-name=ro,size=65536,read-only=on",
            "--blockdev", f"driver=file,node-name=f,filename={image},read-only=on",
            "--blockdev", "driver=qcow2,node-name=q,file=f,read-only=on"]


def script(sock):
    unix = {"type": "unix", "data": {"path": sock}}
    exp = lambda id, node, **kw: ("block-export-add",  # noqa: E731
                                  {"type": "nbd", "id": id, "node-name": node, **kw})
    return [
        ("nbd-server-stop", None),
        exp("e0", "q"),
        ("nbd-server-add", {"device": "q"}),
        ("nbd-server-remove", {"name": "x"}),
        ("block-export-del", {"id": "x"}),
        ("query-block-exports", None),
        ("nbd-server-start", {"addr": {"type": "bogus", "data": {}}}),
        ("nbd-server-start", {"addr": {"type": "unix"}}),
        ("nbd-server-start", {"addr": unix, "tls-creds": "nosuch"}),
        ("nbd-server-start", {"addr": unix, "max-connections": -1}),
        ("nbd-server-start", {"addr": unix}),
        ("nbd-server-start", {"addr": unix}),
        exp("#bad", "q"),
        exp("e0", "nosuch"),
        exp("e0", "ro", writable=True),
        exp("e0", "q", iothread="io0"),
        exp("e0", "q", bitmaps=["b64k"], bogus=1),
        exp("e0", "q", bitmaps=["b64k"]),
        exp("e0", "q"),
        exp("e1", "q"),
        exp("e1", "n1", bitmaps=["nosuch"]),
        ("block-dirty-bitmap-add", {"node": "n1", "name": "live"}),
        exp("e1", "n1", bitmaps=["live"]),
        exp("e1", "n1", writable=True, bitmaps=["live"], description="the disk",
            **{"allocation-depth": True}),
        ("block-dirty-bitmap-remove", {"node": "n1", "name": "live"}),
        ("block-dirty-bitmap-disable", {"node": "n1", "name": "live"}),
        ("block-dirty-bitmap-remove", {"node": "q", "name": "b64k"}),
        exp("e2", "n2", writethrough=True, **{"fixed-iothread": True}),
        ("nbd-server-add", {"device": "n2", "name": "legacy"}),
        ("nbd-server-add", {"device": "n2", "name": "legacy"}),
        ("nbd-server-add", {"device": "nosuch"}),
        ("nbd-server-add", {"device": "ro", "name": "rolegacy", "writable": True}),
        ("query-block-exports", None),
        ("blockdev-del", {"node-name": "n2"}),
        ("connect", "n1"),
        ("block-export-del", {"id": "e1"}),
        ("block-export-del", {"id": "e1", "mode": "bogus"}),
        ("nbd-server-remove", {"name": "legacy"}),
        ("block-export-del", {"id": "e1", "mode": "hard"}),
        ("settle", None),
        ("block-export-del", {"id": "e1"}),
        ("block-dirty-bitmap-remove", {"node": "n1", "name": "live"}),
        ("block-export-del", {"id": "e2"}),
        ("settle", None),
        ("query-block-exports", None),
        ("nbd-server-stop", None),
        ("query-block-exports", None),
        ("nbd-server-stop", None),
        ("nbd-server-remove", {"name": "e0"}),
    ]


def exports_view(reply):
    if "return" not in reply:
        return reply
    return sorted(reply["return"], key=lambda e: e["id"])


def settle(c):
    """Waits until no export is shutting down any more."""
    deadline = time.time() + 10
    while time.time() < deadline:
        if not any(e["shutting-down"] for e in c.execute("query-block-exports")):
            return
        time.sleep(0.02)
    raise TimeoutError("exports did not finish shutting down")


def events_of(c):
    """The events received so far (timestamps dropped, sorted), then forgets them."""
    out = sorted(((e["event"], e.get("data")) for e in c.events), key=str)
    c.events.clear()
    return out


def run_script(binary, workdir, image, name):
    sock = os.path.join(short_dir(), "nbd.sock")
    replies = []
    clients = []
    with Daemon(binary, workdir, args=blockdevs(image), name=name) as d:
        c = d.client()
        for command, args in script(sock):
            if command == "connect":
                h = nbd.NBD()
                h.connect_uri(f"nbd+unix:///{args}?socket={sock}")
                clients.append(h)
                continue
            if command == "settle":
                settle(c)
                replies.append(("events", events_of(c)))
                continue
            reply = c.request(command, args)
            if command == "query-block-exports":
                reply = exports_view(reply)
            reply = json.dumps(reply, sort_keys=True).replace(sock, "SOCK")
            replies.append((command, reply))
        replies.append(("events", events_of(c)))
        c.execute("quit")
        d.proc.wait(20)
    shutil.rmtree(os.path.dirname(sock), ignore_errors=True)
    return replies


def test_same_replies_as_qemu_storage_daemon(workdir):
    require(QSD)
    image = make_image(workdir)
    image_copy = os.path.join(str(workdir), "copy.qcow2")
    shutil.copy(image, image_copy)
    theirs = run_script(QSD, workdir, image, "qsd.sock")
    ours = run_script(strata_binary("stratad"), workdir, image_copy, "strata.sock")
    assert len(ours) == len(theirs)
    differences = [f"step {step} {command}: qsd {want} strata {got}"
                   for step, ((command, want), (_, got)) in enumerate(zip(theirs, ours))
                   if got != want]
    assert not differences, "\n".join(differences)
