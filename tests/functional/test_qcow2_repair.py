"""check -r all on images whose refcount structure is damaged: the structure
is rebuilt from the references, as qemu-img does. Each damaged image is
repaired by strata-img and (a copy) by qemu-img; the reports must agree,
qemu-img check must find nothing wrong with Strata's result, the guest data
must be unchanged, and the repaired image must take new allocations."""
import json
import os
import random
import shutil
import struct

import pytest

from conftest import require, run, strata_binary


def header(path):
    with open(path, "rb") as f:
        d = f.read(104)
    return {
        "cluster_bits": struct.unpack(">I", d[20:24])[0],
        "l1_offset": struct.unpack(">Q", d[40:48])[0],
        "reftable": struct.unpack(">Q", d[48:56])[0],
        "refcount_order": struct.unpack(">I", d[96:100])[0],
    }


def reftable_entry(path, index):
    with open(path, "rb") as f:
        f.seek(header(path)["reftable"] + 8 * index)
        return struct.unpack(">Q", f.read(8))[0]


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def set_reftable_entry(path, index, value):
    poke(path, header(path)["reftable"] + 8 * index, struct.pack(">Q", value))


def first_l2_offset(path):
    with open(path, "rb") as f:
        f.seek(header(path)["l1_offset"])
        return struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00


def make_image(workdir, opts):
    base = os.path.join(workdir, "base.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, base, "64M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 8M 64k",
         "-c", "write -P 3 40M 128k", "-c", "write -P 4 63M 1M",
         "-c", "write -P 7 16M 9M", base])
    return base


# name -> (damage function, rebuild expected)
def zero_entry(path):
    set_reftable_entry(path, 0, 0)


def past_end(path):
    # The refcount block is said to be one cluster past the end of the file.
    cs = 1 << header(path)["cluster_bits"]
    set_reftable_entry(path, 0, (os.path.getsize(path) + cs - 1) // cs * cs)


def garbage(path):
    # Random non-zero bytes over the entries of the clusters in the file
    # (the entries past the end stay zero: neither tool repairs those).
    rng = random.Random(7)
    h = header(path)
    cs = 1 << h["cluster_bits"]
    nbytes = (os.path.getsize(path) + cs - 1) // cs * (1 << h["refcount_order"]) // 8
    poke(path, reftable_entry(path, 0), bytes(rng.randrange(1, 256) for _ in range(nbytes)))


def overlaps_l2(path):
    set_reftable_entry(path, 0, first_l2_offset(path))


def unaligned(path):
    set_reftable_entry(path, 0, reftable_entry(path, 0) + 512)


def second_block_lost(path):
    set_reftable_entry(path, 1, 0)


DAMAGE = {
    "zero-entry": (zero_entry, "cluster_size=64k"),
    "past-end": (past_end, "cluster_size=64k"),
    "garbage": (garbage, "cluster_size=64k"),
    "overlaps-l2": (overlaps_l2, "cluster_size=64k"),
    "unaligned": (unaligned, "cluster_size=64k"),
    # 4 KiB clusters, 16-bit refcounts: one block covers 8 MiB of the file.
    "second-block-lost": (second_block_lost, "cluster_size=4k"),
    "zero-entry-1bit": (zero_entry, "cluster_size=4k,refcount_bits=1"),
    "overlaps-l2-64bit": (overlaps_l2, "cluster_size=64k,refcount_bits=64"),
}


def check_json(tool, path, *args):
    res = run([tool, "check", "--output=json", *args, path], check=False)
    return res.returncode, (json.loads(res.stdout) if res.stdout.strip() else None), res.stderr


def strip_names(report):
    report = dict(report)
    report.pop("filename", None)
    return report


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_rebuild_like_qemu(workdir, name):
    require("qemu-img")
    damage, opts = DAMAGE[name]
    base = make_image(workdir, opts)
    ours = os.path.join(workdir, "ours.qcow2")
    theirs = os.path.join(workdir, "theirs.qcow2")
    shutil.copy(base, ours)
    damage(ours)
    shutil.copy(ours, theirs)
    strata_img = strata_binary("strata-img")

    # Without repair, both see the same damage.
    rc_o, rep_o, _ = check_json(strata_img, ours)
    rc_t, rep_t, _ = check_json("qemu-img", theirs)
    assert rc_o == rc_t != 0
    assert strip_names(rep_o) == strip_names(rep_t)

    rc_o, rep_o, err_o = check_json(strata_img, ours, "-r", "all")
    rc_t, rep_t, err_t = check_json("qemu-img", theirs, "-r", "all")
    assert rc_o == 0, err_o
    if name == "unaligned":
        # qemu-img marks the image corrupt and cannot write the new structure.
        assert rc_t == 1 and "Check failed" in err_t
    else:
        assert rc_t == 0
        # Strata leaves the new structure past the end of the file (QEMU
        # reuses free clusters), and does not grow the file over a block
        # outside it (QEMU does, then counts one more repaired cluster).
        for key in ("image-end-offset", "corruptions-fixed" if name == "past-end" else ""):
            rep_o.pop(key, None)
            rep_t.pop(key, None)
        assert strip_names(rep_o) == strip_names(rep_t)
    rebuilt = "Rebuilding refcount structure" in err_o
    assert rebuilt == (name != "garbage")
    assert "ERROR need to rebuild" not in err_o

    after = run(["qemu-img", "check", "--output=json", ours], check=False)
    assert after.returncode == 0, after.stdout + after.stderr
    report = json.loads(after.stdout)
    assert "corruptions" not in report and "leaks" not in report
    assert run(["qemu-img", "compare", base, ours]).returncode == 0
    assert header(ours)["refcount_order"] == header(base)["refcount_order"]

    # The repaired image takes new allocations, through both tools.
    run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 9 20M 256k", ours])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 8 30M 64k", ours])
    assert run(["qemu-img", "check", ours], check=False).returncode == 0
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 9 20M 256k", "-c", "read -P 8 30M 64k",
         "-c", "read -P 1 0 1M", ours])


def test_repair_leaks_only_refuses_rebuild(workdir):
    """-r leaks cannot rebuild: the damage stays, reported as a check error."""
    require("qemu-img")
    base = make_image(workdir, "cluster_size=64k")
    img = os.path.join(workdir, "img.qcow2")
    shutil.copy(base, img)
    zero_entry(img)
    with open(img, "rb") as f:
        before = f.read()
    res = run([strata_binary("strata-img"), "check", "-r", "leaks", img], check=False)
    assert res.returncode == 1
    assert "ERROR need to rebuild refcount structures" in res.stderr
    with open(img, "rb") as f:
        assert f.read() == before


def test_rebuild_keeps_snapshots_and_bitmaps(workdir):
    """References from an internal snapshot and a persistent bitmap count."""
    require("qemu-img")
    base = make_image(workdir, "cluster_size=64k")
    run(["qemu-img", "snapshot", "-c", "snap", base])
    run(["qemu-img", "bitmap", "--add", base, "b0"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 64k", "-c", "write -P 6 50M 64k", base])
    img = os.path.join(workdir, "img.qcow2")
    shutil.copy(base, img)
    zero_entry(img)
    res = run([strata_binary("strata-img"), "check", "-r", "all", img], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert run(["qemu-img", "check", img], check=False).returncode == 0
    assert run(["qemu-img", "compare", base, img]).returncode == 0
    snap_base = run(["qemu-img", "snapshot", "-l", base]).stdout.splitlines()[2:]
    snap_img = run(["qemu-img", "snapshot", "-l", img]).stdout.splitlines()[2:]
    assert [l.split()[1] for l in snap_img] == [l.split()[1] for l in snap_base] == ["snap"]
    info = json.loads(run(["qemu-img", "info", "--output=json", img]).stdout)
    assert [b["name"] for b in info["format-specific"]["data"]["bitmaps"]] == ["b0"]
    # The snapshot's data reads the same from both.
    raws = []
    for src in (base, img):
        raws.append(src + ".snap.raw")
        run(["qemu-img", "convert", "-l", "snapshot.name=snap", "-O", "raw", src, raws[-1]])
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", *raws]).returncode == 0


def test_rebuild_leaves_a_reference_past_the_end_reported(workdir):
    """A data cluster referenced far past the end of the file and a lost
    refcount block: as qemu-img, the reference is a corruption that is not
    counted, the structure is rebuilt from the others, the file does not
    grow out to the reference, and the corruption stays reported."""
    require("qemu-img")
    base = make_image(workdir, "cluster_size=64k")
    img = os.path.join(workdir, "img.qcow2")
    shutil.copy(base, img)
    l2 = first_l2_offset(img)
    past = (os.path.getsize(img) // 65536 + 1000) * 65536  # 1000 clusters past the end
    poke(img, l2 + 8 * 20, struct.pack(">Q", (1 << 63) | past))
    zero_entry(img)
    theirs = os.path.join(workdir, "theirs.qcow2")
    shutil.copy(img, theirs)
    rc_o, rep_o, err_o = check_json(strata_binary("strata-img"), img, "-r", "all")
    rc_t, rep_t, _ = check_json("qemu-img", theirs, "-r", "all")
    assert rc_o == rc_t == 2
    assert "Rebuilding refcount structure" in err_o
    assert ("ERROR: counting reference for region exceeding the end of the file by one cluster "
            "or more: offset 0x%x size 0x10000" % past) in err_o
    for rep in (rep_o, rep_t):
        rep.pop("image-end-offset")  # where the new structure went
    assert strip_names(rep_o) == strip_names(rep_t)
    assert os.path.getsize(img) < past
    rc, rep, _ = check_json("qemu-img", img)
    assert rc == 2 and rep["corruptions"] == 1 and "leaks" not in rep
    assert run(["qemu-img", "compare", theirs, img]).returncode == 0
