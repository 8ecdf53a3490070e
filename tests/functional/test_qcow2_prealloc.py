"""Preallocation (off, metadata, falloc, full) at create and on resize,
checked with qemu-img check, map and info beside qemu-img's own images."""
import json
import os

import pytest

from conftest import require, run, strata_binary

MiB = 1 << 20


def img(*args, check=True):
    return run([strata_binary("strata-img"), *args], check=check)


def qemu_map(path):
    return json.loads(run(["qemu-img", "map", "--output=json", path]).stdout)


def assert_clean(image):
    res = run(["qemu-img", "check", image], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No errors were found" in res.stdout


def allocated_bytes(path):
    return os.stat(path).st_blocks * 512


def covered_with_offsets(entries, size):
    """Every guest byte is allocated in the image itself, with a host offset."""
    pos = 0
    for e in entries:
        assert e["start"] == pos
        assert e["depth"] == 0 and e["data"] is True and "offset" in e, e
        pos += e["length"]
    assert pos == size


@pytest.mark.parametrize("mode", ["metadata", "falloc", "full"])
@pytest.mark.parametrize("cluster", ["64k", "4k"])
def test_create_preallocated(workdir, mode, cluster):
    require("qemu-img")
    ours = os.path.join(workdir, "ours.qcow2")
    theirs = os.path.join(workdir, "theirs.qcow2")
    opts = f"preallocation={mode},cluster_size={cluster}"
    out = img("create", "-f", "qcow2", "-o", opts, ours, "20M").stdout
    assert f"preallocation={mode}" in out
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, theirs, "20M"])
    assert_clean(ours)
    covered_with_offsets(qemu_map(ours), 20 * MiB)
    ours_zero = [e["zero"] for e in qemu_map(ours)]
    theirs_zero = [e["zero"] for e in qemu_map(theirs)]
    assert set(ours_zero) == set(theirs_zero)
    run(["qemu-img", "compare", ours, theirs])
    if mode == "metadata":
        assert allocated_bytes(ours) < 4 * MiB
    else:
        assert allocated_bytes(ours) >= 20 * MiB
    # The file covers every preallocated cluster, as QEMU's does.
    assert os.path.getsize(ours) >= 20 * MiB
    # Writes go in place into the preallocated clusters: no new allocation.
    size_before = os.path.getsize(ours)
    run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 7 3M 2M", ours])
    assert os.path.getsize(ours) == size_before
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 7 3M 2M", "-c", "read -P 0 0 3M", ours])
    assert_clean(ours)


@pytest.mark.parametrize("mode", ["metadata", "falloc", "full"])
def test_resize_preallocated(workdir, mode):
    require("qemu-img")
    image = os.path.join(workdir, "r.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "8M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 1M 64k", image])
    out = img("resize", f"--preallocation={mode}", image, "24M").stdout
    assert "Image resized." in out
    assert_clean(image)
    entries = qemu_map(image)
    # The old area stays sparse; every cluster of the new area is allocated.
    new_area = [e for e in entries if e["start"] >= 8 * MiB]
    covered = sum(e["length"] for e in new_area if e["data"] and "offset" in e)
    assert covered == 16 * MiB, entries
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 5 1M 64k", "-c", "read -P 0 8M 16M", image])
    if mode != "metadata":
        assert allocated_bytes(image) >= 16 * MiB


def test_preallocation_errors(workdir):
    require("qemu-img")
    image = os.path.join(workdir, "e.qcow2")
    res = img("create", "-f", "qcow2", "-o", "preallocation=bogus", image, "1M", check=False)
    assert res.returncode == 1
    assert "Parameter 'preallocation' does not accept value 'bogus'" in res.stderr
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "8M"])
    res = img("resize", "--shrink", "--preallocation=full", image, "4M", check=False)
    assert res.returncode == 1
    # qemu-img's own check, before the driver's ("can't be used for shrinking").
    assert "Preallocation can only be used for growing images" in res.stderr
