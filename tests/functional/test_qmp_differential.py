"""The same QMP script against qemu-storage-daemon and stratad: replies must
match after normalising what legitimately differs (versions, timestamps,
fields one side adds, allocation sizes)."""
import json
import os
import shutil

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

QSD = "qemu-storage-daemon"

# Fields of BlockDeviceInfo / ImageInfo both implement with the same meaning.
NODE_FIELDS = ["node-name", "drv", "ro", "file", "backing_file_depth", "detect_zeroes",
               "encrypted", "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
               "write_threshold", "cache", "backing_file"]
# dirty-flag: QEMU omits it for drivers without image info (null-co).
IMAGE_FIELDS = ["virtual-size", "format", "filename"]


def image_view(image):
    view = {k: image.get(k) for k in IMAGE_FIELDS}
    if "backing-image" in image:
        view["backing-image"] = image_view(image["backing-image"])
    return view


def nodes_view(reply):
    if "return" not in reply:
        return reply
    out = []
    for n in reply["return"]:
        if n["node-name"].startswith("#"):
            continue  # implicit node names differ between implementations
        view = {k: n.get(k) for k in NODE_FIELDS}
        image = image_view(n["image"])
        if n["drv"] in ("qcow2", "file", "null-co"):
            image.pop("filename")  # QEMU reports json: filenames for some
            view.pop("file")  # pseudo names differ: json:{...} / null-co://
            if image.get("backing-image"):
                image["backing-image"].pop("filename", None)
        view["image"] = image
        out.append(view)
    return sorted(out, key=lambda v: v["node-name"])


def stats_view(reply):
    if "return" not in reply:
        return reply

    def one(s):
        v = {"node-name": s.get("node-name"),
             "stats": {k: s["stats"][k] for k in ("rd_bytes", "wr_bytes", "rd_operations",
                                                   "wr_operations", "flush_operations",
                                                   "wr_highest_offset", "timed_stats",
                                                   "account_invalid", "account_failed")}}
        if "parent" in s:
            v["parent"] = one(s["parent"])
        return v
    return sorted((one(s) for s in reply["return"]), key=lambda v: v["node-name"])


def keys_view(reply):
    return sorted(reply) if "return" not in reply else sorted(reply["return"])


def commands_view(reply):
    return "return" in reply


def script(workdir):
    base = os.path.join(workdir, "base.raw")
    overlay = os.path.join(workdir, "overlay.qcow2")
    snap = os.path.join(workdir, "snap.qcow2")
    created = os.path.join(workdir, "created.raw")
    raw = lambda text: ("raw", text, None)  # noqa: E731
    cmd = lambda name, args=None, view=None: ("cmd", (name, args), view)  # noqa: E731
    return [
        raw('{"execute": "query-block", "id": 1}'),
        cmd("qmp_capabilities", {"enable": ["foo"]}),
        cmd("qmp_capabilities"),
        cmd("qmp_capabilities"),
        cmd("query-version", None, keys_view),
        raw('{"execute": "query-version", "arguments": {"x": 1}, "id": "a"}'),
        raw('{"execute": "nosuch", "id": {"deep": [1, 2]}}'),
        raw('{"execute": }'),
        raw('[1, 2]'),
        raw('{"foo": 1}'),
        raw('{"execute": 1}'),
        raw('{"execute": "query-block", "arguments": []}'),
        raw('{"execute": "query-block", "id": 1, "extra": 2}'),
        raw("{'execute': 'query-block', 'id': 'it\\'s'}"),
        raw('{"a" 1}'),
        raw('{1: 2}'),
        raw('[1 2]'),
        raw('abc '),
        raw('{"exec-oob": "query-version", "id": 1}'),
        raw('{"execute": "query-block", "control": {}}'),
        raw('{"execute": "query-block", "exec-oob": "query-block"}'),
        raw('{"id": 5}'),
        cmd("query-block"),
        cmd("query-blockstats"),
        cmd("query-named-block-nodes", {"flat": "yes"}),
        cmd("blockdev-add", {"driver": "file", "node-name": "f0", "filename": base}),
        cmd("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"}),
        cmd("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"}),
        cmd("blockdev-add", {"driver": "raw", "file": "f0"}),
        cmd("blockdev-add", {"driver": "nosuch", "node-name": "q"}),
        cmd("blockdev-add", {"node-name": "q"}),
        cmd("blockdev-add", {"driver": "file", "node-name": "q", "filename": base, "bogus": 1}),
        cmd("blockdev-add", {"driver": "file", "node-name": "q", "filename": 1}),
        cmd("blockdev-add", {"driver": "raw", "node-name": "q", "file": {"driver": "file"}}),
        cmd("blockdev-add", {"driver": "raw", "node-name": "q",
                             "file": {"driver": "file", "filename": "x",
                                      "cache": {"direct": "a"}}}),
        cmd("blockdev-add", {"driver": "file", "node-name": "1q", "filename": base}),
        cmd("blockdev-add", {"driver": "file", "node-name": "q", "filename": base,
                             "force-share": True}),
        cmd("blockdev-add", {"driver": "file", "node-name": "q", "filename": base,
                             "read-only": True, "detect-zeroes": "unmap"}),
        cmd("blockdev-add", {"driver": "null-co", "node-name": "n0", "size": 65536,
                             "read-only": True}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("query-blockstats", {"query-nodes": True}, stats_view),
        cmd("blockdev-del", {}),
        cmd("blockdev-del", {"node-name": 1}),
        cmd("blockdev-del", {"node-name": "zz"}),
        cmd("blockdev-del", {"node-name": "f0"}),
        cmd("block_resize", {"size": 1}),
        cmd("block_resize", {"node-name": "x", "size": "1"}),
        cmd("block_resize", {"device": "r0", "size": 2097152}),
        cmd("block_resize", {"node-name": "r0", "size": 2097152}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("transaction", {"actions": []}),
        cmd("transaction", {"actions": [{"type": "abort", "data": {}}]}),
        cmd("transaction", {"actions": [{"type": "abort"}]}),
        cmd("transaction", {"actions": [{"type": "nosuch", "data": {}}]}),
        cmd("transaction", {"actions": {}}),
        cmd("transaction", {"actions": [1]}),
        cmd("transaction", {"actions": [{"type": "blockdev-snapshot", "data": {"node": 1}}]}),
        cmd("transaction", {"actions": [{"type": "blockdev-snapshot",
                                         "data": {"node": "a"}}]}),
        cmd("transaction", {"actions": [{"type": "blockdev-snapshot",
                                         "data": {"node": "a", "overlay": "b"}}]}),
        cmd("transaction", {"actions": [{"type": "abort", "data": {}}],
                            "properties": {"completion-mode": "bad"}}),
        cmd("transaction", {"actions": [{"type": "abort", "data": {}}],
                            "properties": {"completion-mode": "grouped"}}),
        cmd("blockdev-add", {"driver": "qcow2", "node-name": "ov", "backing": None,
                             "file": {"driver": "file", "filename": overlay}}),
        cmd("blockdev-snapshot", {"node": "r0", "overlay": "f0"}),
        cmd("transaction", {"actions": [
            {"type": "blockdev-snapshot", "data": {"node": "r0", "overlay": "ov"}},
            {"type": "abort", "data": {}}]}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("blockdev-snapshot", {"node": "r0", "overlay": "ov"}),
        cmd("blockdev-snapshot", {"node": "r0", "overlay": "ov"}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("query-named-block-nodes", {"flat": True}, nodes_view),
        cmd("blockdev-del", {"node-name": "r0"}),
        cmd("blockdev-snapshot-sync", {"node-name": "ov", "snapshot-file": snap}),
        cmd("blockdev-snapshot-sync", {"node-name": "ov", "snapshot-file": snap,
                                       "snapshot-node-name": "f0"}),
        cmd("blockdev-snapshot-sync", {"node-name": "ov", "snapshot-file": snap,
                                       "snapshot-node-name": "s1", "format": "qcow2"}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("blockdev-reopen", {"options": [{"driver": "file", "node-name": "zz",
                                             "filename": base}]}),
        cmd("blockdev-reopen", {"options": [{"driver": "null-co", "node-name": "n0",
                                             "size": 65536, "read-only": True,
                                             "detect-zeroes": "on"}]}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("blockdev-create", {"job-id": "0bad", "options": {
            "driver": "file", "filename": created, "size": 1}}),
        cmd("blockdev-del", {"node-name": "n0"}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("query-commands", None, commands_view),
    ]


def drive(daemon, steps):
    c = daemon.client(negotiate=False)
    replies = []
    for kind, payload, view in steps:
        if kind == "raw":
            c.send_raw(payload)
            reply = c.read_reply()
        else:
            name, args = payload
            reply = c.request(name, args)
        replies.append(view(reply) if view else reply)
    return replies


def prepare(workdir):
    require("qemu-img")
    os.makedirs(workdir, exist_ok=True)
    base = os.path.join(workdir, "base.raw")
    with open(base, "wb") as f:
        f.truncate(1 << 20)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw",
         os.path.join(workdir, "overlay.qcow2"), "1M"])


def test_same_replies_as_qemu_storage_daemon(tmp_path):
    if shutil.which(QSD) is None:
        pytest.fail(f"{QSD} is not installed (./test installs qemu-system-common)")
    # Both run on identically named files so that paths in replies match.
    results = {}
    for name, binary in (("qsd", QSD), ("strata", strata_binary("stratad"))):
        workdir = str(tmp_path / "run")
        if os.path.exists(workdir):
            shutil.rmtree(workdir)
        prepare(workdir)
        with Daemon(binary, workdir) as d:
            results[name] = drive(d, script(workdir))
    steps = script(str(tmp_path / "run"))
    mismatches = []
    for i, (q, s) in enumerate(zip(results["qsd"], results["strata"])):
        if q != s:
            mismatches.append(f"step {i} {steps[i][1]}:\n  qsd:    {json.dumps(q)}\n"
                              f"  strata: {json.dumps(s)}")
    assert not mismatches, "\n".join(mismatches)
