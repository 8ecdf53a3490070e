"""Mirror error policies driven by the `fault` filter, with a guest writing
through an NBD export the whole time.

The fault filter fails the first three (one, for a job that ends) reads of the source's backing layer
past its header (`mid`: the mirror reads what it allocates, the guest's
whole-cluster writes never do) or the first three writes and write-zeroes of the target.
For each of on-source-error / on-target-error:

- report: the job ends with the error, nothing is pivoted, the guest runs
  on against the source, which reads as it wrote and passes qemu-img check;
- ignore: errors are reported as events, the failed ranges are copied again,
  the job gets ready and pivots;
- stop: the job pauses with io-status failed while the guest keeps writing;
  job-resume (again after each stop) carries it to ready and the pivot;
- enospc: an EIO is reported like report; an ENOSPC stops like stop, with
  io-status nospace.

After a pivot the target reads as the guest wrote and passes qemu-img
check."""
import os
import time

import pytest

from conftest import run
from job_util import (MiB, Guest, JobDaemon, chain, chain_commands, check,  # noqa: F401
                      copy_files, read_image)


def open_daemon(workdir, chain, side, errno, count):
    """stratad over a copy of the chain, the fault filter on `side` firing
    `count` times, a fresh qcow2 target node `tgt`; returns (daemon, paths,
    target path)."""
    base = os.path.join(str(workdir), "strata")
    paths = copy_files(chain, base)
    d = JobDaemon("strata", base)
    # On the source side, past mid's header, refcount and L1 clusters (read
    # at open): its L2 tables and data.
    rules = [{"event": e, "errno": errno, "count": count, "offset": 4 * 65536, "length": 1 << 40}
             for e in (("read",) if side == "source" else ("write", "zeroes"))]
    for cmd, args in chain_commands(paths):
        if side == "source" and args.get("node-name") == "mid":
            d.ok("blockdev-add", driver="fault", **{"node-name": "mid-fault"}, file="mid-file",
                 rules=rules)
            args = {**args, "file": "mid-fault"}
        d.ok(cmd, **args)
    tpath = os.path.join(base, "tgt.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", tpath, str(64 * MiB)])
    d.ok("blockdev-add", driver="file", **{"node-name": "tgt-file"}, filename=tpath)
    target = "tgt" if side == "source" else "tgt-q"
    d.ok("blockdev-add", driver="qcow2", **{"node-name": target}, file="tgt-file")
    if side == "target":
        d.ok("blockdev-add", driver="fault", **{"node-name": "tgt"}, file="tgt-q", rules=rules)
    return d, paths, tpath


def start_guest(d, workdir, initial):
    sock = os.path.join(str(workdir), "strata", "nbd.sock")
    d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.ok("block-export-add", type="nbd", id="e", **{"node-name": "top"}, writable=True)
    guest = Guest(sock, "top", bytearray(initial), seed=53, block=65536)
    guest.start(pause=0.005)
    return guest


def error_actions(d):
    return {(e["data"]["operation"], e["data"]["action"]) for e in d.qmp.events
            if e["event"] == "BLOCK_JOB_ERROR"}


def resume_until_ready(d, job):
    """Resumes `job` each time an error stops it, until it is ready;
    returns the io-status seen while stopped."""
    seen = set()
    deadline = time.time() + 120
    while time.time() < deadline:
        d.pump(0.05)
        if any(e["event"] == "BLOCK_JOB_READY" for e in d.qmp.events):
            return seen
        jobs = d.ok("query-block-jobs")
        if jobs and jobs[0]["status"] == "paused":
            seen.add(jobs[0]["io-status"])
            d.ok("job-resume", id=job)
    raise TimeoutError(d.qmp.events)


CASES = [
    # (policy, errno, what happens)
    ("report", "EIO", "ends"),
    ("ignore", "EIO", "pivots"),
    ("stop", "EIO", "stops"),
    ("enospc", "EIO", "ends"),
    ("enospc", "ENOSPC", "stops"),
]


@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize("policy,errno,outcome", CASES)
def test_mirror_error_policy(workdir, chain, side, policy, errno, outcome):
    # A job that ends does so at the first error: one firing, so that the
    # guest reads its disk back without meeting the fault.
    count = 1 if outcome == "ends" else 3
    d, paths, tpath = open_daemon(workdir, chain, side, errno, count)
    try:
        run_case(workdir, chain, d, paths, tpath, side, policy, errno, outcome)
    finally:
        if d.daemon.proc.poll() is None:
            d.kill()


def run_case(workdir, chain, d, paths, tpath, side, policy, errno, outcome):
    initial = read_image(chain["top"])
    guest = start_guest(d, workdir, initial)
    d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt", "sync": "full",
                               f"on-{side}-error": policy})
    operation = "read" if side == "source" else "write"
    action = {"ends": "report", "pivots": "ignore", "stops": "stop"}[outcome]
    if outcome == "ends":
        done = d.wait_event("BLOCK_JOB_COMPLETED", "m", timeout=120)
        assert done["data"]["error"] == "Input/output error"
        writes = guest.writes
        time.sleep(0.3)
        assert guest.writes > writes  # the guest runs on against the source
        guest.stop()
        assert guest.read(0, len(guest.model)) == bytes(guest.model)
        guest.close()
        d.quit()
        check(paths["top"])
        assert read_image(paths["top"]) == guest.model
        assert error_actions(d) == {(operation, action)}
        return
    if outcome == "stops":
        d.wait_event("JOB_STATUS_CHANGE", "m", "paused")
        writes = guest.writes
        time.sleep(0.3)
        assert guest.writes > writes  # the guest runs on while the job waits
        seen = resume_until_ready(d, "m")
        assert seen == {"nospace" if errno == "ENOSPC" else "failed"}
    d.wait_event("BLOCK_JOB_READY", "m", timeout=120)
    guest.stop()
    for _ in range(20):
        guest.random_write()
    d.ok("job-complete", id="m")
    d.wait_event("JOB_STATUS_CHANGE", "m", "null")
    assert not any(e["event"] == "BLOCK_JOB_COMPLETED" and "error" in e["data"]
                   for e in d.qmp.events)
    for _ in range(20):
        guest.random_write()  # on the target now
    assert guest.read(0, len(guest.model)) == bytes(guest.model)
    guest.close()
    d.quit()
    assert error_actions(d) == {(operation, action)}
    check(tpath)
    assert read_image(tpath) == guest.model
