"""Differential harness: the same command line through qemu-img and
strata-img, each on its own copy of the same images.

A case names a set-up (images made with qemu-img and qemu-io only, so both
tools start from what QEMU wrote), a command line and the images the
command leaves behind. Each tool runs in its own copy of the set-up, with
the copy as working directory, and the harness compares:

  rc, stdout, stderr    after the program name and the copy's path are
                        replaced by placeholders (and snapshot dates,
                        which differ from run to run, are masked);
  img:NAME:*            every image named in `outputs`, examined with QEMU's
                        tools: `info` (JSON, without the disk size), `map`
                        (JSON, host offsets left out), `check` (JSON),
                        `content` (qemu-img compare of the two results),
                        `size` (file length), `alloc` (bytes the file
                        system holds data for, what du shows less its own
                        metadata) and `end` (check's image end offset),
                        which may be smaller for Strata but not larger,
                        and, when the case asks for it, `bytes` (byte
                        equality). Where clusters sit in the file is
                        Strata's own choice: map extents are compared as
                        the guest sees them and check's fragmentation
                        count is left out.

Each test file ends with two lists:

  DOCUMENTED         cases that differ on purpose: the key of their row in
                     the "Differences from qemu-img" table of
                     docs/tools/strata-img.md and the aspects that differ.
                     Exactly those aspects must differ; the doc's wording
                     is the reason reported. Every row of the table is
                     used by some case (test_img_diff_docs.py).
  PENDING_ELSEWHERE  cases that another branch of the same work fixes,
                     with the branch: they must still differ here, and
                     fail once they match so that the entry is removed
                     after that branch is merged.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import strata_binary

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(HERE, "..", "..", "docs", "tools")
KiB = 1 << 10
MiB = 1 << 20

# Every image aspect the harness can compare; `size`, `alloc` and `bytes`
# are file-level, the rest seen through QEMU's tools.
IMAGE_ASPECTS = ("exists", "info", "map", "check", "content", "size", "alloc", "end", "bytes")


class Case:
    """One command line run through both tools.

    setup:    name of a set-up in SETUPS (or a callable taking a directory).
    args:     the command line after the program name; "{dir}" becomes the
              copy's absolute path.
    outputs:  images whose state after the command is compared.
    skip:     image aspects not compared for this case, with a reason each
              (for instance a result that holds a timestamp).
    bytes:    compare the output images byte for byte as well.
    doc:      (KEY, {aspects}) of a documented difference (from DOCUMENTED).
    pending:  (BRANCH, reason) of a difference another branch fixes (from
              PENDING_ELSEWHERE).
    """

    def __init__(self, id, setup, args, outputs=(), skip=None, bytes=False, doc=None,
                 pending=None, tool="img", stdin=None):
        self.id = id
        self.setup = setup
        self.args = list(args)
        self.outputs = list(outputs)
        self.skip = dict(skip or {})
        self.bytes = bytes
        self.doc = doc
        self.pending = pending
        self.tool = tool
        self.stdin = stdin

    def __repr__(self):
        return self.id


def run(cmd, cwd=None, stdin=None, check=False):
    """Runs a command; stdout and stderr decoded as they are (text mode would
    turn the progress line's carriage returns into newlines)."""
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, check=check, timeout=120, env=_env(),
                         input=stdin.encode() if stdin else None)
    res.stdout = res.stdout.decode(errors="replace")
    res.stderr = res.stderr.decode(errors="replace")
    return res


def _env():
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["TZ"] = "UTC"
    return env


def qemu_io(path, *cmds, fmt="qcow2", cwd=None):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    run(args + [path], cwd=cwd, check=True)


def qimg(*args, cwd=None):
    return run(["qemu-img", *args], cwd=cwd, check=True)


# ----------------------------------------------------------------- set-ups
# Each builds images in `d` with QEMU's tools only. Backing files are named
# relative to their overlay so that a copy of the directory is whole.

def _qcow2(d, name, size, *opts, backing=None):
    args = ["create", "-q", "-f", "qcow2"]
    if opts:
        args += ["-o", ",".join(opts)]
    if backing:
        args += ["-b", backing, "-F", "qcow2"]
    qimg(*args, name, *([size] if size else []), cwd=d)


def _pattern_writes(d, name, cluster):
    """Data, zeroes and a discard at offsets that cross clusters of any size."""
    qemu_io(name, f"write -P 0x11 0 {3 * cluster}", f"write -P 0x22 {5 * cluster + 512} 1536",
            f"write -z {8 * cluster} {2 * cluster}", "write -P 0x33 1M 64k",
            "write -P 0x44 3M 4k", "discard 1M 32k", cwd=d)


def setup_raw(d):
    with open(os.path.join(d, "a.raw"), "wb") as f:
        f.truncate(4 * MiB)
        f.seek(64 * KiB)
        f.write(b"\x5a" * 8192)
        f.seek(3 * MiB + 512)
        f.write(b"\xa5" * 1000)
    with open(os.path.join(d, "b.raw"), "wb") as f:
        f.truncate(4 * MiB)


def _setup_cluster(cluster, compat="1.1"):
    size = str(max(4 * MiB, 12 * cluster))

    def setup(d):
        _qcow2(d, "a.qcow2", size, f"cluster_size={cluster}", f"compat={compat}")
        _pattern_writes(d, "a.qcow2", cluster)
        _qcow2(d, "b.qcow2", size, f"cluster_size={cluster}", f"compat={compat}")
    return setup


def setup_odd(d):
    """Virtual sizes that are not multiples of the cluster size."""
    _qcow2(d, "a.qcow2", str(5 * MiB + 3 * 512))
    qemu_io("a.qcow2", "write -P 7 5M 1536", "write -P 8 0 4096", cwd=d)
    with open(os.path.join(d, "a.raw"), "wb") as f:
        f.truncate(1000 * 1000)
        f.seek(999 * 1000)
        f.write(b"\x01" * 1000)


def setup_chain(d):
    """base <- mid <- top, each layer over the one below, plus a spare
    image with other content to rebase onto."""
    _qcow2(d, "base.qcow2", "8M")
    qemu_io("base.qcow2", "write -P 1 0 4M", "write -P 9 6M 1M", cwd=d)
    _qcow2(d, "mid.qcow2", None, backing="base.qcow2")
    qemu_io("mid.qcow2", "write -P 2 1M 1M", "write -z 3M 512k", "write -P 3 5M 100k", cwd=d)
    _qcow2(d, "top.qcow2", None, backing="mid.qcow2")
    qemu_io("top.qcow2", "write -P 4 1536k 64k", "write -P 5 7M 4k", "write -z 6M 64k", cwd=d)
    _qcow2(d, "other.qcow2", "8M")
    qemu_io("other.qcow2", "write -P 1 0 2M", "write -P 6 4M 1M", cwd=d)
    _qcow2(d, "small.qcow2", "1M")
    with open(os.path.join(d, "other.raw"), "wb") as f:
        f.truncate(8 * MiB)


def setup_small_base(d):
    """An overlay bigger than its backing file (commit grows the base)."""
    _qcow2(d, "base.qcow2", "2M")
    qemu_io("base.qcow2", "write -P 1 0 2M", cwd=d)
    _qcow2(d, "top.qcow2", "6M", backing="base.qcow2")
    qemu_io("top.qcow2", "write -P 2 1M 64k", "write -P 3 5M 64k", cwd=d)


def setup_snap(d):
    """Internal snapshots: two named ones, data changed between them, and
    a tag that looks like another snapshot's id."""
    _qcow2(d, "a.qcow2", "4M")
    qemu_io("a.qcow2", "write -P 1 0 1M", cwd=d)
    qimg("snapshot", "-c", "one", "a.qcow2", cwd=d)
    qemu_io("a.qcow2", "write -P 2 512k 1M", cwd=d)
    qimg("snapshot", "-c", "two", "a.qcow2", cwd=d)
    qemu_io("a.qcow2", "write -P 3 2M 64k", "discard 0 64k", cwd=d)
    qimg("snapshot", "-c", "1", "a.qcow2", cwd=d)
    qemu_io("a.qcow2", "write -P 4 3M 64k", cwd=d)


def setup_snap_v2(d):
    _qcow2(d, "a.qcow2", "4M", "compat=0.10")
    qemu_io("a.qcow2", "write -P 1 0 1M", cwd=d)
    qimg("snapshot", "-c", "one", "a.qcow2", cwd=d)
    qemu_io("a.qcow2", "write -P 2 512k 1M", cwd=d)


def setup_bitmaps(d):
    _qcow2(d, "a.qcow2", "4M")
    qimg("bitmap", "--add", "a.qcow2", "b0", cwd=d)
    qimg("bitmap", "--add", "-g", "128k", "a.qcow2", "b1", cwd=d)
    qemu_io("a.qcow2", "write -P 1 0 64k", "write -P 2 1M 4k", cwd=d)
    qimg("bitmap", "--add", "--disable", "a.qcow2", "off", cwd=d)
    _qcow2(d, "b.qcow2", "4M")


def setup_compressed(d):
    with open(os.path.join(d, "src.raw"), "wb") as f:
        for i in range(32):
            f.write(bytes([i]) * 32 * KiB + os.urandom(16) * (2 * KiB))
        f.truncate(4 * MiB)
    qimg("convert", "-c", "-O", "qcow2", "src.raw", "a.qcow2", cwd=d)
    qemu_io("a.qcow2", "write -P 7 2M 64k", cwd=d)


def setup_corrupt(d):
    """leak.qcow2: two leaked clusters; bad.qcow2: refcounts that disagree
    with the L2 COPIED flags; trunc.qcow2: cut short inside its data."""
    for name in ("leak.qcow2", "bad.qcow2", "trunc.qcow2"):
        _qcow2(d, name, "16M")
        qemu_io(name, "write -P 1 0 128k", "write -P 2 4M 64k", cwd=d)
    with open(os.path.join(d, "leak.qcow2"), "r+b") as f:
        f.seek(0x20000 + 7 * 2)
        f.write(b"\x00\x01\x00\x01")
        f.truncate(9 * 65536)
    with open(os.path.join(d, "bad.qcow2"), "r+b") as f:
        f.seek(0x20000 + 5 * 2)
        f.write(b"\x00\x02\x00\x02")
    with open(os.path.join(d, "trunc.qcow2"), "r+b") as f:
        f.truncate(0x50000)


def setup_missing_backing(d):
    _qcow2(d, "base.qcow2", "4M")
    _qcow2(d, "top.qcow2", None, backing="base.qcow2")
    qemu_io("top.qcow2", "write -P 3 0 64k", cwd=d)
    os.unlink(os.path.join(d, "base.qcow2"))


def setup_dirty(d):
    """An image left with the dirty bit set (lazy refcounts, killed)."""
    _qcow2(d, "a.qcow2", "4M", "lazy_refcounts=on")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "sigraise 9",
                    "a.qcow2"], cwd=d, capture_output=True)


def setup_foreign(d):
    """Images in formats QEMU reads besides raw and qcow2, and qcow2 images
    with features other branches implement."""
    for fmt in ("vmdk", "vdi", "vpc", "qed"):
        qimg("create", "-q", "-f", fmt, f"a.{fmt}", "4M", cwd=d)
        qemu_io(f"a.{fmt}", "write -P 7 64k 64k", fmt=fmt, cwd=d)
    _qcow2(d, "zstd.qcow2", "4M", "compression_type=zstd")
    qemu_io("zstd.qcow2", "write -c -P 5 0 64k", cwd=d)
    _qcow2(d, "l2.qcow2", "4M", "extended_l2=on")
    qemu_io("l2.qcow2", "write -P 5 0 4k", cwd=d)


def setup_empty(d):
    """An empty directory: the command creates what it needs."""


def setup_v2(d):
    _setup_cluster(65536, "0.10")(d)


SETUPS = {
    "empty": setup_empty,
    "raw": setup_raw,
    "c512": _setup_cluster(512),
    "c4k": _setup_cluster(4096),
    "c64k": _setup_cluster(65536),
    "c2m": _setup_cluster(2 * MiB),
    "v2": setup_v2,
    "odd": setup_odd,
    "chain": setup_chain,
    "small_base": setup_small_base,
    "snap": setup_snap,
    "snap_v2": setup_snap_v2,
    "bitmaps": setup_bitmaps,
    "compressed": setup_compressed,
    "corrupt": setup_corrupt,
    "missing_backing": setup_missing_backing,
    "dirty": setup_dirty,
    "foreign": setup_foreign,
}


class Templates:
    """Each set-up is built once per test process and copied for each run."""

    def __init__(self, root):
        self.root = root
        self.built = {}

    def get(self, name):
        if name not in self.built:
            path = os.path.join(self.root, "tpl-" + name)
            os.mkdir(path)
            SETUPS[name](path)
            self.built[name] = path
        return self.built[name]

    def copy(self, name, dest):
        src = self.get(name)
        # cp keeps holes (shutil would fill them) and modes.
        subprocess.run(["cp", "-a", "--sparse=always", src, dest], check=True)


# ------------------------------------------------------------- comparing

_DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_CLOCK = re.compile(r"\d\d:\d\d:\d\d\.\d{3}")


def normalize(text, d, prog):
    text = text.replace(d + "/", "$DIR/").replace(d, "$DIR")
    text = re.sub(r"\b" + re.escape(prog) + r"\b", "PROG", text)
    text = _DATE.sub("DATE", text)
    # Implicit node names are numbered by each program's own counter.
    text = re.sub(r"#block\d+", "#blockN", text)
    return text


def _mask_json(value):
    """Snapshot timestamps differ between any two runs."""
    if isinstance(value, dict):
        return {k: ("<masked>" if k in ("date-sec", "date-nsec") else _mask_json(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_json(v) for v in value]
    return value


def _json_or_text(res):
    try:
        return json.loads(res.stdout)
    except ValueError:
        return res.stdout


def data_bytes(path):
    """Bytes of `path` the file system holds data for (SEEK_DATA/SEEK_HOLE):
    what du shows, without the file system's own metadata blocks."""
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            off = os.lseek(fd, start, os.SEEK_HOLE)
            total += off - start
    finally:
        os.close(fd)
    return total


def _same_content(path_a, path_b, info):
    """qemu-img compare of two results; an image whose backing file is
    missing is compared without its backing file."""
    res = run(["qemu-img", "compare", "-U", path_a, path_b])
    if res.returncode == 2 and isinstance(info, dict) and info.get("format") == "qcow2":
        opts = [json.dumps({"driver": "qcow2", "backing": None,
                            "file": {"driver": "file", "filename": p}}) for p in (path_a, path_b)]
        res = run(["qemu-img", "compare", "-U", "json:" + opts[0], "json:" + opts[1]])
    return res.returncode == 0, res.stdout + res.stderr


def examine(d, name):
    """What QEMU's tools and the file system say about image `name` in `d`."""
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return {"exists": False}
    out = {"exists": True, "size": os.stat(path).st_size, "alloc": data_bytes(path)}
    info = run(["qemu-img", "info", "-U", "--output=json", name], cwd=d)
    details = _mask_json(_json_or_text(info))
    if isinstance(details, dict):
        # st_blocks also counts the file system's own extent blocks: `alloc`
        # stands for it.
        details.pop("actual-size", None)
    out["info"] = (info.returncode, details, normalize(info.stderr, d, "qemu-img"))
    mp = run(["qemu-img", "map", "-U", "--output=json", name], cwd=d)
    out["map"] = (mp.returncode, guest_extents(_json_or_text(mp)),
                  normalize(mp.stderr, d, "qemu-img"))
    chk = run(["qemu-img", "check", "-U", "--output=json", name], cwd=d)
    report = _json_or_text(chk)
    out["end"] = 0
    if isinstance(report, dict):
        # Where clusters sit in the file is Strata's own choice: the
        # fragmentation count is not compared, the end offset only as
        # space (`end`, like `size`).
        report.pop("filename", None)
        report.pop("fragmented-clusters", None)
        out["end"] = report.pop("image-end-offset", 0)
    out["check"] = (chk.returncode, report, normalize(chk.stderr, d, "qemu-img"))
    return out


def guest_extents(extents):
    """qemu-img map's extents as the guest sees them: host offsets left out
    and neighbours that then look alike merged."""
    if not isinstance(extents, list):
        return extents
    merged = []
    for e in extents:
        e = dict(e)
        e.pop("offset", None)
        last = merged[-1] if merged else None
        if last and all(last[k] == e[k] for k in ("depth", "present", "zero", "data")) \
                and last["start"] + last["length"] == e["start"]:
            last["length"] += e["length"]
        else:
            merged.append(e)
    return merged


_PROGRESS = re.compile(r"((?:    \(\d+\.\d\d/100%\)\r)+)")


def collapse_progress(text):
    """The first and the last value of each run of progress redraws."""
    def keep_ends(m):
        values = re.findall(r"    \(\d+\.\d\d/100%\)\r", m.group(1))
        return values[0] + (values[-1] if len(values) > 1 else "")
    return _PROGRESS.sub(keep_ends, text)


# Documented differences that are a matter of presentation: the harness
# compares the output after this rewrite (docs/tools/strata-img.md).
NORMALIZERS = {
    "progress-steps": collapse_progress,
}


class Outcome:
    def __init__(self, res, d, prog, rewrite=None):
        self.rc = res.returncode
        self.stdout = normalize(res.stdout, d, prog)
        self.stderr = normalize(res.stderr, d, prog)
        if rewrite:
            self.stdout = rewrite(self.stdout)
        self.images = {}


def run_both(case, templates, workdir):
    """Runs `case` through both tools; returns (qemu Outcome, strata Outcome,
    {aspect: (qemu side, strata side)} of every difference)."""
    outcomes = []
    dirs = []
    programs = {"img": ("qemu-img", "strata-img"), "io": ("qemu-io", "strata-io")}[case.tool]
    for side, prog in zip(("qemu", "strata"), programs):
        d = os.path.join(workdir, side)
        setup = case.setup
        if callable(setup):
            os.mkdir(d)
            setup(d)
        else:
            templates.copy(setup, d)
        exe = prog if side == "qemu" else strata_binary(prog)
        args = [a.replace("{dir}", d) for a in case.args]
        res = run([exe, *args], cwd=d, stdin=case.stdin)
        o = Outcome(res, d, prog, NORMALIZERS.get(case.doc[0]) if case.doc else None)
        for name in case.outputs:
            o.images[name] = examine(d, name)
        outcomes.append(o)
        dirs.append(d)
    q, s = outcomes
    diffs = {}
    for aspect in ("rc", "stdout", "stderr"):
        if getattr(q, aspect) != getattr(s, aspect):
            diffs[aspect] = (getattr(q, aspect), getattr(s, aspect))
    for name in case.outputs:
        qi, si = q.images[name], s.images[name]
        if qi["exists"] != si["exists"]:
            diffs[f"img:{name}:exists"] = (qi["exists"], si["exists"])
            continue
        if not qi["exists"]:
            continue
        for aspect in ("info", "map", "check", "size", "alloc", "end"):
            if aspect in case.skip:
                continue
            # Space: Strata may use less than QEMU, never more.
            worse = (si[aspect] > qi[aspect] if aspect in ("size", "alloc", "end")
                     else qi[aspect] != si[aspect])
            if worse:
                diffs[f"img:{name}:{aspect}"] = (qi[aspect], si[aspect])
        if "content" not in case.skip:
            same, text = _same_content(os.path.join(dirs[0], name), os.path.join(dirs[1], name),
                                       qi["info"][1])
            if not same:
                diffs[f"img:{name}:content"] = ("", text)
        if case.bytes:
            with open(os.path.join(dirs[0], name), "rb") as fq, \
                    open(os.path.join(dirs[1], name), "rb") as fs:
                if fq.read() != fs.read():
                    diffs[f"img:{name}:bytes"] = ("", "files differ")
    return q, s, diffs


def _show(value):
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def describe(diffs):
    lines = []
    for aspect, (qv, sv) in sorted(diffs.items()):
        lines.append(f"--- {aspect}\n  qemu:   {_show(qv)!s}\n  strata: {_show(sv)!s}")
    return "\n".join(lines)


# ------------------------------------------------- documented differences

_ROW = re.compile(r"^\|\s*`([a-z0-9-]+)`\s*\|(.*)\|\s*$")


def documented_differences(page):
    """{key: wording} of the "Differences from ..." table of docs/tools/PAGE."""
    rows = {}
    in_table = False
    with open(os.path.join(DOCS, page)) as f:
        for line in f:
            if line.startswith("## Differences from"):
                in_table = True
                continue
            if in_table and line.startswith("## "):
                break
            m = _ROW.match(line.strip()) if in_table else None
            if m:
                rows[m.group(1)] = " ".join(m.group(2).split())
    return rows


def check_case(case, templates, workdir, page="strata-img.md"):
    """Runs one case and asserts its verdict (the body of each test)."""
    q, s, diffs = run_both(case, templates, workdir)
    got = set(diffs)
    if case.pending:
        branch, reason = case.pending
        if not got:
            pytest.fail(f"{case.id} now matches qemu: the fix from branch {branch} is in; "
                        "remove the case from PENDING_ELSEWHERE")
        pytest.xfail(f"fixed on branch {branch} ({reason}): differs in {sorted(got)}")
    if case.doc:
        key, aspects = case.doc
        docs = documented_differences(page)
        assert key in docs, f"{case.id}: no row `{key}` in docs/tools/{page}"
        assert got == set(aspects), (
            f"{case.id}: documented difference `{key}` ({docs[key]}) expects "
            f"{sorted(aspects)} to differ, got {sorted(got)}\n" + describe(diffs))
        return docs[key]
    assert not got, f"{case.id}: strata differs from qemu\n" + describe(diffs)
    return None


@pytest.fixture(scope="module")
def templates():
    root = tempfile.mkdtemp(prefix="img-diff-")
    yield Templates(root)
    shutil.rmtree(root, ignore_errors=True)


def expectations(cases, documented, pending):
    """Attaches DOCUMENTED and PENDING_ELSEWHERE entries to their cases
    (each must name a case) and returns the cases."""
    by_id = {c.id: c for c in cases}
    assert len(by_id) == len(cases), "case ids must be unique"
    for cid, (key, aspects) in documented.items():
        assert cid in by_id, f"DOCUMENTED names no case {cid}"
        by_id[cid].doc = (key, set(aspects))
    for cid, (branch, reason) in pending.items():
        assert cid in by_id, f"PENDING_ELSEWHERE names no case {cid}"
        by_id[cid].pending = (branch, reason)
    return cases


def params(cases):
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return pytest.mark.parametrize("case", cases, ids=ids)
