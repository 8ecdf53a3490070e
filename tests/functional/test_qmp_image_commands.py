"""Internal snapshots and change-backing-file through QMP, against
qemu-storage-daemon: the same script on copies of the same chain gives the
same replies (snapshot dates masked) and images that qemu-img reads the
same (snapshot lists, backing file names and formats)."""
import json
import os
import shutil

from conftest import run
from job_util import chain, run_both, start  # noqa: F401


def masked(reply):
    if isinstance(reply, dict) and "return" in reply and isinstance(reply["return"], dict):
        r = dict(reply["return"])
        # qemu-storage-daemon records its host clock as the VM clock;
        # stratad has no VM clock and records 0 (docs/qmp.md).
        for k in ("date-sec", "date-nsec", "vm-clock-sec", "vm-clock-nsec"):
            if k in r:
                r[k] = "masked"
        return {"return": r}
    return reply


def snapshots(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", "-U", path]).stdout)
    return [(s["id"], s["name"], s["vm-state-size"]) for s in info.get("snapshots", [])]


def test_internal_snapshots_match_qemu(workdir, chain, start):
    def body(d, paths):
        ro = os.path.join(os.path.dirname(paths["base"]), "ro.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", ro, "1M"])
        d.ok("blockdev-add", driver="qcow2", **{"node-name": "ro", "read-only": True},
             file={"driver": "file", "filename": ro})
        d.ok("blockdev-add", driver="raw", **{"node-name": "rawnode"},
             file={"driver": "file", "filename": ro})
        calls = [
            ("blockdev-snapshot-internal-sync", {"device": "top", "name": "one"}),
            ("blockdev-snapshot-internal-sync", {"device": "top", "name": "two"}),
            ("blockdev-snapshot-internal-sync", {"device": "top", "name": "one"}),
            ("blockdev-snapshot-internal-sync", {"device": "top", "name": ""}),
            ("blockdev-snapshot-internal-sync", {"device": "mid", "name": "x"}),
            ("blockdev-snapshot-internal-sync", {"device": "nosuch", "name": "x"}),
            ("blockdev-snapshot-internal-sync", {"device": "ro", "name": "x"}),
            ("blockdev-snapshot-internal-sync", {"device": "rawnode", "name": "x"}),
            # A transaction that fails after the snapshot: the snapshot goes.
            ("transaction", {"actions": [
                {"type": "blockdev-snapshot-internal-sync",
                 "data": {"device": "top", "name": "three"}},
                {"type": "abort", "data": {}}]}),
            ("blockdev-snapshot-delete-internal-sync", {"device": "top"}),
            ("blockdev-snapshot-delete-internal-sync", {"device": "top", "name": "nosuch"}),
            ("blockdev-snapshot-delete-internal-sync", {"device": "top", "id": "1",
                                                        "name": "two"}),
            ("blockdev-snapshot-delete-internal-sync", {"device": "top", "name": "one"}),
            ("blockdev-snapshot-delete-internal-sync", {"device": "rawnode", "name": "one"}),
            ("blockdev-snapshot-internal-sync", {"device": "top", "name": "four"}),
        ]
        return [masked(d.execute(cmd, args)) for cmd, args in calls]

    res = run_both(start, body)
    (s_replies, s_paths), (q_replies, q_paths) = res["strata"], res["qsd"]
    for i, (s, q) in enumerate(zip(s_replies, q_replies)):
        assert s == q, f"call {i}: {s} != {q}"
    assert snapshots(s_paths["top"]) == snapshots(q_paths["top"])
    assert [n for _, n, _ in snapshots(s_paths["top"])] == ["two", "four"]
    for paths in (s_paths, q_paths):
        run(["qemu-img", "check", paths["top"]])


def test_change_backing_file_matches_qemu(workdir, chain, start):
    def body(d, paths):
        shutil.copy(paths["base"], os.path.join(os.path.dirname(paths["mid"]), "other.qcow2"))
        calls = [
            {"device": "top", "image-node-name": "mid", "backing-file": "other.qcow2"},
            {"device": "top", "image-node-name": "base", "backing-file": "x"},
            {"device": "top", "image-node-name": "nosuch", "backing-file": "x"},
            {"device": "mid", "image-node-name": "mid", "backing-file": "x"},
            {"device": "top", "image-node-name": "top-file", "backing-file": "x"},
            {"device": "top", "image-node-name": "top", "backing-file": "mid.qcow2"},
        ]
        replies = [d.execute("change-backing-file", a) for a in calls]
        ro = {n["node-name"]: n["ro"] for n in d.ok("query-named-block-nodes")}
        return replies, ro["mid"]

    res = run_both(start, body)
    assert res["strata"][0] == res["qsd"][0]
    for kind in ("strata", "qsd"):
        paths = res[kind][1]
        info = json.loads(run(["qemu-img", "info", "--output=json", "-U", paths["mid"]]).stdout)
        assert info["backing-filename"] == "other.qcow2"
        # QEMU writes the image's own format as the backing format.
        assert info["backing-filename-format"] == "qcow2"
        run(["qemu-img", "check", paths["mid"]])
