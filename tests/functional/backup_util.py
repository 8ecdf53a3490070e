"""Helpers for the backup tests (blockdev-backup, drive-backup): images and
nodes, a filter failing one request (per daemon: QEMU's blkdebug, Strata's
fault filter), views of dirty bitmaps and job events that the two daemons
must give alike, and qemu-img checks of backup images.

A test parametrized over `kind` runs its QMP script on that daemon and
checks it against QEMU's semantics; for stratad it also runs the same script
on qemu-storage-daemon and requires the same record."""
import json
import os
import time

import pytest

from conftest import require, run
from job_util import MiB, JobDaemon

GRAN = 64 * 1024


def image(directory, name, size=64 * MiB, fmt="qcow2", backing=None, backing_fmt="qcow2"):
    """Creates an image with qemu-img; returns its path."""
    path = os.path.join(str(directory), name)
    args = ["qemu-img", "create", "-q", "-f", fmt]
    if backing:
        args += ["-b", backing, "-F", backing_fmt]
    run(args + [path, str(size)])
    return path


def add_qcow2(d, name, path, backing=None, **opts):
    """Opens `path` as a file node `name`-file and a qcow2 node `name`
    (`backing` None: no backing node is opened, as for a backup target)."""
    d.ok("blockdev-add", driver="file", **{"node-name": f"{name}-file"}, filename=path)
    d.ok("blockdev-add", driver="qcow2", **{"node-name": name}, file=f"{name}-file",
         backing=backing, **opts)


def fail_once(kind, name, child, io, offset):
    """blockdev-add arguments of a filter `name` over `child` that fails,
    with EIO and once, the first `io` request ("read" or "write") touching
    byte `offset` of `child`.

    qemu-storage-daemon: blkdebug. A read rule waits for the read_aio event,
    which a format driver raises on its file child before each data read (so
    the filter goes under a qcow2 node, `offset` a host offset); a write
    rule waits for pwritev, which the block layer raises on the filter for
    each write it gets (so the filter can sit above a backup target, `offset`
    a guest offset). stratad: the fault filter (docs/drivers/fault.md)."""
    if kind == "qsd":
        rule = {"event": "read_aio" if io == "read" else "pwritev", "iotype": io,
                "errno": 5, "sector": offset // 512, "once": True}
        return {"driver": "blkdebug", "node-name": name, "image": child,
                "inject-error": [rule]}
    return {"driver": "fault", "node-name": name, "file": child,
            "rules": [{"event": io, "errno": "EIO", "offset": offset, "length": 1,
                       "count": 1}]}


def host_offset(path, guest):
    """Where the qcow2 image at `path` stores guest byte `guest` (the image
    may be open in a daemon that flushed it)."""
    for e in json.loads(run(["qemu-img", "map", "--output=json", "-U", "-f", "qcow2",
                             path]).stdout):
        if e["start"] <= guest < e["start"] + e["length"]:
            assert e["data"] and "offset" in e, e
            return e["offset"] + guest - e["start"]
    raise AssertionError(f"{guest} is not mapped in {path}")


def bitmap_view(d, node):
    """The node's named dirty bitmaps and the anonymous one recording for a
    backup (its successor), sorted by name (anonymous first). QEMU also
    lists the block-copy bitmaps of a running backup, disabled and
    anonymous, on the source (7.2) or on the filter (newer): an
    implementation detail left out."""
    for n in d.ok("query-named-block-nodes"):
        if n["node-name"] == node:
            out = [b for b in n.get("dirty-bitmaps", []) if "name" in b or b["recording"]]
            return sorted(out, key=lambda b: b.get("name", ""))
    raise AssertionError(f"no node {node}")


def count(d, node, name):
    """`count` of a named bitmap, in granules of GRAN."""
    for b in bitmap_view(d, node):
        if b.get("name") == name:
            assert b["count"] % GRAN == 0 and b["granularity"] == GRAN, b
            return b["count"] // GRAN
    raise AssertionError(f"no bitmap {name} on {node}")


def job_record(d, job, progress=True, since=0):
    """The job's events in order (from index `since` on), without
    timestamps; `progress` False drops len and offset (for jobs racing a
    guest's writes)."""
    out = []
    for e in d.qmp.events[since:]:
        data = dict(e.get("data", {}))
        if data.get("id", data.get("device")) != job:
            continue
        if not progress:
            data.pop("len", None)
            data.pop("offset", None)
        out.append((e["event"], data))
    return out


def statuses(record):
    return [data["status"] if name == "JOB_STATUS_CHANGE" else name for name, data in record]


def wait_null(d, job, since=0, timeout=120):
    """Waits for the job's status null among the events from index `since`
    on (a refused command may have made and dropped a job of that ID)."""
    deadline = time.time() + timeout
    while not any(e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job
                  and e["data"]["status"] == "null" for e in d.qmp.events[since:]):
        assert time.time() < deadline, f"{d.kind}: {job} did not end: {d.qmp.events}"
        d.pump(0.05)


def allocated_granules(path):
    """Granules the top layer of `path` holds (data or zero clusters),
    from qemu-img map."""
    out = set()
    for e in json.loads(run(["qemu-img", "map", "--output=json", path]).stdout):
        if e["depth"] == 0 and e["present"]:
            assert e["start"] % GRAN == 0 and e["length"] % GRAN == 0, e
            out.update(range(e["start"] // GRAN, (e["start"] + e["length"]) // GRAN))
    return out


def write_model(path, model):
    with open(path, "wb") as f:
        f.write(model)
    return path


def same(image, model_path, fmt="qcow2"):
    """qemu-img compare of `image` (with its backing chain) against a raw
    model: True when they read the same."""
    r = run(["qemu-img", "compare", "-f", fmt, "-F", "raw", image, model_path], check=False)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode == 0


def check(path):
    r = run(["qemu-img", "check", path], check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def start_daemon(workdir, kind, daemons):
    """A daemon of `kind` in workdir/kind; kept in `daemons` for cleanup."""
    require("qemu-storage-daemon")
    base = os.path.join(str(workdir), kind)
    os.makedirs(base, exist_ok=True)
    d = JobDaemon(kind, base)
    daemons.append(d)
    return d, base


def export(d, base, node, name=None):
    """Starts the NBD server (once) and exports `node` writable; returns the
    socket path."""
    sock = os.path.join(base, "nbd.sock")
    if not getattr(d, "nbd_started", False):
        d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        d.nbd_started = True
    d.ok("block-export-add", type="nbd", id=name or node, **{"node-name": node},
         writable=True)
    return sock


@pytest.fixture
def daemons():
    """A list for start_daemon; daemons a failed test leaves running are
    killed afterwards."""
    started = []
    yield started
    for d in started:
        if d.daemon.proc.poll() is None:
            d.kill()
        d.daemon.stderr.close()
