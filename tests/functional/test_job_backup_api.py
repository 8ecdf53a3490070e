"""blockdev-backup, drive-backup and backup transactions that must fail: the
error class and message are QEMU's, the command leaves no job, node or
bitmap change behind, and the job events it sends (QEMU sends some, for a
job it made before the error) are QEMU's.

- iotest 257's API section: every invalid sync / bitmap / bitmap-mode
  combination, with the message of the first check QEMU's validation order
  (qmp.md section 4) fails;
- the target: wrong size (smaller, larger, a raw view of a qcow2 file),
  unknown, the source itself, read-only, compression it cannot do;
  unknown device; job IDs (malformed, empty, missing); speed; x-perf;
  filter-node-name;
- a running backup makes its bitmap busy (for another backup, clear,
  remove, enable, disable, merge either way), its target busy, its job ID
  taken; a second backup of the same source is fine; after the cancel the
  bitmap is as before (on-success);
- transactions: grouped with another action, a repeated job ID, a busy
  target, an abort after a backup: nothing is left, bitmaps added in them
  are gone;
- drive-backup: a missing file with mode existing, an unknown format, a
  directory that does not exist, a size mismatch, the source's own image;
  QEMU makes the file before it checks the other arguments and leaves it
  there on error: the files left are compared too.

For stratad, every reply and event must be qemu-storage-daemon's (paths
are compared relative to each daemon's directory)."""
import os

import pytest

from conftest import run
from backup_util import (GRAN, add_qcow2, bitmap_view, daemons, image,  # noqa: F401
                         job_record, start_daemon, statuses, wait_null)
from job_util import KINDS, MiB, qemu_io

SIZE = 64 * MiB


def expected_257(sync, bitmap, mode):
    """QEMU's message for an invalid combination, its checks in order."""
    if sync in ("bitmap", "incremental") and not bitmap:
        return f"must provide a valid bitmap name for '{sync}' sync mode"
    if sync == "incremental":
        if mode and mode != "on-success":
            return "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"
        mode = "on-success"
    if bitmap and bitmap != "bitmap0":
        return f"Bitmap '{bitmap}' could not be found"
    if bitmap and not mode:
        return "Bitmap sync mode must be given when providing a bitmap"
    if bitmap and sync == "none":
        return "sync mode 'none' does not produce meaningful bitmap outputs"
    if bitmap and mode == "never" and sync != "bitmap":
        return ("Bitmap sync mode 'never' has no meaningful effect when combined with "
                f"sync mode '{sync}'")
    if mode and not bitmap:
        return "Cannot specify bitmap sync mode without a bitmap"
    raise AssertionError("valid")


# 257's error_cases: sync -> bitmap -> the bitmap modes that fail.
CASES_257 = {
    "incremental": {None: ["on-success", "always", "never", None],
                    "bitmap404": ["on-success", "always", "never", None],
                    "bitmap0": ["always", "never"]},
    "bitmap": {None: ["on-success", "always", "never", None],
               "bitmap404": ["on-success", "always", "never", None],
               "bitmap0": [None]},
    "full": {None: ["on-success", "always", "never"],
             "bitmap404": ["on-success", "always", "never", None],
             "bitmap0": ["never", None]},
    "top": {None: ["on-success", "always", "never"],
            "bitmap404": ["on-success", "always", "never", None],
            "bitmap0": ["never", None]},
    "none": {None: ["on-success", "always", "never"],
             "bitmap404": ["on-success", "always", "never", None],
             "bitmap0": ["on-success", "always", "never", None]},
}


class Script:
    """Sends commands that must fail to one daemon, checking that each
    leaves the nodes, the jobs and the bitmaps of `node` as they were;
    logs (command, arguments, class, message, events of new jobs)."""

    def __init__(self, d, base, node="drive0", running=()):
        self.d = d
        self.base = base
        self.node = node
        self.running = set(running)
        self.log = []

    def state(self):
        names = sorted(n["node-name"] for n in self.d.ok("query-named-block-nodes")
                       if not n["node-name"].startswith("#"))
        jobs = sorted(j["id"] for j in self.d.ok("query-jobs"))
        return names, jobs, bitmap_view(self.d, self.node)

    def fail(self, cmd, **args):
        before = self.state()
        first = len(self.d.qmp.events)
        reply = self.d.execute(cmd, args)
        assert "error" in reply, f"{self.d.kind}: {cmd} {args}: {reply}"
        self.d.pump(0.1)
        events = [(e["event"], e.get("data")) for e in self.d.qmp.events[first:]
                  if e.get("data", {}).get("id", e.get("data", {}).get("device"))
                  not in self.running]
        after = self.state()
        assert after == before, f"{self.d.kind}: {cmd} {args} changed {before} to {after}"
        desc = reply["error"]["desc"].replace(self.base, "DIR")
        self.log.append((cmd, args, reply["error"]["class"], desc, events))
        return reply["error"]["class"], desc


def setup_257(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    add_qcow2(d, "drive0", image(base, "img.qcow2", SIZE))
    add_qcow2(d, "backup_target", image(base, "bsync1.qcow2", SIZE))
    d.ok("block-dirty-bitmap-add", node="drive0", name="bitmap0", granularity=GRAN)
    return d, base


def api_257(workdir, daemons, kind):
    d, base = setup_257(workdir, daemons, kind)
    s = Script(d, base)
    for sync, bitmaps in CASES_257.items():
        for bitmap, modes in bitmaps.items():
            for mode in modes:
                args = {"job-id": "api_job", "device": "drive0", "target": "backup_target",
                        "sync": sync, "filter-node-name": "backup-top",
                        "x-perf": {"max-workers": 1}}
                if bitmap:
                    args["bitmap"] = bitmap
                if mode:
                    args["bitmap-mode"] = mode
                s.fail("blockdev-backup", **args)
    d.quit()
    return s.log


@pytest.mark.parametrize("kind", KINDS)
def test_257_invalid_sync_bitmap_mode_combinations(workdir, daemons, kind):
    log = api_257(workdir, daemons, kind)
    assert len(log) == 48
    for cmd, args, cls, desc, events in log:
        want = expected_257(args["sync"], args.get("bitmap"), args.get("bitmap-mode"))
        assert (args, cls, desc, events) == (args, "GenericError", want, [])
    if kind != "qsd":
        assert log == api_257(workdir, daemons, "qsd")


def argument_errors(workdir, daemons, kind):
    d, base = setup_257(workdir, daemons, kind)
    add_qcow2(d, "small", image(base, "small.qcow2", 32 * MiB))
    add_qcow2(d, "large", image(base, "large.qcow2", SIZE + GRAN))
    ro = image(base, "ro.qcow2", SIZE)
    d.ok("blockdev-add", driver="file", **{"node-name": "ro-file"}, filename=ro,
         **{"read-only": True})
    d.ok("blockdev-add", driver="qcow2", **{"node-name": "ro"}, file="ro-file",
         **{"read-only": True})
    raw = image(base, "raw.img", SIZE, fmt="raw")
    d.ok("blockdev-add", driver="file", **{"node-name": "raw-file"}, filename=raw)
    d.ok("blockdev-add", driver="raw", **{"node-name": "raw"}, file="raw-file")
    # The qcow2 file of the target, read as raw: the file's size.
    d.ok("blockdev-add", driver="raw", **{"node-name": "qraw"}, file="backup_target-file")
    s = Script(d, base)
    ok = {"job-id": "j", "device": "drive0", "target": "backup_target", "sync": "full"}
    for change in [{"target": "small"}, {"target": "large"}, {"target": "qraw"},
                   {"target": "nosuch"}, {"target": "drive0"}, {"device": "nosuch"},
                   {"target": "ro"}, {"target": "raw", "compress": True},
                   {"job-id": "1bad"}, {"job-id": ""},
                   {"speed": -1}, {"x-perf": {"max-workers": 0}},
                   {"x-perf": {"max-chunk": 4096}},
                   {"filter-node-name": "backup_target"}, {"filter-node-name": "1bad"},
                   {"sync": "incremental", "bitmap": "bitmap0", "target": "small"},
                   {"on-source-error": "stop", "device": "nosuch"}]:
        args = {k: v for k, v in {**ok, **change}.items() if v is not None}
        s.fail("blockdev-backup", **args)
    # A refused backup leaves nothing behind: the same job runs now.
    mark = len(d.qmp.events)
    d.ok("blockdev-backup", **ok)
    wait_null(d, "j", since=mark)
    s.log.append(("events", job_record(d, "j", since=mark)))
    d.quit()
    return s.log


@pytest.mark.parametrize("kind", KINDS)
def test_argument_errors(workdir, daemons, kind):
    log = argument_errors(workdir, daemons, kind)
    sizes = "Source and target image have different sizes"
    nosuch = "Cannot find device='nosuch' nor node-name='nosuch'"
    assert [(cls, desc) for _, _, cls, desc, _ in log[:-1]] == [("GenericError", m) for m in [
        sizes, sizes, sizes, nosuch,
        "Source and target cannot be the same",
        nosuch,
        "Could not create node: Block node is read-only",
        "Compression is not supported for this drive ",
        "Invalid job ID '1bad'", "Invalid job ID ''",
        "Parameter 'speed' expects a non-negative value",
        "max-workers must be between 1 and 2147483647",
        "Required max-chunk (4096) is less than backup cluster size (65536)",
        "Could not create node: Duplicate nodes with node-name='backup_target'",
        "Could not create node: Invalid node-name: '1bad'",
        sizes, nosuch]]
    # Only the bad speed is found once the job exists: created, then null.
    assert [e[4] for e in log[:-1]].count([]) == len(log) - 2
    assert [(n, data["status"]) for n, data in log[10][4]] == [
        ("JOB_STATUS_CHANGE", "created"), ("JOB_STATUS_CHANGE", "null")]
    assert statuses(log[-1][1])[-4:] == ["pending", "BLOCK_JOB_COMPLETED", "concluded", "null"]
    if kind != "qsd":
        assert log == argument_errors(workdir, daemons, "qsd")


def busy(workdir, daemons, kind):
    """A backup running at 64 KiB/s from bitmap0 (persistent, 16 MiB dirty,
    written by qemu-io), while commands that need its bitmap, target or ID
    fail; a second backup of the source runs beside it."""
    d, base = start_daemon(workdir, kind, daemons)
    img = image(base, "img.qcow2", SIZE)
    run(["qemu-img", "bitmap", "--add", "-g", str(GRAN), img, "bitmap0"])
    qemu_io(img, "write -P 0x5a 0 16M")
    add_qcow2(d, "drive0", img)
    d.ok("block-dirty-bitmap-add", node="drive0", name="bitmap1", granularity=GRAN)
    for name in ("tgt", "t2", "t3"):
        add_qcow2(d, name, image(base, f"{name}.qcow2", SIZE))
    before = bitmap_view(d, "drive0")
    d.ok("blockdev-backup", **{"job-id": "j", "device": "drive0", "target": "tgt",
                               "sync": "bitmap", "bitmap": "bitmap0",
                               "bitmap-mode": "on-success", "speed": 64 * 1024})
    d.wait_event("JOB_STATUS_CHANGE", "j", "running")
    during = bitmap_view(d, "drive0")
    s = Script(d, base, running={"j"})
    s.log.append(("during", during))
    s.fail("blockdev-backup", **{"job-id": "j", "device": "drive0", "target": "t2",
                                 "sync": "full"})
    s.fail("blockdev-backup", **{"job-id": "k", "device": "drive0", "target": "tgt",
                                 "sync": "full"})
    for mode in ("never", "on-success", "always"):
        s.fail("blockdev-backup", **{"job-id": "k", "device": "drive0", "target": "t2",
                                     "sync": "bitmap", "bitmap": "bitmap0",
                                     "bitmap-mode": mode})
    s.fail("blockdev-backup", **{"job-id": "k", "device": "drive0", "target": "t2",
                                 "sync": "incremental", "bitmap": "bitmap0"})
    for cmd in ("block-dirty-bitmap-clear", "block-dirty-bitmap-remove",
                "block-dirty-bitmap-disable", "block-dirty-bitmap-enable"):
        s.fail(cmd, node="drive0", name="bitmap0")
    s.fail("block-dirty-bitmap-merge", node="drive0", target="bitmap1", bitmaps=["bitmap0"])
    s.fail("block-dirty-bitmap-merge", node="drive0", target="bitmap0", bitmaps=["bitmap1"])
    s.fail("blockdev-del", **{"node-name": "tgt"})
    s.fail("blockdev-del", **{"node-name": "drive0"})
    # Another backup of the same source, with another bitmap, is fine.
    d.ok("blockdev-backup", **{"job-id": "k", "device": "drive0", "target": "t2",
                               "sync": "bitmap", "bitmap": "bitmap1", "bitmap-mode": "never"})
    wait_null(d, "k")
    d.ok("job-cancel", id="j")
    wait_null(d, "j")
    after = bitmap_view(d, "drive0")
    d.ok("block-dirty-bitmap-clear", node="drive0", name="bitmap0")  # free again
    s.log += [("after", after), ("k", job_record(d, "k")),
              ("j", [e for e in job_record(d, "j", progress=False)
                     if e[1].get("status") not in ("paused", "running")])]
    d.quit()
    return before, s.log


@pytest.mark.parametrize("kind", KINDS)
def test_running_backup_makes_its_bitmap_target_and_id_busy(workdir, daemons, kind):
    before, log = busy(workdir, daemons, kind)
    named = {b["name"]: b for b in before}
    assert named["bitmap0"]["count"] == 16 * MiB and named["bitmap0"]["persistent"]
    during = dict((e[0], e[1]) for e in log if len(e) == 2)["during"]
    assert [(b.get("name"), b["busy"], b["recording"]) for b in during] == [
        (None, False, True), ("bitmap0", True, True), ("bitmap1", False, True)]
    assert [b["count"] for b in during if b.get("name") == "bitmap0"] == [16 * MiB]
    busy_msg = "Bitmap 'bitmap0' is currently in use by another operation and cannot be used"
    descs = [e[3] for e in log if len(e) == 5]
    assert descs[0] == "Job ID 'j' already in use"
    assert descs[1] == "Node 'tgt' is busy: block device is in use by block job: backup"
    assert descs[2:12] == [busy_msg] * 10
    # Cancelled: bitmap0 as before the job (on-success), not busy.
    assert dict((e[0], e[1]) for e in log if len(e) == 2)["after"] == before
    if kind != "qsd":
        assert (before, log) == busy(workdir, daemons, "qsd")


def transactions(workdir, daemons, kind):
    d, base = setup_257(workdir, daemons, kind)
    add_qcow2(d, "t2", image(base, "t2.qcow2", SIZE))
    s = Script(d, base)
    backup = lambda **a: {"type": "blockdev-backup", "data": {  # noqa: E731
        "device": "drive0", "target": "backup_target", "sync": "full", **a}}
    add = {"type": "block-dirty-bitmap-add", "data": {"node": "drive0", "name": "x"}}
    s.fail("transaction", actions=[add, backup(**{"job-id": "a"})],
           properties={"completion-mode": "grouped"})
    s.fail("transaction", actions=[backup(**{"job-id": "a"}),
                                   backup(**{"job-id": "a", "target": "t2"})])
    s.fail("transaction", actions=[backup(**{"job-id": "a"}), backup(**{"job-id": "b"})])
    s.fail("transaction", actions=[add, backup(**{"job-id": "a", "sync": "incremental",
                                                  "bitmap": "x"}),
                                   {"type": "abort", "data": {}}])
    s.fail("transaction", actions=[add, backup(**{"job-id": "a", "sync": "incremental"})])
    s.fail("transaction", actions=[backup(**{"job-id": "a", "target": "t2"}),
                                   backup(**{"job-id": "b", "device": "nosuch"})],
           properties={"completion-mode": "grouped"})
    d.quit()
    return s.log


@pytest.mark.parametrize("kind", KINDS)
def test_transactions_with_backups_roll_back(workdir, daemons, kind):
    log = transactions(workdir, daemons, kind)
    descs = [e[3] for e in log]
    assert descs == [
        "Action 'block-dirty-bitmap-add' does not support Transaction property "
        "completion-mode = grouped",
        "Job ID 'a' already in use",
        "Node 'backup_target' is busy: block device is in use by block job: backup",
        "Transaction aborted using Abort action",
        "must provide a valid bitmap name for 'incremental' sync mode",
        "Cannot find device='nosuch' nor node-name='nosuch'",
    ]
    # A job made before the failing action is aborted: its events.
    for e in log[1:4] + log[5:]:
        assert [(n, data["status"]) for n, data in e[4]] == [
            ("JOB_STATUS_CHANGE", s) for s in ("created", "aborting", "concluded", "null")]
    if kind != "qsd":
        assert log == transactions(workdir, daemons, "qsd")


def drive_backup_errors(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    img = image(base, "img.qcow2", SIZE)
    add_qcow2(d, "drive0", img)
    image(base, "small.qcow2", 32 * MiB)
    s = Script(d, base)
    ok = {"job-id": "dd", "device": "drive0", "sync": "full", "format": "qcow2"}
    for n, change in enumerate([
            {"mode": "existing"},
            {"format": "bogus"},
            {"target": os.path.join(base, "nodir", "new.qcow2")},
            {"device": "nosuch"},
            {"target": img, "mode": "existing"},
            {"target": os.path.join(base, "small.qcow2"), "mode": "existing"},
            {"target": os.path.join(base, "small.qcow2"), "mode": "existing",
             "format": "raw"},
            {"sync": "incremental"},
            {"speed": -1},
            {"job-id": "1bad"},
            {"sync": "bitmap", "bitmap": "nosuch", "bitmap-mode": "never"}]):
        args = {**ok, "target": os.path.join(base, f"new{n}.qcow2"), **change}
        s.fail("drive-backup", **args)
    files = sorted(f for f in os.listdir(base) if f.endswith(".qcow2"))
    d.quit()
    return [(cmd, {k: v.replace(base, "DIR") if isinstance(v, str) else v
                   for k, v in args.items()}, cls, desc, events)
            for cmd, args, cls, desc, events in s.log], files


@pytest.mark.parametrize("kind", KINDS)
def test_drive_backup_errors(workdir, daemons, kind):
    log, files = drive_backup_errors(workdir, daemons, kind)
    assert [e[3] for e in log] == [
        "Could not open 'DIR/new0.qcow2': No such file or directory",
        "Unknown file format 'bogus'",
        "Could not create 'DIR/nodir/new.qcow2': No such file or directory",
        "Cannot find device='nosuch' nor node-name='nosuch'",
        'Failed to get "write" lock',
        "Source and target image have different sizes",
        "Source and target image have different sizes",
        "must provide a valid bitmap name for 'incremental' sync mode",
        "Parameter 'speed' expects a non-negative value",
        "Invalid job ID '1bad'",
        "Bitmap 'nosuch' could not be found"]
    # The image is made first: errors found later leave it behind.
    assert files == ["img.qcow2", "new10.qcow2", "new7.qcow2", "new8.qcow2", "new9.qcow2",
                     "small.qcow2"]
    if kind != "qsd":
        assert (log, files) == drive_backup_errors(workdir, daemons, "qsd")
