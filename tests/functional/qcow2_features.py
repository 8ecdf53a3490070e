"""Helpers for the qcow2 feature tests (zstd, extended L2, data files).

Not a test file: functions to run qemu-io and strata-io with the same
commands, read an image's L2 entries straight from the file, build random
workloads with a byte model, and compare qemu-img and strata-img outputs.
"""
import json
import os
import random
import struct
import subprocess

from conftest import run, strata_binary


def qemu_io(image, commands, fmt="qcow2", extra=()):
    args = ["qemu-io", "-f", fmt, *extra]
    for c in commands:
        args += ["-c", c]
    res = run(args + [image], check=False)
    assert res.returncode == 0 and "failed" not in res.stdout + res.stderr, \
        res.stdout + res.stderr
    return res


def strata_io(image, commands, fmt="qcow2", check=True, extra=()):
    res = subprocess.run([strata_binary("strata-io"), "-f", fmt, *extra, image],
                         input="\n".join(commands) + "\n", capture_output=True, text=True)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def strata_img(*args, check=False, cwd=None):
    return run([strata_binary("strata-img"), *args], check=check, cwd=cwd)


def header(image):
    with open(image, "rb") as f:
        return f.read(4096)


def l1_table(image):
    h = header(image)
    l1_size, l1_offset = struct.unpack(">IQ", h[36:48])
    with open(image, "rb") as f:
        f.seek(l1_offset)
        data = f.read(8 * l1_size)
    return [struct.unpack(">Q", data[i:i + 8])[0] for i in range(0, len(data), 8)]


def l2_entries(image, extended):
    """Every active L2 entry as (entry, bitmap), by guest cluster (None where
    no L2 table exists)."""
    h = header(image)
    cluster_bits = struct.unpack(">I", h[20:24])[0]
    cs = 1 << cluster_bits
    esize = 16 if extended else 8
    out = []
    with open(image, "rb") as f:
        for l1e in l1_table(image):
            off = l1e & 0x00FFFFFFFFFFFE00
            if not off:
                out += [None] * (cs // esize)
                continue
            f.seek(off)
            data = f.read(cs)
            for i in range(0, cs, esize):
                entry = struct.unpack(">Q", data[i:i + 8])[0]
                bitmap = struct.unpack(">Q", data[i + 8:i + 16])[0] if extended else 0
                out.append((entry, bitmap))
    return out


def guest_view(entries):
    """Entries without host offsets: what a guest can tell apart (allocated
    or not, zero flag, subcluster bits, compressed)."""
    view = []
    for e in entries:
        if e is None:
            view.append((0, 0, 0))
            continue
        entry, bitmap = e
        view.append((1 if entry & 0x00FFFFFFFFFFFE00 else 0, entry & 0xC000000000000001, bitmap))
    return view


def map_json(tool, image, fmt="qcow2", cwd=None):
    binary = "qemu-img" if tool == "qemu" else strata_binary("strata-img")
    res = run([binary, "map", "-f", fmt, "--output=json", image], check=False, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def without_offsets(extents):
    return [{k: v for k, v in e.items() if k != "offset"} for e in extents]


def check_json(tool, image, extra=(), cwd=None):
    binary = "qemu-img" if tool == "qemu" else strata_binary("strata-img")
    res = run([binary, "check", *extra, "--output=json", image], check=False, cwd=cwd)
    try:
        data = json.loads(res.stdout)
    except ValueError:
        data = None
    if data:
        data.pop("filename", None)
    return res.returncode, data, res.stderr


def assert_clean_and_equal(image, model, workdir, fmt="qcow2"):
    raw = os.path.join(str(workdir), "model.raw")
    with open(raw, "wb") as f:
        f.write(model)
    chk = run(["qemu-img", "check", "-f", fmt, image], check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    cmp = run(["qemu-img", "compare", "-f", "raw", "-F", fmt, raw, image], check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def random_ops(rng, size, unit, count, zero=True, discard=True):
    """qemu-io style commands with a byte model: writes of any alignment,
    write-zeroes (with and without unmap), discards, flushes."""
    ops = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.55 or (not zero and not discard):
            if rng.random() < 0.4:
                off = rng.randrange(0, size // unit) * unit
                length = unit * rng.randint(1, 5)
            else:
                off = rng.randrange(0, size - 1)
                length = rng.randint(1, 3 * unit)
            ops.append(("write", off, min(length, size - off), rng.randrange(1, 256)))
        elif kind < 0.8 and zero:
            off = rng.randrange(0, size - 1)
            if rng.random() < 0.5:
                off = off // unit * unit
            length = min(rng.randint(1, 6 * unit), size - off)
            ops.append(("zero", off, length, rng.random() < 0.5))
        elif kind < 0.93 and discard:
            off = rng.randrange(0, size - 1)
            ops.append(("discard", off, min(rng.randint(1, 6 * unit), size - off), None))
        else:
            ops.append(("flush", 0, 0, None))
    return ops


def apply_ops(model, ops, cluster):
    """Updates the model; returns the commands. A discard leaves the
    content undefined except on whole clusters, which read as zeroes here
    (v3 images: the tests use no backing file under discards)."""
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


def patterned_raw(path, size, seed, holes=True):
    """A raw file with compressible, incompressible and empty clusters."""
    rng = random.Random(seed)
    data = bytearray(size)
    for off in range(0, size, 65536):
        kind = rng.random()
        if kind < 0.3 and holes:
            continue
        if kind < 0.7:
            data[off:off + 65536] = bytes([rng.randrange(1, 256)]) * 32768 + \
                bytes(range(256)) * 128
        else:
            data[off:off + 65536] = rng.randbytes(65536)
    with open(path, "wb") as f:
        f.write(data)
    return data
