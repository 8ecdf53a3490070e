"""Jobs under a running guest, and jobs cut short by kill -9.

A guest writes through an NBD export of the active layer the whole time an
intermediate commit or a stream of the middle layer runs, on stratad and on
qemu-storage-daemon: the guest reads back exactly its model, the chain on
disk reads the same (qemu-img convert of the active layer), passes qemu-img
check and has the expected backing files, and both daemons emit the same
events.

A daemon killed with SIGKILL in the middle of a commit or a stream leaves
images that qemu-img check passes and that read as before the job: a
committed range is either in the base or still above it, a streamed range
either copied up or still below."""
import os
import signal
import time

import pytest

from conftest import run
from job_util import (KINDS, MiB, backing_chain, chain, check, read_image,  # noqa: F401
                      start, start_guest, wait_offset)


def run_with_guest(start, workdir, initial, seed, job_args, kind):
    d, paths = start(kind)
    guest = start_guest(d, workdir, kind, initial, seed)
    model = guest.model
    cmd, args = job_args
    d.ok(cmd, **args)
    d.wait_event("JOB_STATUS_CHANGE", args["job-id"], "null", timeout=180)
    guest.stop()
    for _ in range(20):
        guest.random_write()
    assert guest.read(0, len(model)) == bytes(model)
    guest.close()
    events = d.job_events(args["job-id"])
    d.quit()
    return paths, model, events, guest.writes


@pytest.mark.parametrize("job_args,chain_after", [
    (("block-commit", {"job-id": "c", "device": "top", "top-node": "mid",
                       "base-node": "base", "speed": 16 * MiB}),
     [("top.qcow2", "base.qcow2"), ("base.qcow2", None)]),
    (("block-stream", {"job-id": "s", "device": "mid", "base-node": "base",
                       "speed": 16 * MiB}),
     [("top.qcow2", "mid.qcow2"), ("mid.qcow2", "base.qcow2"), ("base.qcow2", None)]),
], ids=["intermediate-commit", "stream-middle-layer"])
def test_job_with_a_guest_writing(workdir, chain, start, job_args, chain_after):
    initial = read_image(chain["top"])
    events = {}
    for kind in KINDS:
        paths, model, events[kind], writes = run_with_guest(start, workdir, initial, 5,
                                                            job_args, kind)
        for p in paths.values():
            check(p)
        assert backing_chain(paths["top"]) == chain_after
        assert read_image(paths["top"]) == model
        assert writes > 20
    assert events["strata"] == events["qsd"]


@pytest.mark.parametrize("job_args", [
    ("block-commit", {"job-id": "k", "device": "top", "top-node": "mid",
                      "base-node": "base", "speed": 4 * MiB}),
    ("block-stream", {"job-id": "k", "device": "top", "speed": 4 * MiB}),
    ("block-commit", {"job-id": "k", "device": "top", "speed": 4 * MiB}),
], ids=["commit", "stream", "active-commit"])
def test_kill_during_a_job_leaves_readable_images(workdir, chain, start, job_args):
    before = read_image(chain["top"])
    d, paths = start("strata")
    cmd, args = job_args
    d.ok(cmd, **args)
    d.wait_event("JOB_STATUS_CHANGE", "k", "running")
    wait_offset(d, 8 * MiB)
    os.kill(d.daemon.proc.pid, signal.SIGKILL)
    d.daemon.proc.wait(30)
    for p in paths.values():
        res = run(["qemu-img", "check", p], check=False)
        assert res.returncode in (0, 3), res.stdout + res.stderr  # leaks at most
    assert backing_chain(paths["top"])[:2] == [("top.qcow2", "mid.qcow2"),
                                               ("mid.qcow2", "base.qcow2")]
    assert read_image(paths["top"]) == before


class BusyGuest:
    """A guest with 16 writes in flight at all times and no pause (libnbd's
    asynchronous API), none two overlapping, keeping a model of the disk."""

    DEPTH = 16
    BLOCK = 4096

    def __init__(self, sock, model, seed):
        import random
        import threading
        import nbd
        self.h = nbd.NBD()
        self.h.set_export_name("top")
        self.h.connect_unix(sock)
        self.model = model
        self.rng = random.Random(seed)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.writes = 0
        self.error = None

    def _submit(self, busy, inflight):
        blocks = len(self.model) // self.BLOCK
        while True:
            block = self.rng.randrange(blocks)
            if block not in busy:
                break
        data = bytes([self.rng.randrange(1, 255)]) * self.BLOCK
        off = block * self.BLOCK
        cookie = self.h.aio_pwrite(data, off)
        self.model[off:off + self.BLOCK] = data
        busy.add(block)
        inflight[cookie] = block

    def _loop(self):
        busy, inflight = set(), {}
        try:
            while not self.stop_flag.is_set() or inflight:
                while not self.stop_flag.is_set() and len(inflight) < self.DEPTH:
                    self._submit(busy, inflight)
                self.h.poll(1000)
                for cookie in [c for c in inflight if self.h.aio_command_completed(c)]:
                    busy.discard(inflight.pop(cookie))
                    self.writes += 1
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self):
        self.stop_flag.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "guest writes never completed"
        if self.error:
            raise self.error


def test_active_commit_under_a_guest_that_never_pauses(workdir, chain, start):
    """Strata only (QEMU 7.2's background-mode active commit may never get
    ready under such a guest): the commit gets ready while 16 writes are in
    flight all the time, job-complete pivots with writes in flight, every
    write completes, and the base holds exactly what the guest wrote."""
    initial = read_image(chain["top"])
    d, paths = start("strata")
    sock = os.path.join(str(workdir), "strata", "nbd.sock")
    d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.ok("block-export-add", type="nbd", id="e", **{"node-name": "top"}, writable=True)
    guest = BusyGuest(sock, bytearray(initial), seed=11)
    guest.thread.start()
    time.sleep(0.2)
    d.ok("block-commit", **{"job-id": "a", "device": "top"})
    d.wait_event("BLOCK_JOB_READY", "a", timeout=120)
    assert d.ok("query-block-jobs")[0]["ready"]
    d.ok("job-complete", id="a")
    d.wait_event("JOB_STATUS_CHANGE", "a", "null", timeout=120)
    time.sleep(0.2)  # the guest goes on, now on the base
    guest.stop()
    assert guest.writes > 100
    seen = b"".join(guest.h.pread(4 * MiB, off) for off in range(0, len(guest.model), 4 * MiB))
    assert seen == bytes(guest.model)
    guest.h.shutdown()
    d.quit()
    check(paths["base"])
    assert read_image(paths["base"]) == guest.model


def test_write_blocking_mirror_under_a_guest_that_never_pauses(workdir, chain, start):
    """blockdev-mirror with copy-mode write-blocking on both daemons, under
    the same never-pausing guest: ready, pivot with writes in flight, every
    write completes, the target alone reads as the guest's model; the job
    events are QEMU's."""
    initial = read_image(chain["top"])
    events = {}
    for kind in KINDS:
        d, paths = start(kind)
        tpath = os.path.join(os.path.dirname(paths["top"]), "tgt.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", tpath, str(len(initial))])
        d.ok("blockdev-add", driver="file", **{"node-name": "tgt-file"}, filename=tpath)
        d.ok("blockdev-add", driver="qcow2", **{"node-name": "tgt"}, file="tgt-file")
        sock = os.path.join(str(workdir), kind, "nbd.sock")
        d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        d.ok("block-export-add", type="nbd", id="e", **{"node-name": "top"}, writable=True)
        guest = BusyGuest(sock, bytearray(initial), seed=13)
        guest.thread.start()
        time.sleep(0.2)
        d.ok("blockdev-mirror", **{"job-id": "w", "device": "top", "target": "tgt",
                                   "sync": "full", "copy-mode": "write-blocking"})
        d.wait_event("BLOCK_JOB_READY", "w", timeout=120)
        d.ok("job-complete", id="w")
        d.wait_event("JOB_STATUS_CHANGE", "w", "null", timeout=120)
        time.sleep(0.2)  # the guest goes on, now on the target
        guest.stop()
        assert guest.writes > 100
        seen = b"".join(guest.h.pread(4 * MiB, off)
                        for off in range(0, len(guest.model), 4 * MiB))
        assert seen == bytes(guest.model)
        guest.h.shutdown()
        events[kind] = d.job_events("w")
        d.quit()
        check(tpath)
        assert read_image(tpath) == guest.model
    assert events["strata"] == events["qsd"]


def test_background_mirror_does_not_converge_until_changed_to_write_blocking(workdir, chain,
                                                                            start):
    """With granules of 8 MiB, each of the never-pausing guest's writes
    dirties 8 MiB, faster than a background mirror cleans them: no ready
    after seconds of copying, with bytes still to copy. block-job-change to write-blocking (QEMU 8.2, stratad only)
    mid-job: the guest's writes now reach the target before they complete,
    the job gets ready, pivots, and the target reads as the guest wrote."""
    initial = read_image(chain["top"])
    d, paths = start("strata")
    tpath = os.path.join(os.path.dirname(paths["top"]), "tgt.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", tpath, str(len(initial))])
    d.ok("blockdev-add", driver="file", **{"node-name": "tgt-file"}, filename=tpath)
    d.ok("blockdev-add", driver="qcow2", **{"node-name": "tgt"}, file="tgt-file")
    sock = os.path.join(str(workdir), "strata", "nbd.sock")
    d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.ok("block-export-add", type="nbd", id="e", **{"node-name": "top"}, writable=True)
    guest = BusyGuest(sock, bytearray(initial), seed=17)
    guest.thread.start()
    time.sleep(0.2)
    d.ok("blockdev-mirror", **{"job-id": "b", "device": "top", "target": "tgt",
                               "sync": "full", "granularity": 8 * MiB})
    time.sleep(3)
    job = d.ok("query-block-jobs")[0]
    assert (job["status"], job["ready"]) == ("running", False), job
    assert job["offset"] < job["len"], job
    assert not any(e["event"] == "BLOCK_JOB_READY" for e in d.qmp.events)
    d.ok("block-job-change", id="b", type="mirror", **{"copy-mode": "write-blocking"})
    d.wait_event("BLOCK_JOB_READY", "b", timeout=120)
    d.ok("job-complete", id="b")
    d.wait_event("JOB_STATUS_CHANGE", "b", "null", timeout=120)
    guest.stop()
    assert guest.writes > 1000
    guest.h.shutdown()
    d.quit()
    check(tpath)
    assert read_image(tpath) == guest.model
