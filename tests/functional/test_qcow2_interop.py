"""Images written by QEMU read correctly in Strata.

qemu-img creates images with every cluster size, several refcount widths,
v2 and v3, compressed clusters, backing chains and internal snapshots;
qemu-io writes patterns. Strata must read the same bytes: patterns are
verified through strata-io, and strata-img convert to raw must produce the
same file as qemu-img convert to raw.
"""
import filecmp
import os

import pytest

from conftest import require, run, strata_binary

MiB = 1 << 20


def qemu_io(image, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    run(args + [image])


def strata_io(image, *cmds):
    args = [strata_binary("strata-io"), "-r", "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    res = run(args + [image], check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def same_as_qemu_raw(workdir, image):
    ours = os.path.join(workdir, "ours.raw")
    theirs = os.path.join(workdir, "theirs.raw")
    run([strata_binary("strata-img"), "convert", "-O", "raw", image, ours])
    run(["qemu-img", "convert", "-O", "raw", image, theirs])
    assert filecmp.cmp(ours, theirs, shallow=False)


def pattern_cmds(cluster):
    return [
        f"write -P 0x11 0 {cluster}",
        f"write -P 0x22 {cluster * 3 + 512} {cluster * 2}",
        f"write -P 0x33 {7 * cluster} {3 * cluster + 1024}",
        f"write -z {cluster * 3} {cluster}",
    ]


def verify_cmds(cluster):
    return [
        f"read -P 0x11 0 {cluster}",
        f"read -P 0x0 {cluster * 3} {cluster}",
        f"read -P 0x22 {cluster * 4} {cluster}",
        f"read -P 0x33 {7 * cluster} {3 * cluster + 1024}",
        f"read -P 0x0 {cluster} {cluster}",
    ]


@pytest.mark.parametrize("cluster", [512, 1024, 4096, 16384, 65536, 2 * MiB])
def test_cluster_sizes(workdir, cluster):
    require("qemu-img")
    image = os.path.join(workdir, "a.qcow2")
    size = max(16 * MiB, 12 * cluster)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}", image, str(size)])
    qemu_io(image, *pattern_cmds(cluster))
    strata_io(image, *verify_cmds(cluster))
    same_as_qemu_raw(workdir, image)


@pytest.mark.parametrize("refbits", [1, 2, 4, 8, 16, 32, 64])
def test_refcount_widths(workdir, refbits):
    require("qemu-img")
    image = os.path.join(workdir, "a.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"refcount_bits={refbits}", image, "16M"])
    qemu_io(image, *pattern_cmds(65536))
    strata_io(image, *verify_cmds(65536))
    # Strata writes into it too, and QEMU agrees with the refcounts.
    rw = [strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 0x44 8M 200k", image]
    run(rw)
    assert run(["qemu-img", "check", image], check=False).returncode == 0
    qemu_io(image, "read -P 0x44 8M 200k")


def test_v2_image(workdir):
    image = os.path.join(workdir, "v2.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", image, "16M"])
    qemu_io(image, "write -P 0x11 0 64k", "write -P 0x22 1M 100k", "write -z 0 64k")
    strata_io(image, "read -P 0 0 64k", "read -P 0x22 1M 100k")
    same_as_qemu_raw(workdir, image)


def test_compressed(workdir):
    raw = os.path.join(workdir, "src.raw")
    with open(raw, "wb") as f:
        for i in range(64):
            f.write(bytes([i]) * 65536 if i % 3 else os.urandom(65536))
    image = os.path.join(workdir, "c.qcow2")
    run(["qemu-img", "convert", "-c", "-O", "qcow2", raw, image])
    info = run(["qemu-img", "check", image]).stdout
    assert "compressed" in info
    same_as_qemu_raw(workdir, image)
    ours = os.path.join(workdir, "ours.raw")
    assert filecmp.cmp(ours, raw, shallow=False)


def test_backing_chain(workdir):
    base = os.path.join(workdir, "base.qcow2")
    mid = os.path.join(workdir, "mid.qcow2")
    top = os.path.join(workdir, "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, "16M"])
    qemu_io(base, "write -P 0x11 0 4M")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid])
    qemu_io(mid, "write -P 0x22 1M 1M", "write -z 3M 64k")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top])
    qemu_io(top, "write -P 0x33 1536k 4k")
    strata_io(top, "read -P 0x11 0 1M", "read -P 0x22 1M 512k", "read -P 0x33 1536k 4k",
              "read -P 0 3M 64k", "read -P 0x11 3136k 64k", "read -P 0 4M 12M")
    same_as_qemu_raw(workdir, top)


def test_internal_snapshots(workdir):
    image = os.path.join(workdir, "s.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"])
    qemu_io(image, "write -P 0x11 0 1M")
    run(["qemu-img", "snapshot", "-c", "one", image])
    qemu_io(image, "write -P 0x22 512k 1M")
    run(["qemu-img", "snapshot", "-c", "two", image])
    qemu_io(image, "write -P 0x33 0 64k")
    strata_io(image, "read -P 0x33 0 64k", "read -P 0x11 64k 448k", "read -P 0x22 512k 1M")
    same_as_qemu_raw(workdir, image)
    # Writing through Strata keeps the snapshots intact (COPIED handling).
    run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 0x44 0 2M", image])
    chk = run(["qemu-img", "check", image], check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    run(["qemu-img", "snapshot", "-a", "one", image])
    qemu_io(image, "read -P 0x11 0 1M", "read -P 0 1M 1M")
