"""Permissions an NBD export holds on its node, side by side with
qemu-storage-daemon: a writable export takes write at once (QEMU's image lock
byte for write is held from block-export-add on, and a read-only reopen of
the node is refused), and every export refuses to share resize (qemu-img
resize and block_resize fail while it exists), as QEMU's nbd_export_create
does. strata-nbd against qemu-nbd for the resize lock."""
import fcntl
import os
import subprocess
import time

import pytest

from conftest import raw_image, require, run, strata_binary, unix_listening
from qmp_client import Daemon
from test_nbd_qmp import sockdir, start_server  # noqa: F401 (fixture)

# QEMU's file locking: byte 100 + i is locked shared by whoever holds
# permission i; byte 200 + i by whoever refuses to share it.
WRITE_PERM_BYTE = 101
RESIZE_UNSHARED_BYTE = 203


def byte_locked(path, byte):
    """True if another process holds a lock on `byte` of `path`."""
    with open(path, "r+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
        except OSError:
            return True
        fcntl.lockf(f, fcntl.LOCK_UN, 1, byte)
        return False


def wait_unlocked(path, byte, timeout=10):
    deadline = time.time() + timeout
    while byte_locked(path, byte):
        assert time.time() < deadline, f"byte {byte} of {path} stayed locked"
        time.sleep(0.05)


def resize_refused(path):
    r = run(["qemu-img", "resize", "-f", "raw", path, "2M"], check=False)
    return r.returncode != 0 and "lock" in r.stderr


def daemon_binary(name):
    if name == "stratad":
        return strata_binary("stratad")
    require(name)
    return name


def raw_node_args(path):
    return ["--blockdev", f"driver=file,node-name=f0,filename={path}",
            "--blockdev", "driver=raw,node-name=r0,file=f0"]


@pytest.mark.parametrize("server", ["stratad", "qemu-storage-daemon"])
def test_writable_export_holds_write_and_refuses_resize(workdir, sockdir, server):  # noqa: F811
    require("qemu-img")
    path = raw_image(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(daemon_binary(server), workdir, raw_node_args(path)) as d:
        c = d.client()
        start_server(c, sock)
        assert not byte_locked(path, WRITE_PERM_BYTE)
        c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "r0"},
                  writable=True)
        # No client has connected, let alone written: the lock is there.
        assert byte_locked(path, WRITE_PERM_BYTE)
        assert byte_locked(path, RESIZE_UNSHARED_BYTE)
        assert resize_refused(path)
        assert c.error("block_resize", {"node-name": "r0", "size": 2 << 20})[0] == (
            "GenericError")
        file = {"driver": "file", "filename": path}
        assert c.error("blockdev-reopen", {"options": [{
            "driver": "raw", "node-name": "r0", "file": file,
            "read-only": True}]})[0] == "GenericError"
        c.execute("block-export-del", id="e0")
        wait_unlocked(path, WRITE_PERM_BYTE)
        wait_unlocked(path, RESIZE_UNSHARED_BYTE)
        c.execute("block_resize", **{"node-name": "r0"}, size=2 << 20)
    assert os.path.getsize(path) == 2 << 20


@pytest.mark.parametrize("server", ["stratad", "qemu-storage-daemon"])
def test_read_only_export_shares_write_but_not_resize(workdir, sockdir, server):  # noqa: F811
    require("qemu-img")
    path = raw_image(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(daemon_binary(server), workdir, raw_node_args(path)) as d:
        c = d.client()
        start_server(c, sock)
        c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "r0"})
        assert not byte_locked(path, WRITE_PERM_BYTE)
        assert resize_refused(path)
        # Another writer may still open the image.
        run(["qemu-io", "-f", "raw", "-c", "write 0 4k", path])
        c.execute("block-export-del", id="e0")
        wait_unlocked(path, RESIZE_UNSHARED_BYTE)


@pytest.mark.parametrize("server", ["strata-nbd", "qemu-nbd"])
def test_standalone_server_refuses_resize(workdir, sockdir, server):  # noqa: F811
    require("qemu-img")
    path = raw_image(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    binary = strata_binary("strata-nbd") if server == "strata-nbd" else server
    require(binary)
    proc = subprocess.Popen([binary, "-f", "raw", "-t", "-k", sock, path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        # qemu-nbd listens before it creates the export that takes the lock.
        while not (unix_listening(sock) and byte_locked(path, WRITE_PERM_BYTE)):
            assert proc.poll() is None and time.time() < deadline, f"{server} did not start"
            time.sleep(0.02)
        assert resize_refused(path)
    finally:
        proc.terminate()
        proc.wait(10)
    run(["qemu-img", "resize", "-f", "raw", path, "2M"])
