"""strata-img output compared field by field with qemu-img on the same images."""
import json
import os

from conftest import require, run, strata_binary


def both(*args):
    ours = run([strata_binary("strata-img"), *args], check=False)
    theirs = run(["qemu-img", *args], check=False)
    return ours, theirs


def make_chain(workdir):
    base = os.path.join(workdir, "base.qcow2")
    top = os.path.join(workdir, "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -z 4M 1M", base])
    run(["qemu-img", "snapshot", "-c", "snap1", base])
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 2 2M 64k", "-c", "write -P 3 512k 4k", top])
    return base, top


def test_info_json_matches(workdir):
    require("qemu-img")
    base, top = make_chain(workdir)
    for args in (["info", "--output=json", top], ["info", "--output=json", "--backing-chain", top],
                 ["info", "--output=json", base]):
        ours, theirs = both(*args)
        assert ours.returncode == theirs.returncode == 0, ours.stderr
        assert json.loads(ours.stdout) == json.loads(theirs.stdout)


def test_info_human_matches(workdir):
    base, top = make_chain(workdir)
    for args in (["info", top], ["info", base], ["info", "--backing-chain", top]):
        ours, theirs = both(*args)
        assert ours.stdout == theirs.stdout


def test_map_matches(workdir):
    base, top = make_chain(workdir)
    for args in (["map", "--output=json", top], ["map", top], ["map", "--output=json", base],
                 ["map", base]):
        ours, theirs = both(*args)
        assert ours.returncode == theirs.returncode == 0, ours.stderr
        assert ours.stdout == theirs.stdout


def test_check_matches(workdir):
    base, top = make_chain(workdir)
    for img in (base, top):
        ours, theirs = both("check", "--output=json", img)
        assert ours.returncode == theirs.returncode == 0
        assert json.loads(ours.stdout) == json.loads(theirs.stdout)
        ours, theirs = both("check", img)
        assert ours.stdout == theirs.stdout


def test_check_leaks_and_repair(workdir):
    """A leaked cluster (refcount bumped by hand) is found and repaired like QEMU."""
    img = os.path.join(workdir, "leak.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", img])
    # Refcount block at 0x20000 (16-bit entries): clusters 7 and 8, past
    # everything referenced, get refcount 1 and the file grows over them.
    with open(img, "r+b") as f:
        f.seek(0x20000 + 7 * 2)
        f.write(b"\x00\x01\x00\x01")
        f.truncate(9 * 65536)
    ours, theirs = both("check", "--output=json", img)
    assert ours.returncode == theirs.returncode == 3
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    ours = run([strata_binary("strata-img"), "check", "-r", "leaks", img], check=False)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert "2 leaked clusters" in ours.stdout
    assert run(["qemu-img", "check", img], check=False).returncode == 0


def test_compare_and_create(workdir):
    a = os.path.join(workdir, "a.qcow2")
    b = os.path.join(workdir, "b.qcow2")
    for opts in ("cluster_size=65536", "cluster_size=4096", "compat=0.10",
                 "refcount_bits=1,lazy_refcounts=on", "cluster_size=2M"):
        ours, theirs = both("create", "-f", "qcow2", "-o", opts, a, "1G")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, b, "1G"])
        assert ours.returncode == 0, ours.stderr
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), opts
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 100k 10k", a])
    ours, theirs = both("compare", a, b)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stdout == theirs.stdout
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 100k 10k", b])
    ours, theirs = both("compare", a, b)
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout


def test_check_corruption_matches(workdir):
    """COPIED flags that disagree with refcounts are corruptions for both."""
    img = os.path.join(workdir, "bad.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", img])
    with open(img, "r+b") as f:
        f.seek(0x20000 + 5 * 2)
        f.write(b"\x00\x02\x00\x02")
    ours, theirs = both("check", "--output=json", img)
    assert ours.returncode == theirs.returncode == 2
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    assert ours.stderr == theirs.stderr


def test_long_options_per_subcommand_as_qemu_img(workdir):
    """Each subcommand takes exactly qemu-img's common long options: the same
    command line is accepted or refused by both tools."""
    require("qemu-img")
    base, top = make_chain(workdir)
    cases = [
        (["info", "--format=qcow2", "--force-share", "--output=json", top], True),
        (["map", "--format", "qcow2", "--output=human", base], True),
        (["check", "--format=qcow2", "--output=json", "--force-share", base], True),
        (["check", "--repair=leaks", "-q", base], True),
        (["check", "--output=xml", base], False),
        (["snapshot", "-l", "--force-share", base], True),
        (["snapshot", "-l", "--output=json", base], False),
        (["snapshot", "-l", "--format=qcow2", base], False),
        (["compare", "--force-share", "-f", "qcow2", "-F", "qcow2", top, top], True),
        (["compare", "--output=json", top, top], False),
        (["commit", "--output=json", top], False),
        (["rebase", "--output=json", "-u", "-b", "", top], False),
        (["resize", "--force-share", top, "64M"], False),
        (["create", "--output=json", "-f", "qcow2", os.path.join(workdir, "x.qcow2"), "1M"], False),
        (["measure", "--output=json", "--size", "1G", "-O", "qcow2"], True),
        (["convert", "--force-share", "-q", "-T", "none", "-t", "writeback", "-O", "raw", top,
          os.path.join(workdir, "c1.raw")], True),
        (["convert", "--output=json", "-O", "raw", top, os.path.join(workdir, "c2.raw")], False),
        (["convert", "--format=qcow2", "-O", "raw", top, os.path.join(workdir, "c3.raw")], False),
    ]
    for args, accepted in cases:
        ours, theirs = both(*args)
        assert (ours.returncode == 0) == accepted, (args, ours.stderr)
        assert (theirs.returncode == 0) == accepted, (args, theirs.stderr)
