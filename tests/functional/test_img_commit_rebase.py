"""strata-img commit, rebase, amend and measure, each beside qemu-img doing
the same on a copy of the same images: results compared with qemu-img
compare, checked with qemu-img check, outputs compared field by field."""
import json
import os
import shutil

import pytest

from conftest import require, run, strata_binary

MiB = 1 << 20


def img(*args, check=True):
    return run([strata_binary("strata-img"), *args], check=check)


def qemu_io(image, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    return run(args + [image])


def create(path, size="8M", backing=None, extra=()):
    args = ["qemu-img", "create", "-q", "-f", "qcow2", *extra]
    if backing:
        args += ["-b", os.path.basename(backing), "-F", "qcow2"]
    run(args + [path] + ([size] if size else []))


def assert_clean(image):
    res = run(["qemu-img", "check", image], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No errors were found" in res.stdout


def assert_same(a, b):
    res = run(["qemu-img", "compare", a, b], check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def chain3(d):
    """base <- mid <- top, each layer writing its own pattern, zeroes and
    a discard over the layer below."""
    base, mid, top = (os.path.join(d, n + ".qcow2") for n in ("base", "mid", "top"))
    create(base)
    qemu_io(base, "write -P 1 0 4M", "write -P 9 6M 1M")
    create(mid, backing=base)
    qemu_io(mid, "write -P 2 1M 1M", "write -z 3M 512k", "write -P 3 5M 100k")
    create(top, size=None, backing=mid)
    qemu_io(top, "write -P 4 1536k 64k", "write -P 5 7M 4k", "write -z 6M 64k")
    return base, mid, top


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


def raw_view(image, out):
    run(["qemu-img", "convert", "-O", "raw", image, out])
    return out


@pytest.mark.parametrize("flags", [[], ["-d"], ["-p"]])
def test_commit_to_backing_matches_qemu(workdir, flags):
    require("qemu-img")
    ours_dir = os.path.join(workdir, "ours")
    os.mkdir(ours_dir)
    base, mid, top = chain3(ours_dir)
    theirs_dir = copy_tree(ours_dir, os.path.join(workdir, "theirs"))
    before = raw_view(top, os.path.join(workdir, "before.raw"))
    res = img("commit", *flags, top)
    assert "Image committed." in res.stdout
    run(["qemu-img", "commit", "-q", *flags, os.path.join(theirs_dir, "top.qcow2")])
    for name in ("base", "mid", "top"):
        assert_clean(os.path.join(ours_dir, name + ".qcow2"))
        assert_same(os.path.join(ours_dir, name + ".qcow2"),
                    os.path.join(theirs_dir, name + ".qcow2"))
    # The chain still shows the same guest data.
    assert_same(top, before)
    assert_same(mid, before)
    theirs_map = run(["qemu-img", "map", "--output=json",
                      os.path.join(theirs_dir, "top.qcow2")]).stdout
    ours_map = run(["qemu-img", "map", "--output=json", top]).stdout
    strip = lambda m: [{k: e[k] for k in ("start", "length", "depth", "zero", "data")}
                       for e in json.loads(m)]
    assert strip(ours_map) == strip(theirs_map)


def test_commit_to_deeper_base_implies_drop(workdir):
    require("qemu-img")
    base, mid, top = chain3(workdir)
    before = raw_view(top, os.path.join(workdir, "before.raw"))
    top_map = run(["qemu-img", "map", "--output=json", top]).stdout
    img("commit", "-q", "-b", base, top)
    assert_same(base, before)
    assert run(["qemu-img", "map", "--output=json", top]).stdout == top_map
    for image in (base, mid, top):
        assert_clean(image)


def test_commit_grows_smaller_base(workdir):
    require("qemu-img")
    base = os.path.join(workdir, "base.qcow2")
    top = os.path.join(workdir, "top.qcow2")
    create(base, size="1M")
    qemu_io(base, "write -P 1 0 1M")
    create(top, size="3M", backing=base)
    qemu_io(top, "write -P 2 2M 512k")
    before = raw_view(top, os.path.join(workdir, "before.raw"))
    img("commit", "-q", top)
    info = json.loads(run(["qemu-img", "info", "--output=json", base]).stdout)
    assert info["virtual-size"] == 3 * MiB
    assert_same(base, before)
    assert_clean(base)


def test_commit_errors(workdir):
    require("qemu-img")
    lone = os.path.join(workdir, "lone.qcow2")
    create(lone)
    res = img("commit", lone, check=False)
    assert res.returncode == 1
    assert "Image does not have a backing file" in res.stderr
    base, mid, top = chain3(os.path.join(workdir))
    res = img("commit", "-b", "nonexist", top, check=False)
    assert res.returncode == 1
    assert "Did not find 'nonexist' in the backing chain of" in res.stderr


@pytest.mark.parametrize("unsafe", [False, True])
def test_rebase_matches_qemu(workdir, unsafe):
    require("qemu-img")
    ours_dir = os.path.join(workdir, "ours")
    os.mkdir(ours_dir)
    base, mid, top = chain3(ours_dir)
    other = os.path.join(ours_dir, "other.qcow2")
    create(other)
    qemu_io(other, "write -P 7 0 2M", "write -P 1 2M 2M")
    theirs_dir = copy_tree(ours_dir, os.path.join(workdir, "theirs"))
    before = raw_view(top, os.path.join(workdir, "before.raw"))
    flags = ["-u"] if unsafe else []
    img("rebase", *flags, "-b", "other.qcow2", "-F", "qcow2", top)
    run(["qemu-img", "rebase", *flags, "-b", "other.qcow2", "-F", "qcow2",
         os.path.join(theirs_dir, "top.qcow2")])
    assert_clean(top)
    info = json.loads(run(["qemu-img", "info", "--output=json", top]).stdout)
    assert info["backing-filename"] == "other.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    assert_same(top, os.path.join(theirs_dir, "top.qcow2"))
    if not unsafe:
        assert_same(top, before)


def test_rebase_flatten(workdir):
    require("qemu-img")
    base, mid, top = chain3(workdir)
    before = raw_view(top, os.path.join(workdir, "before.raw"))
    img("rebase", "-b", "", top)
    info = json.loads(run(["qemu-img", "info", "--output=json", top]).stdout)
    assert "backing-filename" not in info
    assert_same(top, before)
    assert_clean(top)


def test_rebase_errors(workdir):
    require("qemu-img")
    base, mid, top = chain3(workdir)
    res = img("rebase", top, check=False)
    assert res.returncode == 1
    assert "Must specify backing file (-b) or use unsafe mode (-u)" in res.stderr
    res = img("rebase", "-b", "base.qcow2", top, check=False)
    assert res.returncode == 1
    assert "backing format must be specified" in res.stderr
    res = img("rebase", "-b", "zz.qcow2", "-F", "qcow2", top, check=False)
    assert res.returncode == 1
    assert "Could not open new backing file 'zz.qcow2'" in res.stderr
    info = json.loads(run(["qemu-img", "info", "--output=json", top]).stdout)
    assert info["backing-filename"] == "mid.qcow2"


def header_bytes(path, n=4096):
    with open(path, "rb") as f:
        return f.read(n)


def test_amend_compat_both_ways_matches_qemu(workdir):
    require("qemu-img")
    ours = os.path.join(workdir, "ours.qcow2")
    theirs = os.path.join(workdir, "theirs.qcow2")
    create(ours, extra=["-o", "lazy_refcounts=on"])
    qemu_io(ours, "write -P 1 0 1M", "write -z 2M 128k", "write -P 2 3M 64k",
            "write -z 3M 64k")
    shutil.copy(ours, theirs)
    before = raw_view(ours, os.path.join(workdir, "before.raw"))
    img("amend", "-o", "compat=0.10", ours)
    run(["qemu-img", "amend", "-o", "compat=0.10", theirs])
    assert_clean(ours)
    assert_same(ours, before)
    info = json.loads(run(["qemu-img", "info", "--output=json", ours]).stdout)
    assert info["format-specific"]["data"]["compat"] == "0.10"
    assert header_bytes(ours, 72) == header_bytes(theirs, 72)
    img("amend", "-o", "compat=1.1,lazy_refcounts=on", ours)
    run(["qemu-img", "amend", "-o", "compat=1.1,lazy_refcounts=on", theirs])
    assert_clean(ours)
    assert_same(ours, before)
    ours_info = json.loads(run(["qemu-img", "info", "--output=json", ours]).stdout)
    theirs_info = json.loads(run(["qemu-img", "info", "--output=json", theirs]).stdout)
    assert ours_info["format-specific"] == theirs_info["format-specific"]
    img("amend", "-o", "lazy_refcounts=off", ours)
    ours_info = json.loads(run(["qemu-img", "info", "--output=json", ours]).stdout)
    assert ours_info["format-specific"]["data"]["lazy-refcounts"] is False
    assert_clean(ours)


def test_amend_downgrade_with_backing_keeps_zeroes(workdir):
    require("qemu-img")
    base = os.path.join(workdir, "base.qcow2")
    top = os.path.join(workdir, "top.qcow2")
    create(base)
    qemu_io(base, "write -P 1 0 8M")
    create(top, size=None, backing=base)
    qemu_io(top, "write -z 1M 256k", "write -P 3 4M 64k")
    before = raw_view(top, os.path.join(workdir, "before.raw"))
    img("amend", "-o", "compat=0.10", top)
    assert_clean(top)
    assert_same(top, before)


def test_amend_errors(workdir):
    require("qemu-img")
    image = os.path.join(workdir, "a.qcow2")
    create(image, extra=["-o", "refcount_bits=8"])
    cases = [
        (["-o", "compat=0.10"], "compat=0.10 requires refcount_bits=16"),
        (["-o", "cluster_size=4096"], "This option is only supported for image creation"),
        (["-o", "foo=1"], "Invalid parameter 'foo'"),
        (["-o", "backing_file=x"], "Cannot amend the backing file"),
        (["-o", "refcount_bits=3"], "Refcount width must be a power of two"),
        ([], "Must specify options (-o)"),
    ]
    for args, message in cases:
        res = img("amend", *args, image, check=False)
        assert res.returncode == 1, args
        assert message in res.stderr, (args, res.stderr)
        theirs = run(["qemu-img", "amend", *args, image], check=False)
        assert theirs.returncode == 1, args
        assert message in theirs.stderr, (args, theirs.stderr)
    raw = os.path.join(workdir, "r.raw")
    run(["qemu-img", "create", "-q", "-f", "raw", raw, "1M"])
    res = img("amend", "-f", "raw", "-o", "compat=1.1", raw, check=False)
    assert "Format driver 'raw' does not support option amendment" in res.stderr
    img("amend", "-o", "size=16M", image)
    info = json.loads(run(["qemu-img", "info", "--output=json", image]).stdout)
    assert info["virtual-size"] == 16 * MiB


MEASURE_CASES = [
    ["--size", "1G", "-O", "qcow2"],
    ["--size", "1G"],
    ["--size", "1G", "-O", "qcow2", "-o", "compat=0.10"],
    ["--size", "100G", "-O", "qcow2", "-o", "cluster_size=4k,refcount_bits=1"],
    ["--size", "1G", "-O", "qcow2", "-o", "preallocation=full"],
    ["--size", "3G", "-O", "qcow2", "-o", "cluster_size=2M,refcount_bits=64"],
]


@pytest.mark.parametrize("args", MEASURE_CASES)
@pytest.mark.parametrize("output", ["human", "json"])
def test_measure_size_matches_qemu(args, output):
    require("qemu-img")
    ours = img("measure", f"--output={output}", *args).stdout
    theirs = run(["qemu-img", "measure", f"--output={output}", *args]).stdout
    assert ours == theirs


@pytest.mark.parametrize("target", [["-O", "qcow2"], ["-O", "raw"],
                                    ["-O", "qcow2", "-o", "cluster_size=4k,compat=1.1"],
                                    ["-O", "qcow2", "-o", "backing_file=x.qcow2"]])
@pytest.mark.parametrize("output", ["human", "json"])
def test_measure_image_matches_qemu(workdir, target, output):
    require("qemu-img")
    image = os.path.join(workdir, "a.qcow2")
    create(image, size="64M")
    qemu_io(image, "write 0 1M", "write 10M 100k", "write -z 20M 1M", "write 63M 4k")
    raw = raw_view(image, os.path.join(workdir, "a.raw"))
    for src in (image, raw):
        ours = img("measure", f"--output={output}", *target, src).stdout
        theirs = run(["qemu-img", "measure", f"--output={output}", *target, src]).stdout
        assert ours == theirs, src


def test_measure_errors():
    require("qemu-img")
    res = img("measure", check=False)
    assert res.returncode == 1
    assert "Either --size N or one filename must be specified." in res.stderr
    res = img("measure", "--size", "1G", "x.qcow2", check=False)
    assert "--size N cannot be used together with a filename." in res.stderr
    res = img("measure", "--size", "1x", check=False)
    assert "Invalid image size specified" in res.stderr
