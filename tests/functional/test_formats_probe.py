"""Format probing: an image named without -f is opened as the format QEMU
probes it as; a format Strata has no driver for is refused by name, never
read as raw (which copied the container's bytes and exited 0)."""
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time

import pytest

from conftest import require, run, strata_binary, unix_listening
from foreign_images import MiB, files_equal, make_image, patch, read_at, strata_img

SECRET = ["--object", "secret,id=s0,data=password"]

# Formats qemu-img writes and Strata does not read.
UNSUPPORTED = {
    "qed": ("qed", []),
    "vhdx": ("vhdx", []),
    "parallels": ("parallels", []),
    "qcow": ("qcow", []),
    "luks": ("luks", SECRET + ["-o", "key-secret=s0,iter-time=10"]),
}


@pytest.fixture(autouse=True)
def peers():
    require("qemu-img")
    require("qemu-io")


def unsupported_image(workdir, kind):
    fmt, extra = UNSUPPORTED[kind]
    path = os.path.join(str(workdir), "disk." + kind)
    create = ["qemu-img", "create", "-q", "-f", fmt, *extra, path, str(4 * MiB)]
    for _ in range(10):
        # qemu-img's LUKS key-derivation timing fails now and then on a
        # loaded machine ("Unable to get accurate CPU usage"): try again.
        res = run(create, check=False)
        if res.returncode == 0 or "accurate CPU usage" not in res.stderr:
            break
    assert res.returncode == 0, res.stderr
    if kind != "luks":
        run(["qemu-io", "-f", fmt, "-c", "write -P 0x5a 0 64k", path])
    return path


def refusal(path, fmt):
    return f"strata-img: Could not open '{path}': image format '{fmt}' is not supported by Strata\n"


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_convert_refuses_unsupported_formats(workdir, kind):
    path = unsupported_image(workdir, kind)
    fmt = UNSUPPORTED[kind][0]
    assert json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)["format"] == fmt
    target = os.path.join(str(workdir), "copy.raw")
    res = strata_img("convert", "-O", "raw", path, target, check=False)
    assert res.returncode == 1
    assert res.stderr == refusal(path, fmt)
    assert not os.path.exists(target)
    # An existing target is left as it was, with or without -n.
    with open(target, "wb") as f:
        f.write(b"keep me" * 1000)
    for extra in ([], ["-n"]):
        res = strata_img("convert", *extra, "-O", "raw", path, target, check=False)
        assert res.returncode == 1
        assert open(target, "rb").read() == b"keep me" * 1000
    res = strata_img("convert", "-O", "qcow2", path, target + ".qcow2", check=False)
    assert res.returncode == 1 and not os.path.exists(target + ".qcow2")


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_every_tool_refuses_unsupported_formats(workdir, kind):
    path = unsupported_image(workdir, kind)
    fmt = UNSUPPORTED[kind][0]
    for cmd in (["info", path], ["map", path], ["check", path]):
        res = strata_img(*cmd, check=False)
        assert res.returncode == 1, cmd
        assert res.stderr == refusal(path, fmt), cmd
    res = strata_img("compare", path, path, check=False)
    assert res.returncode == 2 and res.stderr == refusal(path, fmt)
    res = run([strata_binary("strata-io"), "-r", "-c", "read 0 512", path], check=False)
    assert res.returncode == 1
    assert f"image format '{fmt}' is not supported by Strata" in res.stderr
    tmp = tempfile.mkdtemp(prefix="nbd", dir="/tmp")
    res = run([strata_binary("strata-nbd"), "-r", "-k", os.path.join(tmp, "s"), path],
              check=False, timeout=30)
    os.rmdir(tmp)
    assert res.returncode == 1
    assert res.stderr == (f"strata-nbd: Failed to blk_new_open '{path}': Could not open "
                          f"'{path}': image format '{fmt}' is not supported by Strata\n")


def write_file(workdir, name, data, size=MiB):
    path = os.path.join(str(workdir), name)
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(max(size, len(data)))
    return path


def test_weak_probes(workdir):
    """bochs by its header, cloop by its script line (score 2), dmg by its
    file name (score 2): none is read as raw, by either tool."""
    bochs = (b"Bochs Virtual HD Image".ljust(32, b"\0") + b"Redolog".ljust(16, b"\0") +
             b"Growing".ljust(16, b"\0") + struct.pack("<I", 0x00020000))
    cloop = (b"#!/bin/sh\n#V2.0 Format\n"
             b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
    for name, data, fmt in (("disk.img", bochs, "bochs"), ("disk.cloop", cloop, "cloop"),
                            ("disk.dmg", b"\x42" * 4096, "dmg")):
        path = write_file(workdir, name, data)
        res = strata_img("convert", "-O", "raw", path, path + ".raw", check=False)
        assert res.returncode == 1 and res.stderr == refusal(path, fmt)
        assert not os.path.exists(path + ".raw")
        theirs = run(["qemu-img", "info", "--output=json", path], check=False)
        if theirs.returncode == 0:
            assert json.loads(theirs.stdout)["format"] == fmt
        else:
            assert "raw" not in theirs.stderr


def test_probe_agrees_with_qemu(workdir):
    kinds = [("raw", ""), ("qcow2", "compat=0.10"), ("qcow2", "compat=1.1"),
             ("vmdk", "subformat=monolithicSparse"), ("vmdk", "subformat=monolithicFlat"),
             ("vmdk", "subformat=twoGbMaxExtentSparse"), ("vpc", "subformat=dynamic"),
             ("vdi", "static=off"), ("vdi", "static=on")]
    for i, (fmt, opts) in enumerate(kinds):
        path = make_image(workdir, fmt, f"disk{i}.img", 9 * MiB, opts or None)
        theirs = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
        ours = json.loads(strata_img("info", "--output=json", path).stdout)
        assert ours["format"] == theirs["format"] == fmt, path
    # An empty file is raw; so is a LUKS2 header, which QEMU 7.2 does not probe.
    for name, data in (("empty", b""), ("luks2", b"LUKS\xba\xbe\x00\x02")):
        path = write_file(workdir, name, data, size=len(data) and MiB)
        theirs = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
        ours = json.loads(strata_img("info", "--output=json", path).stdout)
        assert ours["format"] == theirs["format"] == "raw"


def strip_backing_format(path):
    """Turns a qcow2's backing format extension into an unknown one, so the
    backing file is probed (qemu-img 7.2 no longer writes such images)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    at = head.index(struct.pack(">I", 0xE2792ACA))
    patch(path, at, ">I", 0x7E57AB1E)


def test_backing_files_are_probed(workdir):
    base = make_image(workdir, "vmdk", "base.vmdk", 9 * MiB)
    over = os.path.join(str(workdir), "over.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "vmdk", over])
    run(["qemu-io", "-c", "write -P 0x71 1M 64k", over])
    strip_backing_format(over)
    theirs = json.loads(run(["qemu-img", "info", "--output=json", "--backing-chain",
                             over]).stdout)
    ours = json.loads(strata_img("info", "--output=json", "--backing-chain", over).stdout)
    assert [i["format"] for i in ours] == [i["format"] for i in theirs] == ["qcow2", "vmdk"]
    ref, out = over + ".q.raw", over + ".s.raw"
    run(["qemu-img", "convert", "-O", "raw", over, ref])
    strata_img("convert", "-O", "raw", over, out)
    assert files_equal(ref, out)
    # A backing file in a format Strata cannot read is refused by name.
    qed = unsupported_image(workdir, "qed")
    over2 = os.path.join(str(workdir), "over2.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", qed, "-F", "qed", over2])
    strip_backing_format(over2)
    res = strata_img("convert", "-O", "raw", over2, over2 + ".raw", check=False)
    assert res.returncode == 1
    assert (f"Could not open backing file: Could not open '{qed}': image format 'qed' is not "
            "supported by Strata") in res.stderr
    assert not os.path.exists(over2 + ".raw")


def test_probed_images_served_and_read(workdir):
    """strata-io and strata-nbd probe too: a VHD and a vmdk without -f."""
    vhd = make_image(workdir, "vpc", "disk.vhd", 9 * MiB, "subformat=dynamic")
    res = run([strata_binary("strata-io"), "-r", "-c", "read -P 0x11 0 4096", vhd])
    assert res.returncode == 0
    vmdk = make_image(workdir, "vmdk", "disk.vmdk", 9 * MiB)
    ref = os.path.join(str(workdir), "ref.raw")
    run(["qemu-img", "convert", "-O", "raw", vmdk, ref])
    tmp = tempfile.mkdtemp(prefix="nbd", dir="/tmp")
    sock = os.path.join(tmp, "s")
    proc = subprocess.Popen([strata_binary("strata-nbd"), "-r", "-k", sock, vmdk],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not unix_listening(sock):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.02)
        out = os.path.join(str(workdir), "out.raw")
        run(["qemu-img", "convert", "-f", "raw", "-O", "raw", f"nbd+unix:///?socket={sock}", out])
        assert files_equal(out, ref)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=20)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    assert read_at(ref, 0, 4) == b"\x11" * 4


WARNING = ("WARNING: Image format was not specified for '{}' and probing guessed raw.\n"
           "         Automatically detecting the format is dangerous for raw images, write "
           "operations on block 0 will be restricted.\n"
           "         Specify the 'raw' format explicitly to remove the restrictions.\n")


def vhd_footer():
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    struct.pack_into(">I", footer, 60, 2)
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    return bytes(footer)


@pytest.mark.parametrize("server", ["strata", "qemu"])
def test_probed_raw_keeps_its_format(workdir, server):
    """A raw image served without -f may not be turned into another format
    by a client: a qcow2 header in sector 0 is refused (as qemu-nbd does),
    and so is a VHD footer at the end (Strata only: its prober reads it)."""
    image = write_file(workdir, "disk.raw", b"", size=MiB)
    qcow2 = os.path.join(str(workdir), "disk.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "1M"])
    header = write_file(workdir, "header.bin", read_at(qcow2, 0, 512), size=512)
    footer = write_file(workdir, "footer.bin", vhd_footer(), size=512)
    tmp = tempfile.mkdtemp(prefix="nbd", dir="/tmp")
    sock = os.path.join(tmp, "s")
    binary = strata_binary("strata-nbd") if server == "strata" else "qemu-nbd"
    proc = subprocess.Popen([binary, "-t", "-k", sock, image], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not unix_listening(sock):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.02)
        uri = f"nbd+unix:///?socket={sock}"

        def write(src, offset):
            return run(["qemu-io", "-f", "raw", "-c", f"write -s {src} {offset} 512", uri],
                       check=False)
        res = write(header, 0)
        assert "Operation not permitted" in res.stdout + res.stderr
        res = write(footer, MiB - 512)
        assert ("Operation not permitted" in res.stdout + res.stderr) is (server == "strata")
        res = run(["qemu-io", "-f", "raw", "-c", "write -P 0x51 0 4096", uri])
        assert "wrote 4096/4096" in res.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    assert read_at(image, 0, 4) == b"\x51" * 4
    assert proc.stderr.read().startswith(WARNING.format(image))


def test_probed_raw_warning_as_qemu_io(workdir):
    image = write_file(workdir, "disk.raw", b"", size=MiB)
    ours = run([strata_binary("strata-io"), "-c", "write -P 0x51 0 4096", image])
    theirs = run(["qemu-io", "-c", "write -P 0x51 0 4096", image])
    assert ours.stderr == theirs.stderr == WARNING.format(image)
    ours = run([strata_binary("strata-io"), "-f", "raw", "-c", "write -P 0x51 0 4096", image])
    assert ours.stderr == ""
