"""strata-img never destroys an image, and fails where qemu-img fails.

create and convert take the target's image locks (QEMU's lock bytes) before
they empty it: a target a live qemu-nbd serves is refused with qemu-img's
message and stays byte for byte as it was, raw or qcow2. Whatever convert
or create can refuse before the copy starts (options, a missing backing
file, a smaller -n target) leaves an existing target untouched. convert -c
works in whole target clusters whatever the source's allocation
granularity. check finds a truncated image corrupt and fails on a chain it
cannot open, with qemu-img's exit codes. The judges are qemu-img itself
(check, compare, map), qemu-nbd and the sha256 of the files."""
import contextlib
import hashlib
import json
import os
import shutil

import pytest

from conftest import require, run, strata_binary
from test_nbd_basic import serve


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def strata_img(*args):
    return run([strata_binary("strata-img"), *args], check=False)


def qemu_img(*args):
    return run(["qemu-img", *args], check=False)


def same_failure(ours, theirs):
    """Both failed with exit status 1 and the same message."""
    assert theirs.returncode == 1, theirs.stderr
    assert ours.returncode == 1, ours.stdout + ours.stderr
    assert ours.stderr == theirs.stderr.replace("qemu-img:", "strata-img:")


@contextlib.contextmanager
def qemu_nbd_serving(workdir, path, fmt):
    """A live qemu-nbd writing server on `path` (it holds QEMU's locks)."""
    require("qemu-nbd")
    with serve(path, "-f", fmt, server="qemu") as served:
        yield served.uri


def qcow2_with_data(workdir, name, pattern=0xAB, size="64M", opts="cluster_size=64k"):
    path = os.path.join(str(workdir), name)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, path, size])
    run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 1M",
         "-c", f"write -P {pattern + 1} 20M 192k", path])
    return path


def raw_with_data(workdir, name, pattern=0x5A):
    path = os.path.join(str(workdir), name)
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 512k", path])
    return path


# Item 1: locks before anything changes.

@pytest.mark.parametrize("busy_fmt", ["qcow2", "raw"])
def test_create_on_an_image_a_live_server_uses_is_refused_untouched(workdir, busy_fmt):
    busy = (qcow2_with_data(workdir, "busy.qcow2") if busy_fmt == "qcow2"
            else raw_with_data(workdir, "busy.raw"))
    before = sha256(busy)
    with qemu_nbd_serving(workdir, busy, busy_fmt) as uri:
        for new_fmt in ("qcow2", "raw"):
            ours = strata_img("create", "-f", new_fmt, busy, "1M")
            theirs = qemu_img("create", "-f", new_fmt, busy, "1M")
            same_failure(ours, theirs)
            assert '" lock\nIs another process using the image [' in ours.stderr
            assert sha256(busy) == before
        # The server still serves the guest's data.
        assert run(["qemu-img", "compare", "-U", "-f", busy_fmt, "-F", "raw",
                    busy, uri]).returncode == 0


@pytest.mark.parametrize("busy_fmt", ["qcow2", "raw"])
@pytest.mark.parametrize("out_fmt", ["qcow2", "raw"])
def test_convert_onto_an_image_a_live_server_uses_is_refused_untouched(workdir, out_fmt,
                                                                       busy_fmt):
    src = qcow2_with_data(workdir, "src.qcow2", pattern=0x11)
    busy = (qcow2_with_data(workdir, "busy.qcow2") if busy_fmt == "qcow2"
            else raw_with_data(workdir, "busy.raw"))
    before = sha256(busy)
    with qemu_nbd_serving(workdir, busy, busy_fmt):
        ours = strata_img("convert", "-O", out_fmt, src, busy)
        theirs = qemu_img("convert", "-O", out_fmt, src, busy)
        same_failure(ours, theirs)
        assert sha256(busy) == before
        # -n opens the target without creating it: refused as well. (qemu-img
        # opens a raw image qemu-nbd serves, since both share "write" on
        # raw, and would write into it under the server: strata-img does
        # not share "write", docs/tools/strata-img.md.)
        ours = strata_img("convert", "-n", "-O", busy_fmt, src, busy)
        if busy_fmt == "qcow2":
            same_failure(ours, qemu_img("convert", "-n", "-O", busy_fmt, src, busy))
        assert ours.returncode == 1
        assert ours.stderr == (f"strata-img: Could not open '{busy}': Failed to get "
                               f"{'' if busy_fmt == 'qcow2' else 'shared '}\"write\" lock\n"
                               f"Is another process using the image [{busy}]?\n")
        assert sha256(busy) == before
    if busy_fmt == "qcow2":
        assert qemu_img("check", busy).returncode == 0


def test_convert_onto_its_own_source_is_refused_untouched(workdir):
    src = qcow2_with_data(workdir, "same.qcow2")
    before = sha256(src)
    ours = strata_img("convert", "-O", "qcow2", src, src)
    theirs = qemu_img("convert", "-O", "qcow2", src, src)
    same_failure(ours, theirs)
    assert sha256(src) == before


# Every failure before the copy starts leaves the target as it was.

REFUSED_CONVERTS = {
    # name: (arguments before SRC DST, whether qemu-img leaves the target too)
    "unknown-option": (["-O", "qcow2", "-o", "foo=bar"], True),
    "bad-bool": (["-O", "qcow2", "-o", "lazy_refcounts=maybe"], True),
    "bad-number": (["-O", "qcow2", "-o", "refcount_bits=abc"], True),
    "compress-raw": (["-c", "-O", "raw"], True),
    "compress-raw-n": (["-n", "-c", "-O", "raw"], True),
    "backing-raw": (["-O", "raw", "-o", "backing_file=x.qcow2"], True),
    # qemu-img empties (and deletes) the target before it refuses these:
    "cluster-size": (["-O", "qcow2", "-o", "cluster_size=3"], False),
    "refcount-bits": (["-O", "qcow2", "-o", "refcount_bits=3"], False),
    "bitmaps-raw": (["--bitmaps", "-O", "raw"], False),
    "missing-backing": (["-O", "qcow2", "-B", "missing.qcow2", "-F", "qcow2"], False),
}


@pytest.mark.parametrize("name", sorted(REFUSED_CONVERTS))
def test_a_refused_convert_leaves_the_target_untouched(workdir, name):
    args, qemu_keeps = REFUSED_CONVERTS[name]
    src = qcow2_with_data(workdir, "src.qcow2", pattern=0x11)
    target = qcow2_with_data(workdir, "target.qcow2")
    theirs_target = os.path.join(str(workdir), "theirs.qcow2")
    shutil.copy(target, theirs_target)
    before = sha256(target)
    ours = strata_img("convert", *args, src, target)
    theirs = qemu_img("convert", *args, src, theirs_target)
    assert ours.returncode == theirs.returncode == 1, ours.stderr
    assert ours.stderr == theirs.stderr.replace("qemu-img:", "strata-img:").replace(
        theirs_target, target)
    assert sha256(target) == before
    if qemu_keeps:
        assert sha256(theirs_target) == before


REFUSED_CREATES = {
    "unknown-option": ["-f", "qcow2", "-o", "foo=bar"],
    "cluster-size": ["-f", "qcow2", "-o", "cluster_size=3"],
    "refcount-bits": ["-f", "qcow2", "-o", "refcount_bits=3"],
    "v2-lazy": ["-f", "qcow2", "-o", "compat=0.10,lazy_refcounts=on"],
    "missing-backing": ["-f", "qcow2", "-b", "missing.qcow2", "-F", "qcow2"],
}


@pytest.mark.parametrize("name", sorted(REFUSED_CREATES))
def test_a_refused_create_leaves_the_target_untouched(workdir, name):
    target = qcow2_with_data(workdir, "target.qcow2")
    before = sha256(target)
    ours = strata_img("create", *REFUSED_CREATES[name], target, "1M")
    assert ours.returncode == 1, ours.stdout
    assert "strata-img: " + target + ": " in ours.stderr
    assert sha256(target) == before
    if name == "missing-backing":
        theirs = qemu_img("create", *REFUSED_CREATES[name], target, "1M")
        same_failure(ours, theirs)
        assert sha256(target) == before


# Item 2: convert -c in whole target clusters.

def map_extents(path):
    """(start, length, data, zero) of qemu-img map, host offsets left out."""
    out = json.loads(run(["qemu-img", "map", "--output=json", path]).stdout)
    return [(e["start"], e["length"], e["data"], e["zero"]) for e in out]


def sparse_raw_source(workdir):
    path = os.path.join(str(workdir), "sparse.raw")
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    run(["qemu-io", "-f", "raw", "-c", "write -P 5 4k 4k", "-c", "write -P 6 1M 100k",
         "-c", "write -P 7 7M 4k", "-c", "write -P 8 4194300 8", path])
    return path, "raw"


def small_cluster_source(workdir):
    path = os.path.join(str(workdir), "small.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", path, "8M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 3 8k 4k", "-c", "write -P 4 200k 12k",
         "-c", "write -z 64k 4k", "-c", "write -P 9 8188k 4k", path])
    return path, "qcow2"


@pytest.mark.parametrize("make_source", [sparse_raw_source, small_cluster_source])
def test_convert_compressed_from_finer_allocation_than_the_target_cluster(workdir, make_source):
    src, fmt = make_source(workdir)
    ours = os.path.join(str(workdir), "ours.qcow2")
    theirs = os.path.join(str(workdir), "theirs.qcow2")
    res = strata_img("convert", "-c", "-f", fmt, "-O", "qcow2", src, ours)
    assert res.returncode == 0, res.stderr
    run(["qemu-img", "convert", "-c", "-f", fmt, "-O", "qcow2", src, theirs])
    assert run(["qemu-img", "compare", "-f", fmt, "-F", "qcow2", src, ours]).returncode == 0
    report = json.loads(run(["qemu-img", "check", "--output=json", ours]).stdout)
    assert "corruptions" not in report and "leaks" not in report
    assert report["compressed-clusters"] == report["allocated-clusters"] > 0
    # The same clusters hold data as in qemu-img's own compressed copy.
    assert map_extents(ours) == map_extents(theirs)


# Item 3: convert -n into a smaller target.

@pytest.mark.parametrize("target_fmt", ["qcow2", "raw"])
def test_convert_into_a_smaller_existing_target_fails_like_qemu_img(workdir, target_fmt):
    src = qcow2_with_data(workdir, "src.qcow2")
    target = os.path.join(str(workdir), "small." + target_fmt)
    run(["qemu-img", "create", "-q", "-f", target_fmt, target, "1M"])
    before = sha256(target)
    ours = strata_img("convert", "-n", "-O", target_fmt, src, target)
    theirs = qemu_img("convert", "-n", "-O", target_fmt, src, target)
    same_failure(ours, theirs)
    assert ours.stderr == "strata-img: output file is smaller than input file\n"
    assert sha256(target) == before


# Item 4: check finds what qemu-img finds.

def check_json(tool, path, *args):
    res = run([tool, "check", "--output=json", *args, path], check=False)
    report = json.loads(res.stdout) if res.stdout.strip() else None
    if report:
        report.pop("filename", None)
    return res.returncode, report, res.stderr


def test_check_finds_a_truncated_image_corrupt(workdir):
    path = qcow2_with_data(workdir, "t.qcow2")
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 3 40M 2M", path])
    os.truncate(path, 1 << 20)
    ours = check_json(strata_binary("strata-img"), path)
    theirs = check_json("qemu-img", path)
    assert theirs[0] == 2
    assert ours[:2] == theirs[:2]
    assert ours[1]["corruptions"] > 0
    assert ours[2] == theirs[2]  # every message, in the same order
    human = strata_img("check", path)
    assert human.returncode == 2
    assert "errors were found on the image" in human.stdout


def test_check_of_a_chain_with_a_missing_backing_file_fails_like_qemu_img(workdir):
    base = qcow2_with_data(workdir, "base.qcow2")
    top = os.path.join(str(workdir), "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top])
    os.remove(base)
    for args in ([], ["--output=json"], ["-r", "all"]):
        ours = strata_img("check", *args, top)
        theirs = qemu_img("check", *args, top)
        same_failure(ours, theirs)
        assert ours.stdout == ""
