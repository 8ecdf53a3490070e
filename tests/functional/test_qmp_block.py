"""Block graph commands over QMP, checked with qemu-img where images change."""
import json
import os

from conftest import raw_image, require, run


def qcow2_image(workdir, name, size="1M", backing=None, backing_fmt=None):
    require("qemu-img")
    path = os.path.join(str(workdir), name)
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        cmd += ["-b", backing, "-F", backing_fmt]
    run(cmd + [path, size])
    return path


def add_raw(c, path, name="r0", file_name="f0"):
    c.execute("blockdev-add", driver="file", **{"node-name": file_name, "filename": path})
    c.execute("blockdev-add", driver="raw", **{"node-name": name, "file": file_name})


def nodes(c, flat=False):
    return {n["node-name"]: n for n in c.execute("query-named-block-nodes", flat=flat)}


def test_blockdev_add_query_and_del(daemon, workdir):
    path = raw_image(workdir)
    c = daemon.client()
    add_raw(c, path)
    c.execute("blockdev-add", driver="null-co", **{"node-name": "n0", "size": 4096,
                                                    "read-only": True})
    info = nodes(c)
    assert set(info) == {"f0", "r0", "n0"}
    r0 = info["r0"]
    assert r0["drv"] == "raw" and r0["ro"] is False and r0["file"] == path
    assert r0["backing_file_depth"] == 0 and r0["encrypted"] is False
    assert r0["detect_zeroes"] == "off"
    assert r0["cache"] == {"writeback": True, "direct": False, "no-flush": False}
    assert r0["image"]["virtual-size"] == 1 << 20
    assert r0["image"]["format"] == "raw" and r0["image"]["filename"] == path
    assert r0["children"] == [{"child": "file", "node-name": "f0"}]
    for key in ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr", "write_threshold"):
        assert r0[key] == 0
    assert info["n0"]["ro"] is True
    assert c.execute("query-block") == []
    assert c.error("blockdev-del", {"node-name": "f0"}) == (
        "GenericError", "Block device f0 is in use")
    assert c.error("blockdev-del", {"node-name": "zz"}) == (
        "GenericError", "Failed to find node with node-name='zz'")
    c.execute("blockdev-del", **{"node-name": "r0"})
    c.execute("blockdev-del", **{"node-name": "f0"})
    c.execute("blockdev-del", **{"node-name": "n0"})
    assert nodes(c) == {}


def test_blockdev_add_errors(daemon, workdir):
    path = raw_image(workdir)
    c = daemon.client()
    add_raw(c, path)
    assert c.error("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"}) == (
        "GenericError", "Duplicate nodes with node-name='r0'")
    assert c.error("blockdev-add", {"driver": "raw", "file": "f0"}) == (
        "GenericError", "'node-name' must be specified for the root node")
    assert c.error("blockdev-add", {"driver": "nosuch", "node-name": "q"}) == (
        "GenericError", "Parameter 'driver' does not accept value 'nosuch'")
    assert c.error("blockdev-add", {"node-name": "q"}) == (
        "GenericError", "Parameter 'driver' is missing")
    assert c.error("blockdev-add", {"driver": "file", "node-name": "q", "filename": path,
                                    "bogus": 1}) == (
        "GenericError", "Parameter 'bogus' is unexpected")
    assert c.error("blockdev-add", {"driver": "file", "node-name": "1q", "filename": path}) == (
        "GenericError", "Invalid node-name: '1q'")
    assert c.error("blockdev-add", {"driver": "file", "node-name": "q", "filename": path,
                                    "force-share": True}) == (
        "GenericError", "force-share=on can only be used with read-only images")
    assert c.error("blockdev-add", {"driver": "file", "node-name": "q", "filename": path,
                                    "detect-zeroes": "unmap"}) == (
        "GenericError",
        "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
    cls, desc = c.error("blockdev-add", {"driver": "raw", "node-name": "q",
                                         "file": {"driver": "file",
                                                  "filename": path + ".missing"}})
    assert cls == "GenericError" and "No such file or directory" in desc
    # Failures leave nothing behind.
    assert set(nodes(c)) == {"f0", "r0"}


def test_inline_children_get_implicit_names(daemon, workdir):
    path = raw_image(workdir)
    c = daemon.client()
    c.execute("blockdev-add", driver="raw", **{"node-name": "r0",
                                               "file": {"driver": "file", "filename": path}})
    info = nodes(c)
    implicit = [n for n in info if n.startswith("#block")]
    assert len(implicit) == 1
    assert info["r0"]["children"] == [{"child": "file", "node-name": implicit[0]}]
    assert c.error("blockdev-del", {"node-name": implicit[0]})[1] == (
        f"Node {implicit[0]} is not owned by the monitor")
    c.execute("blockdev-del", **{"node-name": "r0"})
    assert nodes(c) == {}


def test_query_blockstats(daemon, workdir):
    path = raw_image(workdir)
    c = daemon.client()
    add_raw(c, path)
    assert c.execute("query-blockstats") == []
    stats = c.execute("query-blockstats", **{"query-nodes": True})
    by_name = {s["node-name"]: s for s in stats}
    assert set(by_name) == {"r0", "f0"}
    assert by_name["r0"]["parent"]["node-name"] == "f0"
    for key in ("rd_bytes", "wr_bytes", "rd_operations", "wr_operations", "flush_operations",
                "wr_highest_offset", "failed_rd_operations", "invalid_wr_operations"):
        assert by_name["r0"]["stats"][key] == 0
    assert by_name["f0"]["driver-specific"]["driver"] == "file"


def test_block_resize(daemon, workdir):
    require("qemu-img")
    path = raw_image(workdir)
    c = daemon.client()
    add_raw(c, path)
    c.execute("block_resize", **{"node-name": "r0", "size": 3 << 20})
    assert nodes(c)["r0"]["image"]["virtual-size"] == 3 << 20
    assert os.path.getsize(path) == 3 << 20
    info = json.loads(run(["qemu-img", "info", "-U", "--output=json", "-f", "raw", path]).stdout)
    assert info["virtual-size"] == 3 << 20
    assert c.error("block_resize", {"size": 1}) == (
        "GenericError", "Cannot find device='' nor node-name=''")
    assert c.error("block_resize", {"device": "r0", "size": 1}) == (
        "GenericError", "Cannot find device='r0' nor node-name=''")
    assert c.error("block_resize", {"node-name": "r0", "size": -1}) == (
        "GenericError", "Parameter 'size' expects a >0 size")
    c.execute("blockdev-add", driver="null-co", **{"node-name": "ro", "read-only": True})
    assert c.error("block_resize", {"node-name": "ro", "size": 4096})[0] == "GenericError"


def test_blockdev_reopen(daemon, workdir):
    path = raw_image(workdir)
    c = daemon.client()
    add_raw(c, path)
    assert c.error("blockdev-reopen", {"options": [{"driver": "file", "node-name": "zz",
                                                    "filename": path}]}) == (
        "GenericError", "Failed to find node with node-name='zz'")
    # Read-only on the format node, then on the file node below it.
    c.execute("blockdev-reopen", options=[{"driver": "raw", "node-name": "r0", "file": "f0",
                                           "read-only": True}])
    assert nodes(c)["r0"]["ro"] is True
    c.execute("blockdev-reopen", options=[{"driver": "file", "node-name": "f0",
                                           "filename": path, "read-only": True,
                                           "detect-zeroes": "on"}])
    info = nodes(c)
    assert info["f0"]["ro"] is True and info["f0"]["detect_zeroes"] == "on"
    # Atomic: one bad entry changes nothing.
    assert c.error("blockdev-reopen", {"options": [
        {"driver": "file", "node-name": "f0", "filename": path, "read-only": True},
        {"driver": "raw", "node-name": "r0", "file": "f0", "read-only": True,
         "offset": 5}]})[0] == "GenericError"
    assert nodes(c)["f0"]["detect_zeroes"] == "on"
    assert c.error("blockdev-reopen", {"options": [
        {"driver": "file", "node-name": "f0", "filename": path + "x", "read-only": True}]}) == (
        "GenericError", "Cannot change the option 'filename'")


def test_blockdev_create_file_and_qcow2(daemon, workdir):
    require("qemu-img")
    c = daemon.client()
    target = os.path.join(str(workdir), "created.raw")
    c.run_job("blockdev-create", **{"job-id": "j0",
                                    "options": {"driver": "file", "filename": target,
                                                "size": 2 << 20}})
    assert os.path.getsize(target) == 2 << 20
    assert c.error("blockdev-create", {"job-id": "0bad", "options": {
        "driver": "file", "filename": target, "size": 1}}) == (
        "GenericError", "Invalid job ID '0bad'")
    qcow = os.path.join(str(workdir), "created.qcow2")
    c.run_job("blockdev-create", **{"job-id": "j1",
                                    "options": {"driver": "file", "filename": qcow, "size": 0}})
    c.execute("blockdev-add", driver="file", **{"node-name": "qf", "filename": qcow})
    c.run_job("blockdev-create", **{"job-id": "j2",
                                    "options": {"driver": "qcow2", "file": "qf",
                                                "size": 4 << 20}})
    run(["qemu-img", "check", "-U", qcow])
    info = json.loads(run(["qemu-img", "info", "-U", "--output=json", qcow]).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 4 << 20


def test_blockdev_create_through_nodes(daemon, workdir):
    """qcow2 images go to existing file nodes only, never under a format
    node that uses them; the node sees the new image at once."""
    require("qemu-img")
    c = daemon.client()
    used = qcow2_image(workdir, "used.qcow2", "8M")
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 1M", used])
    c.execute("blockdev-add", driver="file", **{"node-name": "fu", "filename": used})
    c.execute("blockdev-add", driver="qcow2", **{"node-name": "qu", "file": "fu"})
    cls, desc = c.job_error("blockdev-create", {"job-id": "j", "options": {
        "driver": "qcow2", "file": "fu", "size": 1 << 20}})
    assert cls == "GenericError" and "Permission conflict on node 'fu'" in desc
    assert c.job_error("blockdev-create", {"job-id": "j", "options": {
        "driver": "qcow2", "file": "qu", "size": 1 << 20}}) == (
        "GenericError", "Creating qcow2 images is supported on 'file' nodes only")
    assert c.job_error("blockdev-create", {"job-id": "j", "options": {
        "driver": "qcow2", "file": "nosuch", "size": 1 << 20}}) == (
        "GenericError", "Cannot find device='nosuch' nor node-name='nosuch'")
    missing = os.path.join(str(workdir), "missing.qcow2")
    assert c.job_error("blockdev-create", {"job-id": "j", "options": {
        "driver": "qcow2", "file": {"driver": "file", "filename": missing},
        "size": 1 << 20}}) == (
        "GenericError", f"Could not open '{missing}': No such file or directory")
    assert not os.path.exists(missing)
    assert c.job_error("blockdev-create", {"job-id": "j", "options": {
        "driver": "file", "filename": missing, "size": -1}}) == (
        "GenericError", "Could not resize file: Invalid argument")
    # The image in use is untouched.
    c.execute("blockdev-del", **{"node-name": "qu"})
    c.execute("blockdev-del", **{"node-name": "fu"})
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x55 0 1M", used])
    # Created on an unused file node, then opened on top of that same node.
    empty = raw_image(workdir, "empty.img", 0)
    c.execute("blockdev-add", driver="file", **{"node-name": "fe", "filename": empty})
    c.run_job("blockdev-create", **{"job-id": "j", "options": {
        "driver": "qcow2", "file": "fe", "size": 4 << 20}})
    c.execute("blockdev-add", driver="qcow2", **{"node-name": "qe", "file": "fe"})
    assert nodes(c)["qe"]["image"]["virtual-size"] == 4 << 20
    assert daemon.proc.poll() is None


def test_blockdev_snapshot(daemon, workdir):
    base = raw_image(workdir)
    overlay = qcow2_image(workdir, "overlay.qcow2", backing=base, backing_fmt="raw")
    c = daemon.client()
    add_raw(c, base)
    c.execute("blockdev-add", driver="qcow2", **{"node-name": "ov", "backing": None,
                                                 "file": {"driver": "file",
                                                          "filename": overlay}})
    assert c.error("blockdev-snapshot", {"node": "nope", "overlay": "ov"}) == (
        "GenericError", "Cannot find device='nope' nor node-name='nope'")
    assert c.error("blockdev-snapshot", {"node": "r0", "overlay": "f0"}) == (
        "GenericError", "The overlay does not support backing images")
    c.execute("blockdev-add", driver="null-co", **{"node-name": "n2"})
    c.execute("blockdev-add", driver="fault", **{"node-name": "flt", "file": "n2"})
    assert c.error("blockdev-snapshot", {"node": "r0", "overlay": "flt"}) == (
        "GenericError", "Filters cannot be used as overlays")
    c.execute("blockdev-snapshot", node="r0", overlay="ov")
    info = nodes(c)
    assert info["ov"]["backing_file_depth"] == 1
    assert info["ov"]["backing_file"] == base
    assert info["ov"]["image"]["backing-image"]["filename"] == base
    assert "backing-image" not in nodes(c, flat=True)["ov"]["image"]
    assert info["r0"]["ro"] is True
    assert {"child": "backing", "node-name": "r0"} in info["ov"]["children"]
    assert c.error("blockdev-snapshot", {"node": "r0", "overlay": "ov"}) == (
        "GenericError", "Node 'r0' is busy: node is used as backing hd of 'ov'")
    c.execute("blockdev-add", driver="null-co", **{"node-name": "n1"})
    assert c.error("blockdev-snapshot", {"node": "n1", "overlay": "ov"}) == (
        "GenericError", "The overlay already has a backing image")
    assert c.error("blockdev-del", {"node-name": "r0"}) == (
        "GenericError", "Node 'r0' is busy: node is used as backing hd of 'ov'")


def test_blockdev_snapshot_sync(daemon, workdir):
    require("qemu-img")
    base = raw_image(workdir)
    snap = os.path.join(str(workdir), "snap.qcow2")
    c = daemon.client()
    add_raw(c, base)
    assert c.error("blockdev-snapshot-sync", {"node-name": "r0", "snapshot-file": snap}) == (
        "GenericError", "New overlay node-name missing")
    assert c.error("blockdev-snapshot-sync", {"node-name": "r0", "snapshot-file": snap,
                                              "snapshot-node-name": "f0"}) == (
        "GenericError", "New overlay node-name already in use")
    c.execute("blockdev-snapshot-sync", **{"node-name": "r0", "snapshot-file": snap,
                                           "snapshot-node-name": "s1", "format": "qcow2"})
    info = json.loads(run(["qemu-img", "info", "-U", "--output=json", snap]).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == base
    assert info["virtual-size"] == 1 << 20
    run(["qemu-img", "check", "-U", snap])
    # As in qemu-storage-daemon: r0 had no parents, so the new overlay has
    # none either and is dropped again; the old node is read-only now.
    assert nodes(c)["r0"]["ro"] is True
