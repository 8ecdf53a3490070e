"""Pull-mode fleecing, QEMU's recipes (iotest image-fleecing), the same QMP
script on stratad and on qemu-storage-daemon: a guest writes through an NBD
export the whole time while a backup client reads the point in time through
another export, and every byte it reads is checked against a model of the
disk at that moment.

Recipes: `legacy` (a qcow2 temporary backed by the source, filled by a
backup job with sync none, torn down by cancelling it), `cbw-raw` and
`cbw-qcow2` (a copy-before-write filter over the source with a raw or qcow2
temporary, read through a snapshot-access node) and `cbw-bitmap` (the same
with the filter's bitmap: only the clusters the bitmap marks are in the
view, the rest reads as EACCES). Afterwards the temporary and the source
pass qemu-img check and the source holds what the guest wrote."""
import json
import os
import time

import nbd
import pytest

from conftest import require, run
from job_util import (KINDS, MiB, Guest, JobDaemon, chain_commands, copy_files, make_chain,
                      read_image)

SIZE = 64 * MiB
CLUSTER = 64 * 1024
RECIPES = ["legacy", "cbw-raw", "cbw-qcow2", "cbw-bitmap"]
# Clusters a previous backup's bitmap marks (cbw-bitmap).
MARKED = [(0, 4 * CLUSTER), (10 * MiB, 2 * CLUSTER), (40 * MiB + CLUSTER, CLUSTER)]


def client(sock, export):
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(sock)
    return h


def data_extents(path):
    """[(start, length)] of the extents qemu-img map finds data in."""
    extents = json.loads(run(["qemu-img", "map", "--output=json", path]).stdout)
    return [(e["start"], e["length"]) for e in extents if e["data"]]


def stop(f):
    """Kills the daemon of `f` if a failed test left it running."""
    if f.d.daemon.proc.poll() is None:
        f.d.kill()


def read_all(h, ranges):
    """{offset: data} of each range, read in NBD-sized pieces."""
    out = {}
    for off, length in ranges:
        for pos in range(off, off + length, 16 * MiB):
            out[pos] = h.pread(min(16 * MiB, off + length - pos), pos)
    return out


def make_temp(path, recipe, backing):
    if recipe == "legacy":
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", path])
    elif recipe == "cbw-raw":
        run(["qemu-img", "create", "-q", "-f", "raw", path, str(SIZE)])
    else:
        run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(SIZE)])


class Fleecing:
    """A daemon over the chain with the fleecing graph of one recipe: the
    guest's export `guest`, the point in time's export `fleece`."""

    def __init__(self, kind, workdir, chain, recipe):
        self.kind, self.recipe = kind, recipe
        self.dir = os.path.join(str(workdir), kind)
        self.paths = copy_files(chain, self.dir)
        self.d = JobDaemon(kind, self.dir)
        for cmd, args in chain_commands(self.paths):
            self.d.ok(cmd, **args)
        self.sock = os.path.join(self.dir, "nbd.sock")
        self.d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": self.sock}})
        self.tmp = os.path.join(self.dir, "tmp." + ("raw" if recipe == "cbw-raw" else "qcow2"))
        make_temp(self.tmp, recipe, self.paths["top"])
        if recipe == "cbw-bitmap":
            self.dirty_bitmap()
        self.view = [(0, SIZE)] if recipe != "cbw-bitmap" else MARKED

    def dirty_bitmap(self):
        """A bitmap on top marking MARKED, as a previous backup leaves it."""
        self.d.ok("block-dirty-bitmap-add", node="top", name="b0")
        self.d.ok("block-export-add", type="nbd", id="pre", **{"node-name": "top"},
                  writable=True)
        h = client(self.sock, "top")
        for off, length in MARKED:
            h.pwrite(h.pread(length, off), off)  # unchanged data, marked all the same
        h.shutdown()
        self.d.ok("block-export-del", id="pre")
        self.d.wait_event("BLOCK_EXPORT_DELETED")
        self.d.ok("block-dirty-bitmap-disable", node="top", name="b0")

    def set_up(self):
        d = self.d
        fmt = "raw" if self.recipe == "cbw-raw" else "qcow2"
        tmp = {"driver": fmt, "node-name": "tmp", "discard": "unmap",
               "file": {"driver": "file", "filename": self.tmp}}
        if self.recipe == "legacy":
            tmp["backing"] = "top"
        d.ok("blockdev-add", **tmp)
        if self.recipe == "legacy":
            d.ok("block-export-add", type="nbd", id="guest", **{"node-name": "top"},
                 name="guest", writable=True)
            d.ok("blockdev-backup", **{"job-id": "fleece"}, device="top", target="tmp",
                 sync="none")
            d.ok("block-export-add", type="nbd", id="fleece", **{"node-name": "tmp"},
                 name="fleece")
            return
        cbw = {"driver": "copy-before-write", "node-name": "cbw", "file": "top",
               "target": "tmp", "discard": "unmap"}
        if self.recipe == "cbw-bitmap":
            cbw["bitmap"] = {"node": "top", "name": "b0"}
        d.ok("blockdev-add", **cbw)
        d.ok("blockdev-add", driver="snapshot-access", **{"node-name": "acc"}, file="cbw",
             discard="unmap")
        d.ok("block-export-add", type="nbd", id="guest", **{"node-name": "cbw"}, name="guest",
             writable=True)
        d.ok("block-export-add", type="nbd", id="fleece", **{"node-name": "acc"},
             name="fleece")

    def tear_down(self):
        d = self.d
        for export in ("fleece", "guest"):
            d.ok("block-export-del", id=export)
            d.wait_event("BLOCK_EXPORT_DELETED", timeout=30)
            d.qmp.events.clear()
        if self.recipe == "legacy":
            d.ok("job-cancel", id="fleece")
            d.wait_event("JOB_STATUS_CHANGE", "fleece", "null")
            events = d.job_events("fleece")
        else:
            d.ok("blockdev-del", **{"node-name": "acc"})
            d.ok("blockdev-del", **{"node-name": "cbw"})
            events = []
        d.ok("blockdev-del", **{"node-name": "tmp"})
        return events


@pytest.fixture
def chain(workdir):
    require("qemu-storage-daemon")
    return make_chain(os.path.join(str(workdir), "orig"), size=SIZE)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_client_reads_the_point_in_time_while_the_guest_writes(workdir, chain, kind, recipe):
    f = Fleecing(kind, workdir, chain, recipe)
    try:
        f.set_up()
        guest = Guest(f.sock, "guest", bytearray(SIZE), seed=7)
        guest.model[:] = guest.read(0, SIZE)
        then = bytes(guest.model)  # the point in time (no write since set-up)
        guest.start(pause=0.002)
        reader = client(f.sock, "fleece")
        seen = [read_all(reader, f.view)]  # while the guest writes
        guest.stop()
        for _ in range(50):  # more writes, overwriting what was read
            guest.random_write()
        seen.append(read_all(reader, f.view))
        for got in seen:
            for off, data in got.items():
                assert data == then[off:off + len(data)], (kind, recipe, off)
        if recipe == "cbw-bitmap":
            with pytest.raises(nbd.Error):
                reader.pread(4096, 20 * MiB)  # outside the view: EACCES
        assert guest.writes > 50
        reader.shutdown()
        now = guest.read(0, SIZE)
        assert now == bytes(guest.model)
        guest.close()
        events = f.tear_down()
        if recipe == "legacy":
            assert events == [("JOB_STATUS_CHANGE", "aborting"),
                              ("BLOCK_JOB_CANCELLED", "backup", False),
                              ("JOB_STATUS_CHANGE", "concluded"),
                              ("JOB_STATUS_CHANGE", "null")], events
        f.d.quit()
    finally:
        stop(f)
    run(["qemu-img", "check", "-q", f.paths["top"]])
    if recipe != "cbw-raw":
        run(["qemu-img", "check", "-q", f.tmp])
    assert read_image(f.paths["top"]) == now


@pytest.mark.parametrize("kind", KINDS)
def test_the_temporary_keeps_only_what_the_guest_overwrote(workdir, chain, kind):
    """cbw-qcow2: clusters the guest never wrote stay unallocated in the
    temporary; those it wrote hold their old data there."""
    f = Fleecing(kind, workdir, chain, "cbw-qcow2")
    try:
        f.set_up()
        g = client(f.sock, "guest")
        before = g.pread(CLUSTER, 5 * MiB)
        g.pwrite(b"\x99" * 4096, 5 * MiB + 4096)
        g.flush()
        g.shutdown()
        f.tear_down()
        f.d.quit()
    finally:
        stop(f)
    assert data_extents(f.tmp) == [(5 * MiB, CLUSTER)]
    assert read_image(f.tmp)[5 * MiB:5 * MiB + CLUSTER] == before


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pull_backup.py")


@pytest.mark.parametrize("kind", KINDS)
def test_the_example_client_backs_up_the_point_in_time_and_gives_the_space_back(
        workdir, chain, kind):
    """examples/pull_backup.py over a writable export of the snapshot-access
    node: the backup file is the disk at the point in time, though the
    guest overwrote clusters after it; with --discard the temporary holds
    no data afterwards."""
    f = Fleecing(kind, workdir, chain, "cbw-qcow2")
    try:
        f.set_up()
        f.d.ok("block-export-add", type="nbd", id="pull", **{"node-name": "acc"},
               name="pull", writable=True)
        guest, then = overwrite_after_the_point_in_time(f, seed=11, writes=200)
        out = os.path.join(f.dir, "backup.raw")
        res = run(["/usr/bin/python3", EXAMPLE, "--socket", f.sock, "--export", "pull",
                   "--output", out, "--discard"])
        assert res.stdout.startswith("done: ")
        with open(out, "rb") as fh:
            assert fh.read() == then
        f.d.ok("block-export-del", id="pull")
        f.d.wait_event("BLOCK_EXPORT_DELETED", timeout=30)
        f.d.qmp.events.clear()
        guest.close()
        f.tear_down()
        f.d.quit()
    finally:
        stop(f)
    assert data_extents(f.tmp) == []


def overwrite_after_the_point_in_time(f, seed, writes):
    """A guest on the fleecing's export reads the disk (the point in time,
    the filter being in place), then writes `writes` random clusters;
    returns the guest and what it read."""
    guest = Guest(f.sock, "guest", bytearray(SIZE), seed=seed)
    then = guest.read(0, SIZE)
    for _ in range(writes):
        guest.random_write()
    guest.h.flush()
    return guest, then


def writes_during_job(d, guest, job):
    """The guest writes until `job` is gone (at least once meanwhile)."""
    deadline = time.time() + 120
    while True:
        assert time.time() < deadline, f"{job} did not end"
        guest.random_write()
        d.pump(0.005)
        if any(e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job and
               e["data"]["status"] == "null" for e in d.qmp.events):
            break
    guest.h.flush()


def tmp_writes(d):
    for s in d.ok("query-blockstats", **{"query-nodes": True}):
        if s.get("node-name") == "tmp":
            return s["stats"]["wr_operations"]
    raise AssertionError("no stats for tmp")


def test_a_push_backup_from_the_view_with_discard_source_empties_the_temporary(workdir, chain):
    """QEMU 9.1's recipe (iotest backup-discard-source), stratad only: the
    qemu-storage-daemon at hand (7.2) predates discard-source. A backup of
    the snapshot-access node with discard-source gives back every cluster
    of the temporary as it copies it; the target is the point in time; the
    view is gone afterwards, and later guest writes copy nothing."""
    f = Fleecing("strata", workdir, chain, "cbw-qcow2")
    try:
        f.set_up()
        guest, then = overwrite_after_the_point_in_time(f, seed=5, writes=100)
        final = os.path.join(f.dir, "final.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", final, str(SIZE)])
        f.d.ok("blockdev-add", driver="qcow2", **{"node-name": "final"},
               file={"driver": "file", "filename": final})
        f.d.ok("blockdev-backup", **{"job-id": "push"}, device="acc", target="final",
               sync="full", **{"discard-source": True})
        writes_during_job(f.d, guest, "push")
        done = [e for e in f.d.qmp.events if e["event"] == "BLOCK_JOB_COMPLETED"]
        assert done and "error" not in done[0]["data"], done
        reader = client(f.sock, "fleece")
        with pytest.raises(nbd.Error):
            reader.pread(4096, 0)  # discarded from the view
        reader.shutdown()
        before = tmp_writes(f.d)
        for _ in range(50):
            guest.random_write()
        guest.h.flush()
        assert tmp_writes(f.d) == before
        guest.close()
        f.d.ok("blockdev-del", **{"node-name": "final"})
        f.tear_down()
        f.d.quit()
    finally:
        stop(f)
    assert data_extents(f.tmp) == []
    assert read_image(final) == then
