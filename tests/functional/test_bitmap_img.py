"""strata-img bitmap, info and convert --bitmaps against qemu-img: the same
commands on copies of one image give the same exit codes, messages, bitmap
flags and dirty contents (read by qemu-nbd -B)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import require, run, strata_binary
from test_nbd_basic import nbdinfo, serve

TOOLS = ("qemu-img", "strata-img")


def tool(name):
    return shutil.which("qemu-img") if name == "qemu-img" else strata_binary("strata-img")


def run_tool(name, *args):
    r = subprocess.run([tool(name), *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr.replace(f"{name}: ", "TOOL: ")


def bitmaps_of(path):
    out = run(["qemu-img", "info", "--output=json", path]).stdout
    return json.loads(out)["format-specific"]["data"].get("bitmaps", [])


def contents(path):
    """Every bitmap's qemu:dirty-bitmap map as qemu-nbd serves it."""
    maps = {}
    for b in bitmaps_of(path):
        if "in-use" in b["flags"]:
            continue
        with serve(path, "-r", "-f", "qcow2", "-B", b["name"], server="qemu") as s:
            maps[b["name"]] = nbdinfo(f"--map=qemu:dirty-bitmap:{b['name']}", s.uri)
    return maps


def base_image(workdir):
    require("qemu-img")
    path = os.path.join(str(workdir), "base.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "32M"])
    run(["qemu-img", "bitmap", "--add", path, "old"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 1M 64k", "-c", "write 9M 512", path])
    return path


def copies(workdir, path):
    out = {}
    for name in TOOLS:
        out[name] = os.path.join(str(workdir), f"{name}.qcow2")
        shutil.copy(path, out[name])
    return out


# (arguments before FILE, BITMAP); "SRC" stands for a second image.
SCRIPT = [
    (["--add"], "a"),
    (["--add", "-g", "4k"], "b4k"),
    (["--add", "--disable"], "d"),
    (["--add", "-g", "0"], "zero"),
    (["--add"], "a"),
    (["--add", "-g", "1000"], "x"),
    (["--add", "-g", "abc"], "x"),
    (["--remove"], "nosuch"),
    (["--enable"], "nosuch"),
    (["--merge", "old", "--merge", "nosuch"], "a"),
    (["--merge", "old"], "b4k"),
    (["--merge", "old", "--disable"], "d"),
    (["--merge", "old", "-b", "SRC", "-F", "qcow2"], "a"),
    (["--clear"], "old"),
    (["--enable", "--clear", "--disable"], "zero"),
    (["--remove"], "zero"),
    (["-g", "4k", "--remove"], "a"),
    (["-F", "qcow2", "--add"], "y"),
    (["-b", "SRC", "--add"], "y"),
    ([], "y"),
    (["--add", "-f", "raw"], "y"),
]


def test_bitmap_subcommand_matches_qemu_img(workdir):
    base = base_image(workdir)
    src = os.path.join(str(workdir), "src.qcow2")
    shutil.copy(base, src)
    images = copies(workdir, base)
    results = {}
    for name in TOOLS:
        results[name] = []
        for args, bitmap in SCRIPT:
            args = [src if a == "SRC" else a for a in args]
            results[name].append(run_tool(name, "bitmap", *args, images[name], bitmap))
            # Between steps QEMU's view of the image must agree too.
            results[name].append(bitmaps_of(images[name]))
    for step, (ours, theirs) in enumerate(zip(results["strata-img"], results["qemu-img"])):
        if isinstance(theirs, tuple) and theirs[0] != 0 and "raw" in str(SCRIPT[step // 2][0]):
            # The message names an internal node; QEMU's is "#blockNNN".
            assert ours[0] == theirs[0]
            assert ours[1].startswith("TOOL: Operation add on bitmap y failed: Can't store")
            continue
        assert ours == theirs, SCRIPT[step // 2]
    assert contents(images["strata-img"]) == contents(images["qemu-img"])
    for path in images.values():
        run(["qemu-img", "check", path])


def test_info_shows_bitmaps_as_qemu_img(workdir):
    path = base_image(workdir)
    run(["qemu-img", "bitmap", "--add", "--disable", "-g", "512", path, "off"])
    for fmt in ("human", "json"):
        ours = run([tool("strata-img"), "info", f"--output={fmt}", path]).stdout
        theirs = run(["qemu-img", "info", f"--output={fmt}", path]).stdout
        if fmt == "json":
            ours, theirs = json.loads(ours), json.loads(theirs)
            assert ours["format-specific"] == theirs["format-specific"]
            # Key order too (qemu-img's JSON is what scripts diff).
            assert json.dumps(ours["format-specific"]) == json.dumps(theirs["format-specific"])
        else:
            section = lambda t: t[t.index("Format specific"):]  # noqa: E731
            assert section(ours) == section(theirs)
            assert "[1]:" in ours and "[0]: auto" in ours


def test_convert_bitmaps_matches_qemu_img(workdir):
    path = base_image(workdir)
    run(["qemu-img", "bitmap", "--add", "--disable", "-g", "512", path, "off"])
    run(["qemu-img", "bitmap", "--add", "-g", "1M", path, "big"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 20M 3M", path])
    outs = {}
    for name in TOOLS:
        outs[name] = os.path.join(str(workdir), f"out-{name}.qcow2")
        assert run_tool(name, "convert", "--bitmaps", "-O", "qcow2", path, outs[name]) == (0, "")
    assert bitmaps_of(outs["strata-img"]) == bitmaps_of(outs["qemu-img"]) == bitmaps_of(path)
    assert contents(outs["strata-img"]) == contents(outs["qemu-img"]) == contents(path)
    run(["qemu-img", "compare", outs["strata-img"], outs["qemu-img"]])
    run(["qemu-img", "check", outs["strata-img"]])
    # Without --bitmaps nothing is copied; raw targets refuse them.
    for name in TOOLS:
        plain = os.path.join(str(workdir), f"plain-{name}.qcow2")
        assert run_tool(name, "convert", "-O", "qcow2", path, plain) == (0, "")
        assert bitmaps_of(plain) == []
    raw = [run_tool(n, "convert", "--bitmaps", "-O", "raw", path,
                    os.path.join(str(workdir), f"r-{n}.raw")) for n in TOOLS]
    assert raw[0] == raw[1] == (1, "TOOL: Format driver 'raw' does not support bitmaps\n")
    flags = [run_tool(n, "convert", "--skip-broken-bitmaps", "-O", "qcow2", path,
                      os.path.join(str(workdir), f"s-{n}.qcow2")) for n in TOOLS]
    assert flags[0] == flags[1] == (1, "TOOL: Use of --skip-broken-bitmaps requires --bitmaps\n")


def test_convert_inconsistent_bitmaps(workdir):
    path = base_image(workdir)
    run(["qemu-img", "bitmap", "--add", path, "broken"])
    # An abort while the image is open read-write leaves "broken" (and
    # "old") in use.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 4k", "-c", "abort", path],
                   capture_output=True)
    assert all("in-use" in b["flags"] for b in bitmaps_of(path))
    run(["qemu-img", "bitmap", "--add", path, "fresh"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 5M 4k", path])
    results = {}
    for name in TOOLS:
        out = os.path.join(str(workdir), f"i-{name}.qcow2")
        refused = run_tool(name, "convert", "--bitmaps", "-O", "qcow2", path, out)
        skipped = run_tool(name, "convert", "--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2",
                           path, out)
        results[name] = (refused, skipped, bitmaps_of(out))
    assert results["strata-img"] == results["qemu-img"]
    assert results["qemu-img"][0][0] == 1 and results["qemu-img"][1][0] == 0
    assert [b["name"] for b in results["qemu-img"][2]] == ["fresh"]
    assert "Skipping inconsistent bitmap 'broken'" in results["strata-img"][1][1]
