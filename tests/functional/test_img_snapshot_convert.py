"""strata-img snapshot, resize and convert, checked with QEMU's tools."""
import json
import os
import random

import pytest

from conftest import require, run, strata_binary

MiB = 1 << 20


def img(*args, check=True):
    return run([strata_binary("strata-img"), *args], check=check)


def qemu_io(image, *cmds):
    args = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    return run(args + [image])


def assert_clean(image):
    res = run(["qemu-img", "check", image], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No errors were found" in res.stdout


def test_snapshot_create_apply_delete(workdir):
    require("qemu-img")
    image = os.path.join(workdir, "s.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"])
    qemu_io(image, "write -P 1 0 1M")
    img("snapshot", "-c", "one", image)
    assert_clean(image)
    run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 2 512k 1M", image])
    img("snapshot", "-c", "two", image)
    assert_clean(image)
    ours = img("snapshot", "-l", image).stdout
    theirs = run(["qemu-img", "snapshot", "-l", image]).stdout
    assert ours == theirs
    img("snapshot", "-a", "one", image)
    assert_clean(image)
    qemu_io(image, "read -P 1 0 1M", "read -P 0 1M 1M")
    img("snapshot", "-d", "one", image)
    assert_clean(image)
    run(["qemu-img", "snapshot", "-a", "two", image])
    qemu_io(image, "read -P 1 0 512k", "read -P 2 512k 1M")
    img("snapshot", "-d", "two", image)
    assert_clean(image)
    assert "Snapshot list" not in run(["qemu-img", "info", image]).stdout


def test_resize(workdir):
    image = os.path.join(workdir, "r.qcow2")
    img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", image, "1M")
    qemu_io(image, "write -P 5 0 1M")
    assert img("resize", image, "+3G").stdout == "Image resized.\n"
    assert_clean(image)
    qemu_io(image, "read -P 5 0 1M", "write -P 6 3G 64k")
    assert img("resize", image, "512k", check=False).returncode == 1
    img("resize", "--shrink", image, "512k")
    assert_clean(image)
    qemu_io(image, "read -P 5 0 512k")


@pytest.mark.parametrize("extra", [[], ["-c"], ["-W", "-m", "16"], ["-o", "cluster_size=4096"]])
def test_convert_qcow2(workdir, extra):
    src = os.path.join(workdir, "src.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", src, "64M"])
    rng = random.Random(3)
    cmds = []
    for _ in range(40):
        off = rng.randrange(0, 60 * MiB)
        cmds.append(f"write -P {rng.randrange(1, 255)} {off} {rng.randint(1, 300000)}")
    cmds.append("write -z 10M 3M")
    qemu_io(src, *cmds)
    dst = os.path.join(workdir, "dst.qcow2")
    img("convert", "-O", "qcow2", *extra, src, dst)
    assert_clean(dst)
    assert run(["qemu-img", "compare", src, dst], check=False).returncode == 0
    raw = os.path.join(workdir, "dst.raw")
    img("convert", "-p", "-O", "raw", src, raw)
    assert run(["qemu-img", "compare", "-F", "raw", src, raw], check=False).returncode == 0


@pytest.mark.parametrize("sparse", [None, "0", "64k"])
def test_convert_skips_zero_data(workdir, sparse):
    """Allocated runs of zero bytes are not written to a fresh target (at -S
    granularity; -S 0 writes every byte, unallocated ranges too, as
    qemu-img convert -S 0 does), and the content stays equal."""
    src = os.path.join(workdir, "z.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", src, "8M"])
    qemu_io(src, "write -P 0 0 4M", "write -P 7 1M 4096", "write -P 9 2M 512",
            "write -P 5 4M 1M", "write -P 0 5M 1M")
    dst = os.path.join(workdir, "z-out.qcow2")
    extra = [] if sparse is None else ["-S", sparse]
    img("convert", "-O", "qcow2", *extra, src, dst)
    assert_clean(dst)
    assert run(["qemu-img", "compare", src, dst], check=False).returncode == 0
    data = [e for e in json.loads(run(["qemu-img", "map", "--output=json", dst]).stdout)
            if e["data"]]
    allocated = sum(e["length"] for e in data)
    if sparse == "0":
        assert allocated == 8 * MiB
    elif sparse == "64k":
        assert [(e["start"], e["length"]) for e in data] == [
            (1 * MiB, 64 * 1024), (2 * MiB, 64 * 1024), (4 * MiB, 1 * MiB)]
    else:
        # 4 KiB granularity: only the clusters holding non-zero 4 KiB blocks.
        assert [(e["start"], e["length"]) for e in data] == [
            (1 * MiB, 64 * 1024), (2 * MiB, 64 * 1024), (4 * MiB, 1 * MiB)]


def test_convert_with_backing(workdir):
    base = os.path.join(workdir, "base.qcow2")
    top = os.path.join(workdir, "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, "16M"])
    qemu_io(base, "write -P 1 0 8M")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top])
    qemu_io(top, "write -P 2 1M 1M", "write -z 3M 1M")
    out = os.path.join(workdir, "out.qcow2")
    img("convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", top, out)
    assert_clean(out)
    assert run(["qemu-img", "compare", top, out], check=False).returncode == 0
    # Only the top layer's data was copied.
    assert run(["qemu-img", "map", "--output=json", out]).stdout.count('"depth": 0, "present": true, "zero": false, "data": true') == 1
