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
                      start, start_guest)


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
], ids=["commit", "stream"])
def test_kill_during_a_job_leaves_readable_images(workdir, chain, start, job_args):
    before = read_image(chain["top"])
    d, paths = start("strata")
    cmd, args = job_args
    d.ok(cmd, **args)
    d.wait_event("JOB_STATUS_CHANGE", "k", "running")
    deadline = time.time() + 60
    while time.time() < deadline:
        jobs = d.ok("query-block-jobs")
        if jobs and jobs[0]["offset"] >= 8 * MiB:
            break
        time.sleep(0.05)
    assert jobs and 0 < jobs[0]["offset"] < jobs[0]["len"], jobs
    os.kill(d.daemon.proc.pid, signal.SIGKILL)
    d.daemon.proc.wait(30)
    for p in paths.values():
        res = run(["qemu-img", "check", p], check=False)
        assert res.returncode in (0, 3), res.stdout + res.stderr  # leaks at most
    assert backing_chain(paths["top"])[:2] == [("top.qcow2", "mid.qcow2"),
                                               ("mid.qcow2", "base.qcow2")]
    assert read_image(paths["top"]) == before
