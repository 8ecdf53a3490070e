"""VHD (vpc) images qemu-img makes, fixed and dynamic, read by Strata's
read-only vpc driver, with QEMU's rules for the virtual size."""
import json
import os
import struct

import pytest

from conftest import require, run
from foreign_images import (MiB, assert_converts_like_qemu, assert_reports_like_qemu, make_image,
                            patch, read_at, strata_img)

GiB = 1 << 30


@pytest.fixture(autouse=True)
def peers():
    require("qemu-img")
    require("qemu-io")


def footer_offset(path):
    """A dynamic image has its footer copy at 0, a fixed one only at the end."""
    return 0 if read_at(path, 0, 8) == b"conectix" else os.path.getsize(path) - 512


def rewrite_footer(path, **fields):
    """Changes footer fields and fixes its checksum (at the end too, for a
    dynamic image's second copy)."""
    at = footer_offset(path)
    footer = bytearray(read_at(path, at, 512))
    layout = {"creator_app": (28, "4s"), "current_size": (48, ">Q"), "type": (60, ">I")}
    for name, value in fields.items():
        off, fmt = layout[name]
        struct.pack_into(fmt, footer, off, value)
    struct.pack_into(">I", footer, 64, 0)
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    patch(path, at, "512s", bytes(footer))


@pytest.mark.parametrize("opts", ["subformat=dynamic", "subformat=fixed",
                                  "subformat=dynamic,force_size=on",
                                  "subformat=fixed,force_size=on"])
def test_reads_like_qemu(workdir, opts):
    path = make_image(workdir, "vpc", "disk.vhd", 9 * MiB + 3 * 512, opts)
    virtual = json.loads(strata_img("info", "--output=json", path).stdout)["virtual-size"]
    if "force_size" in opts:
        assert virtual == 9 * MiB + 3 * 512
    else:
        assert virtual != 9 * MiB + 3 * 512  # rounded to the CHS geometry
    assert_converts_like_qemu(workdir, path, "vpc")
    assert_reports_like_qemu(path, "vpc")


def test_fixed_vhd_is_probed_by_its_footer(workdir):
    """QEMU probes a fixed VHD as raw (its only footer is at the end), so
    `qemu-img convert` without -f copies the footer as guest data. Strata
    finds the footer: a deliberate difference (docs/tools/strata-img.md)."""
    path = make_image(workdir, "vpc", "fixed.vhd", 9 * MiB, "subformat=fixed")
    theirs = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert theirs["format"] == "raw"
    assert theirs["virtual-size"] == os.path.getsize(path)
    ours = json.loads(strata_img("info", "--output=json", path).stdout)
    assert ours["format"] == "vpc"
    assert ours["virtual-size"] == os.path.getsize(path) - 512
    # A footer whose checksum is wrong is guest data, as for QEMU.
    patch(path, os.path.getsize(path) - 512 + 100, "B", 0x5A)
    assert json.loads(strata_img("info", "--output=json", path).stdout)["format"] == "raw"


def test_large_dynamic_sizes(workdir):
    """Above 127 GiB the CHS geometry is at its maximum and the footer's
    size counts, with or without force_size."""
    for name, opts in (("geometry.vhd", "subformat=dynamic"),
                       ("forced.vhd", "subformat=dynamic,force_size=on")):
        path = os.path.join(str(workdir), name)
        run(["qemu-img", "create", "-q", "-f", "vpc", "-o", opts, path, str(200 * GiB)])
        assert_reports_like_qemu(path, "vpc")
        path = os.path.join(str(workdir), "mid-" + name)
        run(["qemu-img", "create", "-q", "-f", "vpc", "-o", opts, path, str(100 * GiB + 3 * MiB)])
        assert_reports_like_qemu(path, "vpc")


@pytest.mark.parametrize("creator", [b"vpc ", b"qemu", b"qem2", b"win ", b"d2v ", b"CTXS",
                                     b"tap\0", b"xxxx"])
def test_size_rules_by_creator(workdir, creator):
    """The footer's size or the geometry, as QEMU decides by creator, and
    force_size_calc to override it."""
    path = make_image(workdir, "vpc", "disk.vhd", 9 * MiB, "subformat=dynamic")
    chs = json.loads(strata_img("info", "--output=json", path).stdout)["virtual-size"]
    rewrite_footer(path, creator_app=creator, current_size=chs - MiB)
    assert_reports_like_qemu(path, "vpc")
    for mode in ("chs", "current_size"):
        spec = f"driver=vpc,force_size_calc={mode},file.driver=file,file.filename={path}"
        ours = json.loads(strata_img("info", "--output=json", "--image-opts", spec).stdout)
        theirs = json.loads(run(["qemu-img", "info", "--output=json", "--image-opts",
                                 spec]).stdout)
        assert ours["virtual-size"] == theirs["virtual-size"]
    res = strata_img("info", "--image-opts",
                     f"driver=vpc,force_size_calc=x,file.driver=file,file.filename={path}",
                     check=False)
    assert res.returncode == 1
    assert "Invalid size calculation mode: 'x'" in res.stderr


def test_refused_where_qemu_would_read_the_wrong_data(workdir):
    """A differencing image without its parent, and a dynamic image whose
    first sector (the footer copy) is gone, read as zeroes in QEMU."""
    path = make_image(workdir, "vpc", "diff.vhd", 9 * MiB, "subformat=dynamic")
    rewrite_footer(path, type=4)
    res = strata_img("convert", "-O", "raw", path, os.path.join(str(workdir), "o.raw"),
                     check=False)
    assert res.returncode == 1
    assert "Differencing VHD images are not supported by Strata" in res.stderr
    path = make_image(workdir, "vpc", "headless.vhd", 9 * MiB, "subformat=dynamic")
    patch(path, 0, "8s", b"\0" * 8)
    res = strata_img("info", "-f", "vpc", path, check=False)
    assert res.returncode == 1
    assert "VHD footer of a dynamic image found only at the end of the file" in res.stderr


HOSTILE = {
    # name: (offset in the dynamic header at 512, format, value)
    "block-size": (32, ">I", 3000),
    "table-entries": (28, ">I", 0x10000000),
    "table-past-end": (16, ">Q", 1 << 40),
    "magic": (0, "8s", b"xxsparse"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE) + ["checksum", "block-past-end"])
def test_hostile_images_fail_like_qemu(workdir, name):
    path = make_image(workdir, "vpc", "disk.vhd", 9 * MiB, "subformat=dynamic")
    if name == "checksum":
        patch(path, 100, "B", 0x77)
    elif name == "block-past-end":
        bat = struct.unpack(">Q", read_at(path, 512 + 16, 8))[0]
        patch(path, bat, ">I", 1 << 30)
    else:
        off, fmt, value = HOSTILE[name]
        patch(path, 512 + off, fmt, value)
    theirs = run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", path,
                  os.path.join(str(workdir), "q.raw")], check=False)
    ours = strata_img("convert", "-O", "raw", path, os.path.join(str(workdir), "s.raw"),
                      check=False)
    assert theirs.returncode == 1 and ours.returncode == 1
    assert ours.stderr.replace("strata-img", "qemu-img") == theirs.stderr
    assert not os.path.exists(os.path.join(str(workdir), "s.raw"))
