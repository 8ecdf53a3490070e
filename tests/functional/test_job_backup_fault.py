"""The backup job and the copy-before-write filter when I/O fails, with a
guest writing through an NBD export the whole time, on stratad and on
qemu-storage-daemon (the reference). Errors come from the fault filter on
stratad and blkdebug on QSD (backup_util.fail_once); for stratad each
script also runs on QSD and the record must be QSD's.

1. An incremental backup (bitmap-mode on-success, a speed limit so that
   the guest writes while it copies) whose target fails one write in the
   middle, for each on-target-error policy: report (the job ends with the
   error; the bitmap keeps what was not backed up plus the guest's new
   writes, and a rerun backs all of it up), ignore (a BLOCK_JOB_ERROR
   event, the range copied again, success), stop (paused with io-status
   failed, the guest writing on, job-resume to success), enospc (EIO as
   report, ENOSPC as stop with io-status nospace); and a source read
   failing, for on-source-error report and stop. A backup that succeeds
   is the disk at the job's start (qemu-img compare against a model) and
   holds exactly the granules the bitmap marked then.
2. copy-before-write with snapshot-access over a target that fails a
   write: break-guest-write fails the guest's write with EIO and the view
   stays the point in time; break-snapshot lets it through and every later
   read of the view fails (EACCES in the daemon, EINVAL on the wire, as
   QEMU's NBD server maps it), while the guest's and other exports read on.
   cbw-timeout over a throttled target: the write that needs a copy
   returns after about the timeout (failing with break-guest-write)
   instead of waiting for the slow target.
3. A fleecing client reading while the view breaks gets the point in time
   or an error for each read, and only errors once it broke; no hang, the
   daemon stays up.
4. SIGKILL in the middle of an incremental backup with a persistent bitmap
   (added with qemu-img bitmap before opening): the source passes qemu-img
   check (leaks allowed, as for QEMU), holds every write the guest had
   acknowledged (FUA), and the bitmap either marks every cluster the guest
   wrote or is reported in-use by qemu-img info and inconsistent by the
   restarted daemon (QSD: in-use, inconsistent; stratad must say the
   same); the restarted daemon removes it."""
import json
import os
import threading
import time

import nbd
import pytest

from conftest import run
from backup_util import (GRAN, add_qcow2, allocated_granules, bitmap_view, count,  # noqa: F401
                         daemons, export, fail_once, host_offset, image, job_record, same,
                         start_daemon, statuses, wait_null, write_model)
from job_util import KINDS, MiB, JobDaemon, qemu_io, read_image
from test_job_mirror_bitmaps import RecordingGuest

SIZE = 64 * MiB
EIO, ENOSPC = 5, 28
# The granule whose copy fails; the guest's random writes keep clear of
# the copy clusters around it, so that only the job meets the fault.
FAULT = 40 * MiB
AVOID = (FAULT - GRAN, FAULT + 2 * GRAN)


class Disk(RecordingGuest):
    """A guest whose random writes skip AVOID (they are dropped, the seeded
    sequence stays the same on both daemons); with `fua` each write is
    acknowledged only once it is stable. `inflight` is the range of the
    write under way."""

    def __init__(self, *args, fua=False, **kw):
        super().__init__(*args, **kw)
        self.flags = nbd.CMD_FLAG_FUA if fua else 0
        self.inflight = None

    def skips(self, offset, length):
        return offset < AVOID[1] and AVOID[0] < offset + length

    def write(self, offset, data):
        if self.skips(offset, len(data)):
            return
        self.inflight = (offset, len(data))
        self.h.pwrite(data, offset, self.flags)
        self.model[offset:offset + len(data)] = data
        self.note(offset, len(data))
        self.inflight = None

    def zero(self, offset, length):
        if self.skips(offset, length):
            return
        self.inflight = (offset, length)
        self.h.zero(length, offset, self.flags)
        self.model[offset:offset + length] = bytes(length)
        self.note(offset, length)
        self.inflight = None


def writes(guest, n, pause=0.0):
    for _ in range(n):
        guest.random_write()
        time.sleep(pause)


def source(d, base, seed):
    """drive0, a qcow2 disk with some data, opened and exported; returns
    (guest, path)."""
    path = image(base, "drive0.qcow2", SIZE)
    qemu_io(path, "write -P 0x5a 0 8M", "write -P 0x5b 32M 16M")
    initial = read_image(path)
    add_qcow2(d, "drive0", path)
    return Disk(export(d, base, "drive0"), "drive0", initial, seed=seed), path


def target_fault(kind, name, child, errno):
    """A filter over `child` failing once, with `errno`, the first write
    that touches FAULT."""
    if kind == "qsd":
        rule = {"event": "pwritev", "iotype": "write", "errno": errno,
                "sector": FAULT // 512, "once": True}
        return {"driver": "blkdebug", "node-name": name, "image": child, "inject-error": [rule]}
    return {"driver": "fault", "node-name": name, "file": child,
            "rules": [{"event": "write", "errno": errno, "offset": FAULT, "length": 1,
                       "count": 1}]}


def source_fault(d, kind, path):
    """drive0 reads its data through a filter failing the first read of
    FAULT's cluster (with EIO), as iotest 257 puts one under it."""
    d.ok("blockdev-add", **fail_once(kind, "drive0-err", "drive0-file", "read",
                                     host_offset(path, FAULT)))
    d.ok("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "drive0",
                                      "file": "drive0-err", "backing": None}])


def incremental_target(d, kind, base, name, full, side="target", errno=EIO):
    """A qcow2 backed by `full` (the last full backup, raw) opened without
    its backing file, with the failing filter on top for a target fault;
    returns (node, path)."""
    path = image(base, f"{name}.qcow2", SIZE, backing=full, backing_fmt="raw")
    add_qcow2(d, f"{name}-q" if side == "target" else name, path)
    if side == "target":
        d.ok("blockdev-add", **target_fault(kind, name, f"{name}-q", errno))
    return name, path


def backup(d, job, target, **extra):
    d.ok("blockdev-backup", **{"job-id": job, "device": "drive0", "target": target,
                               "sync": "incremental", "bitmap": "b0", **extra})


def wait_error_pause(d, job, since):
    """Waits until the job paused after a BLOCK_JOB_ERROR; returns its
    io-status then."""
    d.wait_event("BLOCK_JOB_ERROR", job)
    deadline = time.time() + 60
    while time.time() < deadline:
        jobs = d.ok("query-block-jobs")
        if jobs and jobs[0]["status"] == "paused":
            return jobs[0]["io-status"]
        time.sleep(0.02)
    raise TimeoutError(job_record(d, job, since=since))


def policy_run(workdir, daemons, kind, side, policy, errno):
    """One backup meeting one error; returns (record, facts) where facts
    are this daemon's checks against its own guest's model."""
    d, base = start_daemon(workdir, kind, daemons)
    guest, disk = source(d, base, seed=0x61)
    full = write_model(os.path.join(base, "full.raw"), guest.model)
    d.ok("block-dirty-bitmap-add", node="drive0", name="b0", granularity=GRAN)
    writes(guest, 60)
    RecordingGuest.write(guest, FAULT, b"\x77" * GRAN)  # in the bitmap, not zeroes
    guest.h.flush()
    if side == "source":
        source_fault(d, kind, disk)
    node, inc = incremental_target(d, kind, base, "inc1", full, side, errno)
    marked, point = set(guest.granules), bytes(guest.model)
    record = [("before", bitmap_view(d, "drive0"))]
    guest.granules.clear()
    mark = len(d.qmp.events)
    backup(d, "b1", node, speed=2 * MiB, **{f"on-{side}-error": policy})
    writes(guest, 20, pause=0.01)  # while it copies
    if policy == "stop" or errno == ENOSPC:
        record.append(("io-status", wait_error_pause(d, "b1", mark)))
        writes(guest, 20)  # while it waits
        d.ok("job-resume", id="b1")
    wait_null(d, "b1", since=mark)
    writes(guest, 10)
    record += [("b1", job_record(d, "b1", progress=False, since=mark)),
               ("after", bitmap_view(d, "drive0"))]
    facts = {"count": count(d, "drive0", "b0"), "during": len(guest.granules),
             "union": len(marked | guest.granules)}
    done = job_record(d, "b1", since=mark)[-3][1]
    facts["mid"] = 0 < done["offset"] < done["len"]  # the error came part way
    failed = "error" in done
    if failed:  # a rerun backs up what the bitmap kept
        marked, point = marked | guest.granules, bytes(guest.model)
        node, inc = incremental_target(d, kind, base, "inc2", full, "none")
        mark = len(d.qmp.events)
        backup(d, "b2", node)
        wait_null(d, "b2", since=mark)
        record += [("b2", job_record(d, "b2", since=mark)), ("rerun", bitmap_view(d, "drive0"))]
    assert guest.read(0, SIZE) == bytes(guest.model)
    guest.close()
    d.quit()
    facts["image"] = same(inc, write_model(os.path.join(base, "point.raw"), point))
    facts["granules"] = allocated_granules(inc) == marked
    run(["qemu-img", "check", "-q", disk])
    run(["qemu-img", "check", "-q", inc])
    return record, facts


CASES = [
    # (side, policy, errno, outcome)
    ("target", "report", EIO, "fails"),
    ("target", "ignore", EIO, "ignored"),
    ("target", "stop", EIO, "stopped"),
    ("target", "enospc", EIO, "fails"),
    ("target", "enospc", ENOSPC, "stopped"),
    ("source", "report", EIO, "fails"),
    ("source", "stop", EIO, "stopped"),
]
STARTED = ["created", "running", "paused", "running"]
ENDS = {
    "fails": ["BLOCK_JOB_ERROR", "aborting", "BLOCK_JOB_COMPLETED", "concluded", "null"],
    "ignored": ["BLOCK_JOB_ERROR", "waiting", "pending", "BLOCK_JOB_COMPLETED", "concluded",
                "null"],
    "stopped": ["BLOCK_JOB_ERROR", "paused", "running", "waiting", "pending",
                "BLOCK_JOB_COMPLETED", "concluded", "null"],
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side,policy,errno,outcome", CASES)
def test_error_policy(workdir, daemons, kind, side, policy, errno, outcome):
    record, facts = policy_run(workdir, daemons, kind, side, policy, errno)
    events = dict(record)
    assert statuses(events["b1"]) == STARTED + ENDS[outcome]
    error = [data for name, data in events["b1"] if name == "BLOCK_JOB_ERROR"]
    operation = "read" if side == "source" else "write"
    action = {"fails": "report", "ignored": "ignore", "stopped": "stop"}[outcome]
    assert error == [{"device": "b1", "operation": operation, "action": action}]
    done = events["b1"][-3][1]
    if outcome == "fails":
        assert done["error"] == "Input/output error"
        # The bitmap keeps what the job did not back up, plus the writes
        # made meanwhile.
        assert facts["count"] == facts["union"] and facts["mid"]
        assert statuses(events["b2"])[-3:] == ["BLOCK_JOB_COMPLETED", "concluded", "null"]
        assert "error" not in events["b2"][-3][1]
        assert count_of(events["rerun"]) == 0
    else:
        assert "error" not in done
        assert facts["count"] == facts["during"]
    if outcome == "stopped":
        assert events["io-status"] == ("nospace" if errno == ENOSPC else "failed")
    assert facts["image"] and facts["granules"]
    if kind != "qsd":
        assert record == policy_run(workdir, daemons, "qsd", side, policy, errno)[0]


def count_of(view):
    return [b["count"] for b in view if b.get("name") == "b0"][0]


# --- The filter on its own: copy-before-write and snapshot-access ---

def reader(sock, name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    return h


def try_read(h, offset, length):
    """The data, or the error's errno name."""
    try:
        return bytes(h.pread(length, offset))
    except nbd.Error as e:
        return e.errno


def fleecing(d, base, mode, tmp_filter, timeout=0):
    """drive0 (with a guest on it through `cbw`), a qcow2 temporary `tmp-q`
    under the filter `tmp_filter(name, child)` makes (None: none), the
    copy-before-write node and snapshot-access `acc` exported as `fleece`;
    a second disk `other` exported too. Returns (guest, socket)."""
    path = image(base, "drive0.qcow2", SIZE)
    qemu_io(path, "write -P 0x5a 0 8M", "write -P 0x5b 32M 16M")
    add_qcow2(d, "drive0", path)
    add_qcow2(d, "tmp-q", image(base, "tmp.qcow2", SIZE))
    target = "tmp-q"
    if tmp_filter:
        d.ok("blockdev-add", **tmp_filter("tmp", "tmp-q"))
        target = "tmp"
    cbw = {"driver": "copy-before-write", "node-name": "cbw", "file": "drive0",
           "target": target, "on-cbw-error": mode}
    if timeout:
        cbw["cbw-timeout"] = timeout
    d.ok("blockdev-add", **cbw)
    d.ok("blockdev-add", driver="snapshot-access", **{"node-name": "acc"}, file="cbw")
    other = image(base, "other.qcow2", SIZE)
    qemu_io(other, "write -P 0x3c 0 4M")
    add_qcow2(d, "other", other)
    sock = export(d, base, "cbw")
    for node in ("acc", "other"):
        d.ok("block-export-add", type="nbd", id=node, **{"node-name": node},
             name="fleece" if node == "acc" else node)
    guest = Disk(sock, "cbw", bytearray(SIZE), seed=0x71)
    guest.model[:] = guest.read(0, SIZE)
    return guest, sock


def view_outcomes(sock, point):
    """For each MiB of the view: True (the point in time), or the read's
    errno name; never other data."""
    h = reader(sock, "fleece")
    out = set()
    for off in range(0, SIZE, MiB):
        got = try_read(h, off, MiB)
        out.add(got == point[off:off + MiB] if isinstance(got, bytes) else got)
    h.shutdown()
    assert False not in out, "the view read other data"
    return sorted(out, key=str)


def others_read_on(d, sock, guest):
    """The guest's export and another disk's read as they should; the
    daemon answers."""
    assert guest.read(0, SIZE) == bytes(guest.model)
    h = reader(sock, "other")
    assert h.pread(MiB, 0) == b"\x3c" * MiB
    h.shutdown()
    assert {n["node-name"] for n in d.ok("query-named-block-nodes")} >= {"cbw", "acc", "other"}


def cbw_error_run(workdir, daemons, kind, mode):
    d, base = start_daemon(workdir, kind, daemons)
    guest, sock = fleecing(d, base, mode,
                           lambda name, child: target_fault(kind, name, child, EIO))
    point = bytes(guest.model)
    writes(guest, 40)  # copies that succeed
    record = [("writes", guest.writes)]
    try:
        RecordingGuest.write(guest, FAULT, b"\x99" * 4096)
        record.append(("write", "ok"))
    except nbd.Error as e:
        record.append(("write", e.errno))
    writes(guest, 20)
    record.append(("view", view_outcomes(sock, point)))
    others_read_on(d, sock, guest)
    guest.close()
    d.quit()
    return record


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["break-guest-write", "break-snapshot"])
def test_cbw_error(workdir, daemons, kind, mode):
    record = dict(cbw_error_run(workdir, daemons, kind, mode))
    if mode == "break-guest-write":
        assert record["write"] == "EIO"
        assert record["view"] == [True]
    else:
        assert record["write"] == "ok"
        assert record["view"] == ["EINVAL"]  # EACCES, as QEMU's server sends it
    if kind != "qsd":
        assert record == dict(cbw_error_run(workdir, daemons, "qsd", mode))


THROTTLED = 64 * 1024  # bytes per second the temporary takes


def cbw_timeout_run(workdir, daemons, kind, mode):
    """iotest copy-before-write's cbw-timeout cases over NBD: a first write
    fills the throttle group's bucket for 4 s; the next write's copy would
    wait that long, the timeout is 1 s."""
    d, base = start_daemon(workdir, kind, daemons)
    d.ok("object-add", **{"qom-type": "throttle-group", "id": "g0"},
         limits={"bps-write": THROTTLED})
    guest, sock = fleecing(d, base, mode,
                           lambda name, child: {"driver": "throttle", "node-name": name,
                                                "file": child, "throttle-group": "g0"},
                           timeout=1)
    point = bytes(guest.model)
    guest.write(0, b"\x11" * (4 * THROTTLED))
    record, took = [], []
    for off in (MiB, 33 * MiB):
        start = time.monotonic()
        try:
            guest.write(off, b"\x22" * 4096)
            record.append((off, "ok"))
        except nbd.Error as e:
            record.append((off, e.errno))
        took.append(time.monotonic() - start)
    record.append(("view", view_outcomes(sock, point)))
    others_read_on(d, sock, guest)
    guest.close()
    d.quit()
    return record, took


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["break-guest-write", "break-snapshot"])
def test_cbw_timeout_over_a_throttled_target(workdir, daemons, kind, mode):
    record, took = cbw_timeout_run(workdir, daemons, kind, mode)
    assert took[0] > 0.8 and all(t < 3 for t in took), took
    if mode == "break-guest-write":
        # ETIMEDOUT, sent as EINVAL; the second copy queues behind the
        # first, still throttled, and times out too. The view is kept.
        assert record == [(MiB, "EINVAL"), (33 * MiB, "EINVAL"), ("view", [True])]
    else:
        assert record == [(MiB, "ok"), (33 * MiB, "ok"), ("view", ["EINVAL"])]
    if kind != "qsd":
        assert record == cbw_timeout_run(workdir, daemons, "qsd", mode)[0]


class Reader(threading.Thread):
    """Reads the view over and over, 256 KiB at a time, noting (start
    time, whether the data was the point in time, or the errno)."""

    def __init__(self, sock, point):
        super().__init__(daemon=True)
        self.h = reader(sock, "fleece")
        self.point = point
        self.seen = []
        self.stop = threading.Event()

    def run(self):
        n = 256 * 1024
        while not self.stop.is_set():
            for off in range(0, SIZE, n):
                t = time.monotonic()
                got = try_read(self.h, off, n)
                ok = got == self.point[off:off + n] if isinstance(got, bytes) else got
                self.seen.append((t, ok))
                if self.stop.is_set():
                    return


@pytest.mark.parametrize("kind", KINDS)
def test_a_reader_meets_errors_once_the_view_broke(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    guest, sock = fleecing(d, base, "break-snapshot",
                           lambda name, child: target_fault(kind, name, child, EIO))
    r = Reader(sock, bytes(guest.model))
    r.start()
    writes(guest, 40, pause=0.005)
    while sum(1 for _, ok in r.seen if ok is True) < 20:  # reads of the view so far
        assert r.is_alive()
        time.sleep(0.01)
    RecordingGuest.write(guest, FAULT, b"\x99" * 4096)  # breaks the view
    broke = time.monotonic()
    writes(guest, 40, pause=0.005)
    while len([s for s in r.seen if s[0] > broke]) < 600:
        assert r.is_alive() and time.monotonic() - broke < 30
        time.sleep(0.05)
    r.stop.set()
    r.join(30)
    assert not r.is_alive()
    before = {ok for t, ok in r.seen if t <= broke}
    after = {ok for t, ok in r.seen if t > broke}
    assert before <= {True, "EINVAL"} and True in before, before
    assert after == {"EINVAL"}, after
    r.h.shutdown()
    others_read_on(d, sock, guest)
    guest.close()
    d.quit()


# --- SIGKILL in the middle of a backup ---

def bitmap_info(path):
    data = json.loads(run(["qemu-img", "info", "--output=json", "-U", path]).stdout)
    return data["format-specific"]["data"].get("bitmaps")


def check_after_crash(path):
    """qemu-img check: no corruption; leaked clusters (exit 3) are what a
    crash may leave, in QEMU too."""
    r = run(["qemu-img", "check", "--output=json", path], check=False)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert not out.get("corruptions") and not out.get("check-errors"), out


def killed_run(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    path = image(base, "drive0.qcow2", SIZE)
    qemu_io(path, "write -P 0x5a 0 8M", "write -P 0x5b 32M 16M")
    run(["qemu-img", "bitmap", "--add", path, "b0"])
    initial = read_image(path)
    add_qcow2(d, "drive0", path)
    guest = Disk(export(d, base, "drive0"), "drive0", initial, seed=0x81, fua=True)
    writes(guest, 60)
    tpath = image(base, "inc.qcow2", SIZE)
    add_qcow2(d, "inc", tpath)
    backup(d, "b", "inc", speed=MiB)
    guest.start(pause=0.005)
    deadline = time.time() + 30
    while True:
        [job] = d.ok("query-block-jobs")
        if job["offset"] > 0 and guest.writes > 100:
            break
        assert time.time() < deadline
        time.sleep(0.05)
    d.kill()
    assert job["offset"] < job["len"], job  # in the middle
    guest.stop_flag.set()
    guest.thread.join(30)
    assert guest.error is None or isinstance(guest.error, nbd.Error), guest.error
    for p in (path, tpath):
        check_after_crash(p)
    data = read_image(path)
    if guest.inflight:  # either old or new data there
        off, length = guest.inflight
        data[off:off + length] = guest.model[off:off + length]
    assert data == guest.model
    info = bitmap_info(path)
    record = [("info", info)]
    again = os.path.join(base, "again")
    os.makedirs(again)
    d2 = JobDaemon(kind, again)
    daemons.append(d2)
    add_qcow2(d2, "drive0", path)
    record.append(("reopened", bitmap_view(d2, "drive0")))
    d2.ok("block-dirty-bitmap-remove", node="drive0", name="b0")
    d2.quit()
    record.append(("removed", bitmap_info(path)))
    check_after_crash(path)
    return record, guest


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_mid_backup(workdir, daemons, kind):
    record, guest = killed_run(workdir, daemons, kind)
    info = dict(record)
    [b0] = info["info"]
    if "in-use" in b0["flags"]:  # never trusted again
        [view] = info["reopened"]
        assert view["inconsistent"] and not view["recording"], view
    else:  # intact: marks every cluster the guest wrote
        assert count_of(info["reopened"]) >= len(guest.granules) * GRAN
    assert info["removed"] is None
    if kind != "qsd":
        assert record == killed_run(workdir, daemons, "qsd")[0]
