"""Mirror onto an NBD target in another daemon: live storage migration.

A source daemon (stratad or qemu-storage-daemon) runs the guest's disk and
mirrors it over NBD into a target daemon's export, as libvirt migrates a VM
with non-shared storage. Every pairing of the two daemons is run, so two
stratad processes migrate as QEMU does, and each interoperates with QEMU.
The guest writes through the source's NBD export the whole time; a model of
what it wrote is checked against the target's image at the end (qemu-img
convert, qemu-img check), and the source's job events are compared with
qemu-storage-daemon's for the same script.

- Migration: READY, the guest stops (switch-over), a soft cancel leaves
  the target as a point-in-time copy, the guest resumes on the target
  daemon and writes there.
- Storage moved to a remote node while the guest stays: job-complete
  pivots the source's users onto the NBD node, so the guest's next writes
  travel through the source daemon to the target daemon.
- The source daemon killed (SIGKILL) mid-copy after the guest flushed:
  the source image passes qemu-img check and reads as the guest wrote it.
- The target daemon killed mid-copy: with on-target-error report the job
  ends with an error and the guest goes on unharmed on the source; with
  stop it pauses with io-status failed and a forced cancel ends it.
"""
import os
import signal

import pytest

from conftest import run
from job_util import (KINDS, MiB, Guest, JobDaemon, chain, check, read_image,  # noqa: F401
                      start, start_guest, wait_offset)

PAIRS = [(s, t) for s in KINDS for t in KINDS]


def start_target(workdir, kind, tag, size=64 * MiB):
    """A daemon exporting an empty qcow2 `tgt` writable over NBD; returns
    (daemon, image path, NBD socket)."""
    d_dir = os.path.join(str(workdir), f"target-{tag}-{kind}")
    os.makedirs(d_dir, exist_ok=True)
    path = os.path.join(d_dir, "tgt.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)])
    d = JobDaemon(kind, d_dir)
    d.ok("blockdev-add", driver="file", **{"node-name": "tgt-file"}, filename=path)
    d.ok("blockdev-add", driver="qcow2", **{"node-name": "tgt"}, file="tgt-file")
    sock = os.path.join(d_dir, "nbd.sock")
    d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.ok("block-export-add", type="nbd", id="mig", **{"node-name": "tgt"}, writable=True)
    return d, path, sock


def add_remote(src, sock):
    src.ok("blockdev-add", driver="nbd", **{"node-name": "remote"},
           server={"type": "unix", "path": sock}, export="tgt")


@pytest.fixture
def targets(workdir):
    started = []

    def _start(kind, tag):
        t = start_target(workdir, kind, tag)
        started.append(t[0])
        return t

    yield _start
    for d in started:
        if d.daemon.proc.poll() is None:
            d.kill()


def migrate(start, targets, workdir, src_kind, tgt_kind, initial):
    src, _ = start(src_kind)
    tgt, tpath, tsock = targets(tgt_kind, src_kind)
    guest = start_guest(src, workdir, src_kind, initial, seed=7)
    add_remote(src, tsock)
    src.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "remote",
                                 "sync": "full"})
    src.wait_event("BLOCK_JOB_READY", "m", timeout=180)
    for _ in range(50):
        guest.random_write()  # while ready: mirrored before they complete
    guest.stop()  # switch-over: the guest pauses on the source
    src.ok("block-job-cancel", device="m")
    src.wait_event("JOB_STATUS_CHANGE", "m", "null")
    events = src.job_events("m")
    guest.close()
    src.ok("blockdev-del", **{"node-name": "remote"})
    src.quit()
    # The guest resumes on the target daemon.
    tgt.ok("block-export-del", id="mig")
    tgt.wait_event("BLOCK_EXPORT_DELETED")
    tgt.ok("block-export-add", type="nbd", id="vm", **{"node-name": "tgt"}, writable=True)
    resumed = Guest(tsock, "tgt", guest.model, seed=8)
    for _ in range(100):
        resumed.random_write()
    assert resumed.read(0, len(resumed.model)) == bytes(resumed.model)
    resumed.h.flush()
    resumed.close()
    tgt.quit()
    return tpath, resumed.model, events


@pytest.mark.parametrize("src_kind,tgt_kind", PAIRS)
def test_migration_over_nbd_soft_cancel_then_resume_on_the_target(workdir, chain, start, targets,
                                                                  src_kind, tgt_kind):
    initial = read_image(chain["top"])
    tpath, model, events = migrate(start, targets, workdir, src_kind, tgt_kind, initial)
    check(tpath)
    assert read_image(tpath) == model
    assert events == [
        ("JOB_STATUS_CHANGE", "created"), ("JOB_STATUS_CHANGE", "running"),
        ("JOB_STATUS_CHANGE", "ready"), ("BLOCK_JOB_READY", "mirror", False),
        ("JOB_STATUS_CHANGE", "waiting"), ("JOB_STATUS_CHANGE", "pending"),
        ("BLOCK_JOB_COMPLETED", "mirror", False), ("JOB_STATUS_CHANGE", "concluded"),
        ("JOB_STATUS_CHANGE", "null")]


@pytest.mark.parametrize("tgt_kind", KINDS)
def test_pivot_onto_an_nbd_node_the_guest_writes_through_to_the_target(workdir, chain, start,
                                                                       targets, tgt_kind):
    initial = read_image(chain["top"])
    events = {}
    for src_kind in KINDS:
        src, _ = start(src_kind)
        tgt, tpath, tsock = targets(tgt_kind, "pivot-" + src_kind)
        guest = start_guest(src, workdir, src_kind, initial, seed=9)
        add_remote(src, tsock)
        src.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "remote",
                                     "sync": "full", "copy-mode": "write-blocking"})
        src.wait_event("BLOCK_JOB_READY", "m", timeout=180)
        src.ok("job-complete", id="m")  # with the guest's writes in flight
        src.wait_event("JOB_STATUS_CHANGE", "m", "null")
        guest.stop()
        for _ in range(100):
            guest.random_write()  # through the source daemon, onto the target's image
        assert guest.read(0, len(guest.model)) == bytes(guest.model)
        guest.close()
        events[src_kind] = src.job_events("m")
        src.quit()
        tgt.quit()
        check(tpath)
        assert (src_kind, read_image(tpath) == guest.model) == (src_kind, True)
    assert events["strata"] == events["qsd"]


def kill_target_mid_copy(start, targets, workdir, kind, policy, initial):
    src, paths = start(kind)
    tgt, _, tsock = targets("strata", f"kill-{policy}-{kind}")
    guest = start_guest(src, workdir, kind, initial, seed=11)
    add_remote(src, tsock)
    src.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "remote",
                                 "sync": "full", "speed": 8 * MiB,
                                 "on-target-error": policy})
    src.wait_event("JOB_STATUS_CHANGE", "m", "running")
    tgt.kill()
    if policy == "stop":
        src.wait_event("BLOCK_JOB_ERROR", "m", timeout=60)
        src.wait_event("JOB_STATUS_CHANGE", "m", "paused")
        job = src.ok("query-block-jobs")[0]
        assert (job["io-status"], job["status"]) == ("failed", "paused")
        src.ok("block-job-cancel", device="m", force=True)
    src.wait_event("JOB_STATUS_CHANGE", "m", "null", timeout=60)
    guest.stop()
    for _ in range(50):
        guest.random_write()  # the source serves the guest as before
    assert guest.read(0, len(guest.model)) == bytes(guest.model)
    guest.close()
    # The dead node can be removed; the source is whole.
    src.ok("blockdev-del", **{"node-name": "remote"})
    events = src.job_events("m")
    errors = {(e["data"]["operation"], e["data"]["action"])
              for e in src.qmp.events if e["event"] == "BLOCK_JOB_ERROR"}
    src.quit()
    check(paths["top"])
    assert read_image(paths["top"]) == guest.model
    return events, errors


@pytest.mark.parametrize("policy", ["report", "stop"])
def test_target_daemon_killed_mid_copy(workdir, chain, start, targets, policy):
    initial = read_image(chain["top"])
    runs = {k: kill_target_mid_copy(start, targets, workdir, k, policy, initial) for k in KINDS}
    events = {k: v[0] for k, v in runs.items()}
    # Failed writes to the target, reported with the policy's action.
    assert runs["strata"][1] == runs["qsd"][1] == {("write", policy)}
    # One BLOCK_JOB_ERROR per failed request may be reported before the
    # job stops or ends: compare the sequence with repeats folded.
    folded = {k: [e for i, e in enumerate(v) if i == 0 or e != v[i - 1]]
              for k, v in events.items()}
    assert folded["strata"] == folded["qsd"], events
    completed = [e for e in folded["strata"] if e[0] == "BLOCK_JOB_COMPLETED"]
    if policy == "report":
        assert completed == [("BLOCK_JOB_COMPLETED", "mirror", True)]
    else:
        assert ("JOB_STATUS_CHANGE", "paused") in folded["strata"]


def test_source_daemon_killed_mid_mirror(workdir, chain, start, targets):
    initial = read_image(chain["top"])
    src, paths = start("strata")
    tgt, tpath, tsock = targets("strata", "source-killed")
    guest = start_guest(src, workdir, "strata", initial, seed=13)
    add_remote(src, tsock)
    src.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "remote",
                                 "sync": "full", "speed": 8 * MiB})
    wait_offset(src, 8 * MiB)
    guest.stop()  # flushed: every write it made is on the source's disk
    os.kill(src.daemon.proc.pid, signal.SIGKILL)
    src.daemon.proc.wait(30)
    check(paths["top"])
    assert read_image(paths["top"]) == guest.model
    # The target daemon lost its client and carries on; its image holds a
    # partial copy and stays consistent.
    assert tgt.ok("query-block-exports")[0]["id"] == "mig"
    tgt.quit()
    res = run(["qemu-img", "check", tpath], check=False)
    assert res.returncode in (0, 3), res.stdout + res.stderr  # leaks at most
