"""Overlap checks before metadata writes (QEMU's default overlap-check=cached):
an L2 table or refcount block write-back that would land on other metadata
is refused with QEMU's message, the image is marked corrupt, and nothing but
the header's incompatible bits changes in the file. qemu-img check agrees
that the image is damaged."""
import json
import os
import shutil
import struct

import pytest

from conftest import require, run, strata_binary

COPIED = 1 << 63


def header(path):
    with open(path, "rb") as f:
        d = f.read(72)
    return {"l1": struct.unpack(">Q", d[40:48])[0], "reftable": struct.unpack(">Q", d[48:56])[0]}


def read_u64(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(">Q", f.read(8))[0]


def write_u64(path, offset, value):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(">Q", value))


def image(workdir, cluster_size):
    path = os.path.join(workdir, "img.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster_size}",
         path, "64M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", path])
    return path


def l2_over_reftable(path):
    """Active L1 entry 0 names the refcount table as its L2 table."""
    h = header(path)
    write_u64(path, h["l1"], h["reftable"] | COPIED)


def l2_over_l1(path):
    """Active L1 entry 0 names the L1 table itself as its L2 table."""
    h = header(path)
    write_u64(path, h["l1"], h["l1"] | COPIED)


def l2_over_refblock(path):
    """Active L1 entry 1 names refcount block 0 as its L2 table: any refcount
    change then writes a block that is also an active L2 table."""
    h = header(path)
    write_u64(path, h["l1"] + 8, read_u64(path, h["reftable"]) | COPIED)


# name -> (cluster size, damage, guest write that must update the metadata, overlapped)
CASES = {
    "l2-over-reftable": (65536, l2_over_reftable, "write -P 9 64k 4k", "refcount table"),
    "l2-over-l1": (65536, l2_over_l1, "write -P 9 64k 4k", "active L1 table"),
    # 4 KiB clusters: an L2 table covers 2 MiB, so the L1 has 32 entries.
    "refblock-over-l2": (4096, l2_over_refblock, "write -P 9 4M 4k", "active L2 table"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_metadata_write_is_refused(workdir, name):
    require("qemu-img")
    cluster_size, damage, write, overlapped = CASES[name]
    path = image(workdir, cluster_size)
    damage(path)
    with open(path, "rb") as f:
        before = f.read()
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", write, "-c", "flush", path],
              check=False)
    out = res.stdout + res.stderr
    assert ("qcow2: Marking image as corrupt: Preventing invalid write on metadata "
            f"(overlaps with {overlapped}); further corruption events will be suppressed") in out
    assert res.returncode == 1
    if name != "refblock-over-l2":
        # Refused before the guest write completes, as qemu-io's write fails
        # (the driver's notice goes to stderr).
        assert res.stdout.splitlines()[0] == "write failed: Input/output error"
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True
    # The metadata that was in the way is intact. Only the incompatible
    # feature bits changed, and the refcount of the new data cluster (a
    # leak: refcounts reach the disk before the L2 entry, and the data
    # cluster itself may have been appended).
    with open(path, "rb") as f:
        after = f.read()
    refblock = read_u64(path, header(path)["reftable"])
    assert after[72:80] == (int.from_bytes(before[72:80], "big") | 2).to_bytes(8, "big")
    assert after[:72] == before[:72] and after[80:refblock] == before[80:refblock]
    assert after[refblock + cluster_size:len(before)] == before[refblock + cluster_size:]
    if name == "refblock-over-l2":
        assert after[refblock:refblock + cluster_size] == before[refblock:refblock + cluster_size]
    # qemu-img sees the damage too; the image is refused read-write.
    assert run(["qemu-img", "check", path], check=False).returncode == 2
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "read 0 4k", path], check=False)
    assert "Image is corrupt; cannot be opened read/write" in res.stdout + res.stderr


def test_overlap_check_none_lets_metadata_writes_through(workdir):
    path = image(workdir, 65536)
    l2_over_l1(path)
    opts = json.dumps({"driver": "qcow2", "overlap-check": "none",
                       "file": {"driver": "file", "filename": path}})
    res = run([strata_binary("strata-io"), "--image-opts", "-c", "write -P 9 64k 4k",
               "-c", "flush", opts], check=False)
    assert "Preventing invalid write" not in res.stdout + res.stderr
    assert res.returncode == 0


def test_healthy_images_pass_every_metadata_write(workdir):
    """No false alarms: L1 growth, new L2 tables, new refcount blocks and a
    refcount table that grows, on a small-cluster image."""
    require("qemu-img")
    path = os.path.join(workdir, "grow.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "1M"])
    cmds = []
    for i in range(64):
        cmds += ["-c", f"write -P {i % 250 + 1} {i * 15 * 512} 2k"]
    run([strata_binary("strata-io"), "-f", "qcow2", *cmds, path])
    run([strata_binary("strata-img"), "resize", path, "64M"])
    run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 7 50M 10M", path])
    assert run(["qemu-img", "check", path], check=False).returncode == 0
    with open(path, "rb") as f:
        f.seek(56)
        assert struct.unpack(">I", f.read(4))[0] > 1  # the refcount table grew
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is False
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 7 50M 10M", path])
