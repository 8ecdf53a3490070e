"""strata-img check and compare beside qemu-img (img_diff.py)."""
from img_diff import Case, check_case, expectations, params, templates  # noqa: F401

CHECKED = [
    ("raw", "a.raw"), ("c512", "a.qcow2"), ("c4k", "a.qcow2"), ("c64k", "a.qcow2"),
    ("c2m", "a.qcow2"), ("v2", "a.qcow2"), ("odd", "a.qcow2"), ("chain", "top.qcow2"),
    ("snap", "a.qcow2"), ("snap_v2", "a.qcow2"), ("bitmaps", "a.qcow2"),
    ("compressed", "a.qcow2"), ("corrupt", "leak.qcow2"), ("corrupt", "bad.qcow2"),
    ("dirty", "a.qcow2"),
]

CASES = []
for setup, image in CHECKED:
    n = setup if setup != "corrupt" else image.split(".")[0]
    CASES += [
        Case(f"check-{n}", setup, ["check", image], [image]),
        Case(f"check-json-{n}", setup, ["check", "--output=json", image], [image]),
    ]
CASES += [
    Case("check-quiet-leak", "corrupt", ["check", "-q", "leak.qcow2"]),
    Case("check-quiet-clean", "c64k", ["check", "-q", "a.qcow2"]),
    Case("check-repair-leaks", "corrupt", ["check", "-r", "leaks", "leak.qcow2"],
         ["leak.qcow2"]),
    Case("check-repair-bad-arg", "c64k", ["check", "-r", "some", "a.qcow2"]),
    Case("check-missing-file", "empty", ["check", "nothere.qcow2"]),
    Case("check-truncated", "corrupt", ["check", "trunc.qcow2"], ["trunc.qcow2"]),
    Case("check-missing-backing", "missing_backing", ["check", "top.qcow2"]),
    Case("check-repair-all", "corrupt", ["check", "-r", "all", "bad.qcow2"], ["bad.qcow2"]),
    Case("check-format-raw", "c64k", ["check", "-f", "raw", "a.qcow2"]),
    Case("check-image-opts", "c64k",
         ["check", "--image-opts", "driver=qcow2,file.filename=a.qcow2"]),
    # Compare: the result of each is its exit status and message.
    Case("compare-same", "c64k", ["compare", "a.qcow2", "a.qcow2"]),
    Case("compare-differ", "c64k", ["compare", "a.qcow2", "b.qcow2"]),
    Case("compare-differ-quiet", "c64k", ["compare", "-q", "a.qcow2", "b.qcow2"]),
    Case("compare-formats", "c64k", ["compare", "-f", "qcow2", "-F", "qcow2", "a.qcow2",
                                     "b.qcow2"]),
    Case("compare-raw-qcow2", "chain", ["compare", "other.raw", "base.qcow2"]),
    Case("compare-wrong-format", "c64k", ["compare", "-f", "raw", "a.qcow2", "b.qcow2"]),
    Case("compare-chain-flat", "chain", ["compare", "top.qcow2", "mid.qcow2"]),
    Case("compare-strict-same", "c64k", ["compare", "-s", "a.qcow2", "a.qcow2"]),
    Case("compare-strict-differ", "c64k", ["compare", "-s", "a.qcow2", "b.qcow2"]),
    Case("compare-progress", "c64k", ["compare", "-p", "a.qcow2", "a.qcow2"]),
    Case("compare-missing", "c64k", ["compare", "a.qcow2", "nothere.qcow2"]),
    Case("compare-one-name", "c64k", ["compare", "a.qcow2"]),
    Case("compare-missing-backing", "missing_backing", ["compare", "top.qcow2", "top.qcow2"]),
]


def _sizes(d):
    """small.qcow2 (2 MiB) equals the start of big.qcow2 (4 MiB, zeroes
    after) and of tail.qcow2 (4 MiB, data at 3 MiB); alloc.qcow2 holds the
    same bytes as small.qcow2 with its zeroes written as data."""
    from img_diff import qemu_io, qimg
    qimg("create", "-q", "-f", "qcow2", "small.qcow2", "2M", cwd=d)
    qimg("create", "-q", "-f", "qcow2", "big.qcow2", "4M", cwd=d)
    qimg("create", "-q", "-f", "qcow2", "tail.qcow2", "4M", cwd=d)
    qimg("create", "-q", "-f", "qcow2", "alloc.qcow2", "2M", cwd=d)
    for name in ("small.qcow2", "big.qcow2", "tail.qcow2", "alloc.qcow2"):
        qemu_io(name, "write -P 1 0 64k", cwd=d)
    qemu_io("tail.qcow2", "write -P 2 3M 512", cwd=d)
    qemu_io("alloc.qcow2", "write -P 0 1M 64k", cwd=d)
    qemu_io("big.qcow2", "write -z 2M 64k", cwd=d)


CASES += [
    Case("compare-size-zero-tail", _sizes, ["compare", "small.qcow2", "big.qcow2"]),
    Case("compare-size-zero-tail-rev", _sizes, ["compare", "big.qcow2", "small.qcow2"]),
    Case("compare-size-data-tail", _sizes, ["compare", "small.qcow2", "tail.qcow2"]),
    Case("compare-size-data-tail-rev", _sizes, ["compare", "tail.qcow2", "small.qcow2"]),
    Case("compare-size-strict", _sizes, ["compare", "-s", "small.qcow2", "big.qcow2"]),
    Case("compare-size-quiet", _sizes, ["compare", "-q", "small.qcow2", "tail.qcow2"]),
    Case("compare-strict-allocation", _sizes, ["compare", "-s", "small.qcow2",
                                               "alloc.qcow2"]),
    Case("compare-allocation", _sizes, ["compare", "small.qcow2", "alloc.qcow2"]),
]


# Differences kept on purpose (docs/tools/strata-img.md, "Differences from
# qemu-img"): case -> (row key, aspects that differ).
DOCUMENTED = {}

# Differences fixed on other branches of the same work; remove an entry
# once its branch is merged (the case then fails until it is removed).
PENDING_ELSEWHERE = {}

expectations(CASES, DOCUMENTED, PENDING_ELSEWHERE)


@params(CASES)
def test_check_compare(case, templates, tmp_path):
    check_case(case, templates, str(tmp_path))
