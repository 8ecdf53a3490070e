"""strata-img info and map beside qemu-img (img_diff.py), on every kind of
image: human and JSON output, backing chains, damaged images."""
from img_diff import Case, check_case, expectations, params, templates  # noqa: F401

# (set-up, image) pairs that info and map read.
IMAGES = [
    ("raw", "a.raw"), ("c512", "a.qcow2"), ("c4k", "a.qcow2"), ("c64k", "a.qcow2"),
    ("c2m", "a.qcow2"), ("v2", "a.qcow2"), ("odd", "a.qcow2"), ("odd", "a.raw"),
    ("chain", "top.qcow2"), ("chain", "mid.qcow2"), ("snap", "a.qcow2"),
    ("snap_v2", "a.qcow2"), ("bitmaps", "a.qcow2"), ("compressed", "a.qcow2"),
    ("corrupt", "leak.qcow2"), ("corrupt", "bad.qcow2"), ("dirty", "a.qcow2"),
    ("small_base", "top.qcow2"),
]


def _name(setup, image):
    if setup in ("odd", "chain", "corrupt"):
        return f"{setup}-{image.replace('.', '-')}"
    return setup


CASES = []
for setup, image in IMAGES:
    n = _name(setup, image)
    CASES += [
        Case(f"info-{n}", setup, ["info", image]),
        Case(f"info-json-{n}", setup, ["info", "--output=json", image]),
        Case(f"map-{n}", setup, ["map", image]),
        Case(f"map-json-{n}", setup, ["map", "--output=json", image]),
    ]
CASES += [
    Case("info-chain", "chain", ["info", "--backing-chain", "top.qcow2"]),
    Case("info-chain-json", "chain", ["info", "--backing-chain", "--output=json", "top.qcow2"]),
    Case("info-abs-path", "chain", ["info", "{dir}/top.qcow2"]),
    Case("info-chain-abs-json", "chain",
         ["info", "--output=json", "--backing-chain", "{dir}/top.qcow2"]),
    Case("info-force-share", "c64k", ["info", "-U", "--output=json", "a.qcow2"]),
    Case("info-format-raw", "c64k", ["info", "-f", "raw", "a.qcow2"]),
    Case("info-format-wrong", "raw", ["info", "-f", "qcow2", "a.raw"]),
    Case("info-missing-file", "empty", ["info", "nothere.qcow2"]),
    Case("info-no-file", "empty", ["info"]),
    Case("info-missing-backing", "missing_backing", ["info", "top.qcow2"]),
    Case("info-missing-backing-json", "missing_backing", ["info", "--output=json", "top.qcow2"]),
    Case("info-missing-backing-chain", "missing_backing",
         ["info", "--backing-chain", "top.qcow2"]),
    Case("info-truncated", "corrupt", ["info", "trunc.qcow2"]),
    Case("info-image-opts", "c64k",
         ["info", "--image-opts", "driver=qcow2,file.filename=a.qcow2"]),
    Case("info-image-opts-file-driver", "c64k",
         ["info", "--image-opts", "driver=qcow2,file.driver=file,file.filename=a.qcow2"]),
    Case("info-image-opts-json", "c64k",
         ["info", "--output=json", "--image-opts", "driver=qcow2,file.filename=a.qcow2"]),
    Case("info-image-opts-raw", "raw", ["info", "--image-opts", "driver=raw,file.filename=a.raw"]),
    Case("info-image-opts-with-format", "c64k",
         ["info", "-f", "qcow2", "--image-opts", "driver=qcow2,file.filename=a.qcow2"]),
    Case("info-json-filename", "c64k",
         ["info", 'json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}']),
    Case("info-output-bad", "c64k", ["info", "--output=xml", "a.qcow2"]),
    Case("info-vmdk", "foreign", ["info", "a.vmdk"]),
    Case("info-vdi-json", "foreign", ["info", "--output=json", "a.vdi"]),
    Case("info-zstd", "foreign", ["info", "zstd.qcow2"]),
    Case("info-extended-l2", "foreign", ["info", "l2.qcow2"]),
    Case("map-chain-start", "chain",
         ["map", "--output=json", "--start-offset=1M", "--max-length=5M", "top.qcow2"]),
    Case("map-chain-start-human", "chain",
         ["map", "--start-offset", "1536k", "--max-length", "1M", "top.qcow2"]),
    Case("map-start-past-end", "c64k", ["map", "--output=json", "--start-offset=8M", "a.qcow2"]),
    Case("map-start-bad", "c64k", ["map", "--start-offset=x", "a.qcow2"]),
    Case("map-missing-backing", "missing_backing", ["map", "top.qcow2"]),
    Case("map-format-raw", "c64k", ["map", "--output=json", "-f", "raw", "a.qcow2"]),
    Case("map-image-opts", "chain",
         ["map", "--output=json", "--image-opts", "driver=qcow2,file.filename=top.qcow2"]),
]


# Differences kept on purpose (docs/tools/strata-img.md, "Differences from
# qemu-img"): case -> (row key, aspects that differ).
DOCUMENTED = {}

# Differences fixed on other branches of the same work; remove an entry
# once its branch is merged (the case then fails until it is removed).
PENDING_ELSEWHERE = {}

expectations(CASES, DOCUMENTED, PENDING_ELSEWHERE)


@params(CASES)
def test_info_map(case, templates, tmp_path):
    check_case(case, templates, str(tmp_path))
