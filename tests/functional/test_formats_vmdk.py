"""vmdk images qemu-img makes, in every subformat, read by Strata's
read-only vmdk driver: converted, reported and checked as qemu-img does."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import require, run, strata_binary, unix_listening
from foreign_images import (MiB, assert_converts_like_qemu, assert_reports_like_qemu,
                            files_equal, make_image, patch, qemu_io_write, read_at, strata_img)

SUBFORMATS = {
    "monolithicSparse": "subformat=monolithicSparse",
    "monolithicFlat": "subformat=monolithicFlat",
    "twoGbMaxExtentSparse": "subformat=twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat": "subformat=twoGbMaxExtentFlat",
    "zeroedGrain": "zeroed_grain=on",
    "compat6": "compat6=on",
}


@pytest.fixture(autouse=True)
def peers():
    require("qemu-img")
    require("qemu-io")


@pytest.mark.parametrize("kind", sorted(SUBFORMATS))
def test_subformat_reads_like_qemu(workdir, kind):
    path = make_image(workdir, "vmdk", "disk.vmdk", 9 * MiB + 3 * 512, SUBFORMATS[kind])
    if kind == "zeroedGrain":
        run(["qemu-io", "-f", "vmdk", "-c", "write -z 0 64k", path])
    assert_converts_like_qemu(workdir, path, "vmdk")
    assert_reports_like_qemu(path, "vmdk")


def test_stream_optimized_from_qemu_img_convert(workdir):
    """streamOptimized images are only written by convert: compressed grains
    with markers."""
    src = make_image(workdir, "qcow2", "src.qcow2", 9 * MiB + 512)
    path = os.path.join(str(workdir), "stream.vmdk")
    run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, path])
    info = json.loads(strata_img("info", "--output=json", path).stdout)
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert info["format-specific"]["data"]["extents"][0]["compressed"] is True
    assert_converts_like_qemu(workdir, path, "vmdk")
    assert_reports_like_qemu(path, "vmdk")


def test_stream_optimized_with_grain_directory_in_footer(workdir):
    """VMware's streams give the grain directory's place in a footer (the
    header says "at the end"); QEMU reads those, and so must we."""
    src = make_image(workdir, "raw", "src.raw", 4 * MiB, writes=[(0x21, 0, 70000)])
    path = os.path.join(str(workdir), "stream.vmdk")
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
         src, path])
    header = read_at(path, 0, 512)
    with open(path, "ab") as f:
        size = f.tell()
        assert size % 512 == 0
        f.write(bytes(8) + (0).to_bytes(4, "little") + (3).to_bytes(4, "little") + bytes(496))
        f.write(header)
        f.write(bytes(512))  # end-of-stream marker
    patch(path, 56, "<Q", 0xFFFFFFFFFFFFFFFF)  # gd_offset: at the end
    assert_converts_like_qemu(workdir, path, "vmdk")
    patch(path, size + 512 + 4, "<I", 4)  # the footer's header: version 4
    res = strata_img("info", path, check=False)
    assert res.returncode == 1
    assert "Unsupported VMDK version 4" in res.stderr


def test_extents_across_two_gib(workdir):
    """twoGbMaxExtent images larger than 2 GiB have several extent files;
    data straddling the boundary reads from both."""
    writes = [(0x61, 0, 4096), (0x62, 2048 * MiB - 3000, 70000), (0x63, 2049 * MiB, 4096)]
    for sub in ("twoGbMaxExtentSparse", "twoGbMaxExtentFlat"):
        path = make_image(workdir, "vmdk", sub + ".vmdk", 2050 * MiB, "subformat=" + sub,
                          writes=writes)
        info = json.loads(strata_img("info", "--output=json", path).stdout)
        assert len(info["format-specific"]["data"]["extents"]) == 2
        assert_converts_like_qemu(workdir, path, "vmdk", byte_compare=False)
        assert_reports_like_qemu(path, "vmdk")
        ours = os.path.join(str(workdir), "ours.raw")
        strata_img("convert", "-O", "raw", path, ours)
        for pattern, offset, length in writes:
            assert read_at(ours, offset, length) == bytes([pattern]) * length
        os.unlink(ours)


def test_parent_image(workdir):
    base = make_image(workdir, "vmdk", "base.vmdk", 9 * MiB)
    over = os.path.join(str(workdir), "over.vmdk")
    run(["qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", over])
    qemu_io_write("vmdk", over, [(0x77, 900 * 1024, 200 * 1024)])
    assert_converts_like_qemu(workdir, over, "vmdk")
    assert_reports_like_qemu(over, "vmdk", chain=True)
    # A parent whose CID is not the child's parentCID: both refuse to read
    # through it.
    text = open(base, "rb").read()
    at = text.index(b"CID=") + 4
    old = text[at:text.index(b"\n", at)]
    new = b"1" * len(old) if old != b"1" * len(old) else b"2" * len(old)
    patch(base, at, f"{len(new)}s", new)
    theirs = run(["qemu-img", "convert", "-O", "raw", over,
                  os.path.join(str(workdir), "q.raw")], check=False)
    ours = strata_img("convert", "-O", "raw", over, os.path.join(str(workdir), "s.raw"),
                      check=False)
    assert theirs.returncode == 1 and ours.returncode == 1
    assert "CID" in ours.stderr


def test_nbd_export(workdir):
    """strata-nbd serves a vmdk read-only (-r); without -r it refuses, since
    the image would be opened for writing."""
    path = make_image(workdir, "vmdk", "disk.vmdk", 9 * MiB, "subformat=monolithicFlat")
    ref = os.path.join(str(workdir), "ref.raw")
    run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, ref])
    tmp = tempfile.mkdtemp(prefix="nbd", dir="/tmp")
    sock = os.path.join(tmp, "s")
    try:
        res = run([strata_binary("strata-nbd"), "-k", sock, path], check=False, timeout=30)
        assert res.returncode == 1
        assert "Strata cannot write vmdk images (read-only driver)" in res.stderr
        proc = subprocess.Popen([strata_binary("strata-nbd"), "-r", "-k", sock, path],
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 20
            while not unix_listening(sock):
                assert proc.poll() is None, proc.stderr.read()
                assert time.time() < deadline
                time.sleep(0.02)
            out = os.path.join(str(workdir), "out.raw")
            run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                 f"nbd+unix:///?socket={sock}", out])
            assert files_equal(out, ref)
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_qmp_blockdev_add(daemon, workdir):
    path = make_image(workdir, "vmdk", "disk.vmdk", 9 * MiB)
    c = daemon.client()
    base = {"driver": "vmdk", "node-name": "v",
            "file": {"driver": "file", "filename": path}}
    assert c.error("blockdev-add", base) == \
        ("GenericError", "Strata cannot write vmdk images (read-only driver)")
    c.execute("blockdev-add", **dict(base, **{"read-only": True}))
    nodes = c.execute("query-named-block-nodes")
    node = next(n for n in nodes if n["node-name"] == "v")
    assert node["drv"] == "vmdk" and node["ro"] is True
    assert node["image"]["virtual-size"] == 9 * MiB
    # auto-read-only lets the node fall back to read-only, as in QEMU.
    c.execute("blockdev-add", **{"driver": "vmdk", "node-name": "w", "auto-read-only": True,
                                 "file": {"driver": "file", "filename": path}})
    node = next(n for n in c.execute("query-named-block-nodes") if n["node-name"] == "w")
    assert node["ro"] is True


HOSTILE = {
    # name: (patch function, message of the refusal)
    "huge-capacity": (lambda p, d: patch(p, 12, "<Q", 1 << 60), "L1 size too big"),
    "grain-table-size": (lambda p, d: patch(p, 44, "<I", 1024), "L2 table size too big"),
    "no-grain-table": (lambda p, d: patch(p, 44, "<I", 0), "L1 entry size is invalid"),
    "version": (lambda p, d: patch(p, 4, "<I", 4), "Unsupported VMDK version 4"),
    "directory-past-end": (lambda p, d: patch(p, 56, "<Q", 1 << 30),
                           "lies past the end of the file"),
}


def first_grain_table(path):
    gd = int.from_bytes(read_at(path, 56, 8), "little") * 512
    return int.from_bytes(read_at(path, gd, 4), "little") * 512, gd


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_headers_are_refused(workdir, name):
    path = make_image(workdir, "vmdk", "disk.vmdk", 9 * MiB)
    change, message = HOSTILE[name]
    change(path, workdir)
    for cmd in (["info", path], ["convert", "-O", "raw", path,
                                 os.path.join(str(workdir), "out.raw")]):
        res = strata_img(*cmd, check=False)
        assert res.returncode == 1, cmd
        assert message in res.stderr
    assert not os.path.exists(os.path.join(str(workdir), "out.raw"))


def test_tables_and_grains_past_the_end_fail_reads(workdir):
    """QEMU reads zeroes there; Strata says where the image is broken."""
    path = make_image(workdir, "vmdk", "disk.vmdk", 9 * MiB)
    gt, gd = first_grain_table(path)
    grain = os.path.join(str(workdir), "grain.vmdk")
    shutil.copy(path, grain)
    patch(grain, gt, "<I", 1 << 28)
    table = os.path.join(str(workdir), "table.vmdk")
    shutil.copy(path, table)
    patch(table, gd, "<I", 1 << 28)
    for image, what in ((grain, "grain at offset"), (table, "grain table at offset")):
        res = strata_img("convert", "-O", "raw", image, os.path.join(str(workdir), "o.raw"),
                         check=False)
        assert res.returncode == 1
        assert what in res.stderr and "lies past the end of the file" in res.stderr
    # qemu-img check calls the grain past the end a corruption; so do we.
    theirs = run(["qemu-img", "check", grain], check=False)
    ours = strata_img("check", grain, check=False)
    assert (ours.returncode, ours.stderr.replace("strata-img", "qemu-img")) == \
        (theirs.returncode, theirs.stderr)


def test_compressed_grain_damage(workdir):
    src = make_image(workdir, "raw", "src.raw", 2 * MiB, writes=[(0x31, 0, 65536)])
    path = os.path.join(str(workdir), "stream.vmdk")
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
         src, path])
    gt, _ = first_grain_table(path)
    marker = int.from_bytes(read_at(path, gt, 4), "little") * 512
    size = os.path.join(str(workdir), "size.vmdk")
    shutil.copy(path, size)
    patch(size, marker + 8, "<I", 0x7FFFFFFF)
    data = os.path.join(str(workdir), "data.vmdk")
    shutil.copy(path, data)
    patch(data, marker + 12, "16s", b"\xff" * 16)
    for image, why in ((size, "has an invalid size"), (data, "is corrupt")):
        res = strata_img("convert", "-O", "raw", image, os.path.join(str(workdir), "o.raw"),
                         check=False)
        assert res.returncode == 1
        assert "compressed grain at offset" in res.stderr and why in res.stderr
        assert run(["qemu-img", "convert", "-O", "raw", image,
                    os.path.join(str(workdir), "q.raw")], check=False).returncode == 1


def write_descriptor(workdir, name, create_type, extents):
    path = os.path.join(str(workdir), name)
    with open(path, "w") as f:
        f.write("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
                f'createType="{create_type}"\n\n# Extent description\n')
        for line in extents:
            f.write(line + "\n")
    return path


def test_descriptor_errors_are_qemus(workdir):
    flat = os.path.join(str(workdir), "data.raw")
    with open(flat, "wb") as f:
        f.truncate(MiB)
    cases = {
        "bad-line.vmdk": ("monolithicFlat", ['RW 2048 FLAT "data.raw"']),
        "missing.vmdk": ("monolithicFlat", ['RW 2048 FLAT "nosuch.raw" 0']),
        "type.vmdk": ("monolithicSparse", ['RW 2048 SPARSE "data.raw"']),
        "not-sparse.vmdk": ("twoGbMaxExtentSparse", ['RW 2048 SPARSE "data.raw"']),
    }
    for name, (ctype, lines) in cases.items():
        path = write_descriptor(workdir, name, ctype, lines)
        theirs = run(["qemu-img", "info", path], check=False)
        ours = strata_img("info", path, check=False)
        assert theirs.returncode == 1 and ours.returncode == 1, name
        assert ours.stderr.replace("strata-img", "qemu-img") == theirs.stderr, name


def test_descriptor_loop_is_refused(workdir):
    """A sparse file whose embedded descriptor names itself as an extent:
    QEMU opens it again and again; Strata refuses the nested descriptor."""
    path = make_image(workdir, "vmdk", "loop.vmdk", MiB, writes=[])
    patch(path, 12, "<Q", 0)  # capacity 0: the descriptor is the image
    text = (b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
            b'createType="twoGbMaxExtentSparse"\nRW 2048 SPARSE "loop.vmdk"\n\0')
    patch(path, 512, f"{len(text)}s", text)
    res = strata_img("info", path, check=False)
    assert res.returncode == 1
    assert "is a descriptor (nested descriptors are not supported)" in res.stderr


def test_descriptor_with_extents_of_all_types(workdir):
    """A hand-written descriptor mixing a flat extent with an offset and a
    sparse extent; qemu-img reads it the same."""
    sparse = make_image(workdir, "vmdk", "part2.vmdk", 2 * MiB, writes=[(0x41, 4096, 8192)])
    flat = os.path.join(str(workdir), "part1.raw")
    with open(flat, "wb") as f:
        f.write(b"\x99" * 4096 + b"\x42" * (MiB + 4096))
    path = write_descriptor(workdir, "mixed.vmdk", "twoGbMaxExtentSparse",
                            ['RW 2048 FLAT "part1.raw" 8', 'RDONLY 100 FLAT "part1.raw" 0',
                             'RW 4096 SPARSE "part2.vmdk"'])
    assert_converts_like_qemu(workdir, path, "vmdk")
    assert_reports_like_qemu(path, "vmdk")
