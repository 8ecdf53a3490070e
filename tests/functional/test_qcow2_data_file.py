"""qcow2 images with an external data file (data_file=, data_file_raw=),
checked against QEMU: creation byte for byte, reading what qemu-io wrote,
writing what qemu-img reads back, info, amend and snapshot refusals,
resizing, check, the data-file child of blockdev-add, locks on both files,
and the data file name resolved as QEMU 7.2 resolves it.
"""
import json
import os
import random
import shutil
import struct
import time

import pytest

from conftest import require, run, strata_binary
from qcow2_features import (apply_ops, assert_clean_and_equal, check_json, l2_entries,
                            map_json, qemu_io, random_ops, strata_img, strata_io)
from qmp_client import Daemon
from test_nbd_qmp import sockdir, start_server, uri  # noqa: F401 (fixture)
from test_bitmap_img import contents
from test_nbd_perms import byte_locked, WRITE_PERM_BYTE

MiB = 1 << 20


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("opts", ["data_file=d.raw", "data_file=d.raw,data_file_raw=on",
                                  "data_file=d.raw,extended_l2=on,lazy_refcounts=on",
                                  "data_file=d.raw,data_file_raw=on,preallocation=full"])
def test_create_matches_qemu(workdir, opts):
    require("qemu-img")
    mine_dir = os.path.join(str(workdir), "mine")
    their_dir = os.path.join(str(workdir), "theirs")
    os.mkdir(mine_dir)
    os.mkdir(their_dir)
    res = strata_img("create", "-f", "qcow2", "-o", opts, "a.qcow2", "5M", cwd=mine_dir)
    assert res.returncode == 0, res.stderr
    theirs = run(["qemu-img", "create", "-f", "qcow2", "-o", opts, "a.qcow2", "5M"],
                 cwd=their_dir)
    assert res.stdout.replace("strata-img", "qemu-img") == theirs.stdout
    assert read(os.path.join(mine_dir, "a.qcow2")) == read(os.path.join(their_dir, "a.qcow2"))
    mine_data = os.path.join(mine_dir, "d.raw")
    assert os.path.getsize(mine_data) == 5 * MiB
    assert read(mine_data) == read(os.path.join(their_dir, "d.raw"))
    code, _, err = check_json("qemu", "a.qcow2", cwd=mine_dir)
    assert code == 0, err


@pytest.mark.parametrize("opts", ["data_file=x.raw,compat=0.10", "data_file_raw=on",
                                  "data_file=x.raw,data_file_raw=on,backing_file=b.raw,"
                                  "backing_fmt=raw"])
def test_create_refusals_match_qemu(workdir, opts):
    require("qemu-img")
    with open(os.path.join(str(workdir), "b.raw"), "wb") as f:
        f.truncate(MiB)
    mine = strata_img("create", "-f", "qcow2", "-o", opts, "a.qcow2", "1M", cwd=str(workdir))
    theirs = run(["qemu-img", "create", "-f", "qcow2", "-o", opts, "b.qcow2", "1M"],
                 check=False, cwd=str(workdir))
    assert mine.returncode == theirs.returncode == 1
    assert mine.stderr.split(": ", 2)[-1] == theirs.stderr.split(": ", 2)[-1]


def make_image(workdir, opts="", size="4M", name="img.qcow2", data="img.data"):
    """An image whose data file is named by its absolute path."""
    data = os.path.join(str(workdir), data)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
         f"data_file={data}" + ("," + opts if opts else ""), name, size], cwd=str(workdir))
    return os.path.join(str(workdir), name), data


@pytest.mark.parametrize("opts", ["", "data_file_raw=on", "extended_l2=on"])
def test_reads_what_qemu_wrote(workdir, opts):
    require("qemu-io")
    image, data = make_image(workdir, opts)
    qemu_io(image, ["write -P 1 0 70k", "write -z 128k 64k", "write -P 2 300k 1k",
                    "write -z -u 1M 64k", "discard 2M 64k", "write -P 3 3M 1M"],
            extra=())
    theirs = os.path.join(str(workdir), "theirs.raw")
    mine = os.path.join(str(workdir), "mine.raw")
    run(["qemu-img", "convert", "-O", "raw", "img.qcow2", theirs], cwd=str(workdir))
    res = strata_img("convert", "-O", "raw", "img.qcow2", mine, cwd=str(workdir))
    assert res.returncode == 0, res.stderr
    assert read(mine) == read(theirs)
    assert map_json("strata", "img.qcow2", cwd=str(workdir)) == \
        map_json("qemu", "img.qcow2", cwd=str(workdir))


@pytest.mark.parametrize("opts", ["", "data_file_raw=on", "extended_l2=on"])
def test_strata_writes_qemu_reads(workdir, opts):
    """Random writes through strata-io; qemu-img sees the model; the data
    live at their guest offsets in the data file (all of them when raw)."""
    require("qemu-img")
    size = 6 * MiB
    image, data = make_image(workdir, opts, size=str(size))
    model = bytearray(size)
    rng = random.Random(len(opts))
    for _ in range(2):
        ops = random_ops(rng, size, 65536 if "extended" not in opts else 2048, 800)
        lines = apply_ops(model, ops, 65536)
        res = run([strata_binary("strata-io"), "-f", "qcow2", "img.qcow2"],
                  input="\n".join(lines) + "\n", cwd=str(workdir), check=False)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        raw = os.path.join(str(workdir), "model.raw")
        with open(raw, "wb") as f:
            f.write(model)
        chk = run(["qemu-img", "check", "img.qcow2"], check=False, cwd=str(workdir))
        assert chk.returncode == 0, chk.stdout + chk.stderr
        cmp = run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, "img.qcow2"],
                  check=False, cwd=str(workdir))
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    if "raw" in opts:
        assert read(data) == bytes(model)
    # No guest data in the image file: it holds metadata only.
    assert os.path.getsize(image) < MiB


def test_info_names_the_data_file_without_opening_it(workdir):
    require("qemu-img")
    image, data = make_image(workdir, "data_file_raw=on")
    os.rename(data, data + ".away")
    mine = strata_img("info", "--output=json", image)
    theirs = run(["qemu-img", "info", "--output=json", image])
    assert mine.returncode == 0, mine.stderr
    spec_mine = json.loads(mine.stdout)["format-specific"]
    spec_theirs = json.loads(theirs.stdout)["format-specific"]
    assert spec_mine == spec_theirs
    assert list(spec_mine["data"]) == list(spec_theirs["data"])
    assert spec_mine["data"]["data-file"] == data
    assert spec_mine["data"]["data-file-raw"] is True
    human = strata_img("info", image).stdout
    assert f"data file: {data}\n" in human and "data file raw: true\n" in human
    # Everything that reads data needs it, as in QEMU.
    res = strata_img("check", image)
    assert res.returncode == 1 and "img.data" in res.stderr


def test_name_resolved_like_qemu(workdir):
    """QEMU 7.2 opens the data file under the name in the header, so a
    relative name is relative to the working directory, not to the image."""
    require("qemu-io")
    sub = os.path.join(str(workdir), "sub")
    os.mkdir(sub)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=d.raw", "sub/i.qcow2",
         "1M"], cwd=str(workdir))
    shutil.move(os.path.join(str(workdir), "d.raw"), os.path.join(sub, "d.raw"))
    for cwd, image in ((str(workdir), "sub/i.qcow2"), (sub, "i.qcow2")):
        mine = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "read 0 4k", image],
                   check=False, cwd=cwd)
        theirs = run(["qemu-io", "-f", "qcow2", "-c", "read 0 4k", image], check=False, cwd=cwd)
        assert (mine.returncode == 0) == (theirs.returncode == 0) == (cwd == sub), \
            (cwd, mine.stderr, theirs.stderr)


def test_blockdev_add_data_file_child_and_locks(workdir, sockdir):  # noqa: F811
    """The data-file option of blockdev-add names the data file's node;
    while the image is exported writable both files are locked."""
    require("qemu-io")
    image, data = make_image(workdir, "", size="2M", data="other-name.raw")
    renamed = os.path.join(str(workdir), "elsewhere.raw")
    os.rename(data, renamed)
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        c.execute("blockdev-add", **{"node-name": "df", "driver": "file", "filename": renamed})
        c.execute("blockdev-add", **{"node-name": "img", "driver": "qcow2",
                                     "file": {"driver": "file", "filename": image},
                                     "data-file": "df"})
        start_server(c, sock)
        c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "img"},
                  writable=True)
        assert byte_locked(image, WRITE_PERM_BYTE)
        assert byte_locked(renamed, WRITE_PERM_BYTE)
        # As with qemu-storage-daemon: nobody may resize the data file or
        # open the image, while the data file may have other writers.
        res = run(["qemu-img", "resize", "-f", "raw", renamed, "4M"], check=False)
        assert 'Failed to get "resize" lock' in res.stderr
        res = run(["qemu-io", "-f", "qcow2", "-c", "read 0 4k", image], check=False)
        assert 'Failed to get "write" lock' in res.stderr
        qemu_io(uri(sock, "img"), ["write -P 7 64k 64k"], fmt="raw")
        c.execute("block-export-del", id="e0", mode="hard")
        deadline = time.time() + 10
        while "error" in c.request("blockdev-del", {"node-name": "img"}):
            assert time.time() < deadline, "the export did not go away"
            time.sleep(0.05)
        c.execute("blockdev-del", **{"node-name": "df"})
    with open(renamed, "rb") as f:
        f.seek(64 * 1024)
        assert f.read(65536) == b"\x07" * 65536
    opts = (f"driver=qcow2,file.filename={image},data-file.driver=file,"
            f"data-file.filename={renamed}")
    run(["qemu-io", "--image-opts", "-c", "read -P 7 64k 64k", opts])
    # The data-file option on an image without a data file is refused, as QEMU.
    plain = os.path.join(str(workdir), "plain.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", plain, "1M"])
    res = run([strata_binary("strata-io"), "--image-opts", "-c", "read 0 1",
               f"driver=qcow2,file.driver=file,file.filename={plain},"
               f"data-file.driver=file,data-file.filename={renamed}"], check=False)
    assert "'data-file' can only be set for images with an external data file" in res.stderr


def test_amend_matches_qemu(workdir):
    require("qemu-img")
    image, data = make_image(workdir, "")
    copy = os.path.join(str(workdir), "copy.qcow2")
    for opts in ("data_file_raw=on", "compat=0.10", "extended_l2=on",
                 "compression_type=zstd"):
        shutil.copy(image, copy)
        mine = strata_img("amend", "-o", opts, image)
        theirs = run(["qemu-img", "amend", "-o", opts, copy], check=False)
        assert mine.returncode == theirs.returncode == 1, opts
        assert mine.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1], opts
        assert read(image) == read(copy)
    # A new name for the data file (as QEMU, the image is reopened with it).
    res = strata_img("amend", "-o", "data_file=moved.raw", image, cwd=str(workdir))
    assert res.returncode == 0, res.stderr
    os.rename(data, os.path.join(str(workdir), "moved.raw"))
    info = run(["qemu-img", "info", "--output=json", "img.qcow2"], cwd=str(workdir))
    assert json.loads(info.stdout)["format-specific"]["data"]["data-file"] == "moved.raw"
    assert run(["qemu-img", "check", "img.qcow2"], cwd=str(workdir),
               check=False).returncode == 0
    plain = os.path.join(str(workdir), "plain.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", plain, "1M"])
    mine = strata_img("amend", "-o", "data_file=x.raw", plain)
    theirs = run(["qemu-img", "amend", "-o", "data_file=x.raw", plain], check=False)
    assert mine.returncode == theirs.returncode == 1
    assert mine.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1]


def test_snapshots_and_compression_refused(workdir):
    require("qemu-img")
    image, data = make_image(workdir, "")
    before = read(image)
    res = strata_img("snapshot", "-c", "s1", image)
    assert res.returncode == 1 and "Operation not supported" in res.stderr
    assert read(image) == before
    src = os.path.join(str(workdir), "src.raw")
    with open(src, "wb") as f:
        f.write(b"\x03" * MiB)
    res = strata_img("convert", "-c", "-O", "qcow2", "-o", "data_file=c.raw", src,
                     "c.qcow2", cwd=str(workdir))
    assert res.returncode == 1 and "not supported" in res.stderr


@pytest.mark.parametrize("raw", [False, True])
def test_resize_follows_qemu(workdir, raw):
    require("qemu-img")
    mine, mine_data = make_image(workdir, "data_file_raw=on" if raw else "", size="1M",
                                 name="m.qcow2", data="m.raw")
    theirs, their_data = make_image(workdir, "data_file_raw=on" if raw else "", size="1M",
                                    name="t.qcow2", data="t.raw")
    for size, shrink in (("3M", False), ("512K", True)):
        args = ["--shrink"] if shrink else []
        res = strata_img("resize", *args, "m.qcow2", size, cwd=str(workdir))
        assert res.returncode == 0, res.stderr
        run(["qemu-img", "resize", *args, "t.qcow2", size], cwd=str(workdir))
        assert os.path.getsize(mine_data) == os.path.getsize(their_data)
        assert map_json("qemu", "m.qcow2", cwd=str(workdir)) == \
            map_json("qemu", "t.qcow2", cwd=str(workdir))
        assert run(["qemu-img", "check", "m.qcow2"], cwd=str(workdir),
                   check=False).returncode == 0


@pytest.mark.parametrize("case", ["compressed-entry", "moved-offset"])
def test_check_and_corruption_match_qemu(workdir, case):
    require("qemu-io")
    image, data = make_image(workdir, "")
    qemu_io(image, ["write -P 1 0 128k"])
    with open(image, "rb") as f:
        f.seek(40)
        l1 = struct.unpack(">Q", f.read(8))[0]
        f.seek(l1)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
    entry = (1 << 62) | 0x20000 if case == "compressed-entry" else (1 << 63) | 0x30000
    with open(image, "r+b") as f:
        f.seek(l2 + 8)
        f.write(struct.pack(">Q", entry))
    copy = os.path.join(str(workdir), "copy.qcow2")
    shutil.copy(image, copy)
    mine = check_json("strata", image)
    theirs = check_json("qemu", copy)
    assert mine[0] == theirs[0], (mine, theirs)
    assert mine[1] == theirs[1]
    res = strata_io(image, ["read 64k 64k"], check=False)
    q = run(["qemu-io", "-c", "read 64k 64k", copy], check=False)
    assert ("read failed" in res.stdout + res.stderr) == ("read failed" in q.stdout + q.stderr)
    info_mine = json.loads(run(["qemu-img", "info", "--output=json", image]).stdout)
    info_theirs = json.loads(run(["qemu-img", "info", "--output=json", copy]).stdout)
    assert info_mine["format-specific"]["data"]["corrupt"] == \
        info_theirs["format-specific"]["data"]["corrupt"]


def test_reopen_follows_to_the_data_file(workdir, sockdir):  # noqa: F811
    """blockdev-reopen between read-only and read-write takes the data file
    (opened from the header) along: its write lock comes and goes with the
    image's."""
    require("qemu-io")
    image, data = make_image(workdir, "", size="2M")
    sock = os.path.join(sockdir, "nbd.sock")

    def reopen(c, read_only):
        c.execute("blockdev-reopen", options=[{
            "driver": "qcow2", "node-name": "img", "read-only": read_only,
            "file": {"driver": "file", "filename": image}}])

    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        c.execute("blockdev-add", **{"node-name": "img", "driver": "qcow2", "read-only": True,
                                     "file": {"driver": "file", "filename": image}})
        start_server(c, sock)
        assert not byte_locked(data, WRITE_PERM_BYTE)
        reopen(c, False)
        c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "img"},
                  writable=True)
        assert byte_locked(data, WRITE_PERM_BYTE)
        qemu_io(uri(sock, "img"), ["write -P 6 128k 4k"], fmt="raw")
        c.execute("block-export-del", id="e0", mode="hard")
        deadline = time.time() + 10
        while c.execute("query-block-exports"):
            assert time.time() < deadline, "the export did not go away"
            time.sleep(0.05)
        reopen(c, True)
        assert not byte_locked(data, WRITE_PERM_BYTE)
        c.execute("quit")
        assert d.proc.wait(20) == 0
    qemu_io(image, ["read -P 6 128k 4k"])
    assert run(["qemu-img", "check", image], check=False).returncode == 0


@pytest.mark.parametrize("opts", ["data_file_raw=on", "extended_l2=on"])
def test_persistent_bitmaps(workdir, opts):
    """Bitmaps live in the image file; writes through Strata mark them and
    qemu-img sees them, exported over NBD by qemu-nbd with the dirty range."""
    require("qemu-img")
    image, data = make_image(workdir, opts)
    res = strata_img("bitmap", "--add", image, "b0")
    assert res.returncode == 0, res.stderr
    strata_io(image, ["write -P 4 1M 64k"])
    info = json.loads(run(["qemu-img", "info", "--output=json", image]).stdout)
    bitmaps = info["format-specific"]["data"]["bitmaps"]
    assert [b["name"] for b in bitmaps] == ["b0"] and bitmaps[0]["flags"] == ["auto"]
    assert run(["qemu-img", "check", image], check=False).returncode == 0
    dirty = contents(image)["b0"]
    assert "1048576       65536    1  dirty" in dirty, dirty


@pytest.mark.parametrize("opts", ["data_file=conv.data", "data_file=conv.data,data_file_raw=on"])
def test_convert_into_a_data_file(workdir, opts):
    require("qemu-img")
    src = os.path.join(str(workdir), "src.raw")
    with open(src, "wb") as f:
        f.write(bytes(range(256)) * 4096 + bytes(MiB) + b"\x09" * MiB)
    res = strata_img("convert", "-O", "qcow2", "-o", opts, src, "conv.qcow2", cwd=str(workdir))
    assert res.returncode == 0, res.stderr
    cmp = run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, "conv.qcow2"],
              check=False, cwd=str(workdir))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert run(["qemu-img", "check", "conv.qcow2"], check=False,
               cwd=str(workdir)).returncode == 0
    if "raw=on" in opts:
        assert read(os.path.join(str(workdir), "conv.data")) == read(src)


@pytest.mark.parametrize("byte,value", [(79, 0x04), (95, 0x02)])
def test_bad_headers_refused_as_qemu(workdir, byte, value):
    """The data file bit without a data file name, and the raw data file
    bit without a data file: the same refusals as qemu-img."""
    require("qemu-img")
    image = os.path.join(str(workdir), "h.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1M"])
    with open(image, "r+b") as f:
        f.seek(byte)
        f.write(bytes([value]))
    for sub in (["check"], ["map"], ["convert", "-O", "raw"]):
        target = [os.path.join(str(workdir), "out.raw")] if sub[0] == "convert" else []
        mine = strata_img(*sub, image, *target)
        theirs = run(["qemu-img", *sub, image, *target], check=False)
        assert mine.returncode == theirs.returncode == 1
        assert mine.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1]
