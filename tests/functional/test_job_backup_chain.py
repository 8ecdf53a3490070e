"""Incremental backups across checkpoints and layers: two pictures of the
seed talk that test_job_backup_seed.py does not draw, and QEMU iotest 124's
bitmap granularities, each QMP script run on stratad and on
qemu-storage-daemon.

(a) "Initial qemu pull-mode differential backup": a full backup in the same
    transaction as bitmap b0; the guest writes B; at the next checkpoint b0
    is disabled and b1 added in one transaction, and a pull-mode backup of
    b0 (a copy-before-write filter keeping b0's clusters over a temporary
    image, read through snapshot-access and exported over NBD with the
    bitmap) makes IncBackup1 while the guest writes C. Then a temporary
    bitmap t = b0 | b1 (added disabled, then merged) gives DiffBackup
    (backed by FullBackup) and b1 alone IncBackup2 (backed by IncBackup1),
    both from one point in time while the guest keeps writing: a libnbd
    client reads only the extents qemu:dirty-bitmap:t (or :b1) marks.
(b) "Mixing backups with external snapshots": Base.qcow2 with persistent
    b0 from the full backup; the guest writes B; an external snapshot onto
    Overlay.qcow2 in one transaction with b0 on the overlay; the guest
    writes C; IncBackup1 from t = base's b0 | overlay's b0 in the same
    transaction as the overlay's new b1; the guest writes D; an active
    block-commit of the overlay, with b1 added on the base and merged from
    the overlay's before the pivot (the way libvirt carries bitmaps over a
    commit; that transaction drains every node, so the ready job goes to
    standby and back, as in QEMU). Then the base's b0 marks B, C and D (it
    recorded the commit's writes), its b1 only D, and an incremental backup
    of b1 holds only D while the guest writes E. After shutdown both images
    store their bitmaps with those granules (qemu-img info, qemu-nbd).
(c) iotest 124's test_incremental_simple with bitmap granularity 32, 64 and
    128 KiB, on images whose cluster size differs from it: a hollow
    incremental, then two rounds of writes, each incremental holding the
    clusters the bitmap marked, rounded out to the backup's cluster size.

The slides' eight squares are eight 8 MiB cells of a 64 MiB disk; a letter
in a square is that byte written at the same spots of the cell (a whole
cluster, 8 KiB inside one, 100 KiB over a cluster boundary), so a later
letter covers exactly the granules of an earlier one. Every backup is
compared with a model of the disk at its point in time (qemu-img compare)
and holds exactly the granules expected (qemu-img map); for stratad the
record of bitmaps (counts, sha256) and job events must be
qemu-storage-daemon's."""
import json
import os
import time

import nbd
import pytest

from conftest import run
from backup_util import (GRAN, add_qcow2, bitmap_view, check, daemons, export,  # noqa: F401
                         job_record, same, start_daemon, statuses, wait_null, write_model)
from job_util import KINDS, MiB, Guest, qemu_io, read_image
from nbd_extents import flagged_extents
from test_bitmap_persist import dirty_map, dirty_ranges, qemu_info_bitmaps
from test_job_mirror_bitmaps import RecordingGuest

KiB = 1024
SIZE = 64 * MiB
CELL = SIZE // 8
SPOTS = [(0, 64 * KiB), (3 * MiB + 4 * KiB, 8 * KiB), (6 * MiB - 8 * KiB, 100 * KiB)]


def spots(cells):
    return [(c * CELL + off, n) for c in cells for off, n in SPOTS]


def granules(ranges, gran=GRAN):
    out = set()
    for off, n in ranges:
        out.update(range(off // gran, (off + n - 1) // gran + 1))
    return out


def cells(*numbers):
    """The granules a letter painted in the picture's `numbers` covers."""
    return granules(spots(numbers))


def paint(guest, letter, numbers):
    """The guest writes `letter` into the picture's squares `numbers`."""
    for off, n in spots(numbers):
        guest.write(off, letter.encode() * n)


def taken(guest):
    """The granules the guest wrote since the last call."""
    out = set(guest.granules)
    guest.granules.clear()
    return out


def action(kind, **data):
    return {"type": kind, "data": data}


def qcow2(base, name, cluster=64 * KiB, backing=None):
    path = os.path.join(base, f"{name}.qcow2")
    args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}"]
    if backing:
        args += ["-b", backing, "-F", "qcow2"]
    run(args + [path, str(SIZE)])
    return path


def target(d, base, name, backing=None, cluster=64 * KiB):
    """A backup image `name`.qcow2 opened as node `name` (its backing file
    not opened)."""
    path = qcow2(base, name, cluster, backing)
    add_qcow2(d, name, path)
    return path


def picture_disk(d, base, name, seed):
    """The slides' initial disk (A in squares 0, 2, 3, 5), opened as node
    `name` and exported to a guest whose model starts as the disk."""
    path = qcow2(base, name[0].upper() + name[1:])
    qemu_io(path, *(f"write -P 0x41 {off} {n}" for off, n in spots((0, 2, 3, 5))))
    initial = read_image(path)
    add_qcow2(d, name, path)
    guest = RecordingGuest(export(d, base, name), name, initial, seed=seed)
    guest.export = name
    return guest, path


def state(d, node):
    """The node's named bitmaps as query-named-block-nodes shows them, with
    their contents' sha256."""
    out = {}
    for b in bitmap_view(d, node):
        if "name" in b:
            sha = d.ok("x-debug-block-dirty-bitmap-sha256", node=node, name=b["name"])
            out[b["name"]] = dict(b, sha256=sha["sha256"])
    return out


def marked(bitmaps):
    """{name: dirty granules} of a state()."""
    return {n: b["count"] // b["granularity"] for n, b in bitmaps.items()}


def allocated(path, unit=GRAN):
    """Units of `unit` bytes the top layer of `path` holds (qemu-img map)."""
    out = set()
    for e in json.loads(run(["qemu-img", "map", "--output=json", path]).stdout):
        if e["depth"] == 0 and e["present"]:
            assert e["start"] % unit == 0 and e["length"] % unit == 0, e
            out.update(range(e["start"] // unit, (e["start"] + e["length"]) // unit))
    return out


def compare(paths, models, expect, base):
    """Each backup of `expect` ({name: (model index, units held or None)})
    passes qemu-img check, reads as its model and holds those units."""
    for name, (n, held, *unit) in expect.items():
        check(paths[name])
        model = write_model(os.path.join(base, f"model{n}.raw"), models[n])
        assert (name, same(paths[name], model)) == (name, True)
        if held is not None:
            assert (name, allocated(paths[name], *unit)) == (name, held)


def full_backup(d, base, node, bitmap, during=None, cluster=64 * KiB, speed=0, **opts):
    """FullBackup.qcow2 of `node` by blockdev-backup sync=full in one
    transaction with bitmap `bitmap`'s creation; during() runs while the
    job runs. Returns the image and the job's events."""
    path = target(d, base, "FullBackup", cluster=cluster)
    mark = len(d.qmp.events)
    d.ok("transaction", actions=[
        action("block-dirty-bitmap-add", node=node, name=bitmap, **opts),
        action("blockdev-backup", **{"job-id": "full"}, device=node, target="FullBackup",
               sync="full", speed=speed)])
    if during:
        during()
    wait_null(d, "full", since=mark)
    return path, job_record(d, "full", since=mark)


def incremental(d, job, node, tgt, bitmap, actions=(), during=None):
    """blockdev-backup sync=incremental of `bitmap` into node `tgt` (in a
    transaction after `actions`); during() runs while the job runs.
    Returns the job's events."""
    mark = len(d.qmp.events)
    d.ok("transaction", actions=[*actions, action(
        "blockdev-backup", **{"job-id": job}, device=node, target=tgt, sync="incremental",
        bitmap=bitmap)])
    if during:
        during()
    wait_null(d, job, since=mark)
    return job_record(d, job, since=mark)


# Pull mode (a): the point in time through copy-before-write and
# snapshot-access, as test_fleecing.py's cbw-bitmap recipe.

def wait_deleted(d, export_id, since):
    deadline = time.time() + 30
    while not any(e["event"] == "BLOCK_EXPORT_DELETED" and e["data"]["id"] == export_id
                  for e in d.qmp.events[since:]):
        assert time.time() < deadline, f"{d.kind}: export {export_id} stays"
        d.pump(0.05)


def delete_export(d, export_id):
    mark = len(d.qmp.events)
    d.ok("block-export-del", id=export_id)
    wait_deleted(d, export_id, mark)


def attach(d, guest, sock, export_id, node):
    """Exports `node` to the guest under its disk's export name and
    reconnects it (as a VM's device is re-pointed with qom-set)."""
    d.ok("block-export-add", type="nbd", id=export_id, **{"node-name": node},
         name=guest.export, writable=True)
    guest.h = nbd.NBD()
    guest.h.set_export_name(guest.export)
    guest.h.connect_unix(sock)


def fleece(d, base, guest, sock, node, view, exported):
    """Export `backup`: `node` as it is now, holding the clusters of bitmap
    `view`, with `exported` bitmaps as qemu:dirty-bitmap contexts; the
    guest then writes through the copy-before-write filter."""
    tmp = qcow2(base, f"fleece-{view}")
    guest.h.shutdown()
    delete_export(d, guest.export)
    d.ok("blockdev-add", driver="qcow2", **{"node-name": "tmp"}, discard="unmap",
         file={"driver": "file", "filename": tmp})
    d.ok("blockdev-add", driver="copy-before-write", **{"node-name": "cbw"}, file=node,
         target="tmp", bitmap={"node": node, "name": view})
    d.ok("blockdev-add", driver="snapshot-access", **{"node-name": "acc"}, file="cbw")
    attach(d, guest, sock, "guest", "cbw")
    d.ok("block-export-add", type="nbd", id="backup", **{"node-name": "acc"}, name="backup",
         bitmaps=[{"node": node, "name": b} for b in exported])
    return tmp


def unfleece(d, guest, sock, node):
    delete_export(d, "backup")
    guest.h.shutdown()
    delete_export(d, "guest")
    for name in ("acc", "cbw", "tmp"):
        d.ok("blockdev-del", **{"node-name": name})
    attach(d, guest, sock, guest.export, node)


def pull(sock, copies, before_each):
    """The backup client: for each (bitmap, target export) of `copies`,
    copies the extents qemu:dirty-bitmap:bitmap marks from export `backup`
    into the target (exported by the daemon), calling before_each(i, off,
    length) before it reads extent i. Returns {bitmap: granules copied}."""
    src = nbd.NBD()
    for bitmap, _ in copies:
        src.add_meta_context(f"qemu:dirty-bitmap:{bitmap}")
    src.set_export_name("backup")
    src.connect_unix(sock)
    out = {}
    for bitmap, name in copies:
        dst = nbd.NBD()
        dst.set_export_name(name)
        dst.connect_unix(sock)
        extents = flagged_extents(src, f"qemu:dirty-bitmap:{bitmap}")
        for i, (off, length) in enumerate(extents):
            before_each(i, off, length)
            for pos in range(off, off + length, 16 * MiB):
                dst.pwrite(src.pread(min(16 * MiB, off + length - pos), pos), pos)
        dst.flush()
        dst.shutdown()
        out[bitmap] = granules(extents)
    src.shutdown()
    return out


def pull_targets(d, base, names):
    """Backup images opened and exported writable for the client."""
    paths = {}
    for name, backing in names:
        paths[name] = target(d, base, name, backing=backing)
        export(d, base, name)
    return paths


def first_checkpoint(d, base, guest, sock, paths):
    """b0 stops and b1 starts; IncBackup1 is pulled from b0 while the guest
    writes C (over B in square 3 before the client reads it). Returns the
    granules the client copied."""
    d.ok("transaction", actions=[action("block-dirty-bitmap-disable", node="disk0", name="b0"),
                                 action("block-dirty-bitmap-add", node="disk0", name="b1")])
    paths.update(pull_targets(d, base, [("IncBackup1", "FullBackup.qcow2")]))
    fleece(d, base, guest, sock, "disk0", "b0", ["b0"])

    def c_first(i, off, length):
        if i == 0:
            paint(guest, "C", (2, 3))

    copied = pull(sock, [("b0", "IncBackup1")], c_first)
    unfleece(d, guest, sock, "disk0")
    return copied


def differential_point(d, base, guest, sock, paths):
    """t = b0 | b1 and the next checkpoint (b1 stops, b2 starts), so that
    b1 alone gives an incremental of the same moment: DiffBackup from t and
    IncBackup2 from b1 are pulled while the guest writes, before each
    extent is read, into its last 4 KiB and somewhere at random. Returns
    the state with t and the granules the client copied."""
    d.ok("transaction", actions=[
        action("block-dirty-bitmap-add", node="disk0", name="t", disabled=True),
        action("block-dirty-bitmap-merge", node="disk0", target="t", bitmaps=["b0", "b1"]),
        action("block-dirty-bitmap-add", node="disk0", name="b2"),
        action("block-dirty-bitmap-disable", node="disk0", name="b1")])
    paths.update(pull_targets(d, base, [("DiffBackup", "FullBackup.qcow2"),
                                        ("IncBackup2", "IncBackup1.qcow2")]))
    with_t = state(d, "disk0")
    fleece(d, base, guest, sock, "disk0", "t", ["t", "b1"])

    def churn(i, off, length):
        guest.write(off + length - 4 * KiB, bytes([0x80 + i]) * 4 * KiB)
        guest.random_write()

    copied = pull(sock, [("t", "DiffBackup"), ("b1", "IncBackup2")], churn)
    unfleece(d, guest, sock, "disk0")
    d.ok("block-dirty-bitmap-remove", node="disk0", name="t")
    return with_t, copied


def differential(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    guest, disk = picture_disk(d, base, "disk0", 0x61)
    sock = os.path.join(base, "nbd.sock")
    models, written, record = [bytes(guest.model)], {}, []
    paths = {"FullBackup": full_backup(d, base, "disk0", "b0", speed=32 * MiB,
                                       during=lambda: paint(guest, "B", (3, 4, 5)))[0]}
    written["B"] = taken(guest)
    record.append(("B", state(d, "disk0")))
    models.append(bytes(guest.model))
    copied = first_checkpoint(d, base, guest, sock, paths)
    written["C"] = taken(guest)
    record.append(("C", state(d, "disk0")))
    models.append(bytes(guest.model))
    with_t, more = differential_point(d, base, guest, sock, paths)
    copied.update(more)
    written["during"] = taken(guest)
    record += [("t", with_t), ("after", state(d, "disk0"))]
    assert guest.read(0, SIZE) == bytes(guest.model)
    guest.close()
    d.quit()
    check(disk)
    assert read_image(disk) == guest.model
    return record, copied, paths, models, written, base


@pytest.mark.parametrize("kind", KINDS)
def test_pull_mode_incremental_and_differential_backups(workdir, daemons, kind):
    record, copied, paths, models, written, base = differential(workdir, daemons, kind)
    b, c = written["B"], written["C"]
    assert (b, c) == (cells(3, 4, 5), cells(2, 3))
    # The client found exactly the marked granules: b0 = B, b1 = C, t both.
    assert copied == {"b0": b, "b1": c, "t": b | c}
    views = dict(record)
    assert marked(views["t"]) == {"b0": len(b), "b1": len(c), "b2": 0, "t": len(b | c)}
    assert marked(views["after"]) == {"b0": len(b), "b1": len(c), "b2": len(written["during"])}
    assert [views["after"][n]["recording"] for n in ("b0", "b1", "b2")] == [False, False, True]
    compare(paths, models, {"FullBackup": (0, None), "IncBackup1": (1, b),
                            "DiffBackup": (2, b | c), "IncBackup2": (2, c)}, base)
    if kind != "qsd":
        assert record == differential(workdir, daemons, "qsd")[0]



# External snapshots (b): a bitmap per layer, merged across the chain.

def chain_state(d):
    return {node: state(d, node) for node in ("base", "overlay")}


def snapshot(d, base):
    """Overlay.qcow2 (its header naming Base.qcow2) over node `base`, in
    one transaction with a persistent b0 on the overlay."""
    path = qcow2(base, "Overlay", backing="Base.qcow2")
    add_qcow2(d, "overlay", path)
    d.ok("transaction", actions=[
        action("blockdev-snapshot", node="base", overlay="overlay"),
        action("block-dirty-bitmap-add", node="overlay", name="b0", persistent=True)])
    return path


def active_commit(d):
    """block-commit of the overlay into the base; once ready, b1 is added on
    the base and merged from the overlay's b1, then the job pivots.
    Returns the job's events."""
    mark = len(d.qmp.events)
    d.ok("block-commit", **{"job-id": "commit", "device": "overlay", "base-node": "base"})
    d.wait_event("BLOCK_JOB_READY", "commit", timeout=60)
    d.ok("transaction", actions=[
        action("block-dirty-bitmap-add", node="base", name="b1", persistent=True),
        action("block-dirty-bitmap-merge", node="base", target="b1",
               bitmaps=[{"node": "overlay", "name": "b1"}])])
    d.ok("job-complete", id="commit")
    wait_null(d, "commit", since=mark)
    return job_record(d, "commit", since=mark)


def stored(path):
    """{name: (flags, granularity, granules marked)} of the bitmaps the
    qcow2 image stores (qemu-img info; qemu-nbd serving each)."""
    return {b["name"]: (b["flags"], b["granularity"],
                        granules(dirty_ranges(dirty_map(path, b["name"]))))
            for b in qemu_info_bitmaps(path)}


def first_incremental(d, base, guest, paths):
    """IncBackup1 of t = base's b0 | overlay's b0, in one transaction with
    the overlay's new b1; the guest writes D while the job runs. Returns
    the job's events."""
    paths["IncBackup1"] = target(d, base, "IncBackup1", backing="FullBackup.qcow2")
    return incremental(d, "inc1", "overlay", "IncBackup1", "t", actions=[
        action("block-dirty-bitmap-add", node="overlay", name="t", disabled=True),
        action("block-dirty-bitmap-merge", node="overlay", target="t",
               bitmaps=[{"node": "base", "name": "b0"}, {"node": "overlay", "name": "b0"}]),
        action("block-dirty-bitmap-add", node="overlay", name="b1", persistent=True)],
        during=lambda: paint(guest, "D", (6,)))


def snapshots(workdir, daemons, kind):
    d, base = start_daemon(workdir, kind, daemons)
    guest, base_path = picture_disk(d, base, "base", 0x71)
    models, written, record, paths = [bytes(guest.model)], {}, [], {}
    paths["FullBackup"], job = full_backup(d, base, "base", "b0", persistent=True,
                                           speed=32 * MiB,
                                           during=lambda: paint(guest, "B", (3, 4, 5)))
    written["B"] = taken(guest)
    record.append(("full", job))
    snapshot(d, base)
    paint(guest, "C", (2, 3))  # into the overlay
    written["C"] = taken(guest)
    record.append(("C", chain_state(d)))
    models.append(bytes(guest.model))
    record.append(("inc1", first_incremental(d, base, guest, paths)))
    written["D"] = taken(guest)
    record.append(("D", chain_state(d)))
    d.ok("block-dirty-bitmap-remove", node="overlay", name="t")
    record.append(("commit", active_commit(d)))
    record.append(("committed", chain_state(d)))
    # The second incremental, of the base's b1; the guest writes E meanwhile.
    models.append(bytes(guest.model))
    paths["IncBackup2"] = target(d, base, "IncBackup2", backing="IncBackup1.qcow2")
    record.append(("inc2", incremental(d, "inc2", "base", "IncBackup2", "b1",
                                       during=lambda: paint(guest, "E", (7,)))))
    written["E"] = taken(guest)
    record.append(("E", chain_state(d)))
    assert guest.read(0, SIZE) == bytes(guest.model)
    guest.close()
    d.quit()
    check(base_path)
    assert read_image(base_path) == guest.model
    for name in ("Base", "Overlay"):
        record.append((name, stored(os.path.join(base, f"{name}.qcow2"))))
    return record, paths, models, written, base


@pytest.mark.parametrize("kind", KINDS)
def test_external_snapshot_with_a_bitmap_per_layer_then_commit(workdir, daemons, kind):
    record, paths, models, written, base = snapshots(workdir, daemons, kind)
    b, c, d, e = (written[x] for x in "BCDE")
    assert (b, c, d, e) == (cells(3, 4, 5), cells(2, 3), cells(6), cells(7))
    views = dict(record)
    assert marked(views["C"]["base"]) == {"b0": len(b)}
    assert marked(views["C"]["overlay"]) == {"b0": len(c)}
    # t is cleared by the job's success and, disabled, recorded nothing since.
    assert marked(views["D"]["overlay"]) == {"b0": len(c | d), "b1": len(d), "t": 0}
    # After the commit the base's b0 marks B, C and D, its b1 only D.
    assert marked(views["committed"]["base"]) == {"b0": len(b | c | d), "b1": len(d)}
    assert all(x["recording"] for x in views["committed"]["base"].values())
    assert marked(views["E"]["base"]) == {"b0": len(b | c | d | e), "b1": len(e)}
    auto = ["auto"]
    assert views["Base"] == {"b0": (auto, GRAN, b | c | d | e), "b1": (auto, GRAN, e)}
    assert views["Overlay"] == {"b0": (auto, GRAN, c | d), "b1": (auto, GRAN, d)}
    for job, held in (("inc1", b | c), ("inc2", d)):
        assert statuses(views[job])[-5:] == ["waiting", "pending", "BLOCK_JOB_COMPLETED",
                                             "concluded", "null"]
        assert views[job][-3][1]["len"] == len(held) * GRAN
    # The bitmap transaction drains every node, as QEMU's does: the ready
    # commit job goes to standby and back.
    assert statuses(views["commit"])[2:7] == ["ready", "BLOCK_JOB_READY", "standby", "ready",
                                              "waiting"]
    compare(paths, models, {"FullBackup": (0, None), "IncBackup1": (1, b | c),
                            "IncBackup2": (2, d)}, base)
    if kind != "qsd":
        assert record == snapshots(workdir, daemons, "qsd")[0]


# iotest 124 (c): chained incrementals at other bitmap granularities.

# (bitmap granularity, the disk's cluster size, the backups' cluster size)
VARIANTS = [(32 * KiB, 64 * KiB, 64 * KiB), (64 * KiB, 32 * KiB, 128 * KiB),
            (128 * KiB, 64 * KiB, 64 * KiB)]
# 124's rounds: none (a hollow incremental); a complete overwrite, a new
# segment and a partial overlap; one more of each kind.
ROUNDS = [[], [(0xab, 0, 512), (0xfe, 16 * MiB, 256 * KiB), (0x64, 32736 * KiB, 64 * KiB)],
          [(0x9a, 0, 512), (0x55, 8 * MiB, 352 * KiB), (0x78, 15872 * KiB, MiB)]]


def copied(writes, gran, cluster):
    """The backup clusters an incremental copies: each dirty granule
    rounded out to the backup's clusters (at least 64 KiB)."""
    unit = max(64 * KiB, cluster)
    return granules([(g * gran, gran) for g in granules([w[1:] for w in writes], gran)], unit)


def granularity_chain(workdir, daemons, kind, gran, cluster, backup_cluster):
    d, base = start_daemon(workdir, kind, daemons)
    path = qcow2(base, "drive0", cluster)
    qemu_io(path, "write -P 0x41 0 512", "write -P 0xd5 1M 32k", "write -P 0xdc 32M 124k")
    models = [read_image(path)]
    add_qcow2(d, "drive0", path)
    guest = Guest(export(d, base, "drive0"), "drive0", bytearray(models[0]))
    full, job = full_backup(d, base, "drive0", "bitmap0", granularity=gran,
                            cluster=backup_cluster)
    record, paths = [("full", job)], {"FullBackup": full}
    previous = full
    for n, writes in enumerate(ROUNDS, 1):
        for pattern, off, length in writes:
            guest.write(off, bytes([pattern]) * length)
        guest.h.flush()
        record.append((f"before {n}", state(d, "drive0")))
        models.append(bytes(guest.model))
        name = f"Incremental{n}"
        previous = paths[name] = target(d, base, name, backing=os.path.basename(previous),
                                        cluster=backup_cluster)
        record.append((name, incremental(d, f"inc{n}", "drive0", name, "bitmap0")))
    record.append(("after", state(d, "drive0")))
    assert guest.read(0, SIZE) == bytes(guest.model)
    guest.close()
    d.quit()
    return record, paths, models, base


@pytest.mark.parametrize("gran,cluster,backup_cluster", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_incrementals_at_other_granularities(workdir, daemons, kind, gran, cluster,
                                             backup_cluster):
    record, paths, models, base = granularity_chain(workdir, daemons, kind, gran, cluster,
                                                    backup_cluster)
    views = dict(record)
    unit = max(64 * KiB, backup_cluster)
    expect = {"FullBackup": (0, None)}
    for n, writes in enumerate(ROUNDS, 1):
        b = views[f"before {n}"]["bitmap0"]
        assert (b["granularity"], b["count"]) == (
            gran, len(granules([w[1:] for w in writes], gran)) * gran)
        held = copied(writes, gran, backup_cluster)
        events = views[f"Incremental{n}"]
        assert statuses(events)[-5:] == ["waiting", "pending", "BLOCK_JOB_COMPLETED",
                                         "concluded", "null"]
        assert events[-3][1]["len"] == events[-3][1]["offset"] == len(held) * unit
        expect[f"Incremental{n}"] = (n, held, unit)
    assert not expect["Incremental1"][1]  # hollow
    assert views["after"]["bitmap0"]["count"] == 0
    compare(paths, models, expect, base)
    if kind != "qsd":
        assert record == granularity_chain(workdir, daemons, "qsd", gran, cluster,
                                           backup_cluster)[0]
