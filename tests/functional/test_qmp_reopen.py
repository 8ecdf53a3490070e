"""blockdev-reopen: read-only both ways, cache.direct, detect-zeroes,
discard, backing changes, all or nothing, checked on the daemon's open
files (/proc) and with qemu-io against its image locks."""
import os
import time

import pytest

from conftest import raw_image, require, run
from test_nbd_perms import WRITE_PERM_BYTE, byte_locked

O_ACCMODE = 0o3
O_RDWR = 0o2
O_DIRECT = 0o40000


def open_flags(pid, path):
    """The open flags of every descriptor the process has on `path`."""
    flags = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != path:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("flags:"):
                        flags.append(int(line.split()[1], 8))
        except FileNotFoundError:
            continue
    return flags


def nodes(c):
    return {n["node-name"]: n for n in c.execute("query-named-block-nodes")}


def raw_over_inline_file(c, path, **common):
    c.execute("blockdev-add", driver="raw", **{"node-name": "r0",
                                               "file": {"driver": "file", "filename": path},
                                               **common})
    return next(n for n in nodes(c) if n.startswith("#"))


def test_read_only_both_ways_reopens_the_file(daemon, workdir):
    path = raw_image(workdir)
    c = daemon.client()
    implicit = raw_over_inline_file(c, path, **{"read-only": True})
    pid = daemon.proc.pid
    assert [f & O_ACCMODE for f in open_flags(pid, path)] == [os.O_RDONLY]
    # The implicit file child follows its parent.
    c.execute("blockdev-reopen", options=[{"driver": "raw", "node-name": "r0",
                                           "file": {"driver": "file", "filename": path}}])
    info = nodes(c)
    assert info["r0"]["ro"] is False and info[implicit]["ro"] is False
    assert [f & O_ACCMODE for f in open_flags(pid, path)] == [O_RDWR]
    c.execute("blockdev-reopen", options=[{"driver": "raw", "node-name": "r0",
                                           "file": {"driver": "file", "filename": path},
                                           "read-only": True}])
    info = nodes(c)
    assert info["r0"]["ro"] is True and info[implicit]["ro"] is True
    assert [f & O_ACCMODE for f in open_flags(pid, path)] == [os.O_RDONLY]


def test_cache_direct_and_other_flags(daemon, workdir):
    path = raw_image(workdir)
    c = daemon.client()
    c.execute("blockdev-add", driver="file", **{"node-name": "f0", "filename": path})
    pid = daemon.proc.pid
    assert not open_flags(pid, path)[0] & O_DIRECT
    c.execute("blockdev-reopen", options=[{
        "driver": "file", "node-name": "f0", "filename": path, "cache": {"direct": True},
        "discard": "unmap", "detect-zeroes": "unmap"}])
    f0 = nodes(c)["f0"]
    assert f0["cache"] == {"writeback": True, "direct": True, "no-flush": False}
    assert f0["detect_zeroes"] == "unmap"
    assert open_flags(pid, path)[0] & O_DIRECT
    # Omitted options return to their defaults.
    c.execute("blockdev-reopen", options=[{"driver": "file", "node-name": "f0",
                                           "filename": path}])
    f0 = nodes(c)["f0"]
    assert f0["cache"]["direct"] is False and f0["detect_zeroes"] == "off"
    assert not open_flags(pid, path)[0] & O_DIRECT
    # discard keeps its value unless given (as QEMU's open flag).
    c.execute("blockdev-reopen", options=[{"driver": "file", "node-name": "f0",
                                           "filename": path, "detect-zeroes": "unmap"}])
    assert c.error("blockdev-reopen", {"options": [{
        "driver": "file", "node-name": "f0", "filename": path, "discard": "ignore",
        "detect-zeroes": "unmap"}]}) == (
        "GenericError",
        "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
    assert c.error("blockdev-reopen", {"options": [{
        "driver": "file", "node-name": "f0", "filename": path, "force-share": False}]}) == (
        "GenericError", "Cannot change the option 'force-share'")


def test_errors_and_all_or_nothing(daemon, workdir):
    path = raw_image(workdir)
    other = raw_image(workdir, "other.raw")
    c = daemon.client()
    c.execute("blockdev-add", driver="file", **{"node-name": "f0", "filename": path})
    c.execute("blockdev-add", driver="raw", **{"node-name": "r0", "file": "f0"})
    c.execute("blockdev-add", driver="file", **{"node-name": "f1", "filename": other})
    pid = daemon.proc.pid
    for options, desc in [
        ([{"driver": "raw", "node-name": "r0", "file": None}],
         "Invalid parameter type for 'file', expected: BlockdevRef"),
        ([{"driver": "raw", "node-name": "r0", "file": "r0"}],
         "Making 'r0' a file child of 'r0' would create a cycle"),
        ([{"driver": "file", "node-name": "r0", "filename": path}],
         "Cannot change the option 'driver'"),
        ([{"driver": "file", "filename": path}], "node-name not specified"),
        ([{"driver": "raw", "node-name": "r0", "file": "f0", "backing": "f1"}],
         "Parameter 'options[0].backing' is unexpected"),
    ]:
        assert c.error("blockdev-reopen", {"options": options}) == ("GenericError", desc)
    # The first entry would succeed alone (and reopen f1's file); the second
    # fails: nothing changes, f1 keeps its descriptor.
    assert c.error("blockdev-reopen", {"options": [
        {"driver": "file", "node-name": "f1", "filename": other, "read-only": True,
         "detect-zeroes": "on"},
        {"driver": "raw", "node-name": "r0", "file": "f0", "offset": 512}]}) == (
        "GenericError", "Cannot change the option 'offset'")
    info = nodes(c)
    assert info["f1"]["ro"] is False and info["f1"]["detect_zeroes"] == "off"
    assert [f & O_ACCMODE for f in open_flags(pid, other)] == [O_RDWR]
    # A node named twice takes its last entry (as QEMU).
    c.execute("blockdev-reopen", options=[
        {"driver": "file", "node-name": "f1", "filename": other, "detect-zeroes": "on"},
        {"driver": "file", "node-name": "f1", "filename": other, "read-only": True}])
    info = nodes(c)
    assert info["f1"]["ro"] is True and info["f1"]["detect_zeroes"] == "off"
    c.execute("blockdev-reopen", options=[{"driver": "file", "node-name": "f1",
                                           "filename": other}])
    # The file child can point at another node; swapping two in one call.
    c.execute("blockdev-add", driver="raw", **{"node-name": "r1", "file": "f1"})
    c.execute("blockdev-reopen", options=[{"driver": "raw", "node-name": "r0", "file": "f1"},
                                          {"driver": "raw", "node-name": "r1", "file": "f0"}])
    info = nodes(c)
    assert info["r0"]["file"] == other and info["r1"]["file"] == path
    assert {"child": "file", "node-name": "f1"} in info["r0"]["children"]


def test_qcow2_read_only_both_ways(daemon, workdir):
    # Bitmaps and the dirty bit across such reopens: test_qcow2_reopen.py.
    require("qemu-img")
    path = os.path.join(str(workdir), "d.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1M"])
    c = daemon.client()
    c.execute("blockdev-add", driver="qcow2", **{"node-name": "q0", "read-only": True,
                                                 "file": {"driver": "file",
                                                          "filename": path}})
    c.execute("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "q0",
                                           "file": {"driver": "file", "filename": path}}])
    assert nodes(c)["q0"]["ro"] is False
    assert run(["qemu-io", "-r", "-f", "qcow2", "-c", "read 0 64k", path],
               check=False).returncode != 0
    # Flags the dispatcher applies alone are fine.
    c.execute("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "q0",
                                           "file": {"driver": "file", "filename": path},
                                           "read-only": True, "detect-zeroes": "on"}])
    assert nodes(c)["q0"]["detect_zeroes"] == "on"
    # Still no write lock: qemu-io opens it read-only (refusing to share
    # write), while a writer is refused (the node owns the metadata).
    run(["qemu-io", "-r", "-f", "qcow2", "-c", "read 0 64k", path])
    locked = run(["qemu-io", "-f", "qcow2", "-c", "write 0 64k", path], check=False)
    assert locked.returncode != 0 and "lock" in locked.stderr


def test_backing_null_and_another_node(daemon, workdir):
    require("qemu-img")
    base = raw_image(workdir, "base.raw")
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k", base])
    top = os.path.join(str(workdir), "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", top, "1M"])
    c = daemon.client()
    c.execute("blockdev-add", driver="raw", **{"node-name": "b0", "read-only": True,
                                               "file": {"driver": "file", "filename": base}})
    top_file = {"driver": "file", "filename": top}
    c.execute("blockdev-add", driver="qcow2", **{"node-name": "t0", "file": top_file,
                                                 "backing": None})
    assert nodes(c)["t0"]["backing_file_depth"] == 0
    c.execute("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "t0",
                                           "file": top_file, "backing": "b0"}])
    info = nodes(c)
    assert info["t0"]["backing_file_depth"] == 1
    assert {"child": "backing", "node-name": "b0"} in info["t0"]["children"]
    c.execute("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "t0",
                                           "file": top_file, "backing": None}])
    assert nodes(c)["t0"]["backing_file_depth"] == 0
    assert c.error("blockdev-reopen", {"options": [{
        "driver": "qcow2", "node-name": "t0", "file": top_file, "backing": "nosuch"}]}) == (
        "GenericError", "Cannot find device='' nor node-name='nosuch'")


def test_write_lock_follows_read_only(daemon, workdir):
    """A writable export needs write permission on the file: with the node
    read-write it holds QEMU's write lock (byte 101 of the file, whoever
    holds write permission; a raw node lets qemu-io -r share write, so the
    byte is probed directly, as qemu-storage-daemon also behaves); read-only
    is refused while the export writes. Needs the NBD export commands."""
    require("qemu-io")
    c = daemon.client()
    names = {e["name"] for e in c.execute("query-commands")}
    if not {"nbd-server-start", "block-export-add"} <= names:
        pytest.skip("the NBD export commands are not registered in this build")
    path = raw_image(workdir)
    sock = os.path.join(str(workdir), "nbd.sock")
    file = {"driver": "file", "filename": path}
    c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    c.execute("blockdev-add", driver="raw", **{"node-name": "r0", "file": file,
                                               "read-only": True})
    assert c.error("block-export-add", {"type": "nbd", "id": "e0", "node-name": "r0",
                                        "writable": True})[0] == "GenericError"
    run(["qemu-io", "-r", "-f", "raw", "-c", "read 0 4k", path])  # no write lock
    c.execute("blockdev-reopen", options=[{"driver": "raw", "node-name": "r0", "file": file}])
    c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "r0"}, writable=True)
    assert byte_locked(path, WRITE_PERM_BYTE)
    assert c.error("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r0",
                                                    "file": file,
                                                    "read-only": True}]})[0] == "GenericError"
    c.execute("block-export-del", id="e0")
    deadline = time.time() + 10
    while byte_locked(path, WRITE_PERM_BYTE):
        assert time.time() < deadline, "the write lock was not released"
        time.sleep(0.1)
