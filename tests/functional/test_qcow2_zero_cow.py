"""Partial-cluster writes whose copy-on-write reads as zeroes.

Strata then zeroes the new cluster with one write-zeroes request on the file
(fallocate) and writes only the guest bytes, as QEMU does. These tests make
sure the rest of the cluster really reads as zeroes, also when the host
cluster is reused after a discard (old data on disk), over a short backing
file, and after a zero cluster; `qemu-img check` and `qemu-img compare`
against a raw model judge the result.
"""
import json
import os
import subprocess

from conftest import require, run, strata_binary

CLUSTER = 65536


def strata_io(image, lines):
    res = subprocess.run([strata_binary("strata-io"), "-f", "qcow2", image],
                         input="\n".join(lines) + "\n", capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def host_offset(image, guest):
    out = run(["qemu-img", "map", "--output=json", image]).stdout
    for e in json.loads(out):
        if e["start"] <= guest < e["start"] + e["length"] and e.get("data"):
            return e["offset"] + guest - e["start"]
    return None


def check_equal(workdir, image, model):
    raw = os.path.join(workdir, "model.raw")
    with open(raw, "wb") as f:
        f.write(model)
    chk = run(["qemu-img", "check", image], check=False)
    assert chk.returncode == 0 and "No errors were found" in chk.stdout, chk.stdout + chk.stderr
    cmp = run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, image], check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_reused_cluster_is_zeroed_around_a_partial_write(workdir):
    require("qemu-img")
    size = 4 * CLUSTER
    image = os.path.join(workdir, "img.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, str(size)])
    model = bytearray(size)
    # Fill guest cluster 0, then free it: its host cluster keeps 0x5a on disk.
    strata_io(image, [f"write -P 90 0 {CLUSTER}"])
    old_host = host_offset(image, 0)
    strata_io(image, [f"discard 0 {CLUSTER}"])
    # A 4 KiB write in the middle of guest cluster 2 allocates again.
    strata_io(image, [f"write -P 7 {2 * CLUSTER + 8192} 4096"])
    model[2 * CLUSTER + 8192:2 * CLUSTER + 12288] = b"\x07" * 4096
    assert host_offset(image, 2 * CLUSTER + 8192) == old_host + 8192, \
        "the freed host cluster was not reused; the test no longer covers reuse"
    check_equal(workdir, image, model)


def test_zero_cluster_and_short_backing(workdir):
    require("qemu-img")
    size = 8 * CLUSTER
    base = os.path.join(workdir, "base.raw")
    with open(base, "wb") as f:
        f.write(b"\x33" * (CLUSTER + 1000))  # shorter than the overlay
    image = os.path.join(workdir, "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", image, str(size)])
    model = bytearray(size)
    model[:CLUSTER + 1000] = b"\x33" * (CLUSTER + 1000)
    lines = [
        # Inside the backing data: the head and tail come from the backing file.
        "write -P 1 100 200",
        # Straddling the end of the backing data: the tail is past it.
        f"write -P 2 {CLUSTER + 500} 100",
        # Wholly past the backing file: head and tail are zeroes.
        f"write -P 3 {3 * CLUSTER + 4096} 4096",
        # A zero cluster, then a partial write into it.
        f"write -z {5 * CLUSTER} {CLUSTER}",
        f"write -P 4 {5 * CLUSTER + 512} 512",
    ]
    strata_io(image, lines)
    model[100:300] = b"\x01" * 200
    model[CLUSTER + 500:CLUSTER + 600] = b"\x02" * 100
    model[3 * CLUSTER + 4096:3 * CLUSTER + 8192] = b"\x03" * 4096
    model[5 * CLUSTER + 512:5 * CLUSTER + 1024] = b"\x04" * 512
    check_equal(workdir, image, model)
