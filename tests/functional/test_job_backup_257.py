"""QEMU's iotest 257 (bitmap-sync backups) against both daemons: bitmap-mode
{on-success, never, always} x sync {bitmap, full, top} x outcome {success,
cancel while PENDING (auto-finalize off), an I/O error mid-job}, as 257's
main() runs it (sync full and top refuse bitmap-mode never: see
test_job_backup_api.py).

Per cell, as 257: a 64 MiB qcow2 `drive0`; a guest writes 257's pattern
groups through an NBD export of it (keeping a model of the disk); group 0;
bitmap0 (64 KiB) added; group 1; backup #1 (`backup-top` filter, max-workers
1, auto-finalize off) into a fresh qcow2 target; at PENDING, group 2 written
(through the filter), with bitmap0 still as at the job's start and the
anonymous successor recording exactly group 2; finalize or cancel; group 3;
backup #2 (sync bitmap) finalized. The named bitmap's count is checked
after every step against 257's emulated bitmap, including the partial
clearing of `always` after the error (one cluster copied before it; sync
full leaves everything from the failed cluster on dirty, top every
allocated cluster).

The error: the read of the second data cluster the job copies (guest
cluster 15) fails once, from a filter put under drive0 (blockdev-reopen
with a new file child) just before backup #1: blkdebug on QSD, the fault
filter on stratad (`fail_once`).

Afterwards, as 257's verification: backup #1 rebased onto the disk as it
was after group 0 reads as the disk at its start (not after the error);
backup #2 rebased onto backup #1 (or onto group 0's disk when #1 is not
kept) and the source read as the disk after group 3; a sync-bitmap target
holds exactly the granules of the bitmap it was made from (qemu-img map).
For stratad the whole record (bitmap queries, events with len and offset)
must be QSD's."""
import os

import pytest

from conftest import run
from backup_util import (GRAN, add_qcow2, allocated_granules, bitmap_view, check, count,
                         daemons, export, fail_once, host_offset, image, job_record,  # noqa: F401
                         same, start_daemon, statuses, wait_null, write_model)
from job_util import KINDS, MiB, Guest

SIZE = 64 * MiB
CLUSTERS = SIZE // GRAN

# 257's pattern groups: (byte, offset, size).
GROUPS = [
    [(0x49, 0x0000000, GRAN), (0x6c, 0x0100000, GRAN), (0x6f, 0x2000000, GRAN),
     (0x76, 0x3ff0000, GRAN)],
    [(0x65, 0x0000000, GRAN), (0x77, 0x00f8000, GRAN), (0x72, 0x2008000, GRAN),
     (0x69, 0x3fe0000, GRAN)],
    [(0x74, 0x0010000, GRAN), (0x69, 0x00e8000, GRAN), (0x6e, 0x2018000, GRAN),
     (0x67, 0x3fe0000, 2 * GRAN)],
    [(0xaa, 0x0010000, 3 * GRAN), (0xbb, 0x00d8000, GRAN), (0xcc, 0x2028000, GRAN),
     (0xdd, 0x3fc0000, GRAN)],
]

# The error hits the second data cluster a backup reads: guest cluster 15
# (group 1's partial-left write; clusters 1..14 were never written).
FAILING_CLUSTER = 15


# Events of a backup (JOB_STATUS_CHANGE as the status): QEMU's job pauses
# and resumes once at its start (the drain of the command that made it).
STARTED = ["created", "running", "paused", "running"]
ENDS = {
    None: ["waiting", "pending", "BLOCK_JOB_PENDING", "BLOCK_JOB_COMPLETED", "concluded", "null"],
    "simulated": ["waiting", "pending", "BLOCK_JOB_PENDING", "aborting", "BLOCK_JOB_CANCELLED",
                  "concluded", "null"],
    "intermediate": ["BLOCK_JOB_ERROR", "aborting", "BLOCK_JOB_COMPLETED", "concluded", "null"],
}


def group_bits(n):
    bits = set()
    for _, offset, size in GROUPS[n]:
        bits.update(range(offset // GRAN, (offset + size - 1) // GRAN + 1))
    return bits


CELLS = ([("bitmap", mode, failure) for mode in ("never", "on-success", "always")
          for failure in ("simulated", "intermediate", None)] +
         [(sync, mode, failure) for sync in ("full", "top") for mode in ("on-success", "always")
          for failure in ("simulated", "intermediate", None)])


def write_group(guest, n):
    for byte, offset, size in GROUPS[n]:
        guest.write(offset, bytes([byte]) * size)


def add_target(d, base, n):
    path = image(base, f"bsync{n}.qcow2", SIZE)
    add_qcow2(d, f"backup_target_{n}", path)
    return path


def backup(d, n, sync, mode):
    d.ok("blockdev-backup", **{"job-id": f"backup_{n}", "device": "drive0",
                               "target": f"backup_target_{n}", "sync": sync,
                               "bitmap": "bitmap0", "bitmap-mode": mode,
                               "filter-node-name": "backup-top",
                               "x-perf": {"max-workers": 1}, "auto-finalize": False})


def run_cell(workdir, daemons, kind, sync, mode, failure):
    """257's test_bitmap_sync on one daemon; returns (record, paths, models,
    expected bitmap counts)."""
    d, base = start_daemon(workdir, kind, daemons)
    img = image(base, "img.qcow2", SIZE)
    add_qcow2(d, "drive0", img)
    guest = Guest(export(d, base, "drive0"), "drive0", bytearray(SIZE))
    record = []
    seen = {}  # label -> (named bitmap count in granules, expected)

    def note(label, expected):
        view = bitmap_view(d, "drive0")
        record.append((label, view))
        seen[label] = (count(d, "drive0", "bitmap0"), len(expected))

    write_group(guest, 0)
    model0 = bytes(guest.model)
    d.ok("block-dirty-bitmap-add", node="drive0", name="bitmap0", granularity=GRAN)
    ebitmap = set()
    write_group(guest, 1)
    ebitmap |= group_bits(1)
    note("write #1", ebitmap)
    model1 = bytes(guest.model)

    if failure == "intermediate":
        guest.h.flush()
        host = host_offset(img, FAILING_CLUSTER * GRAN)
        d.ok("blockdev-add", **fail_once(kind, "drive0-err", "drive0-file", "read", host))
        d.ok("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "drive0",
                                          "file": "drive0-err", "backing": None}])
    bsync1 = add_target(d, base, 1)
    backup(d, 1, sync, mode)
    bits1 = set(ebitmap)
    if failure == "intermediate":
        wait_null(d, "backup_1")
        if mode == "always":
            if sync == "top":
                ebitmap |= group_bits(0)  # top: every allocated cluster is dirty
            ebitmap.discard(min(ebitmap))  # one cluster copied before the error
            if sync == "full":
                first = min(ebitmap)
                ebitmap = set(range(first, CLUSTERS))
    else:
        d.wait_event("BLOCK_JOB_PENDING", "backup_1")
        write_group(guest, 2)  # through backup-top
        record.append(("pending", bitmap_view(d, "drive0")))
        anonymous = [b for b in bitmap_view(d, "drive0") if "name" not in b]
        assert [(b["count"] // GRAN, b["recording"]) for b in anonymous] == [(7, True)]
        assert count(d, "drive0", "bitmap0") == len(ebitmap)
        if failure == "simulated":
            d.ok("job-cancel", id="backup_1")
        else:
            d.ok("job-finalize", id="backup_1")
        wait_null(d, "backup_1")
        if (mode == "on-success" and not failure) or mode == "always":
            ebitmap = set()
        ebitmap |= group_bits(2)
    note("backup #1", ebitmap)

    write_group(guest, 3)
    ebitmap |= group_bits(3)
    note("write #3", ebitmap)
    bits2 = set(ebitmap)
    bsync2 = add_target(d, base, 2)
    backup(d, 2, "bitmap", mode)
    d.wait_event("BLOCK_JOB_PENDING", "backup_2")
    d.ok("job-finalize", id="backup_2")
    wait_null(d, "backup_2")
    if mode != "never":
        ebitmap = set()
    note("backup #2", ebitmap)
    d.ok("block-dirty-bitmap-remove", node="drive0", name="bitmap0")
    record.append(("removed", bitmap_view(d, "drive0")))
    model2 = bytes(guest.model)
    assert guest.read(0, SIZE) == model2
    guest.close()
    record += [("events backup_1", job_record(d, "backup_1")),
               ("events backup_2", job_record(d, "backup_2"))]
    d.quit()
    paths = {"img": img, "bsync1": bsync1, "bsync2": bsync2}
    models = {n: write_model(os.path.join(base, f"model{n}.raw"), m)
              for n, m in ((0, model0), (1, model1), (2, model2))}
    return record, seen, paths, models, (bits1, bits2)


def verify_images(sync, mode, failure, paths, models, bits):
    """257's verification, plus qemu-img check and map."""
    for p in paths.values():
        check(p)
    if sync == "bitmap" and failure != "intermediate":
        assert allocated_granules(paths["bsync1"]) == bits[0]
    assert allocated_granules(paths["bsync2"]) == bits[1]
    run(["qemu-img", "rebase", "-u", "-b", models[0], "-F", "raw", paths["bsync1"]])
    assert same(paths["bsync1"], models[1]) == (failure != "intermediate")
    if not failure or mode == "always":
        run(["qemu-img", "rebase", "-u", "-b", paths["bsync1"], "-F", "qcow2",
             paths["bsync2"]])
    else:
        run(["qemu-img", "rebase", "-u", "-b", models[0], "-F", "raw", paths["bsync2"]])
    assert same(paths["bsync2"], models[2])
    assert same(paths["img"], models[2])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync,mode,failure", CELLS)
def test_bitmap_sync(workdir, daemons, kind, sync, mode, failure):
    record, seen, paths, models, bits = run_cell(workdir, daemons, kind, sync, mode, failure)
    for label, (have, want) in seen.items():
        assert (label, have) == (label, want)
    events = dict(record)
    assert statuses(events["events backup_1"]) == STARTED + ENDS[failure]
    assert statuses(events["events backup_2"]) == STARTED + ENDS[None]
    if failure == "intermediate":
        error, completed = events["events backup_1"][-5][1], events["events backup_1"][-3][1]
        assert (error["operation"], error["action"]) == ("read", "report")
        assert completed["error"] == "Input/output error"
    verify_images(sync, mode, failure, paths, models, bits)
    if kind != "qsd":
        ref = run_cell(workdir, daemons, "qsd", sync, mode, failure)[0]
        assert record == ref
