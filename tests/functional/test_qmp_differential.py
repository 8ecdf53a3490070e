"""The same QMP script against qemu-storage-daemon and stratad: replies must
match after normalising what legitimately differs (versions, timestamps,
fields one side adds, allocation sizes)."""
import json
import os
import shutil
import signal

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


def assert_same_replies(results, steps):
    """Every step answered alike by qemu-storage-daemon and stratad."""
    assert len(results["qsd"]) == len(results["strata"]) == len(steps)
    mismatches = []
    for i, (q, s) in enumerate(zip(results["qsd"], results["strata"])):
        if q != s:
            mismatches.append(f"step {i} {steps[i][1]}:\n  qsd:    {json.dumps(q)}\n"
                              f"  strata: {json.dumps(s)}")
    assert not mismatches, "\n".join(mismatches)


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
    assert_same_replies(results, steps)


def schema_view(reply):
    """The introspection entries of a few commands and their argument
    types (names differ: QEMU numbers its implicit types)."""
    by_name = {e["name"]: e for e in reply["return"]}

    def resolve(name):
        e = by_name[name]
        kind = e["meta-type"]
        if kind == "builtin":
            return name
        if kind == "enum":
            return {"enum": e["values"]}
        if kind == "array":
            return [resolve(e["element-type"])]
        if kind == "object":
            return {"members": [{k: resolve(v) if k == "type" else v for k, v in m.items()}
                                for m in e["members"]]}
        return kind

    out = {}
    for command in ("block_resize", "blockdev-del", "query-named-block-nodes",
                    "blockdev-snapshot-sync", "qmp_capabilities", "quit"):
        e = by_name[command]
        out[command] = {"meta-type": e["meta-type"], "arg-type": resolve(e["arg-type"])}
    return out


def options_script(workdir):
    """Common blockdev options and blockdev-reopen."""
    disks = [os.path.join(workdir, f"d{i}.raw") for i in range(3)]
    top = os.path.join(workdir, "top.qcow2")
    cmd = lambda name, args=None, view=None: ("cmd", (name, args), view)  # noqa: E731
    f = lambda i, **extra: {"driver": "file", "filename": disks[i], **extra}  # noqa: E731
    return [
        cmd("qmp_capabilities"),
        cmd("query-qmp-schema", None, schema_view),
        cmd("blockdev-add", {"driver": "file", "node-name": "f0", "filename": disks[0],
                             "auto-read-only": True, "discard": "unmap",
                             "detect-zeroes": "unmap",
                             "cache": {"direct": True, "no-flush": True}}),
        cmd("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"}),
        cmd("blockdev-add", {"driver": "raw", "node-name": "r1", "read-only": True,
                             "force-share": True, "file": f(1)}),
        cmd("blockdev-add", {"driver": "qcow2", "node-name": "t0", "backing": None,
                             "file": {"driver": "file", "filename": top}}),
        cmd("blockdev-add", f(2, **{"node-name": "f2"})),
        cmd("query-named-block-nodes", None, nodes_view),
        # Reopen: flags both ways, cache.direct, inherited by implicit children.
        cmd("blockdev-reopen", {"options": [f(0, **{"node-name": "f0", "read-only": True})]}),
        cmd("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r1",
                                             "file": f(1)}]}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("blockdev-reopen", {"options": [f(0, **{"node-name": "f0",
                                                     "cache": {"direct": True}})]}),
        cmd("blockdev-reopen", {"options": [f(0, **{"node-name": "f0",
                                                     "detect-zeroes": "unmap"})]}),
        cmd("blockdev-reopen", {"options": [f(0, **{"node-name": "f0",
                                                     "force-share": True})]}),
        cmd("query-named-block-nodes", None, nodes_view),
        # Errors.
        cmd("blockdev-reopen", {"options": [f(0)]}),
        cmd("blockdev-reopen", {"options": [f(0, **{"node-name": "zz"})]}),
        cmd("blockdev-reopen", {"options": [f(0, **{"node-name": "r0"})]}),
        cmd("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r0",
                                             "file": "f2"}]}),
        cmd("blockdev-reopen", {"options": [f(2, **{"node-name": "f0"})]}),
        cmd("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r0",
                                             "file": None}]}),
        cmd("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r0",
                                             "file": "r0"}]}),
        cmd("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r0",
                                             "file": "nosuch"}]}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("blockdev-reopen", {"options": [f(0, **{"node-name": "f0", "read-only": True}),
                                            {"driver": "raw", "node-name": "r0",
                                             "file": "f0"}]}),
        cmd("query-named-block-nodes", None, nodes_view),
        # Backing: null, another node, missing.
        cmd("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "t0",
                                             "file": {"driver": "file", "filename": top},
                                             "backing": "r1"}]}),
        cmd("query-named-block-nodes", None, nodes_view),
        cmd("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "t0",
                                             "file": {"driver": "file", "filename": top}}]}),
        cmd("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "t0",
                                             "file": {"driver": "file", "filename": top},
                                             "backing": None}]}),
        cmd("query-named-block-nodes", None, nodes_view),
        # blockdev-create: the errors both report before any job.
        cmd("blockdev-create", {"job-id": "1j", "options": {"driver": "file",
                                                            "filename": disks[2], "size": 0}}),
        cmd("blockdev-create", {"job-id": "j", "options": {"driver": "nosuch"}}),
        cmd("blockdev-create", {"job-id": "j", "options": {"driver": "file",
                                                           "filename": disks[2]}}),
    ]


def test_options_and_reopen_same_as_qemu_storage_daemon(tmp_path):
    if shutil.which(QSD) is None:
        pytest.fail(f"{QSD} is not installed (./test installs qemu-system-common)")
    require("qemu-img")
    results = {}
    for name, binary in (("qsd", QSD), ("strata", strata_binary("stratad"))):
        workdir = str(tmp_path / "run")
        if os.path.exists(workdir):
            shutil.rmtree(workdir)
        os.makedirs(workdir)
        for i in range(3):
            with open(os.path.join(workdir, f"d{i}.raw"), "wb") as f:
                f.truncate(1 << 20)
        run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(workdir, "top.qcow2"),
             "1M"])
        with Daemon(binary, workdir) as d:
            results[name] = drive(d, options_script(workdir))
    steps = options_script(str(tmp_path / "run"))
    assert_same_replies(results, steps)


def shutdown_messages(daemon, how):
    """What a monitor receives from `quit` or a signal until the daemon has
    closed the connection."""
    c = daemon.client()
    messages = []
    if how == "quit":
        messages.append(c.request("quit", id=7))
    else:
        daemon.proc.send_signal(how)
    try:
        while True:
            messages.append(c.read_message())
    except (ConnectionError, OSError):
        pass
    messages.append(daemon.proc.wait(20))
    return messages


@pytest.mark.parametrize("how", ["quit", signal.SIGTERM, signal.SIGINT])
def test_shutdown_same_as_qemu_storage_daemon(tmp_path, how):
    if shutil.which(QSD) is None:
        pytest.fail(f"{QSD} is not installed (./test installs qemu-system-common)")
    results = {}
    for name, binary in (("qsd", QSD), ("strata", strata_binary("stratad"))):
        workdir = str(tmp_path / name)
        os.makedirs(workdir)
        disk = os.path.join(workdir, "d.raw")
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        args = ["--blockdev", f"driver=file,node-name=f0,filename={disk}"]
        with Daemon(binary, workdir, args) as d:
            results[name] = shutdown_messages(d, how)
    # No SHUTDOWN event (qemu-storage-daemon sends none), exit status 0.
    assert results["strata"] == results["qsd"]
