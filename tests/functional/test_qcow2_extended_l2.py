"""qcow2 images with extended L2 entries (subclusters), checked against QEMU.

The same writes, write-zeroes, unmaps and discards (the sequences of QEMU's
iotest 271) go through qemu-io into one image and through strata-io into
another: the L2 entries (allocation and zero bitmaps included) must come
out the same, the contents equal, and `qemu-img check` clean. Images QEMU
wrote read back in Strata; images Strata creates are byte-identical to
qemu-img's; map, check and corruption handling agree with qemu-img.
"""
import os
import random
import shutil
import struct

import pytest

from conftest import require, run
from qcow2_features import (apply_ops, assert_clean_and_equal, check_json, guest_view,
                            l2_entries, map_json, qemu_io, random_ops, strata_img, strata_io,
                            without_offsets)

KiB = 1024
MiB = 1 << 20


def command(c=0, sc=0, off=0, length="2k", cmd="write", pattern=1):
    offset = c * 64 * KiB + sc * 2 * KiB + off * KiB
    verb = {"write": f"write -P {pattern}", "zero": "write -z", "unmap": "write -z -u",
            "discard": "discard", "compress": f"write -c -P {pattern}"}[cmd]
    return f"{verb} {offset} {length}"


# (c, sc, off, len, cmd) steps of iotest 271.
STANDARD = [
    (0, 0, 0, "1k", "write"), (0, 1, 1, "512", "write"), (0, 2, 1, "1k", "write"),
    (0, 3, 0, "2k", "write"), (0, 4, 0, "6k", "write"), (0, 7, 1, "4k", "write"),
    (0, 16, 0, "1k", "write"), (0, 31, 1, "4k", "write"), (0, 1, 0, "2k", "zero"),
    (0, 0, 0, "64k", "zero"), (0, 0, 0, "64k", "write"), (0, 0, 0, "32k", "unmap"),
    (0, 0, 0, "64k", "unmap"), (0, 1, 1, "512", "write"), (0, 0, 0, "64k", "write"),
    (0, 0, 0, "64k", "discard"), (0, 0, 0, "64k", "compress"), (0, 1, 1, "512", "write"),
]
NO_COW = [
    (0, 12, 0, "40k", "write"), (1, 13, 0, "2k", "write"), (2, 14, 0, "2k", "write"),
    (2, 14, 0, "2k", "zero"), (3, 0, 0, "34k", "write"), (0, 12, 0, "192k", "write"),
]


def zero_steps(cmd):
    steps = [(0, 0, 0, "192k", cmd), (3, 16, 0, "128k", cmd), (6, 15, 1, "128k", cmd),
             (9, 0, 0, "576k", "write"), (9, 0, 0, "192k", cmd), (12, 16, 0, "128k", cmd),
             (15, 15, 1, "128k", cmd)]
    steps += [(c, 0, 0, "64k", "compress") for c in range(18, 29)]
    steps += [(18, 0, 0, "192k", cmd), (21, 16, 0, "128k", cmd), (24, 15, 1, "129k", cmd),
              (27, 15, 1, "128k", cmd), (30, 15, 1, "8k", cmd), (32, 0, 0, "35k", cmd)]
    return steps


def make_pair(workdir, size, backing, cluster=65536):
    opts = f"extended_l2=on,cluster_size={cluster}"
    images = []
    for name in ("qemu.qcow2", "strata.qcow2"):
        path = os.path.join(str(workdir), name)
        args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts]
        if backing:
            args += ["-b", backing, "-F", "raw"]
        run(args + [path, str(size)])
        images.append(path)
    return images


def base_file(workdir, size):
    base = os.path.join(str(workdir), "base.raw")
    with open(base, "wb") as f:
        f.write(b"\xff" * size)
    return base


def run_steps(steps, qemu_image, strata_image):
    """Each step through qemu-io and strata-io (compressed writes, which
    strata-io cannot issue, through qemu-io on both), comparing the guest
    view of the L2 entries after every step."""
    for i, (c, sc, off, length, cmd) in enumerate(steps):
        line = command(c, sc, off, length, cmd, pattern=i % 250 + 1)
        qemu_io(qemu_image, [line])
        if cmd == "compress":
            qemu_io(strata_image, [line])
        else:
            strata_io(strata_image, [line])
        assert guest_view(l2_entries(strata_image, True)) == \
            guest_view(l2_entries(qemu_image, True)), f"after step {i}: {line}"
    cmp = run(["qemu-img", "compare", qemu_image, strata_image], check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    chk = run(["qemu-img", "check", strata_image], check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    assert without_offsets(map_json("qemu", strata_image)) == \
        without_offsets(map_json("qemu", qemu_image))


@pytest.mark.parametrize("with_backing", [True, False])
def test_iotest271_writes(workdir, with_backing):
    require("qemu-io")
    backing = base_file(workdir, MiB) if with_backing else None
    qemu_image, strata_image = make_pair(workdir, MiB, backing)
    run_steps(STANDARD, qemu_image, strata_image)


def test_iotest271_overwrite_without_cow(workdir):
    require("qemu-io")
    qemu_image, strata_image = make_pair(workdir, MiB, None)
    run_steps(NO_COW, qemu_image, strata_image)


@pytest.mark.parametrize("cmd", ["zero", "unmap"])
@pytest.mark.parametrize("with_backing", [True, False])
def test_iotest271_zeroes(workdir, cmd, with_backing):
    require("qemu-io")
    size = 2083 * KiB  # not a multiple of the cluster or subcluster size
    backing = base_file(workdir, size) if with_backing else None
    qemu_image, strata_image = make_pair(workdir, size, backing)
    run_steps(zero_steps(cmd), qemu_image, strata_image)


@pytest.mark.parametrize("cluster", [16 * KiB, 64 * KiB, 2 * MiB])
def test_create_matches_qemu(workdir, cluster):
    require("qemu-img")
    mine = os.path.join(str(workdir), "mine.qcow2")
    theirs = os.path.join(str(workdir), "theirs.qcow2")
    opts = f"extended_l2=on,cluster_size={cluster}"
    res = strata_img("create", "-f", "qcow2", "-o", opts, mine, "100M")
    assert res.returncode == 0, res.stderr
    assert "extended_l2=on" in res.stdout
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, theirs, "100M"])
    with open(mine, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()


def test_create_refusals_match_qemu(workdir):
    require("qemu-img")
    for opts in ("extended_l2=on,cluster_size=8k", "extended_l2=on,compat=0.10"):
        mine = strata_img("create", "-f", "qcow2", "-o", opts,
                          os.path.join(str(workdir), "a.qcow2"), "1M")
        theirs = run(["qemu-img", "create", "-f", "qcow2", "-o", opts,
                      os.path.join(str(workdir), "b.qcow2"), "1M"], check=False)
        assert mine.returncode == 1 and theirs.returncode == 1
        assert mine.stderr.split(": ", 2)[-1] == theirs.stderr.split(": ", 2)[-1]


@pytest.mark.parametrize("cluster,with_backing", [(64 * KiB, False), (64 * KiB, True),
                                                  (16 * KiB, False), (2 * MiB, False)])
def test_random_workload(workdir, cluster, with_backing):
    require("qemu-img")
    size = 8 * MiB if cluster < 2 * MiB else 24 * MiB
    image = os.path.join(str(workdir), "img.qcow2")
    rng = random.Random(cluster + with_backing)
    model = bytearray(size)
    args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o",
            f"extended_l2=on,cluster_size={cluster}"]
    if with_backing:
        model = bytearray(rng.randbytes(size))
        base = os.path.join(str(workdir), "base.raw")
        with open(base, "wb") as f:
            f.write(model)
        args += ["-b", base, "-F", "raw"]
    run(args + [image, str(size)])
    sub = cluster // 32
    for session in range(2):
        ops = random_ops(rng, size, sub, 700, discard=not with_backing)
        strata_io(image, apply_ops(model, ops, cluster))
        assert_clean_and_equal(image, model, workdir)
        mine, theirs = check_json("strata", image), check_json("qemu", image)
        assert mine[:2] == theirs[:2]


def test_reads_images_qemu_wrote(workdir):
    """qemu-io writes patterns, zeroes and compressed clusters; Strata's raw
    conversion equals qemu-img's and strata-io reads the patterns back."""
    require("qemu-io")
    image = os.path.join(str(workdir), "q.qcow2")
    base = os.path.join(str(workdir), "b.raw")
    with open(base, "wb") as f:
        f.write(bytes([0x5A]) * (4 * MiB))
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", base,
         "-F", "raw", image, "4M"])
    qemu_io(image, ["write -P 1 3k 5k", "write -z 70k 30k", "write -c -P 2 128k 64k",
                    "write -P 3 200k 1k", "write -z -u 1M 100k", "discard 2M 128k",
                    "write -P 4 3M 66k"])
    theirs = os.path.join(str(workdir), "theirs.raw")
    mine = os.path.join(str(workdir), "mine.raw")
    run(["qemu-img", "convert", "-O", "raw", image, theirs])
    res = strata_img("convert", "-O", "raw", image, mine)
    assert res.returncode == 0, res.stderr
    with open(mine, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()
    res = strata_io(image, ["read -P 1 3k 5k", "read -P 0 70k 30k", "read -P 2 128k 64k",
                            "read -P 90 8k 62k", "read -P 0 2M 128k", "read -P 4 3M 66k"],
                    extra=("-r",))
    assert "read failed" not in res.stdout + res.stderr
    assert map_json("strata", image) == map_json("qemu", image)


def test_snapshots_and_compressed(workdir):
    """Internal snapshots keep their subcluster bits; convert -c and the
    copy-on-write of compressed clusters give a clean image."""
    require("qemu-img")
    src = os.path.join(str(workdir), "src.raw")
    with open(src, "wb") as f:
        for i in range(64):
            f.write(bytes([i + 1]) * 32768 + bytes(32768))
    image = os.path.join(str(workdir), "c.qcow2")
    res = strata_img("convert", "-c", "-O", "qcow2", "-o", "extended_l2=on", src, image)
    assert res.returncode == 0, res.stderr
    code, data, _ = check_json("qemu", image)
    assert code == 0 and data["compressed-clusters"] > 0
    assert strata_img("snapshot", "-c", "s1", image).returncode == 0
    strata_io(image, ["write -P 200 5k 3k", "write -z 70k 2k", "write -P 201 1M 600"])
    assert run(["qemu-img", "check", image], check=False).returncode == 0
    qemu_io(image, ["read -P 200 5k 3k", "read -P 0 70k 2k", "read -P 201 1M 600"])
    assert strata_img("snapshot", "-a", "s1", image).returncode == 0
    cmp = run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, image], check=False)
    assert cmp.returncode == 0, cmp.stdout
    assert run(["qemu-img", "check", image], check=False).returncode == 0


def test_map_and_info(workdir):
    require("qemu-img")
    image = os.path.join(str(workdir), "m.qcow2")
    base = os.path.join(str(workdir), "b.raw")
    with open(base, "wb") as f:
        f.write(b"\x01" * MiB)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", base,
         "-F", "raw", image, "1M"])
    qemu_io(image, ["write -P 1 2k 1k", "write -z 8k 4k", "write -z 70k 1k",
                    "write -z -u 200k 64k"])
    assert map_json("strata", image) == map_json("qemu", image)
    info = strata_img("info", "--output=json", image)
    assert '"extended-l2": true' in info.stdout


def test_preallocation_with_backing(workdir):
    """With extended L2 a backing file and preallocation go together: the
    clusters are allocated but read from the backing file until written."""
    require("qemu-img")
    base = os.path.join(str(workdir), "b.raw")
    with open(base, "wb") as f:
        f.write(b"\x07" * (2 * MiB))
    mine = os.path.join(str(workdir), "mine.qcow2")
    theirs = os.path.join(str(workdir), "theirs.qcow2")
    args = ["-f", "qcow2", "-o", "extended_l2=on,preallocation=metadata", "-b", base,
            "-F", "raw"]
    res = strata_img("create", *args, mine, "2M")
    assert res.returncode == 0, res.stderr
    run(["qemu-img", "create", "-q", *args, theirs, "2M"])
    assert guest_view(l2_entries(mine, True)) == guest_view(l2_entries(theirs, True))
    assert map_json("qemu", mine) == map_json("qemu", theirs)
    strata_io(mine, ["write -P 9 64k 1k"])
    qemu_io(mine, ["read -P 9 64k 1k", "read -P 7 65k 63k"])
    assert run(["qemu-img", "check", mine], check=False).returncode == 0


def corrupt_entry(image, index, entry, bitmap):
    l2 = l2_table_offset(image)
    with open(image, "r+b") as f:
        f.seek(l2 + 16 * index)
        f.write(struct.pack(">QQ", entry, bitmap))


def l2_table_offset(image):
    with open(image, "rb") as f:
        f.seek(40)
        l1 = struct.unpack(">Q", f.read(8))[0]
        f.seek(l1)
        return struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00


@pytest.mark.parametrize("case", ["unallocated-with-bits", "allocated-and-zero",
                                  "compressed-with-bitmap"])
def test_corruption_matches_qemu(workdir, case):
    require("qemu-io")
    image = os.path.join(str(workdir), "x.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", image, "1M"])
    qemu_io(image, ["write -P 1 0 64k", "write -c -P 2 64k 64k"])
    entries = l2_entries(image, True)
    index, entry, bitmap = {
        "unallocated-with-bits": (2, 0, 1),
        "allocated-and-zero": (0, entries[0][0], (1 << 32) | 1),
        "compressed-with-bitmap": (1, entries[1][0], 0xFF),
    }[case]
    corrupt_entry(image, index, entry, bitmap)
    copy = image + ".copy"
    shutil.copy(image, copy)
    theirs = check_json("qemu", copy)
    mine = check_json("strata", image)
    assert mine[0] == theirs[0] == 2, (mine, theirs)
    assert mine[1]["corruptions"] == theirs[1]["corruptions"]
    # Reading the entry fails where it fails in qemu-io (a compressed
    # cluster ignores its bitmap), and then the image is marked corrupt.
    read = f"read {index * 64 * KiB} 64k"
    res = strata_io(image, [read], check=False)
    q = run(["qemu-io", "-c", read, copy], check=False)
    failed = "read failed" in q.stdout + q.stderr
    assert failed == (case != "compressed-with-bitmap")
    assert ("read failed" in res.stdout + res.stderr) == failed
    info_mine = run(["qemu-img", "info", "--output=json", image])
    info_theirs = run(["qemu-img", "info", "--output=json", copy])
    assert ('"corrupt": true' in info_mine.stdout) == ('"corrupt": true' in info_theirs.stdout)


def test_subclusters_below_512_bytes_refused_as_qemu(workdir):
    require("qemu-img")
    image = os.path.join(str(workdir), "h.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", image, "1M"])
    with open(image, "r+b") as f:
        f.seek(79)
        f.write(b"\x10")
    mine = strata_img("info", image)
    theirs = run(["qemu-img", "info", image], check=False)
    assert mine.returncode == theirs.returncode == 1
    assert mine.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1]
    assert "Unsupported subcluster size: 128" in mine.stderr
