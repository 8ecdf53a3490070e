"""The file driver's I/O engines (aio=io_uring, native, threads, and the
default) with cache.direct on a real disk: what a guest writes over NBD is
what qemu-img reads from the image, in every mode; query-named-block-nodes
says which engine runs; the option errors are qemu-storage-daemon's; and
with io_uring turned off (STRATA_IO_URING=0, as on a kernel or sandbox that
refuses it) the default falls back to the thread pool while aio=io_uring
fails saying why."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import require, run, strata_binary, unix_listening
from qmp_client import Daemon
from test_nbd_basic import short_dir

QSD = "qemu-storage-daemon"
MiB = 1 << 20


@pytest.fixture
def diskdir():
    """A directory on the real disk: O_DIRECT must reach a device."""
    d = tempfile.mkdtemp(prefix="strata-aio-", dir="/var/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sockdir():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def file_node(path, aio=None, direct=True):
    node = {"driver": "file", "node-name": "proto", "filename": path,
            "cache": {"direct": direct}}
    if aio is not None:
        node["aio"] = aio
    return node


def add_disk(c, path, aio=None, direct=True):
    c.execute("blockdev-add", **file_node(path, aio, direct))
    c.execute("blockdev-add", driver="qcow2", **{"node-name": "disk"}, file="proto",
              cache={"direct": direct})


def x_aio(c):
    nodes = c.execute("query-named-block-nodes", flat=True)
    return next(n for n in nodes if n["node-name"] == "proto")["x-aio"]


def guest_writes_and_check(c, path, sock, diskdir):
    """Serves `disk` over NBD, writes a pattern of 4 KiB to 1 MiB requests
    with qemu-io, mirrors them in a raw model, and has qemu-img compare the
    image (read by QEMU, not by the daemon) with the model."""
    c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "disk"}, writable=True)
    model = os.path.join(diskdir, "model.raw")
    run(["qemu-img", "create", "-q", "-f", "raw", model, "64M"])
    writes = [(0, 4096, 0x11), (12 * MiB + 4096, 65536, 0x22), (40 * MiB, MiB, 0x33),
              (63 * MiB + 512 * 1024, 512 * 1024, 0x44)]
    uri = f"nbd+unix:///disk?socket={sock}"
    cmds = [a for off, n, p in writes for a in ("-c", f"write -P {p:#x} {off} {n}")]
    run(["qemu-io", "-f", "raw", *cmds, "-c", "flush", uri])
    run(["qemu-io", "-f", "raw", *cmds, model])
    # Read back over NBD: through the engine again, checked by qemu-io.
    for off, n, p in writes:
        out = run(["qemu-io", "-f", "raw", "-c", f"read -P {p:#x} {off} {n}", uri]).stdout
        assert "Pattern verification failed" not in out
    c.execute("nbd-server-stop")  # its exports go with it
    deadline = time.time() + 10
    while c.execute("query-block-exports") and time.time() < deadline:
        time.sleep(0.02)
    c.execute("blockdev-del", **{"node-name": "disk"})
    c.execute("blockdev-del", **{"node-name": "proto"})
    run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", path, model])
    run(["qemu-img", "check", path])


@pytest.mark.parametrize("aio,engine", [(None, "io_uring"), ("io_uring", "io_uring"),
                                        ("native", "io_uring"), ("threads", "threads")])
def test_guest_data_in_each_mode(diskdir, sockdir, aio, engine):
    require("qemu-img")
    path = os.path.join(diskdir, "disk.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"])
    with Daemon(strata_binary("stratad"), diskdir) as d:
        c = d.client()
        add_disk(c, path, aio)
        assert x_aio(c) == engine
        guest_writes_and_check(c, path, os.path.join(sockdir, "nbd.sock"), diskdir)


def errors_of(binary, diskdir, path, nodes):
    with Daemon(binary, diskdir) as d:
        c = d.client()
        return [c.error("blockdev-add", file_node(path, **n)) for n in nodes]


def test_option_errors_match_qemu(diskdir):
    """A mode QEMU does not know, and native without cache.direct."""
    require(QSD)
    path = os.path.join(diskdir, "disk.raw")
    run(["qemu-img", "create", "-q", "-f", "raw", path, "1M"])
    nodes = [{"aio": "posix"}, {"aio": "native", "direct": False}]
    ours = errors_of(strata_binary("stratad"), diskdir, path, nodes)
    theirs = errors_of(QSD, diskdir, path, nodes)
    assert ours[1] == theirs[1]
    assert ours[0][0] == theirs[0][0] == "GenericError"
    assert "posix" in ours[0][1] and "posix" in theirs[0][1]


def test_fallback_when_io_uring_is_off(diskdir, sockdir, monkeypatch):
    """STRATA_IO_URING=0 stands for a kernel that refuses io_uring: the
    default runs on the pool and serves the guest; aio=io_uring fails with
    the reason, and nothing is left open."""
    path = os.path.join(diskdir, "disk.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"])
    monkeypatch.setenv("STRATA_IO_URING", "0")
    with Daemon(strata_binary("stratad"), diskdir) as d:
        c = d.client()
        cls, desc = c.error("blockdev-add", file_node(path, "io_uring"))
        assert cls == "GenericError"
        assert desc.startswith("Unable to use io_uring: ") and "STRATA_IO_URING=0" in desc
        assert c.execute("query-named-block-nodes", flat=True) == []
        add_disk(c, path)
        assert x_aio(c) == "threads"
        guest_writes_and_check(c, path, os.path.join(sockdir, "nbd.sock"), diskdir)


@pytest.mark.parametrize("aio", ["io_uring", "threads"])
def test_strata_nbd_cache_none(diskdir, sockdir, aio):
    """strata-nbd --cache=none --aio=MODE, as qemu-nbd is run in production:
    nbdcopy writes a whole image in and reads it back out, and qemu-img
    compares both with the source."""
    require("nbdcopy")
    src = os.path.join(diskdir, "src.raw")
    with open(src, "wb") as f:
        for i in range(32):
            f.write(bytes([i * 7 % 256]) * (512 * 1024) + os.urandom(512 * 1024))
    path = os.path.join(diskdir, "disk.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "32M"])
    sock = os.path.join(sockdir, "nbd.sock")
    proc = None
    try:
        proc = subprocess.Popen([strata_binary("strata-nbd"), "-f", "qcow2", "-k", sock,
                                 "--cache=none", f"--aio={aio}", "-e", "2", "-t", path],
                                stderr=subprocess.PIPE)
        uri = f"nbd+unix:///?socket={sock}"
        wait_for(sock, proc)
        run(["nbdcopy", src, uri])
        out = os.path.join(diskdir, "out.raw")
        run(["nbdcopy", uri, out])
        run(["qemu-img", "compare", "-f", "raw", "-F", "raw", src, out])
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=20)
    run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, path])
    run(["qemu-img", "check", path])


def wait_for(sock, proc):
    deadline = time.time() + 20
    while not unix_listening(sock):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "strata-nbd did not listen"
        time.sleep(0.01)
