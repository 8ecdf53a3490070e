"""Images in the formats Strata reads but does not write (vmdk, vpc, vdi):
made by qemu-img, filled by qemu-io, and compared with what qemu-img makes
of them. Strata opens them by probing (no -f); qemu-img is told the format,
since it probes a fixed VHD as raw."""
import json
import os
import struct

from conftest import run, strata_binary

MiB = 1 << 20

# (pattern, offset, length): scattered, unaligned to grains and blocks, with
# holes between; the last sector of the image is written too.
WRITES = [
    (0x11, 0, 4096),
    (0x22, 1000 * 1024, 3 * 1024),
    (0x33, 5 * MiB - 512, 200 * 1024 + 512),
    (0x44, 7 * MiB + 65536 - 1536, 512),
]


def qemu_io_write(fmt, path, writes, size=None):
    cmds = []
    for pattern, offset, length in writes:
        cmds += ["-c", f"write -P {pattern:#x} {offset} {length}"]
    if size is not None:
        cmds += ["-c", f"write -P 0x55 {size - 512} 512"]
    run(["qemu-io", "-f", fmt, *cmds, path])


def make_image(workdir, fmt, name, size, opts=None, writes=WRITES, fill_last=True):
    """Creates `name` with qemu-img and writes `writes` (and the last sector)
    with qemu-io; returns its path."""
    path = os.path.join(str(workdir), name)
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    if opts:
        cmd += ["-o", opts]
    run(cmd + [path, str(size)])
    virtual = qemu_info(path, fmt)["virtual-size"]
    qemu_io_write(fmt, path, writes, virtual if fill_last else None)
    return path


def qemu_info(path, fmt, *extra):
    return json.loads(run(["qemu-img", "info", "--output=json", "-f", fmt, *extra,
                           path]).stdout)


def strata_img(*args, check=True):
    return run([strata_binary("strata-img"), *args], check=check)


def files_equal(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def assert_converts_like_qemu(workdir, path, fmt, byte_compare=True):
    """strata-img convert -O raw and -O qcow2 give qemu-img convert's data,
    and compare finds the image identical to it."""
    ref = os.path.join(str(workdir), "qemu.raw")
    run(["qemu-img", "convert", "-f", fmt, "-O", "raw", path, ref])
    ours = os.path.join(str(workdir), "strata.raw")
    strata_img("convert", "-O", "raw", path, ours)
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", ref, ours],
               check=False).returncode == 0
    if byte_compare:
        assert files_equal(ref, ours)
    res = strata_img("compare", path, ref)
    assert res.stdout == "Images are identical.\n"
    ours_q = os.path.join(str(workdir), "strata.qcow2")
    strata_img("convert", "-O", "qcow2", path, ours_q)
    assert run(["qemu-img", "check", ours_q], check=False).returncode == 0
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", ref, ours_q],
               check=False).returncode == 0
    for f in (ref, ours, ours_q):
        os.unlink(f)


def assert_reports_like_qemu(path, fmt, chain=False):
    """info, measure, map and check (JSON and human) as qemu-img."""
    extra = ["--backing-chain"] if chain else []
    theirs = json.loads(run(["qemu-img", "info", "--output=json", "-f", fmt, *extra,
                             path]).stdout)
    ours = json.loads(strata_img("info", "--output=json", *extra, path).stdout)
    assert ours == theirs
    assert (strata_img("info", *extra, path).stdout ==
            run(["qemu-img", "info", "-f", fmt, *extra, path]).stdout)
    for output in ("--output=json", "--output=human"):
        assert (strata_img("measure", output, "-O", "qcow2", path).stdout ==
                run(["qemu-img", "measure", output, "-f", fmt, "-O", "qcow2", path]).stdout)
    for cmd in ("map", "check"):
        for output in ("--output=json", "--output=human"):
            theirs = run(["qemu-img", cmd, "-f", fmt, output, path], check=False)
            ours = strata_img(cmd, output, path, check=False)
            assert ours.returncode == theirs.returncode, (cmd, output)
            assert ours.stdout == theirs.stdout, (cmd, output)
            assert ours.stderr.replace("strata-img:", "qemu-img:") == theirs.stderr


def patch(path, offset, fmt, *values):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))


def read_at(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
