"""qcow2 images with zstd compression (compression_type=zstd), against QEMU.

Images qemu-img compressed with zstd read back in Strata; images
strata-img creates and compresses are byte-identical to qemu-img's where
QEMU's layout is deterministic, pass `qemu-img check`, and read back the
same in qemu-img; check statistics (compressed and fragmented clusters)
agree with qemu-img on compressed images of both types.
"""
import json
import os
import random
import shutil
import struct

import pytest

from conftest import require, run
from qcow2_features import (apply_ops, assert_clean_and_equal, check_json, patterned_raw,
                            qemu_io, random_ops, strata_img, strata_io)

MiB = 1 << 20


def test_create_matches_qemu(workdir):
    require("qemu-img")
    mine = os.path.join(str(workdir), "mine.qcow2")
    theirs = os.path.join(str(workdir), "theirs.qcow2")
    res = strata_img("create", "-f", "qcow2", "-o", "compression_type=zstd", mine, "1G")
    assert res.returncode == 0, res.stderr
    assert "compression_type=zstd" in res.stdout
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", theirs, "1G"])
    with open(mine, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()
    info = json.loads(run(["qemu-img", "info", "--output=json", mine]).stdout)
    assert info["format-specific"]["data"]["compression-type"] == "zstd"


@pytest.mark.parametrize("opts", ["compression_type=zstd,compat=0.10",
                                  "compression_type=lz4"])
def test_create_refusals_match_qemu(workdir, opts):
    require("qemu-img")
    mine = strata_img("create", "-f", "qcow2", "-o", opts,
                      os.path.join(str(workdir), "a.qcow2"), "1M")
    theirs = run(["qemu-img", "create", "-f", "qcow2", "-o", opts,
                  os.path.join(str(workdir), "b.qcow2"), "1M"], check=False)
    assert mine.returncode == theirs.returncode == 1
    assert mine.stderr.split(": ", 2)[-1] == theirs.stderr.split(": ", 2)[-1]


@pytest.mark.parametrize("cluster", [4096, 65536, 2 * MiB])
def test_reads_images_qemu_compressed(workdir, cluster):
    require("qemu-img")
    src = os.path.join(str(workdir), "src.raw")
    patterned_raw(src, 8 * MiB, cluster)
    image = os.path.join(str(workdir), "q.qcow2")
    run(["qemu-img", "convert", "-c", "-O", "qcow2", "-o",
         f"compression_type=zstd,cluster_size={cluster}", src, image])
    code, data, _ = check_json("qemu", image)
    assert data["compressed-clusters"] > 0
    out = os.path.join(str(workdir), "out.raw")
    res = strata_img("convert", "-O", "raw", image, out)
    assert res.returncode == 0, res.stderr
    with open(out, "rb") as a, open(src, "rb") as b:
        assert a.read() == b.read()


def test_convert_compressed_matches_qemu(workdir):
    """The compressed clusters Strata writes are QEMU's bytes: one zstd frame
    per cluster, packed the same way; the whole image is identical."""
    require("qemu-img")
    src = os.path.join(str(workdir), "src.raw")
    patterned_raw(src, 16 * MiB, 3, holes=False)
    mine = os.path.join(str(workdir), "mine.qcow2")
    theirs = os.path.join(str(workdir), "theirs.qcow2")
    res = strata_img("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", src, mine)
    assert res.returncode == 0, res.stderr
    run(["qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", src,
         theirs])
    assert run(["qemu-img", "check", mine], check=False).returncode == 0
    cmp = run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, mine], check=False)
    assert cmp.returncode == 0, cmp.stdout
    with open(mine, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
def test_check_statistics_match_qemu(workdir, ctype):
    """Compressed clusters count as fragmented, as in qemu-img check."""
    require("qemu-img")
    src = os.path.join(str(workdir), "src.raw")
    patterned_raw(src, 8 * MiB, 11)
    image = os.path.join(str(workdir), "c.qcow2")
    run(["qemu-img", "convert", "-c", "-O", "qcow2", "-o", f"compression_type={ctype}", src,
         image])
    qemu_io(image, ["write -P 3 1M 100k"])
    theirs = check_json("qemu", image)
    mine = check_json("strata", image)
    assert mine == theirs
    assert theirs[1]["fragmented-clusters"] >= theirs[1]["compressed-clusters"] > 0
    human_mine = strata_img("check", image).stdout
    human_theirs = run(["qemu-img", "check", image]).stdout
    assert human_mine == human_theirs


def test_random_writes_over_zstd(workdir):
    """Writes, zeroes and discards over zstd clusters (copy-on-write
    decompresses them); qemu-img sees the model."""
    require("qemu-img")
    size = 8 * MiB
    src = os.path.join(str(workdir), "src.raw")
    model = patterned_raw(src, size, 5)
    image = os.path.join(str(workdir), "z.qcow2")
    res = strata_img("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", src, image)
    assert res.returncode == 0, res.stderr
    rng = random.Random(17)
    ops = random_ops(rng, size, 65536, 1200)
    strata_io(image, apply_ops(model, ops, 65536))
    assert_clean_and_equal(image, model, workdir)


def test_amend_downgrade_matches_qemu(workdir):
    require("qemu-img")
    plain = os.path.join(str(workdir), "plain.qcow2")
    used = os.path.join(str(workdir), "used.qcow2")
    for path in (plain, used):
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", path,
             "1M"])
    qemu_io(used, ["write -c -P 3 0 64k"])
    copy = used + ".copy"
    shutil.copy(used, copy)
    mine = strata_img("amend", "-o", "compat=0.10", used)
    theirs = run(["qemu-img", "amend", "-o", "compat=0.10", copy], check=False)
    assert mine.returncode == theirs.returncode == 1
    assert mine.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1]
    with open(used, "rb") as a, open(copy, "rb") as b:
        assert a.read() == b.read()
    res = strata_img("amend", "-o", "compat=0.10", plain)
    assert res.returncode == 0, res.stderr
    info = json.loads(run(["qemu-img", "info", "--output=json", plain]).stdout)
    assert info["format-specific"]["data"]["compat"] == "0.10"
    assert info["format-specific"]["data"]["compression-type"] == "zlib"
    assert run(["qemu-img", "check", plain], check=False).returncode == 0


@pytest.mark.parametrize("ctype,bit", [(2, True), (1, False), (0, True)])
def test_bad_compression_header_matches_qemu(workdir, ctype, bit):
    require("qemu-img")
    image = os.path.join(str(workdir), "h.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1M"])
    with open(image, "r+b") as f:
        f.seek(72)
        incompat = struct.unpack(">Q", f.read(8))[0]
        f.seek(72)
        f.write(struct.pack(">Q", incompat | 8 if bit else incompat & ~8))
        f.seek(104)
        f.write(bytes([ctype]))
    mine = strata_img("info", image)
    theirs = run(["qemu-img", "info", image], check=False)
    assert mine.returncode == theirs.returncode == 1
    assert mine.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1]
