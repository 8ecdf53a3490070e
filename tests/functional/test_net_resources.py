"""What a connection costs the servers: a burst of connects is queued by the
kernel, not refused (the listen backlog is SOMAXCONN, as qemu-nbd's); an
idle NBD client costs a few KiB, not a receive buffer; QMP monitors give
their memory back when they close. Memory is read from /proc/PID/status
(VmRSS) with bounds far from both the fixed and the broken figures."""
import os
import socket
import struct
import time

import pytest

from conftest import strata_binary
from qmp_client import Daemon
from test_nbd_basic import make_raw, serve, short_dir
from test_nbd_protocol import Client

NBDMAGIC = 0x4E42444D41474943


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled_rss_kib(pid, quiet=1.0, limit=15.0):
    """VmRSS once it has stopped moving (by more than 256 KiB) for `quiet` s."""
    deadline = time.time() + limit
    last, since = rss_kib(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.05)
        now = rss_kib(pid)
        if abs(now - last) > 256:
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            break
    return rss_kib(pid)


@pytest.fixture(autouse=True)
def no_quarantine(monkeypatch):
    """Under AddressSanitizer freed memory waits in a quarantine, which would
    count as growth; the servers started here keep none."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=0")


def burst(path, count):
    """`count` non-blocking connects at once; returns (connected, refused)."""
    connected, refused = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(path)
            connected.append(s)
        except BlockingIOError:  # EAGAIN: the listen backlog is full
            refused += 1
            s.close()
    return connected, refused


def read_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} bytes")
        data += chunk
    return data


def test_nbd_burst_of_connects_is_all_accepted(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"))
    with serve(image, "-f", "raw", "-e", "0") as s:
        connected, refused = burst(s.sock, 300)
        assert refused == 0 and len(connected) == 300
        for c in connected:
            c.setblocking(True)
            c.settimeout(30)
            assert struct.unpack(">Q", read_exactly(c, 18)[:8])[0] == NBDMAGIC
            c.close()


def test_qmp_burst_of_connects_is_all_accepted(workdir):
    with Daemon(strata_binary("stratad"), workdir) as d:
        d.client().close()  # listening
        connected, refused = burst(d.sock, 300)
        assert refused == 0 and len(connected) == 300
        for c in connected:
            c.setblocking(True)
            c.settimeout(30)
            line = b""
            while not line.endswith(b"\n"):
                line += read_exactly(c, 1)
            assert line.startswith(b'{"QMP"')
            c.close()


def test_idle_nbd_connections_cost_little(workdir):
    """200 negotiated, idle clients: a few KiB each (qemu-nbd: about 7 KiB);
    a connection used to keep a 256 KiB receive buffer."""
    image = make_raw(os.path.join(workdir, "disk.raw"))
    with serve(image, "-f", "raw", "-e", "0") as s:
        warm = Client(s.sock)
        warm.go()
        before = settled_rss_kib(s.proc.pid)
        clients = []
        for _ in range(200):
            c = Client(s.sock)
            c.go()
            clients.append(c)
        after = settled_rss_kib(s.proc.pid)
        per_connection = (after - before) / 200
        assert per_connection < 48, f"{per_connection:.0f} KiB per idle connection"
        for c in clients + [warm]:
            c.s.close()


def test_qmp_monitors_give_their_memory_back(workdir):
    """500 monitors opened and closed one after another, then five rounds of
    100 open at once: RSS stays within a small bound of the start (each
    monitor used to keep 320 KiB of read buffers, 32 MiB for 100)."""
    with Daemon(strata_binary("stratad"), workdir) as d:
        first = d.client()
        first.execute("query-block")
        start = settled_rss_kib(d.proc.pid)
        for _ in range(500):
            m = d.client()
            m.execute("query-block")
            m.close()
        sequential = settled_rss_kib(d.proc.pid) - start
        assert sequential < 2048, f"500 monitors in sequence left {sequential} KiB"
        for _ in range(5):
            monitors = [d.client() for _ in range(100)]
            for m in monitors:
                m.execute("query-block")
            for m in monitors:
                m.close()
        first.execute("query-block")  # the daemon has seen every close
        concurrent = settled_rss_kib(d.proc.pid) - start
        assert concurrent < 8192, f"5 x 100 monitors left {concurrent} KiB"


def test_stratad_drops_clients_that_never_read(workdir):
    """An NBD client and a QMP monitor that read nothing, with replies
    queued: removing the export drops the NBD client, and quit ends the
    daemon without waiting for either."""
    image = make_raw(os.path.join(workdir, "disk.raw"))
    nbd_sock = os.path.join(short_dir(), "n.sock")
    with Daemon(strata_binary("stratad"), workdir,
                ["--blockdev", f"driver=file,node-name=f0,filename={image}"]) as d:
        c = d.client()
        c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": nbd_sock}})
        c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "f0"})
        hog = Client(nbd_sock)
        hog.go(b"f0")
        hog.s.setblocking(False)
        for i in range(16):
            hog.s.send(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0, 32 << 20))
        mute = d.client()
        mute.sock.setblocking(False)
        request = b'{"execute": "query-qmp-schema"}'
        queued = 0
        try:
            for _ in range(2000):
                mute.sock.send(request)
                queued += 1
        except BlockingIOError:
            pass
        time.sleep(1)
        c.execute("block-export-del", id="e0", mode="hard")
        deadline = time.time() + 30
        while not any(e["event"] == "BLOCK_EXPORT_DELETED" for e in c.events):
            assert time.time() < deadline, "the export was not deleted"
            c.request("query-block")
        c.request("quit")
        assert d.proc.wait(30) == 0
        hog.s.close()
        mute.close()
