"""Push backups as users run them, with a guest writing through an NBD
export of the disk while the jobs run and a model of what it wrote at each
point in time. A backup is the disk as it was at the job's start whatever
the guest writes during the job (the copy-before-write filter copies old
data out first).

(a) A full backup into FullBackup.qcow2 in the same transaction as the
    bitmap's creation, then two sync=incremental backups, each into a qcow2
    whose backing file is the previous backup: each incremental holds
    exactly the granules written since the one before (qemu-img map), the
    top of the chain reads as the disk at its job's start (qemu-img
    compare against the model), and the bitmap counts exactly the writes
    since the last job's start.
(b) A grouped two-disk incremental backup (`completion-mode: grouped`),
    one disk's target failing mid-job: that job fails with a write error
    (BLOCK_JOB_ERROR report), the other is cancelled (BLOCK_JOB_CANCELLED),
    both bitmaps keep their old point in time plus the new writes; the
    rerun succeeds and each new incremental holds every granule written
    since the full backups, reading as the disk at the rerun's start.
(c) drive-backup into a file it makes (mode absolute-paths; format qcow2
    and raw; sync full, and top, whose image is backed by the source's
    backing file) or one that exists (mode existing): qemu-img info of
    what it made, the contents against the model, the granules a sync=top
    backup holds.

The guest's writes are seeded and synchronous, so the granules written,
the bitmap counts and the jobs' lengths are the same on both daemons: for
stratad the record must be qemu-storage-daemon's."""
import json
import os

import nbd
import pytest

from conftest import run
from backup_util import (GRAN, add_qcow2, allocated_granules, bitmap_view, check, count,
                         daemons, export, fail_once, image, job_record, same,  # noqa: F401
                         start_daemon, statuses, wait_null, write_model)
from job_util import KINDS, MiB, chain, qemu_io, read_image, start  # noqa: F401
from test_job_mirror_bitmaps import RecordingGuest

SIZE = 64 * MiB


def source(d, base, name, seed):
    """A qcow2 disk `name` with some data, opened and exported; returns a
    guest writing to it (its model starts as the disk)."""
    path = image(base, f"{name}.qcow2", SIZE)
    qemu_io(path, f"write -P {seed:#x} 0 3M", f"write -P {seed + 1:#x} 40M 2M",
            "write -z 1M 512k")
    initial = read_image(path)
    add_qcow2(d, name, path)
    return RecordingGuest(export(d, base, name), name, initial, seed=seed), path


def writes(guest, n):
    """n seeded writes (one in ten of zeroes), done when it returns."""
    for _ in range(n):
        guest.random_write()


def backup(job, device, target, sync, **extra):
    return {"type": "blockdev-backup", "data": {"job-id": job, "device": device,
                                                "target": target, "sync": sync, **extra}}


def incremental_chain(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    guest, disk = source(d, base, "drive0", 0x21)
    writes(guest, 50)
    full = image(base, "FullBackup.qcow2", SIZE)
    add_qcow2(d, "full", full)
    record, models, dirty, paths = [], [bytes(guest.model)], [], [full]
    mark = len(d.qmp.events)
    d.ok("transaction", actions=[
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "drive0", "name": "bitmap0", "granularity": GRAN}},
        backup("full", "drive0", "full", "full", speed=32 * MiB)])
    guest.granules.clear()
    writes(guest, 120)  # while the full backup runs
    wait_null(d, "full", since=mark)
    record.append(("full", job_record(d, "full")))
    for n in (1, 2):
        models.append(bytes(guest.model))
        dirty.append(set(guest.granules))
        guest.granules.clear()
        record.append((f"before {n}", bitmap_view(d, "drive0")))
        assert count(d, "drive0", "bitmap0") == len(dirty[-1])
        path = image(base, f"Incremental{n}.qcow2", SIZE,
                     backing=os.path.basename(paths[-1]))
        paths.append(path)
        add_qcow2(d, f"inc{n}", path)
        mark = len(d.qmp.events)
        d.ok("blockdev-backup", **{"job-id": f"inc{n}", "device": "drive0",
                                   "target": f"inc{n}", "sync": "incremental",
                                   "bitmap": "bitmap0", "speed": 4 * MiB})
        writes(guest, 80)
        wait_null(d, f"inc{n}", since=mark)
        record.append((f"inc{n}", job_record(d, f"inc{n}")))
    record.append(("after", bitmap_view(d, "drive0")))
    assert count(d, "drive0", "bitmap0") == len(guest.granules)
    assert guest.read(0, SIZE) == bytes(guest.model)
    guest.close()
    d.quit()
    check(disk)
    assert read_image(disk) == guest.model
    return record, paths, models, dirty, base


@pytest.mark.parametrize("kind", KINDS)
def test_full_then_two_incrementals_in_a_backing_chain(workdir, daemons, kind):
    record, paths, models, dirty, base = incremental_chain(workdir, daemons, kind)
    for n, path in enumerate(paths):
        check(path)
        assert (n, same(path, write_model(os.path.join(base, f"model{n}.raw"),
                                          models[n]))) == (n, True)
        if n:
            assert allocated_granules(path) == dirty[n - 1]
            assert dirty[n - 1] and len(dirty[n - 1]) < SIZE // GRAN // 4
    for name, events in record:
        if name in ("full", "inc1", "inc2"):
            assert statuses(events) == ["created", "running", "paused", "running", "waiting",
                                        "pending", "BLOCK_JOB_COMPLETED", "concluded", "null"]
            done = events[-3][1]
            assert done["len"] == done["offset"] == (
                SIZE if name == "full" else len(dirty[int(name[-1]) - 1]) * GRAN)
    if kind != "qsd":
        assert record == incremental_chain(workdir, daemons, "qsd")[0]


def data_granule(guest, granules):
    """A granule from the middle of `granules` whose data is not all zeroes
    (the backup writes zero granules as zeroes, which a write rule does not
    match)."""
    data = [g for g in sorted(granules)
            if guest.model[g * GRAN:(g + 1) * GRAN] != bytes(GRAN)]
    return data[len(data) // 2]


def grouped(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    guests, fulls, record = {}, {}, []
    for i, disk in enumerate(("drive0", "drive1")):
        guests[disk], _ = source(d, base, disk, 0x31 + 0x10 * i)
        writes(guests[disk], 30)
        fulls[disk] = image(base, f"Full-{disk}.qcow2", SIZE)
        add_qcow2(d, f"full-{disk}", fulls[disk])
    mark = len(d.qmp.events)
    d.ok("transaction", actions=[
        {"type": "block-dirty-bitmap-add", "data": {"node": "drive0", "name": "b0"}},
        {"type": "block-dirty-bitmap-add", "data": {"node": "drive1", "name": "b1"}},
        backup("full0", "drive0", "full-drive0", "full"),
        backup("full1", "drive1", "full-drive1", "full")])
    models = {disk: bytes(g.model) for disk, g in guests.items()}
    for g in guests.values():
        g.granules.clear()
        writes(g, 60)
    for job in ("full0", "full1"):
        wait_null(d, job, since=mark)
    bitmaps = {"drive0": "b0", "drive1": "b1"}
    before = {disk: set(g.granules) for disk, g in guests.items()}
    for disk, g in guests.items():
        assert count(d, disk, bitmaps[disk]) == len(g.granules)
        add_qcow2(d, f"inc-{disk}", image(base, f"Inc-{disk}.qcow2", SIZE,
                                          backing=os.path.basename(fulls[disk])))
    # drive1's target fails the write of a granule in the middle.
    bad = data_granule(guests["drive1"], before["drive1"])
    d.ok("blockdev-add", **fail_once(kind, "inc-drive1-err", "inc-drive1", "write",
                                     bad * GRAN))
    mark = len(d.qmp.events)
    d.ok("transaction", properties={"completion-mode": "grouped"}, actions=[
        backup("inc0", "drive0", "inc-drive0", "incremental", bitmap="b0", speed=MiB),
        backup("inc1", "drive1", "inc-drive1-err", "incremental", bitmap="b1",
               **{"x-perf": {"max-workers": 1}})])
    writes(guests["drive0"], 40)  # while drive0's job runs (drive1's stays put)
    for job in ("inc0", "inc1"):
        wait_null(d, job, since=mark)
    writes(guests["drive1"], 40)
    for disk, g in guests.items():
        record.append((f"failed {disk}", bitmap_view(d, disk)))
        assert count(d, disk, bitmaps[disk]) == len(g.granules)  # old plus new writes
    for job in ("inc0", "inc1"):
        record.append((job, job_record(d, job, progress=False, since=mark)))
    # The rerun, into new images.
    targets = {}
    for disk in guests:
        targets[disk] = image(base, f"Inc2-{disk}.qcow2", SIZE,
                              backing=os.path.basename(fulls[disk]))
        add_qcow2(d, f"inc2-{disk}", targets[disk])
    rerun = {disk: (bytes(g.model), set(g.granules)) for disk, g in guests.items()}
    for g in guests.values():
        g.granules.clear()
    mark = len(d.qmp.events)
    d.ok("transaction", properties={"completion-mode": "grouped"}, actions=[
        backup("rerun0", "drive0", "inc2-drive0", "incremental", bitmap="b0"),
        backup("rerun1", "drive1", "inc2-drive1", "incremental", bitmap="b1")])
    for g in guests.values():
        writes(g, 40)
    for job in ("rerun0", "rerun1"):
        wait_null(d, job, since=mark)
        record.append((job, job_record(d, job, since=mark)))
    for disk, g in guests.items():
        record.append((f"rerun {disk}", bitmap_view(d, disk)))
        assert count(d, disk, bitmaps[disk]) == len(g.granules)
        assert g.read(0, SIZE) == bytes(g.model)
        g.close()
    d.quit()
    return record, fulls, models, targets, rerun, base


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_backup_of_two_disks_one_target_failing(workdir, daemons, kind):
    record, fulls, models, targets, rerun, base = grouped(workdir, daemons, kind)
    events = dict(record)
    # drive1's job meets the write error and fails; drive0's is cancelled.
    assert [e for e in events["inc1"] if e[0] == "BLOCK_JOB_ERROR"] == [
        ("BLOCK_JOB_ERROR", {"device": "inc1", "operation": "write", "action": "report"})]
    assert statuses(events["inc1"])[-4:] == ["aborting", "BLOCK_JOB_COMPLETED", "concluded",
                                             "null"]
    assert events["inc1"][-3][1]["error"] == "Input/output error"
    assert statuses(events["inc0"])[-4:] == ["aborting", "BLOCK_JOB_CANCELLED", "concluded",
                                             "null"]
    for job in ("rerun0", "rerun1"):
        assert statuses(events[job])[-5:] == ["waiting", "pending", "BLOCK_JOB_COMPLETED",
                                              "concluded", "null"]
    for disk in ("drive0", "drive1"):
        model = write_model(os.path.join(base, f"full-{disk}.raw"), models[disk])
        assert same(fulls[disk], model)
        check(targets[disk])
        assert allocated_granules(targets[disk]) == rerun[disk][1]
        model = write_model(os.path.join(base, f"rerun-{disk}.raw"), rerun[disk][0])
        assert same(targets[disk], model)
    if kind != "qsd":
        assert record == grouped(workdir, daemons, "qsd")[0]


def info(path):
    i = json.loads(run(["qemu-img", "info", "--output=json", "-U", path]).stdout)
    out = {k: i.get(k) for k in ("format", "virtual-size", "cluster-size",
                                 "backing-filename-format")}
    if "backing-filename" in i:
        name = i["backing-filename"]
        if name.startswith("json:"):
            # QEMU names a backing node opened with explicit options by a
            # json: pseudo-filename (test_job_drive_mirror_differential.py):
            # the file it opens.
            name = json.loads(name[5:])["file"]["filename"]
        assert os.path.isabs(name), i
        out["backing"] = os.path.basename(name)
    if i["format"] == "qcow2":
        out["qcow2"] = i["format-specific"]["data"]
    return out


def drive_backups(workdir, start, chain, kind):
    d, paths = start(kind)
    base = os.path.dirname(paths["top"])
    guest = RecordingGuest(export(d, base, "top"), "top", read_image(chain["top"]), seed=0x41)
    top_layer = allocated_granules(chain["top"])
    existing = image(base, "existing.qcow2", SIZE, backing=paths["mid"])
    runs = [("full.qcow2", {"sync": "full", "format": "qcow2"}),
            ("top-backup.qcow2", {"sync": "top", "format": "qcow2", "mode": "absolute-paths"}),
            ("full.raw", {"sync": "full", "format": "raw"}),
            ("existing.qcow2", {"sync": "top", "format": "qcow2", "mode": "existing"})]
    record, results = [], []
    for n, (name, args) in enumerate(runs):
        model, written = bytes(guest.model), set(guest.granules)
        mark = len(d.qmp.events)
        d.ok("drive-backup", **{"job-id": f"d{n}", "device": "top",
                                "target": os.path.join(base, name), "speed": 32 * MiB, **args})
        writes(guest, 40)
        wait_null(d, f"d{n}", since=mark)
        record.append((name, job_record(d, f"d{n}", since=mark)))
        results.append((name, model, written | top_layer))
    assert guest.read(0, SIZE) == bytes(guest.model)
    guest.close()
    d.quit()
    for name, model, layer in results:
        path = os.path.join(base, name)
        record.append((name, info(path)))
        fmt = "raw" if name.endswith(".raw") else "qcow2"
        assert (name, read_image(path, fmt) == model) == (name, True)
        if fmt == "qcow2":
            check(path)
        if name in ("top-backup.qcow2", "existing.qcow2"):
            assert allocated_granules(path) == layer
    return record


@pytest.mark.parametrize("kind", KINDS)
def test_drive_backup_into_files_it_makes_or_finds(workdir, chain, start, kind):
    record = drive_backups(workdir, start, chain, kind)
    infos = {name: i for name, i in record if name.endswith(("qcow2", "raw")) and "format" in i}
    assert infos["full.qcow2"]["format"] == "qcow2" and "backing" not in infos["full.qcow2"]
    top = infos["top-backup.qcow2"]
    assert (top["backing"], top["backing-filename-format"]) == ("mid.qcow2", "qcow2")
    assert infos["full.raw"]["format"] == "raw"
    assert all(i["virtual-size"] == SIZE for i in infos.values())
    for name, events in record:
        if isinstance(events, list):
            assert statuses(events)[-5:] == ["waiting", "pending", "BLOCK_JOB_COMPLETED",
                                             "concluded", "null"]
    if kind != "qsd":
        assert record == drive_backups(workdir, start, chain, "qsd")


def fleecing(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    guest, disk = source(d, base, "drive0", 0x51)
    writes(guest, 30)
    temp = image(base, "fleece.qcow2", SIZE, backing=os.path.basename(disk))
    add_qcow2(d, "fleece", temp, backing="drive0")
    model = bytes(guest.model)
    guest.granules.clear()
    mark = len(d.qmp.events)
    d.ok("blockdev-backup", **{"job-id": "fleece", "device": "drive0", "target": "fleece",
                               "sync": "none"})
    d.ok("block-export-add", type="nbd", id="fleece-export", name="fleece",
         **{"node-name": "fleece"})
    writes(guest, 80)
    h = nbd.NBD()
    h.set_export_name("fleece")
    h.connect_unix(os.path.join(base, "nbd.sock"))
    snapshot = b"".join(h.pread(16 * MiB, off) for off in range(0, SIZE, 16 * MiB))
    h.shutdown()
    written = set(guest.granules)
    d.ok("job-cancel", id="fleece")
    wait_null(d, "fleece", since=mark)
    d.ok("block-export-del", id="fleece-export")
    d.wait_event("BLOCK_EXPORT_DELETED")
    d.ok("blockdev-del", **{"node-name": "fleece"})
    assert guest.read(0, SIZE) == bytes(guest.model)
    guest.close()
    record = [("fleece", job_record(d, "fleece", progress=False, since=mark)),
              ("bitmaps", bitmap_view(d, "drive0"))]
    d.quit()
    check(temp)
    return record, snapshot == model, allocated_granules(temp), written


@pytest.mark.parametrize("kind", KINDS)
def test_fleecing_export_reads_the_point_in_time(workdir, daemons, kind):
    record, snapshot_ok, held, written = fleecing(workdir, daemons, kind)
    assert snapshot_ok
    assert held == written and written
    assert statuses(record[0][1])[-4:] == ["aborting", "BLOCK_JOB_CANCELLED", "concluded",
                                           "null"]
    if kind != "qsd":
        assert record == fleecing(workdir, daemons, "qsd")[0]
