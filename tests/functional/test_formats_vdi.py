"""VDI images qemu-img makes, dynamic and static, read by Strata's
read-only vdi driver; damaged ones refused or checked as qemu-img does."""
import os
import struct

import pytest

from conftest import require, run
from foreign_images import (MiB, assert_converts_like_qemu, assert_reports_like_qemu, make_image,
                            patch, read_at, strata_img)

BMAP = 0x154
DISK_SIZE = 0x170
BLOCKS = 0x180


@pytest.fixture(autouse=True)
def peers():
    require("qemu-img")
    require("qemu-io")


def entry_offset(path, block):
    return struct.unpack("<I", read_at(path, BMAP, 4))[0] + 4 * block


@pytest.mark.parametrize("opts", ["static=off", "static=on"])
def test_reads_like_qemu(workdir, opts):
    path = make_image(workdir, "vdi", "disk.vdi", 9 * MiB + 3 * 512, opts)
    assert_converts_like_qemu(workdir, path, "vdi")
    assert_reports_like_qemu(path, "vdi")


def test_odd_size_and_discarded_blocks(workdir):
    """VBoxManage may write sizes that are not sector multiples (QEMU rounds
    up); a discarded block (0xfffffffe) reads as zeroes."""
    path = make_image(workdir, "vdi", "disk.vdi", 9 * MiB)
    patch(path, DISK_SIZE, "<Q", 9 * MiB - 1000)
    patch(path, entry_offset(path, 5), "<I", 0xFFFFFFFE)
    assert_converts_like_qemu(workdir, path, "vdi")
    assert_reports_like_qemu(path, "vdi")


def test_check_counts_corruptions_like_qemu(workdir):
    path = make_image(workdir, "vdi", "disk.vdi", 9 * MiB)
    first = struct.unpack("<I", read_at(path, entry_offset(path, 0), 4))[0]
    patch(path, entry_offset(path, 1), "<I", first)  # used twice
    patch(path, entry_offset(path, 8), "<I", 1000)  # beyond the blocks
    for output in ("--output=human", "--output=json"):
        theirs = run(["qemu-img", "check", output, path], check=False)
        ours = strata_img("check", output, path, check=False)
        assert theirs.returncode == 2
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
        assert ours.stderr == theirs.stderr


REFUSED = {
    # name: (offset, format, value, message, qemu refuses too)
    "version": (0x44, "<I", 0x00020000, "unsupported VDI image (version 2.0)", True),
    "sector-size": (0x168, "<I", 4096, "unsupported VDI image (sector size 4096 is not 512)",
                    True),
    "block-size": (0x178, "<I", 4096,
                   "unsupported VDI image (block size 4096 is not 1048576)", True),
    "disk-size": (DISK_SIZE, "<Q", 1 << 62,
                  "Unsupported VDI image size (size is 0x4000000000000000, max supported is "
                  "0x1fffff8000000)", True),
    "no-room": (DISK_SIZE, "<Q", 100 * MiB,
                "unsupported VDI image (disk size 104857600, image bitmap has room for 9437184)",
                True),
    "unaligned-map": (BMAP, "<I", 513, "unsupported VDI image (unaligned block map offset 0x201)",
                      True),
    # QEMU reads a block map past the end of the file as zeroes (every block
    # then maps to the first one); Strata refuses it.
    "map-past-end": (BMAP, "<I", 1 << 30, "extends past the end of the file", False),
    "many-blocks": (BLOCKS, "<I", 0x1FFFFF00, "extends past the end of the file", False),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_headers(workdir, name):
    path = make_image(workdir, "vdi", "disk.vdi", 9 * MiB)
    offset, fmt, value, message, qemu_refuses = REFUSED[name]
    patch(path, offset, fmt, value)
    out = os.path.join(str(workdir), "out.raw")
    ours = strata_img("convert", "-O", "raw", path, out, check=False)
    assert ours.returncode == 1
    assert message in ours.stderr
    assert not os.path.exists(out)
    theirs = run(["qemu-img", "info", "-f", "vdi", path], check=False)
    assert (theirs.returncode == 1) is qemu_refuses
    if qemu_refuses:
        assert message in theirs.stderr


def test_block_past_the_end_fails_reads(workdir):
    """QEMU reads zeroes for a block the file does not hold; Strata fails the
    read and says where."""
    path = make_image(workdir, "vdi", "disk.vdi", 9 * MiB)
    patch(path, entry_offset(path, 0), "<I", 4000)
    res = strata_img("convert", "-O", "raw", path, os.path.join(str(workdir), "o.raw"),
                     check=False)
    assert res.returncode == 1
    assert "vdi: block 4000 (for guest offset 0) lies past the end of the file" in res.stderr
