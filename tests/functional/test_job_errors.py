"""Block job error policies against qemu-storage-daemon, with real I/O
errors: the layer a job writes to is served by nbdkit's error filter, which
fails every write while a trigger file exists.

The same QMP script runs on both daemons: the job meets the errors, follows
its policy (`stop`: BLOCK_JOB_ERROR, paused with io-status failed or
nospace; `report`: the job ends with the error), then, with the trigger
gone, `job-resume` retries and the job completes. The images must read as
before the job (a commit) or as the whole chain (a stream), pass qemu-img
check, and the two daemons' events must have the same shape."""
import os
import subprocess
import time

import pytest

from conftest import require, run, unix_listening
from job_util import (KINDS, JobDaemon, backing_chain, check, make_chain, read_image,
                      start_guest)


class ErrorServer:
    """nbdkit serving the qcow2 file `path` (as a protocol node) with writes
    failing (errno `error`) while the trigger file exists."""

    def __init__(self, path, workdir, error="EIO"):
        self.sock = os.path.join(workdir, "nbdkit.sock")
        self.trigger = os.path.join(workdir, "fail-writes")
        open(self.trigger, "w").close()
        self.proc = subprocess.Popen(
            ["nbdkit", "-f", "-U", self.sock, "--filter=error", "file", f"file={path}",
             f"error-pwrite={error}", "error-pwrite-rate=100%",
             f"error-pwrite-file={self.trigger}",
             f"error-zero={error}", "error-zero-rate=100%", f"error-zero-file={self.trigger}"])
        deadline = time.time() + 30
        while not unix_listening(self.sock):
            assert self.proc.poll() is None and time.time() < deadline, "nbdkit did not start"
            time.sleep(0.05)

    def heal(self):
        os.unlink(self.trigger)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def setup(workdir):
    require("qemu-storage-daemon")
    require("nbdkit")
    chain = make_chain(os.path.join(str(workdir), "orig"))
    started = []

    def _setup(kind, layer, error="EIO"):
        """A daemon over a copy of the chain with `layer` on the error server."""
        wd = os.path.join(str(workdir), kind)
        os.makedirs(wd)
        paths = {}
        for name, path in chain.items():
            paths[name] = os.path.join(wd, os.path.basename(path))
            run(["cp", path, paths[name]])
        # An NBD export cannot grow: room at the end of the file for the
        # clusters the job allocates (free, refcount 0, until then).
        os.truncate(paths[layer], os.path.getsize(paths[layer]) + (128 << 20))
        server = ErrorServer(paths[layer], wd, error)
        d = JobDaemon(kind, wd)
        started.append((d, server))
        below = None
        for name in ("base", "mid", "top"):
            if name == layer:
                file = {"driver": "nbd", "server": {"type": "unix", "path": server.sock}}
            else:
                file = {"driver": "file", "filename": paths[name]}
            d.ok("blockdev-add", driver="qcow2", **{"node-name": name}, file=file,
                 backing=below, **{"read-only": name != "top"})
            below = name
        return d, server, paths

    _setup.before = read_image(chain["top"])  # what the guest sees, before any job
    yield _setup
    for d, server in started:
        if d.daemon.proc.poll() is None:
            d.kill()
        server.stop()


def runs_again(e):
    return e == ("JOB_STATUS_CHANGE", "running")


def shape(events, is_running=runs_again):
    """The job's events with the BLOCK_JOB_ERRORs of one episode (until the
    job runs again: `is_running`) reduced to the first: how many chunks
    fail before the job stops depends on how many were in flight (QEMU's
    commit and stream copy one chunk at a time, Strata's copy engine
    several)."""
    out = []
    stopped = False
    for e in events:
        if e[0] == "BLOCK_JOB_ERROR":
            if stopped:
                continue
            stopped = True
        elif is_running(e):
            stopped = False
        out.append(e)
    return out


def error_actions(d, job):
    return sorted({(e["data"]["operation"], e["data"]["action"]) for e in d.qmp.events
                   if e["event"] == "BLOCK_JOB_ERROR" and e["data"]["device"] == job})


def io_status(d, job):
    return [j["io-status"] for j in d.ok("query-block-jobs") if j["device"] == job]


def stop_then_resume(d, server, job):
    d.wait_event("BLOCK_JOB_ERROR", job)
    d.wait_event("JOB_STATUS_CHANGE", job, "paused")
    status = io_status(d, job)
    server.heal()
    d.ok("job-resume", id=job)
    d.wait_event("JOB_STATUS_CHANGE", job, "null")
    return status


@pytest.mark.parametrize("error,policy,expected_status", [
    ("EIO", "stop", "failed"),
    ("ENOSPC", "enospc", "nospace"),
])
def test_commit_stops_on_write_errors_and_resumes(setup, error, policy, expected_status):
    before = setup.before
    outcome = {}
    for kind in KINDS:
        d, server, paths = setup(kind, "base", error)
        d.ok("block-commit", **{"job-id": "c", "device": "top", "top-node": "mid",
                                "base-node": "base", "on-error": policy})
        status = stop_then_resume(d, server, "c")
        outcome[kind] = (shape(d.job_events("c")), error_actions(d, "c"), status)
        d.quit()
        check(paths["base"])
        # top now names the base by the NBD server's URI, on both sides.
        outcome[kind] += (backing_chain(paths["top"])[0],)
        assert read_image(paths["top"]) == before
        server.stop()
    assert outcome["strata"] == outcome["qsd"]
    assert outcome["strata"][3] == ("top.qcow2", "nbdkit.sock")
    assert outcome["strata"][1] == [("write", "stop")]
    assert outcome["strata"][2] == [expected_status]


def test_stream_stops_on_errors_writing_the_copy_and_resumes(setup):
    """Stream copies through the copy-on-read filter: a failed write-back is
    a failed read for the job (operation "read", as QEMU)."""
    before = setup.before
    outcome = {}
    for kind in KINDS:
        d, server, paths = setup(kind, "top")
        d.ok("block-stream", **{"job-id": "s", "device": "top", "on-error": "stop"})
        status = stop_then_resume(d, server, "s")
        outcome[kind] = (shape(d.job_events("s")), error_actions(d, "s"), status)
        d.quit()
        check(paths["top"])
        assert backing_chain(paths["top"])[0] == ("top.qcow2", None)
        assert read_image(paths["top"]) == before
    assert outcome["strata"] == outcome["qsd"]
    assert outcome["strata"][1] == [("read", "stop")]


def test_report_ends_the_job_and_leaves_the_chain(setup):
    outcome = {}
    for kind in KINDS:
        d, server, paths = setup(kind, "base")
        before = setup.before
        d.ok("block-commit", **{"job-id": "r", "device": "top", "top-node": "mid",
                                "base-node": "base"})
        d.wait_event("JOB_STATUS_CHANGE", "r", "null")
        completed = [e["data"] for e in d.qmp.events if e["event"] == "BLOCK_JOB_COMPLETED"]
        outcome[kind] = (shape(d.job_events("r")), completed[0].get("error"))
        server.heal()
        d.quit()
        assert backing_chain(paths["top"])[:2] == [("top.qcow2", "mid.qcow2"),
                                                   ("mid.qcow2", "base.qcow2")]
        assert read_image(paths["top"]) == before
        run(["qemu-img", "check", paths["base"]], check=False)  # may leak clusters
    assert outcome["strata"] == outcome["qsd"]
    assert outcome["strata"][1] == "Input/output error"


@pytest.mark.parametrize("mode", ["background", "write-blocking"])
def test_mirror_stops_on_target_write_errors_and_resumes(setup, mode):
    """blockdev-mirror onto a target whose writes fail: with on-target-error
    stop the job pauses (io-status failed) while the guest keeps writing to
    the source; once the fault clears, job-resume carries on to ready, the
    pivot moves the guest onto the target, and the target reads as the
    guest wrote. In write-blocking mode the guest's writes that failed on
    the target, and those made while the job waits (which go to the source
    only), are copied after the resume."""
    outcome = {}
    for kind in KINDS:
        d, _, paths = setup(kind, "base")  # base's reads do not fail
        tdir = os.path.join(os.path.dirname(paths["top"]), "target")
        os.makedirs(tdir)
        tpath = os.path.join(tdir, "tgt.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", tpath, str(len(setup.before))])
        os.truncate(tpath, os.path.getsize(tpath) + (128 << 20))
        target = ErrorServer(tpath, tdir)
        try:
            d.ok("blockdev-add", driver="qcow2", **{"node-name": "tgt"},
                 file={"driver": "nbd", "server": {"type": "unix", "path": target.sock}})
            guest = start_guest(d, os.path.dirname(os.path.dirname(paths["top"])), kind,
                                setup.before, seed=41)
            d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt",
                                       "sync": "full", "on-target-error": "stop",
                                       "copy-mode": mode})
            d.wait_event("BLOCK_JOB_ERROR", "m")
            d.wait_event("JOB_STATUS_CHANGE", "m", "paused")
            status = io_status(d, "m")
            writes = guest.writes
            time.sleep(0.3)
            assert guest.writes > writes  # the guest runs on while the job waits
            target.heal()
            d.ok("job-resume", id="m")
            d.wait_event("BLOCK_JOB_READY", "m", timeout=120)
            guest.stop()
            d.ok("job-complete", id="m")
            d.wait_event("JOB_STATUS_CHANGE", "m", "null")
            for _ in range(20):
                guest.random_write()  # on the target now
            assert guest.read(0, len(guest.model)) == bytes(guest.model)
            guest.close()
            outcome[kind] = (shape(d.job_events("m")), error_actions(d, "m"), status)
            d.quit()
        finally:
            target.stop()
        # Neither leaks the clusters of the writes that failed (Strata's
        # target once leaked the L2 table it could not write).
        res = run(["qemu-img", "check", tpath], check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        outcome[kind] += (res.returncode,)
        assert (kind, read_image(tpath) == guest.model) == (kind, True)
    assert outcome["strata"][:3] == outcome["qsd"][:3]
    assert outcome["strata"][1] == [("write", "stop")]
    assert outcome["strata"][2] == ["failed"]
