"""Hostile clients: memory stays bounded whatever a client asks for, and
other clients carry on."""
import os
import signal
import struct
import time

import nbd  # python3-libnbd
import pytest

from conftest import strata_binary
from qmp_client import Daemon
from test_nbd_basic import make_raw, serve, short_dir
from test_nbd_protocol import CMD_READ, CMD_WRITE, OPT, REP_ACK, Client, libnbd_still_works

REQUEST_MAGIC = 0x25609513
MiB = 1 << 20


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def request(cmd, cookie, offset, length):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, 0, cmd, cookie, offset, length)


def test_unread_replies_and_flooded_writes_stay_bounded(workdir, monkeypatch):
    """One client asks for 64 GiB of reads and never reads a reply; another
    streams 32 MiB writes as fast as it can. The server's memory grows by no
    more than its per-client budget (128 MiB each, plus slack), and a third
    client is served meanwhile."""
    # Under AddressSanitizer freed buffers sit in a quarantine (256 MiB by
    # default), which would count as growth here; the sanitizer build keeps
    # none so that the figure measures the server's own buffering.
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=0")
    image = make_raw(os.path.join(workdir, "disk.raw"), 64)
    with serve(image, "-f", "raw", "-e", "0") as s:
        before = rss_mib(s.proc.pid)
        reader = Client(s.sock)
        reader.go()
        reader.s.setblocking(False)
        sent = 0
        for i in range(2048):
            try:
                reader.s.send(request(CMD_READ, i, 0, 32 * MiB))
                sent += 1
            except BlockingIOError:
                break
        writer = Client(s.sock)
        writer.go()
        writer.s.settimeout(0.2)
        payload = b"\x5a" * (32 * MiB)
        written = 0
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                writer.s.sendall(request(CMD_WRITE, written, 32 * MiB, 32 * MiB) + payload)
                written += 1
            except (TimeoutError, OSError):
                break
        time.sleep(0.5)
        peak = rss_mib(s.proc.pid)
        libnbd_still_works(s.sock)
        assert sent > 64, "the reader could not queue its requests"
        assert peak - before < 2 * 128 + 96, f"server grew from {before} to {peak} MiB"
        reader.s.close()
        writer.s.close()
        libnbd_still_works(s.sock)


SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF
REPLY_FLAG_DONE = 1
FLAG_DF = 1 << 2


def settled_rss_mib(pid, quiet=1.5, limit=30.0):
    """VmRSS once it has not moved by more than 1 MiB for `quiet` seconds."""
    deadline = time.time() + limit
    last, since = rss_mib(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.1)
        now = rss_mib(pid)
        if abs(now - last) > 1:
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            break
    return rss_mib(pid)


def read_into(sock, view):
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("closed in a reply")
        got += n


def queue_reads(client, count, length, offsets):
    """Sends `count` READs without reading a reply; returns cookie -> offset."""
    sent = {}
    client.s.setblocking(False)
    for i in range(count):
        offset = offsets[i % len(offsets)]
        try:
            client.s.send(request(CMD_READ, i, offset, length))
        except BlockingIOError:
            break
        sent[i] = offset
    client.s.setblocking(True)
    client.s.settimeout(60)
    return sent


def check_replies(client, sent, length, data):
    """Reads every simple reply; each carries the bytes of its range."""
    buf = bytearray(length)
    for _ in range(len(sent)):
        magic, error, cookie = struct.unpack(">IIQ", client.recv(16))
        assert (magic, error) == (SIMPLE_REPLY_MAGIC, 0)
        read_into(client.s, memoryview(buf))
        offset = sent.pop(cookie)
        assert buf == data[offset:offset + length], f"reply {cookie} at {offset}"
    assert not sent


def test_clients_that_never_read_stay_within_the_server_budget(workdir, monkeypatch):
    """16 clients queue 16 READs of 8 MiB each (2 GiB) and read nothing.
    The server holds at most its budget (256 MiB) plus slack, where each
    client alone could hold 128 MiB; meanwhile another client still reads
    and writes (in pieces), and once the 16 read, every request is answered
    with the right bytes."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=0")
    image = os.path.join(workdir, "disk.raw")
    data = os.urandom(64 * MiB)
    with open(image, "wb") as f:
        f.write(data)
    length = 8 * MiB
    offsets = [i * length for i in range(4)]  # the first 32 MiB
    with serve(image, "-f", "raw", "-e", "0") as s:
        before = settled_rss_mib(s.proc.pid)
        hogs = []
        for _ in range(16):
            c = Client(s.sock)
            c.go()
            hogs.append((c, queue_reads(c, 16, length, offsets)))
        peak = settled_rss_mib(s.proc.pid)
        assert all(len(sent) == 16 for _, sent in hogs)
        # Not starved: a client that reads gets its data, and writes.
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///?socket={s.sock}")
        assert h.pread(length, 16 * MiB) == data[16 * MiB:24 * MiB]
        pattern = bytes(range(256)) * (length // 256)
        h.pwrite(pattern, 40 * MiB)
        assert h.pread(length, 40 * MiB) == pattern
        h.shutdown()
        assert peak - before < 256 + 128, f"server grew from {before} to {peak} MiB"
        for c, sent in hogs:
            check_replies(c, sent, length, data)
            c.s.close()
        libnbd_still_works_on(s.sock, data)
    with open(image, "rb") as f:
        f.seek(40 * MiB)
        assert f.read(length) == pattern


def libnbd_still_works_on(sock, data):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///?socket={sock}")
    assert h.pread(MiB, 3 * MiB) == data[3 * MiB:4 * MiB]
    h.shutdown()


def test_stop_with_clients_that_never_read(workdir):
    """SIGTERM while three clients hold queued replies they never read: the
    server drops them and exits (it used to wait for them forever, as
    qemu-nbd 7.2 still does)."""
    image = os.path.join(workdir, "disk.raw")
    with open(image, "wb") as f:
        f.write(b"\x5a" * (64 * MiB))
    with serve(image, "-f", "raw", "-e", "0") as s:
        hogs = []
        for _ in range(3):
            c = Client(s.sock)
            c.go()
            assert len(queue_reads(c, 16, 32 * MiB, [0, 32 * MiB])) == 16
            hogs.append(c)
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0
        for c in hogs:
            c.s.close()


def test_reads_in_pieces_report_errors_as_the_protocol_allows(workdir):
    """Two clients that never read pin the whole budget, so others' READs are
    read and sent in 256 KiB pieces. Through a fault filter failing reads of
    one 4 KiB block: a structured reply ends with an error chunk and the
    connection goes on; a simple reply, whose header already announced
    success, can only end the connection; DF replies come as one chunk."""
    image = os.path.join(workdir, "disk.raw")
    data = os.urandom(64 * MiB)
    with open(image, "wb") as f:
        f.write(data)
    bad = 20 * MiB
    with Daemon(strata_binary("stratad"), workdir,
                ["--blockdev", f"driver=file,node-name=f0,filename={image}"]) as d:
        c = d.client()
        c.execute("blockdev-add", driver="fault", **{"node-name": "faulty"}, file="f0",
                  rules=[{"event": "read", "errno": "EIO", "offset": bad, "length": 4096}])
        sock = os.path.join(short_dir(), "n.sock")
        c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        c.execute("block-export-add", type="nbd", id="e0", **{"node-name": "faulty"}, name="")
        hogs = []
        for _ in range(2):
            hog = Client(sock)
            hog.go()
            assert len(queue_reads(hog, 16, 8 * MiB, [0, 8 * MiB])) == 16
            hogs.append(hog)
        time.sleep(1)
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///?socket={sock}")
        with pytest.raises(nbd.Error) as e:
            h.pread(8 * MiB, 16 * MiB)  # its seventeenth piece fails
        assert "Input/output error" in str(e.value)
        assert h.pread(8 * MiB, 32 * MiB) == data[32 * MiB:40 * MiB]  # still connected
        h.shutdown()
        # DF: one data chunk for the whole range, whatever the pieces.
        df = Client(sock)
        assert df.replies(OPT["STRUCTURED_REPLY"])[-1][0] == REP_ACK
        df.go()
        df.s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, FLAG_DF, CMD_READ, 9, 40 * MiB, 8 * MiB))
        magic, flags, ctype, cookie, length = struct.unpack(">IHHQI", df.recv(20))
        assert (magic, flags, ctype, cookie) == (STRUCTURED_MAGIC, REPLY_FLAG_DONE, 1, 9)
        assert length == 8 + 8 * MiB
        assert struct.unpack(">Q", df.recv(8))[0] == 40 * MiB
        assert df.recv(8 * MiB) == data[40 * MiB:48 * MiB]
        df.s.close()
        simple = Client(sock)
        simple.go()
        simple.s.sendall(request(CMD_READ, 7, 16 * MiB, 8 * MiB))
        magic, error, cookie = struct.unpack(">IIQ", simple.recv(16))
        assert (magic, error, cookie) == (SIMPLE_REPLY_MAGIC, 0, 7)
        received = b""
        while True:
            chunk = simple.s.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        assert 0 < len(received) < 8 * MiB  # cut short: the connection ended
        assert received == data[16 * MiB:16 * MiB + len(received)]
        for hog in hogs:
            hog.s.close()
