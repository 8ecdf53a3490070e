"""check -r all repairs at least what qemu-img check -r all repairs.

Each case damages a copy of one image (python struct edits on the file, as
QEMU's own iotests do) in one of the ways QEMU's qcow2 check knows
(qcow2-refcount.c, qcow2-snapshot.c); strata-img and qemu-img each repair a
copy. Both must end the same way: the same exit status and report, the
same verdict of qemu-img check on the result (clean wherever qemu-img's own
repair leaves it clean), and the same guest data, in the active layer and
in the internal snapshot, as qemu-img compare sees it."""
import hashlib
import json
import os
import re
import shutil
import struct

import nbd  # python3-libnbd
import pytest

from conftest import require, run, strata_binary
from test_nbd_basic import serve

CS = 65536
COPIED = 1 << 63
COMPRESSED = 1 << 62
OFFSET_MASK = 0x00FFFFFFFFFFFE00


class Image:
    """Reads and pokes the metadata of a qcow2 file (16-bit refcounts)."""

    def __init__(self, path):
        self.path = path

    def header(self):
        with open(self.path, "rb") as f:
            d = f.read(104)
        return {
            "version": struct.unpack(">I", d[4:8])[0],
            "l1_offset": struct.unpack(">Q", d[40:48])[0],
            "reftable": struct.unpack(">Q", d[48:56])[0],
            "nb_snapshots": struct.unpack(">I", d[60:64])[0],
            "snapshots_offset": struct.unpack(">Q", d[64:72])[0],
            "incompatible": struct.unpack(">Q", d[72:80])[0],
        }

    def read64(self, pos):
        with open(self.path, "rb") as f:
            f.seek(pos)
            return struct.unpack(">Q", f.read(8))[0]

    def poke(self, pos, data):
        with open(self.path, "r+b") as f:
            f.seek(pos)
            f.write(data)

    def write64(self, pos, value):
        self.poke(pos, struct.pack(">Q", value))

    def l1_pos(self, index=0):
        return self.header()["l1_offset"] + 8 * index

    def l2_pos(self, guest_offset):
        l2 = self.read64(self.l1_pos(guest_offset // (CS * CS // 8))) & OFFSET_MASK
        return l2 + 8 * ((guest_offset // CS) % (CS // 8))

    def l2_entry(self, guest_offset):
        return self.read64(self.l2_pos(guest_offset))

    def refcount_pos(self, cluster):
        block = self.read64(self.header()["reftable"] + 8 * (cluster // (CS // 2)))
        return block + 2 * (cluster % (CS // 2))

    def refcount(self, cluster):
        with open(self.path, "rb") as f:
            f.seek(self.refcount_pos(cluster))
            return struct.unpack(">H", f.read(2))[0]

    def set_refcount(self, cluster, value):
        self.poke(self.refcount_pos(cluster), struct.pack(">H", value))

    def snapshot_entry(self):
        """Offset of the first snapshot table entry."""
        return self.header()["snapshots_offset"]

    def append_cluster(self, data=b""):
        size = os.path.getsize(self.path)
        start = (size + CS - 1) // CS * CS
        self.poke(start, data.ljust(CS, b"\0"))
        return start


def make_base(workdir):
    """64 MiB, 64 KiB clusters: data, a snapshot sharing part of it, data
    written after the snapshot, a compressed cluster, a zeroed cluster."""
    base = os.path.join(str(workdir), "base.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 8M 256k",
         "-c", "write -c -P 3 16M 64k", "-c", "write -P 4 24M 128k", base])
    run(["qemu-img", "snapshot", "-c", "snap", base])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 128k", "-c", "write -z 24M 64k",
         "-c", "write -P 6 40M 64k", base])
    return base


# Damage: each takes the Image and changes it.

def leak(img):
    c = img.append_cluster(b"x") // CS
    img.set_refcount(c, 1)


def refcount_too_high(img):
    c = (img.l2_entry(40 << 20) & OFFSET_MASK) // CS
    img.set_refcount(c, 2)


def refcount_too_low(img):
    # 8M was written before the snapshot only: shared, refcount 2.
    c = (img.l2_entry(8 << 20) & OFFSET_MASK) // CS
    assert img.refcount(c) == 2
    img.set_refcount(c, 1)


def refcount_zero(img):
    c = (img.l2_entry(40 << 20) & OFFSET_MASK) // CS
    img.set_refcount(c, 0)


def copied_missing_in_l2(img):
    pos = img.l2_pos(40 << 20)
    img.write64(pos, img.read64(pos) & ~COPIED)


def copied_missing_in_l1(img):
    pos = img.l1_pos(0)
    img.write64(pos, img.read64(pos) & ~COPIED)


def copied_on_shared_cluster(img):
    pos = img.l2_pos(8 << 20)
    img.write64(pos, img.read64(pos) | COPIED)


def copied_on_compressed(img):
    pos = img.l2_pos(16 << 20)
    assert img.read64(pos) & COMPRESSED
    img.write64(pos, img.read64(pos) | COPIED)


def unaligned_zero_cluster(img):
    # The zeroed cluster at 24M keeps its host cluster (QCOW2_CLUSTER_ZERO_ALLOC).
    pos = img.l2_pos(24 << 20)
    e = img.read64(pos)
    assert e & 1 and e & OFFSET_MASK
    img.write64(pos, e + 512)


def unaligned_data_cluster(img):
    pos = img.l2_pos(40 << 20)
    img.write64(pos, img.read64(pos) + 512)


def l1_reserved_bits(img):
    pos = img.l1_pos(0)
    img.write64(pos, img.read64(pos) | 1 << 60)


def l2_reserved_bits(img):
    pos = img.l2_pos(40 << 20)
    img.write64(pos, img.read64(pos) | 2)


def data_past_the_end(img):
    pos = img.l2_pos(40 << 20)
    past = (os.path.getsize(img.path) // CS + 10) * CS
    img.write64(pos, COPIED | past)


def truncated(img):
    os.truncate(img.path, 8 * CS)


def snapshot_l1_entry_past_the_end(img):
    l1 = img.read64(img.snapshot_entry())
    img.write64(l1, 0x100000000000)


def snapshot_l1_entry_far_past_the_end(img):
    l1 = img.read64(img.snapshot_entry())
    img.write64(l1, (os.path.getsize(img.path) // CS + 100) * CS)


def snapshot_l1_unaligned(img):
    pos = img.snapshot_entry()
    img.write64(pos, img.read64(pos) + 512)


def rewrite_snapshot_entry(img, extra):
    """The snapshot table copied to a new cluster with `extra` bytes of
    extra data in its only entry (the old table is left behind)."""
    h = img.header()
    with open(img.path, "rb") as f:
        f.seek(h["snapshots_offset"])
        entry = f.read(40)
        old_extra = struct.unpack(">I", entry[36:40])[0]
        known = f.read(old_extra)
        id_len, name_len = struct.unpack(">HH", entry[12:16])
        strings = f.read(id_len + name_len)
    data = known[:extra].ljust(extra, b"\0")
    table = entry[:36] + struct.pack(">I", extra) + data + strings
    at = img.append_cluster(table)
    clusters = (len(table) + CS - 1) // CS
    for c in range(at // CS, at // CS + clusters):
        img.set_refcount(c, 1)
    img.poke(64, struct.pack(">Q", at))


def snapshot_extra_data_too_large(img):
    rewrite_snapshot_entry(img, 2000)


def snapshot_entry_incomplete(img):
    rewrite_snapshot_entry(img, 8)


def too_many_snapshots(img):
    # The table moved to the end of the file, followed by zeroes (in use)
    # for 65535 more empty entries, and one snapshot more than QEMU allows
    # named in the header.
    rewrite_snapshot_entry(img, 16)
    start = img.header()["snapshots_offset"]
    end = start + 65536 * 64
    os.truncate(img.path, (end + CS - 1) // CS * CS)
    for c in range(start // CS + 1, (end + CS - 1) // CS):
        img.set_refcount(c, 1)
    img.poke(60, struct.pack(">I", 65537))


def corrupt_bit_and_leak(img):
    leak(img)
    img.poke(72, struct.pack(">Q", img.header()["incompatible"] | 2))


def refcount_block_lost(img):
    img.write64(img.header()["reftable"], 0)


DAMAGE = {f.__name__.replace("_", "-"): f for f in [
    leak, refcount_too_high, refcount_too_low, refcount_zero, copied_missing_in_l2,
    copied_missing_in_l1, copied_on_shared_cluster, copied_on_compressed,
    unaligned_zero_cluster, unaligned_data_cluster, l1_reserved_bits, l2_reserved_bits,
    data_past_the_end, truncated, snapshot_l1_entry_past_the_end,
    snapshot_l1_entry_far_past_the_end, snapshot_l1_unaligned, snapshot_extra_data_too_large,
    snapshot_entry_incomplete, corrupt_bit_and_leak, refcount_block_lost]}


def check(tool, path, *args):
    """Exit status, JSON report and messages (the program name that starts
    some lines made the same)."""
    res = run([tool, "check", "--output=json", *args, path], check=False)
    report = json.loads(res.stdout) if res.stdout.strip() else {}
    report.pop("filename", None)
    # Where a rebuilt refcount structure goes differs by design
    # (docs/tools/strata-img.md), and with it the end of the image.
    report.pop("image-end-offset", None)
    return res.returncode, report, re.sub("^qemu-img: ", "strata-img: ", res.stderr, flags=re.M)


def guest_view(path):
    """The guest's view cluster by cluster, as qemu-nbd serves it: a
    digest, or None where the read fails (metadata too broken to read)."""
    with serve(path, "-r", "-f", "qcow2", server="qemu") as s:
        h = nbd.NBD()
        h.connect_uri(s.uri)
        view = []
        for off in range(0, h.get_size(), CS):
            try:
                view.append(hashlib.sha256(h.pread(CS, off)).hexdigest())
            except nbd.Error:
                view.append(None)
        h.shutdown()
    return view


def same_guest_data(ours, theirs):
    res = run(["qemu-img", "compare", "-U", theirs, ours], check=False)
    if res.returncode in (0, 1):
        return res.returncode == 0
    # qemu-img compare stops at metadata it cannot read (both repairs left
    # it so): compare what can be read, and where reads fail.
    view = guest_view(theirs)
    assert None in view, res.stderr
    return guest_view(ours) == view


def snapshots(path):
    lines = run(["qemu-img", "snapshot", "-U", "-l", path]).stdout.splitlines()[2:]
    return [line.split()[:2] for line in lines]


def snapshot_raw(path, name):
    out = path + "." + name + ".raw"
    res = run(["qemu-img", "convert", "-U", "-l", "snapshot.name=" + name, "-O", "raw", path, out],
              check=False)
    return out if res.returncode == 0 else None


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_repair_ends_where_qemu_img_repair_ends(workdir, name):
    require("qemu-img")
    base = make_base(workdir)
    ours = os.path.join(str(workdir), "ours.qcow2")
    theirs = os.path.join(str(workdir), "theirs.qcow2")
    shutil.copy(base, ours)
    DAMAGE[name](Image(ours))
    shutil.copy(ours, theirs)
    strata_img = strata_binary("strata-img")

    # Both find the same damage, and both leave the file alone without -r.
    with open(ours, "rb") as f:
        damaged = f.read()
    found_o, found_t = check(strata_img, ours), check("qemu-img", theirs)
    assert found_t[0] != 0
    assert found_o == found_t
    with open(ours, "rb") as f:
        assert f.read() == damaged

    rc_o, rep_o, err_o = check(strata_img, ours, "-r", "all")
    rc_t, rep_t, err_t = check("qemu-img", theirs, "-r", "all")
    assert rc_o == rc_t, err_o
    assert rep_o == rep_t, err_o

    # qemu-img's verdict on both results is the same; clean where its own
    # repair made the image clean.
    after_o, after_t = check("qemu-img", ours), check("qemu-img", theirs)
    assert after_o[:2] == after_t[:2], after_o[2]
    # The same guest data survived, in the active layer and the snapshot.
    assert same_guest_data(ours, theirs)
    assert snapshots(ours) == snapshots(theirs)
    for snap_id, snap_name in snapshots(theirs)[:2]:
        raw_t, raw_o = snapshot_raw(theirs, snap_name), snapshot_raw(ours, snap_name)
        assert (raw_t is None) == (raw_o is None)
        if raw_t:
            assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", raw_t, raw_o],
                       check=False).returncode == 0


def test_too_many_snapshots_are_cut_to_qemus_limit(workdir):
    """One snapshot more than QEMU allows: both tools refuse to check the
    table, and -r all drops the overhanging one and rewrites the 65535
    empty entries, as qemu-img -r all does (same report; qemu-img takes
    most of a minute for it, so its repair is not run here)."""
    require("qemu-img")
    base = make_base(workdir)
    ours = os.path.join(str(workdir), "ours.qcow2")
    shutil.copy(base, ours)
    too_many_snapshots(Image(ours))
    strata_img = strata_binary("strata-img")
    found = check(strata_img, ours)
    assert found == check("qemu-img", ours)
    assert found[0] == 1 and "ERROR snapshot table too large" in found[2]
    rc, report, err = check(strata_img, ours, "-r", "all")
    assert rc == 0, err
    assert err.startswith("Discarding 1 overhanging snapshots\n")
    assert report["corruptions-fixed"] == 1 + 65535 and "corruptions" not in report
    # (Each open of an image with 65536 snapshots costs QEMU seconds: as
    # few as possible.)
    assert check("qemu-img", ours)[:2] == (0, check("qemu-img", base)[1])
    img = Image(ours)
    assert img.header()["nb_snapshots"] == 65536
    with open(ours, "rb") as f:
        f.seek(img.snapshot_entry() + 12)
        id_len, name_len = struct.unpack(">HH", f.read(4))
        f.seek(img.snapshot_entry() + 36)
        extra = struct.unpack(">I", f.read(4))[0]
        f.seek(img.snapshot_entry() + 40 + extra)
        assert f.read(id_len + name_len) == b"1snap"
    raws = [snapshot_raw(base, "snap"), snapshot_raw(ours, "snap")]
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", *raws]).returncode == 0
    run(["qemu-img", "convert", "-U", "-O", "raw", ours, ours + ".raw"])
    assert run(["qemu-img", "compare", "-F", "raw", base, ours + ".raw"]).returncode == 0
