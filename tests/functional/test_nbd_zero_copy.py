"""Zero-copy READ replies: reads of 64 KiB and more are built in a pipe and
spliced into the socket. Whatever the reply form (simple, structured, sparse
or DF, extended headers), the transport (Unix, TCP) and the image layout
(data, zero clusters, backing data, compressed clusters, clusters scattered
over more pages than a pipe holds), the bytes must equal what qemu-nbd
serves for the same image. Replies that wait behind a full socket keep their
order with small replies, and a client that vanishes with replies pending
leaves the server serving others."""
import os
import resource
import socket
import subprocess
import struct
import time

import nbd  # python3-libnbd
import pytest

from conftest import require, run, strata_binary, unix_listening
from test_nbd_basic import serve, short_dir
from test_nbd_protocol import Client, OPT, REP_ACK, CMD_READ

MiB = 1 << 20
SIMPLE_MAGIC, STRUCTURED_MAGIC = 0x67446698, 0x668E33EF
CHUNK_OFFSET_DATA, CHUNK_OFFSET_HOLE = 1, 2

# Offsets and lengths crossing every kind of run of the image made below,
# unaligned ones included; all are long enough to be spliced.
RANGES = [(0, 1 << 16), (511 << 10, 600 << 10), ((4 << 20) - 12345, 300 << 10),
          ((8 << 20) - 4096, 900 << 10), ((20 << 20) + 777, 512 << 10),
          ((30 << 20) - 65536, 256 << 10), ((64 << 20) - 100000, 200000),
          ((80 << 20) - (256 << 10), 256 << 10), (12 << 20, 1 << 16)]


def make_layered(workdir):
    """top.qcow2 (80 MiB) over a shorter base.qcow2 (64 MiB): data at both
    layers, zero clusters, a discarded range, compressed clusters."""
    require("qemu-img")
    base = os.path.join(workdir, "base.qcow2")
    top = os.path.join(workdir, "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"])
    run(["qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 2 4M 64k", "-c", "write -P 5 20M 3M",
         "-c", "write -P 6 63M 1M", base])
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top, "80M"])
    run(["qemu-io", "-c", "write -P 3 512k 1M", "-c", "write -z 8M 1M", "-c", "write -z 21M 64k",
         "-c", "discard 4M 64k", "-c", "write -c -P 7 12M 256k", "-c", "write -P 9 79M 512k",
         top])
    return top


def pread_all(uri, ranges, structured=True, df=False):
    """The bytes of each range; with `df` read with NBD_CMD_FLAG_DF, which
    must give one data chunk per read."""
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri(uri)
    out = []
    for offset, length in ranges:
        if not df:
            out.append(h.pread(length, offset))
            continue
        chunks = []
        out.append(h.pread_structured(length, offset,
                                      lambda buf, off, status, err: chunks.append(status) or 0,
                                      nbd.CMD_FLAG_DF))
        assert chunks == [nbd.READ_DATA]
    h.shutdown()
    return out


def pipe_fds(pid):
    fd_dir = f"/proc/{pid}/fd"
    return sum(os.readlink(os.path.join(fd_dir, f)).startswith("pipe:") for f in os.listdir(fd_dir))


def test_reads_equal_qemu_nbd_in_every_reply_form(workdir):
    top = make_layered(workdir)
    modes = [dict(structured=True), dict(structured=False),
             dict(structured=True, df=True)]
    with serve(top, "-r", "-f", "qcow2", server="qemu") as q:
        expected = [pread_all(q.uri, RANGES, **m) for m in modes]
    for tcp in (False, True):
        with serve(top, "-r", "-f", "qcow2", "-e", "4", tcp=tcp) as s:
            for mode, want in zip(modes, expected):
                got = pread_all(s.uri, RANGES, **mode)
                for (offset, length), a, b in zip(RANGES, got, want):
                    assert a == b, f"{mode} tcp={tcp}: range {offset}+{length} differs"
            # The replies were built in pipes (the server keeps them).
            assert pipe_fds(s.proc.pid) >= 2


def test_writes_are_seen_by_later_spliced_reads(workdir):
    top = make_layered(workdir)
    with serve(top, "-f", "qcow2") as s:
        h = nbd.NBD()
        h.connect_uri(s.uri)
        before = h.pread(512 << 10, 20 << 20)
        h.pwrite(b"\x42" * (128 << 10), (20 << 20) + 4096)
        h.zero(64 << 10, (20 << 20) + (256 << 10))
        after = h.pread(512 << 10, 20 << 20)
        want = bytearray(before)
        want[4096:4096 + (128 << 10)] = b"\x42" * (128 << 10)
        want[256 << 10:320 << 10] = bytes(64 << 10)
        assert after == bytes(want)
        h.shutdown()
    run(["qemu-img", "check", top])


def test_clusters_scattered_over_more_pages_than_a_pipe_holds(workdir):
    """512-byte clusters written backwards: a 512 KiB read touches 1024
    clusters, each in its own page of the file, which no pipe holds. The
    server reads those into memory instead; the bytes are the same."""
    require("qemu-img")
    img = os.path.join(workdir, "small.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "4M"])
    cmds = []
    for i in reversed(range(1024)):
        cmds += ["-c", f"write -P {i % 251 + 1} {i * 2048} 512"]
    run(["qemu-io", *cmds, img])
    ranges = [(0, 512 << 10), (100, 2 << 20), ((2 << 20) - 300, 1 << 20)]
    with serve(img, "-r", "-f", "qcow2", server="qemu") as q:
        want = pread_all(q.uri, ranges, df=True)
    with serve(img, "-r", "-f", "qcow2") as s:
        assert pread_all(s.uri, ranges, df=True) == want
        assert pread_all(s.uri, ranges, structured=False) == want


def raw_image(workdir, size=32 * MiB):
    path = os.path.join(workdir, "data.raw")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def simple_client(sock, rcvbuf=None):
    c = Client(sock)
    if rcvbuf:
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.go()
    return c


def send_read(c, cookie, offset, length):
    c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, CMD_READ, cookie, offset, length))


def test_replies_behind_a_full_socket_keep_their_data_and_order(workdir):
    """Large (spliced) and small (copied) READs sent without reading any
    reply: the server's socket fills, spliced replies wait for room and the
    small ones queue behind them; every reply arrives whole with its data.
    Another client is served meanwhile."""
    path = raw_image(workdir)
    with open(path, "rb") as f:
        data = f.read()
    with serve(path, "-f", "raw", "-e", "2") as s:
        c = simple_client(s.sock, rcvbuf=64 << 10)
        reads = {}
        for i in range(48):
            length = (512 << 10) if i % 3 else 4096
            offset = (i * 601 * 1024) % (len(data) - length)
            reads[i + 1] = (offset, length)
            send_read(c, i + 1, offset, length)
        time.sleep(0.5)  # let the server fill its socket and wait
        other = nbd.NBD()
        other.connect_uri(s.uri)
        assert other.pread(256 << 10, 1 << 20) == data[1 << 20:(1 << 20) + (256 << 10)]
        other.shutdown()
        seen = set()
        for _ in reads:
            magic, error, cookie = struct.unpack(">IIQ", c.recv(16))
            assert (magic, error) == (SIMPLE_MAGIC, 0) and cookie in reads
            offset, length = reads[cookie]
            assert c.recv(length) == data[offset:offset + length], f"read {cookie}"
            seen.add(cookie)
        assert seen == set(reads)


def test_client_vanishing_with_spliced_replies_pending(workdir):
    path = raw_image(workdir, 16 * MiB)
    with serve(path, "-f", "raw", "-e", "4") as s:
        for _ in range(3):
            c = simple_client(s.sock, rcvbuf=16 << 10)
            for i in range(32):
                send_read(c, i + 1, (i * 256 << 10) % (15 * MiB), 512 << 10)
            time.sleep(0.1)
            c.s.close()
        h = nbd.NBD()
        h.connect_uri(s.uri)
        with open(path, "rb") as f:
            assert h.pread(1 << 20, 3 << 20) == f.read()[3 << 20:4 << 20]
        h.shutdown()
        assert s.proc.poll() is None


def test_server_raises_its_open_file_limit(workdir):
    """Pipes take two descriptors each, up to 4 per client: strata-nbd raises
    its soft limit on open files to the hard limit, as QEMU's tools do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    if low >= hard:
        pytest.skip("the hard limit leaves nothing to raise to")
    path = raw_image(workdir, MiB)
    sock = os.path.join(short_dir(), "s")
    proc = subprocess.Popen(
        [strata_binary("strata-nbd"), "-f", "raw", "-k", sock, path],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)))
    try:
        for _ in range(500):
            if unix_listening(sock):
                break
            time.sleep(0.02)
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(l for l in f if l.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)]
    finally:
        proc.terminate()
        proc.wait(10)
