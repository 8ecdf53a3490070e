"""Hostile qcow2 images (the fuzz corpus' hand-made variants): refused at
open with QEMU's message, or opened and then refused at the first write that
would overwrite metadata, with the corrupt bit set. Never a crash."""
import json
import os
import shutil

import pytest

from conftest import require, run, strata_binary

CORPUS = os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus", "qcow2_open")

REFUSED = {
    "hostile-backing-past-end.qcow2": "Invalid backing file offset",
    "hostile-cluster-bits.qcow2": "Unsupported cluster size: 2^40",
    "hostile-ext-length.qcow2": "Header extension too large",
    "hostile-header-length.qcow2": "qcow2 header exceeds cluster size",
    "hostile-huge-l1.qcow2": "Active L1 table too large",
    "hostile-l1-unaligned.qcow2": "Active L1 table offset invalid",
    "hostile-refcount-order.qcow2":
        "Reference count entry width too large; may not exceed 64 bits",
    "hostile-reftable-huge.qcow2": "Reference count table too large",
    "hostile-size-huge.qcow2": "Image is too big",
    "hostile-snapshots-many.qcow2": "Snapshot table too large",
    "hostile-truncated.qcow2": "qcow2 header too short",
    "hostile-unknown-incompat.qcow2":
        "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_at_open_like_qemu(name):
    require("qemu-img")
    path = os.path.join(CORPUS, name)
    ours = run([strata_binary("strata-img"), "info", path], check=False)
    assert ours.returncode == 1
    assert REFUSED[name] in ours.stderr
    theirs = run(["qemu-img", "info", path], check=False)
    assert theirs.returncode == 1
    assert REFUSED[name] in theirs.stderr


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(CORPUS)))
def test_every_corpus_image_answers_cleanly(workdir, name):
    """Reads, a write and a check end with a result or an error message."""
    path = os.path.join(workdir, name)
    shutil.copy(os.path.join(CORPUS, name), path)
    for cmd in (["info", path], ["check", path], ["map", path]):
        res = run([strata_binary("strata-img"), *cmd], check=False)
        assert res.returncode >= 0, (cmd, res.returncode)  # not killed by a signal
        if res.returncode not in (0, 2, 3):
            assert res.stderr.strip(), cmd
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 1 0 4096",
               "-c", "read 0 64k", path], check=False)
    assert res.returncode in (0, 1)


def test_write_over_l1_table_is_refused_and_marks_corrupt(workdir):
    require("qemu-img")
    path = os.path.join(workdir, "overlap.qcow2")
    shutil.copy(os.path.join(CORPUS, "hostile-l2-overlaps-l1.qcow2"), path)
    with open(path, "rb") as f:
        l1_before = f.read()
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 0x5a 0 512", path],
              check=False)
    assert res.returncode == 1
    assert ("Marking image as corrupt: Preventing invalid write on metadata "
            "(overlaps with active L1 table)") in res.stdout + res.stderr
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True
    # Nothing but the header's incompatible bits changed.
    with open(path, "rb") as f:
        after = f.read()
    assert after[:72] == l1_before[:72] and after[80:] == l1_before[80:]
    res = run([strata_binary("strata-io"), "-f", "qcow2", "-c", "read 0 512", path],
              check=False)
    assert res.returncode == 1
    assert "Image is corrupt; cannot be opened read/write" in res.stdout + res.stderr


def test_overlap_check_none_allows_the_write(workdir):
    path = os.path.join(workdir, "overlap.qcow2")
    shutil.copy(os.path.join(CORPUS, "hostile-l2-overlaps-l1.qcow2"), path)
    opts = json.dumps({"driver": "qcow2", "overlap-check": "none",
                       "file": {"driver": "file", "filename": path}})
    res = run([strata_binary("strata-io"), "--image-opts", "-c", "write -P 0x5a 0 512",
               opts], check=False)
    assert "Preventing invalid write" not in res.stdout + res.stderr
