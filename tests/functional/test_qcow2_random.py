"""Randomized workloads on qcow2 images written by Strata, checked by QEMU.

Each case runs a few thousand operations (writes of any size and alignment,
write-zeroes with and without unmap, discards, flushes, growth) through
strata-io, keeps a byte model of the expected content, and then requires
`qemu-img check` to find no errors and no leaks and `qemu-img compare` to
find the image equal to the model.
"""
import os
import random
import subprocess

import pytest

from conftest import require, run, strata_binary

MiB = 1 << 20


def make_ops(rng, size, cluster, count):
    ops = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.6:
            if rng.random() < 0.5:
                off = rng.randrange(0, size // cluster) * cluster
                length = cluster * rng.randint(1, 4)
            else:
                off = rng.randrange(0, size - 1)
                length = rng.randint(1, 3 * cluster)
            length = min(length, size - off)
            ops.append(("write", off, length, rng.randrange(1, 256)))
        elif kind < 0.75:
            off = rng.randrange(0, size // cluster) * cluster
            length = min(cluster * rng.randint(1, 8), size - off)
            ops.append(("zero", off, length, rng.random() < 0.5))
        elif kind < 0.9:
            off = rng.randrange(0, size - 1)
            length = min(rng.randint(1, 6 * cluster), size - off)
            ops.append(("discard", off, length, None))
        else:
            ops.append(("flush", 0, 0, None))
    return ops


def apply_model(model, ops, cluster):
    lines = []
    for kind, off, length, arg in ops:
        if kind == "write":
            model[off:off + length] = bytes([arg]) * length
            lines.append(f"write -P {arg} {off} {length}")
        elif kind == "zero":
            model[off:off + length] = bytes(length)
            lines.append(f"write -z {'-u ' if arg else ''}{off} {length}")
        elif kind == "discard":
            start = (off + cluster - 1) // cluster * cluster
            end = (off + length) // cluster * cluster
            if end > start:
                model[start:end] = bytes(end - start)
            lines.append(f"discard {off} {length}")
        else:
            lines.append("flush")
    return lines


def run_workload(workdir, image, model, ops, cluster):
    lines = apply_model(model, ops, cluster)
    res = subprocess.run([strata_binary("strata-io"), "-f", "qcow2", image],
                         input="\n".join(lines) + "\n", capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def check_and_compare(workdir, image, model):
    raw = os.path.join(workdir, "model.raw")
    with open(raw, "wb") as f:
        f.write(model)
    chk = run(["qemu-img", "check", image], check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    assert "No errors were found" in chk.stdout
    cmp = run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, image], check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


@pytest.mark.parametrize("cluster,refbits,compat", [
    (65536, 16, "1.1"),
    (4096, 1, "1.1"),
    (512, 64, "1.1"),
    (2 * MiB, 8, "1.1"),
    (65536, 16, "0.10"),
])
def test_random_workload(workdir, cluster, refbits, compat):
    require("qemu-img")
    size = 24 * MiB if cluster < 2 * MiB else 64 * MiB
    image = os.path.join(workdir, "img.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
         f"cluster_size={cluster},refcount_bits={refbits},compat={compat}", image, str(size)])
    rng = random.Random(cluster * 7 + refbits)
    model = bytearray(size)
    budget = 300 if cluster >= 2 * MiB else 1500
    ops = make_ops(rng, size, cluster, budget)
    run_workload(workdir, image, model, ops, cluster)
    check_and_compare(workdir, image, model)
    # A second session on the same image: overwrites, COW and frees.
    ops = make_ops(rng, size, cluster, budget // 2)
    run_workload(workdir, image, model, ops, cluster)
    check_and_compare(workdir, image, model)


def test_random_over_backing(workdir):
    """Partial-cluster writes over a backing file copy the rest from it."""
    require("qemu-img")
    size = 16 * MiB
    cluster = 65536
    base = os.path.join(workdir, "base.raw")
    rng = random.Random(42)
    content = bytearray(rng.randbytes(size))
    with open(base, "wb") as f:
        f.write(content)
    image = os.path.join(workdir, "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", image])
    ops = [op for op in make_ops(rng, size, cluster, 1500)]
    run_workload(workdir, image, content, ops, cluster)
    check_and_compare(workdir, image, content)
