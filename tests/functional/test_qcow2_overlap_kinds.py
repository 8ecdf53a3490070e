"""Overlap checks beyond the data and L1/L2/refcount paths: snapshot L1 and
snapshot table writes, bitmap table and directory writes, header rewrites,
and QEMU's overlap-check modes (none, constant, cached, all) and object form
(template plus per-kind booleans).

A refcount lie (a metadata cluster's refcount set to 0) makes the next
cluster allocation land on that metadata. The write must then be refused
with QEMU's message, the image marked corrupt, and no other byte of the
file changed except the refcount entry of the colliding cluster. The same
damage is given to QEMU's tools where they have the same command, and they
must refuse too."""
import json
import os
import shutil
import struct

import pytest

from conftest import require, run, strata_binary

CS = 65536


def u64(data, offset):
    return struct.unpack(">Q", data[offset:offset + 8])[0]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def layout(path):
    d = read(path)
    snap_table = u64(d, 64)
    return {"l1": u64(d, 40), "reftable": u64(d, 48), "refblock": u64(d, u64(d, 48)),
            "snap_table": snap_table, "snap_l1": u64(d, snap_table) if snap_table else 0}


def refcount_entry(path, offset):
    """File offset of the 16-bit refcount of the cluster holding `offset`."""
    return layout(path)["refblock"] + (offset // CS) * 2


def lie_about(path, offset):
    """Sets the refcount of the cluster holding `offset` to 0."""
    with open(path, "r+b") as f:
        f.seek(refcount_entry(path, offset))
        f.write(b"\0\0")


def bitmap_directory(path):
    """(offset, size) of the bitmap directory from the bitmaps extension."""
    d = read(path)
    pos = struct.unpack(">I", d[100:104])[0]
    while pos + 8 <= len(d):
        kind, length = struct.unpack(">II", d[pos:pos + 8])
        if kind == 0:
            break
        if kind == 0x23852875:
            return u64(d, pos + 8 + 8 + 8), u64(d, pos + 8 + 8)
        pos += 8 + (length + 7) // 8 * 8
    raise AssertionError("no bitmaps extension")


def image(workdir, name="img.qcow2", snapshots=(), bitmap=False):
    path = os.path.join(workdir, name)
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", path])
    for s in snapshots:
        run(["qemu-img", "snapshot", "-c", s, path])
    if bitmap:
        run(["qemu-img", "bitmap", "--add", path, "b0"])
    return path


def message(what):
    return ("qcow2: Marking image as corrupt: Preventing invalid write on metadata "
            f"(overlaps with {what}); further corruption events will be suppressed")


def assert_refused_cleanly(path, before, collided, what, out):
    """The write was refused with QEMU's message and nothing but the corrupt
    bit and the collided cluster's refcount changed."""
    assert message(what) in out
    after = read(path)
    assert len(after) == len(before)
    incompat = int.from_bytes(before[72:80], "big") | 2
    assert after[72:80] == incompat.to_bytes(8, "big")
    entry = refcount_entry(path, collided)
    assert after[:72] == before[:72]
    assert after[80:entry] == before[80:entry]
    assert after[entry + 2:] == before[entry + 2:]
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "read 0 4k", path], check=False)
    assert "Image is corrupt; cannot be opened read/write" in res.stdout + res.stderr


def strata_img(*args):
    return run([strata_binary("strata-img"), *args], check=False)


def both_refuse(workdir, path, strata_args, qemu_args, collided, what):
    """Runs the strata-img command on `path` and the qemu-img one on a copy;
    both must refuse with the same corruption message."""
    copy = os.path.join(workdir, "qemu-copy.qcow2")
    shutil.copy(path, copy)
    before = read(path)
    res = strata_img(*strata_args, path)
    assert res.returncode == 1
    assert_refused_cleanly(path, before, collided, what, res.stdout + res.stderr)
    q = run(["qemu-img", *qemu_args, copy], check=False)
    assert message(what) in q.stdout + q.stderr
    info = json.loads(run(["qemu-img", "info", "--output=json", copy]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True


def test_snapshot_l1_write_refused(workdir):
    """snapshot -c copies the active L1; the copy is allocated over the L1."""
    require("qemu-img")
    path = image(workdir)
    l1 = layout(path)["l1"]
    lie_about(path, l1)
    both_refuse(workdir, path, ["snapshot", "-c", "s1"], ["snapshot", "-c", "s1"], l1,
                "active L1 table")
    assert "s1" not in run(["qemu-img", "snapshot", "-l", path]).stdout


def test_snapshot_table_write_refused(workdir):
    """snapshot -d writes a new snapshot table; it is allocated over the L1."""
    require("qemu-img")
    path = image(workdir, snapshots=("s1", "s2"))
    l1 = layout(path)["l1"]
    lie_about(path, l1)
    both_refuse(workdir, path, ["snapshot", "-d", "s1"], ["snapshot", "-d", "s1"], l1,
                "active L1 table")
    listing = run(["qemu-img", "snapshot", "-l", path]).stdout
    assert "s1" in listing and "s2" in listing


def test_bitmap_table_write_refused(workdir):
    """bitmap --add stores a bitmap table; it is allocated over the L1. The
    bitmap is not recorded."""
    require("qemu-img")
    path = image(workdir)
    l1 = layout(path)["l1"]
    lie_about(path, l1)
    before = read(path)
    res = strata_img("bitmap", "--add", path, "b0")
    assert res.returncode == 1
    assert_refused_cleanly(path, before, l1, "active L1 table", res.stdout + res.stderr)
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert "bitmaps" not in info["format-specific"]["data"]


# name -> (what the refcount lie is about, overlapped kind)
GUEST_WRITE_CASES = {
    "snapshot-table": (lambda p: layout(p)["snap_table"], "snapshot table"),
    "snapshot-l1": (lambda p: layout(p)["snap_l1"], "inactive L1 table"),
}


@pytest.mark.parametrize("name", sorted(GUEST_WRITE_CASES))
def test_guest_write_onto_snapshot_metadata_refused(workdir, name):
    """A newly allocated data cluster may not land on snapshot metadata."""
    require("qemu-img")
    target, what = GUEST_WRITE_CASES[name]
    path = image(workdir, snapshots=("s1",))
    collided = target(path)
    lie_about(path, collided)
    before = read(path)
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 9 128k 4k", path],
              check=False)
    assert res.returncode == 1
    assert_refused_cleanly(path, before, collided, what, res.stdout + res.stderr)


def test_guest_write_onto_bitmap_directory_refused(workdir):
    require("qemu-img")
    path = image(workdir, bitmap=True)
    directory, _ = bitmap_directory(path)
    lie_about(path, directory)
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 9 128k 4k", path],
              check=False)
    assert res.returncode == 1
    assert message("bitmap directory") in res.stdout + res.stderr
    assert bitmap_directory(path)[0] == directory
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True
    assert [b["name"] for b in info["format-specific"]["data"]["bitmaps"]] == ["b0"]


def test_header_that_outgrows_its_cluster_is_not_written(workdir):
    """A backing file name that would push the header past the first
    cluster is refused (as qemu-img: no space), and the image is unchanged."""
    require("qemu-img")
    path = os.path.join(workdir, "small.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "1M"])
    copy = os.path.join(workdir, "qemu-small.qcow2")
    shutil.copy(path, copy)
    before = read(path)
    name = "b" * 450 + ".qcow2"
    res = strata_img("rebase", "-u", "-F", "qcow2", "-b", name, path)
    assert res.returncode == 1
    assert f"Could not change the backing file to '{name}': No space left in the file header" \
        in res.stdout + res.stderr
    assert read(path) == before
    q = run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", name, copy], check=False)
    assert q.returncode == 1 and "No space left in the file header" in q.stdout + q.stderr
    assert run(["qemu-img", "check", path], check=False).returncode == 0


def inactive_l2_image(workdir):
    """A snapshot whose L2 table only the snapshot still uses, with its
    refcount lied to 0: the next data cluster allocated lands on it."""
    path = image(workdir, snapshots=("s1",))
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 2 0 4k", path])  # the active L2 is copied
    snap_l1 = layout(path)["snap_l1"]
    snap_l2 = u64(read(path), snap_l1) & 0x00fffffffffffe00
    assert snap_l2 and snap_l2 != u64(read(path), layout(path)["l1"]) & 0x00fffffffffffe00
    lie_about(path, snap_l2)
    return path


def strata_write(path, overlap_check):
    opts = json.dumps({"driver": "qcow2", "overlap-check": overlap_check,
                       "file": {"driver": "file", "filename": path}})
    return run([strata_binary("strata-io"), "--image-opts", "-c", "write -P 3 128k 4k", opts],
               check=False)


def qemu_write(path, overlap_check):
    return run(["qemu-io", "-c", f"open -o overlap-check={overlap_check} {path}",
                "-c", "write -P 3 128k 4k"], check=False)


# overlap-check value -> whether a write into an inactive L2 table is refused
INACTIVE_L2_MODES = {
    "none": ("none", False),
    "constant": ("constant", False),
    "cached": ("cached", False),
    "all": ("all", True),
    "object-all": ({"template": "all"}, True),
    "object-all-without-inactive-l2": ({"template": "all", "inactive-l2": False}, False),
    "object-cached-with-inactive-l2": ({"inactive-l2": True}, True),
    "object-none-with-inactive-l2": ({"template": "none", "inactive-l2": "on"}, True),
}


@pytest.mark.parametrize("name", sorted(INACTIVE_L2_MODES))
def test_inactive_l2_is_checked_only_when_asked(workdir, name):
    require("qemu-io")
    value, refused = INACTIVE_L2_MODES[name]
    path = inactive_l2_image(workdir)
    res = strata_write(path, value)
    out = res.stdout + res.stderr
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is refused
    if refused:
        assert res.returncode == 1 and message("inactive L2 table") in out
    else:
        assert res.returncode == 0 and "Preventing invalid write" not in out
        # The snapshot's L2 table was overwritten: qemu-img sees the damage.
        assert run(["qemu-img", "check", path], check=False).returncode != 0
    if isinstance(value, str):
        os.makedirs(os.path.join(workdir, "qemu"))
        copy = inactive_l2_image(os.path.join(workdir, "qemu"))
        q = qemu_write(copy, value)
        assert (q.returncode == 1) is refused
        assert (message("inactive L2 table") in q.stdout + q.stderr) is refused


# QEMU's keyval form of the options, as both tools take them with --image-opts
# -> whether a write into an inactive L2 table is refused.
KEYVAL_MODES = {
    "overlap-check=all": True,
    "overlap-check.template=all": True,
    "overlap-check.template=all,overlap-check.inactive-l2=off": False,
    "overlap-check.template=none,overlap-check.inactive-l2=on": True,
    "overlap-check.inactive-l2=off": False,
}


@pytest.mark.parametrize("keys", sorted(KEYVAL_MODES))
def test_dotted_keys_as_qemu_io(workdir, keys):
    """The same `--image-opts driver=qcow2,...,overlap-check.*=...` line given
    to strata-io and qemu-io: both refuse, or both let the write through."""
    require("qemu-io")
    refused = KEYVAL_MODES[keys]
    for tool in ("strata", "qemu"):
        os.makedirs(os.path.join(workdir, tool))
        path = inactive_l2_image(os.path.join(workdir, tool))
        opts = f"driver=qcow2,file.driver=file,file.filename={path},{keys}"
        binary = strata_binary("strata-io") if tool == "strata" else "qemu-io"
        res = run([binary, "--image-opts", "-c", "write -P 3 128k 4k", opts], check=False)
        out = res.stdout + res.stderr
        assert (message("inactive L2 table") in out) is refused, (tool, out)
        assert (res.returncode != 0) is refused, (tool, out)


def test_object_booleans_turn_single_kinds_off(workdir):
    """The snapshot-table boolean alone lets a data write onto the snapshot
    table through; the other kinds stay checked."""
    require("qemu-img")
    path = image(workdir, snapshots=("s1",))
    lie_about(path, layout(path)["snap_table"])
    copy = os.path.join(workdir, "copy.qcow2")
    shutil.copy(path, copy)
    res = strata_write(path, {"template": "cached", "snapshot-table": False})
    assert res.returncode == 0, res.stdout + res.stderr
    res = strata_write(copy, {"template": "cached", "inactive-l1": False, "active-l2": "off"})
    assert res.returncode == 1 and message("snapshot table") in res.stdout + res.stderr


@pytest.mark.parametrize("value,error", [
    ("bogus", "Unsupported value 'bogus' for qcow2 option 'overlap-check'. Allowed are any "
              "of the following: none, constant, cached, all"),
    ({"template": "bogus"}, "Unsupported value 'bogus' for qcow2 option 'overlap-check'"),
    ({"inactive-l2": "maybe"}, "Parameter 'overlap-check.inactive-l2' expects 'on' or 'off'"),
    ({"bogus": True}, "Block format 'qcow2' does not support the option 'overlap-check.bogus'"),
    (3, "Parameter 'overlap-check' expects"),
])
def test_bad_overlap_check_values_are_refused(workdir, value, error):
    path = os.path.join(workdir, "img.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1M"])
    res = strata_write(path, value)
    assert res.returncode == 1
    assert error in res.stdout + res.stderr


def test_all_mode_has_no_false_alarms(workdir):
    """Snapshot create/apply/delete, bitmaps and writes over shared and
    copied L2 tables, all with overlap-check=all, on a healthy image."""
    require("qemu-img")
    path = os.path.join(workdir, "healthy.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"])
    opts = json.dumps({"driver": "qcow2", "overlap-check": "all",
                       "file": {"driver": "file", "filename": path}})
    io = [strata_binary("strata-io"), "--image-opts"]
    run(io + ["-c", "write -P 1 0 192k", opts])
    run([strata_binary("strata-img"), "snapshot", "-c", "s1", "--image-opts", opts])
    run(io + ["-c", "write -P 2 64k 4k", "-c", "write -P 2 10M 4k", opts])
    run([strata_binary("strata-img"), "snapshot", "-c", "s2", "--image-opts", opts])
    run(io + ["-c", "write -P 3 0 4k", opts])
    run([strata_binary("strata-img"), "snapshot", "-a", "s1", "--image-opts", opts])
    run(io + ["-c", "write -P 4 8k 4k", opts])
    run([strata_binary("strata-img"), "snapshot", "-d", "s2", "--image-opts", opts])
    run([strata_binary("strata-img"), "bitmap", "--add", "--image-opts", opts, "b0"])
    run(io + ["-c", "write -P 5 20M 4k", opts])
    assert run(["qemu-img", "check", path], check=False).returncode == 0
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is False
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 1 0 8k", "-c", "read -P 4 8k 4k",
         "-c", "read -P 1 12k 52k", "-c", "read -P 5 20M 4k", path])
