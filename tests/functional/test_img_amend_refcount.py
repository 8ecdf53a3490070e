"""strata-img amend -o refcount_bits=N rewrites the refcount structure with
the new width, as qemu-img amend does: checked with qemu-img check/info and
qemu-img compare, for widening and narrowing, with internal snapshots, and
refused with qemu-img's messages where qemu-img refuses."""
import json
import os
import shutil

import pytest

from conftest import require, run, strata_binary


def make_image(workdir, name="base.qcow2", opts="cluster_size=64k"):
    path = os.path.join(workdir, name)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, path, "64M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 8M 64k",
         "-c", "write -z 12M 1M", "-c", "write -c -P 3 40M 64k", path])
    return path


def refcount_bits(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    return info["format-specific"]["data"]["refcount-bits"]


def amend(path, opts):
    return run([strata_binary("strata-img"), "amend", "-o", opts, path], check=False)


def assert_clean(path):
    res = run(["qemu-img", "check", "--output=json", path], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert "corruptions" not in report and "leaks" not in report


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 32, 64])
def test_change_width(workdir, bits):
    require("qemu-img")
    base = make_image(workdir)
    img = os.path.join(workdir, "img.qcow2")
    shutil.copy(base, img)
    res = amend(img, f"refcount_bits={bits}")
    assert res.returncode == 0, res.stderr
    assert refcount_bits(img) == bits
    assert_clean(img)
    assert run(["qemu-img", "compare", base, img]).returncode == 0
    # The new structure takes allocations from both tools.
    run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 9 20M 192k", img])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 8 30M 64k", img])
    assert_clean(img)
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 9 20M 192k", "-c", "read -P 8 30M 64k",
         "-c", "read -P 1 0 1M", img])


def test_same_result_as_qemu_img(workdir):
    """Both tools amend a copy of the same image: same width, same guest data,
    same check report apart from where the new structure went."""
    require("qemu-img")
    base = make_image(workdir, opts="cluster_size=4k")
    ours = os.path.join(workdir, "ours.qcow2")
    theirs = os.path.join(workdir, "theirs.qcow2")
    for bits in (8, 64, 16):
        shutil.copy(base, ours)
        shutil.copy(base, theirs)
        assert amend(ours, f"refcount_bits={bits}").returncode == 0
        run(["qemu-img", "amend", "-o", f"refcount_bits={bits}", theirs])
        assert refcount_bits(ours) == refcount_bits(theirs) == bits
        assert run(["qemu-img", "compare", ours, theirs]).returncode == 0
        reports = []
        for path in (ours, theirs):
            report = json.loads(run(["qemu-img", "check", "--output=json", path]).stdout)
            for key in ("filename", "image-end-offset"):
                report.pop(key)
            reports.append(report)
        assert reports[0] == reports[1]


def test_round_trip_with_snapshot(workdir):
    """Shared clusters (refcount 2) survive 16 -> 2 -> 64 -> 16."""
    require("qemu-img")
    base = make_image(workdir)
    run(["qemu-img", "snapshot", "-c", "snap", base])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 64k", base])
    img = os.path.join(workdir, "img.qcow2")
    shutil.copy(base, img)
    for bits in (2, 64, 16):
        assert amend(img, f"refcount_bits={bits}").returncode == 0
        assert refcount_bits(img) == bits
        assert_clean(img)
        assert run(["qemu-img", "compare", base, img]).returncode == 0
    raws = []
    for src in (base, img):
        raws.append(src + ".snap.raw")
        run(["qemu-img", "convert", "-l", "snapshot.name=snap", "-O", "raw", src, raws[-1]])
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", *raws]).returncode == 0


def test_narrowing_refused_when_a_refcount_does_not_fit(workdir):
    require("qemu-img")
    base = make_image(workdir)
    run(["qemu-img", "snapshot", "-c", "snap", base])
    ours = os.path.join(workdir, "ours.qcow2")
    shutil.copy(base, ours)
    res = amend(ours, "refcount_bits=1")
    theirs = run(["qemu-img", "amend", "-o", "refcount_bits=1", base], check=False)
    assert res.returncode == theirs.returncode == 1
    message = theirs.stderr.strip().split("qemu-img: ", 1)[1]
    assert message.startswith("Cannot decrease refcount entry width to 1 bits: Cluster at offset")
    assert res.stderr.strip() == "strata-img: " + message
    with open(base, "rb") as a, open(ours, "rb") as b:
        assert a.read() == b.read()  # neither tool changed anything


@pytest.mark.parametrize("opts,create_opts", [
    ("refcount_bits=8", "compat=0.10"),
    ("refcount_bits=8,compat=0.10", "compat=1.1"),
    ("refcount_bits=3", "compat=1.1"),
    ("refcount_bits=128", "compat=1.1"),
])
def test_refused_like_qemu(workdir, opts, create_opts):
    require("qemu-img")
    img = os.path.join(workdir, "img.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", create_opts, img, "1M"])
    with open(img, "rb") as f:
        before = f.read()
    ours = amend(img, opts)
    theirs = run(["qemu-img", "amend", "-o", opts, img], check=False)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr.replace("strata-img: ", "") == theirs.stderr.replace("qemu-img: ", "")
    with open(img, "rb") as f:
        assert f.read() == before


def test_upgrade_and_downgrade_with_width(workdir):
    """compat=1.1 with a new width on a v2 image, and back to 0.10 with 16 bits."""
    require("qemu-img")
    base = make_image(workdir, opts="compat=0.10")
    img = os.path.join(workdir, "img.qcow2")
    shutil.copy(base, img)
    assert amend(img, "compat=1.1,refcount_bits=8").returncode == 0
    info = json.loads(run(["qemu-img", "info", "--output=json", img]).stdout)
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert refcount_bits(img) == 8
    assert_clean(img)
    assert run(["qemu-img", "compare", base, img]).returncode == 0
    res = amend(img, "compat=0.10,refcount_bits=16")
    assert res.returncode == 0, res.stderr
    info = json.loads(run(["qemu-img", "info", "--output=json", img]).stdout)
    assert info["format-specific"]["data"]["compat"] == "0.10"
    assert refcount_bits(img) == 16
    assert_clean(img)
    assert run(["qemu-img", "compare", base, img]).returncode == 0
