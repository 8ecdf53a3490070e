#!/usr/bin/env python3
"""bench/nbd_memory.py [BUILD_DIR] [--servers strata,qemu] [--scenarios ...]

Memory of an NBD server under many clients, strata-nbd against qemu-nbd on
the same raw image, read from /proc/PID/status (VmRSS) of the server:

  flood  16 clients that each queue 16 READs of 32 MiB (512 MiB, past
         any per-client bound) and read no reply: the growth; the time
         another client, which reads, takes for 4 READs of 32 MiB meanwhile;
         then whether every request is answered once the 16 read.
  idle   200 clients connected and negotiated (NBD_OPT_GO), then idle:
         the growth per connection.
  greet  200 clients connected that never answer the greeting.
  burst  300 non-blocking connects at once: how many are accepted.

Prints one line per server and scenario. Standard library only.
"""
import argparse
import errno
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_GO, REP_ACK = 7, 1
CMD_READ = 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled_rss_kib(pid, quiet=1.5, limit=20.0):
    """VmRSS once it has not moved by more than 1 MiB for `quiet` seconds."""
    deadline = time.time() + limit
    last, since = rss_kib(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.1)
        now = rss_kib(pid)
        if abs(now - last) > 1024:
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            break
    return rss_kib(pid)


def recv_exact(s, n):
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(min(n - len(data), 4 * MiB))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def connect(path, negotiate=True):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    deadline = time.time() + 10
    while True:
        try:
            s.connect(path)
            break
        except BlockingIOError:  # the listen backlog is full: try again
            if time.time() > deadline:
                raise
            time.sleep(0.01)
    if not negotiate:
        return s
    magic, opt, _ = struct.unpack(">QQH", recv_exact(s, 18))
    assert (magic, opt) == (NBDMAGIC, IHAVEOPT)
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    data = struct.pack(">I", 0) + struct.pack(">H", 0)  # export "", no info requests
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    while True:
        magic, _, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == REPLY_MAGIC
        recv_exact(s, length)
        if rtype == REP_ACK:
            return s
        assert not rtype & (1 << 31), f"option error {rtype:#x}"


def read_request(cookie, offset, length):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, cookie, offset, length)


def queue_reads(s, image_mib, read_mib, limit=16):
    """Sends READs without reading replies until the socket takes no more."""
    s.setblocking(False)
    sent = 0
    slots = image_mib // read_mib
    while sent < limit:
        req = read_request(sent, (sent % slots) * read_mib * MiB, read_mib * MiB)
        try:
            if s.send(req) != len(req):
                raise RuntimeError("partial request header")
        except BlockingIOError:
            break
        sent += 1
    s.setblocking(True)
    return sent


def discard(s, n, buf=memoryview(bytearray(4 * MiB))):
    while n > 0:
        got = s.recv_into(buf, min(n, len(buf)))
        if not got:
            raise EOFError("closed in a reply")
        n -= got


def drain_replies(s, count, read_mib):
    for _ in range(count):
        magic, error, _ = struct.unpack(">IIQ", recv_exact(s, 16))
        assert magic == SIMPLE_REPLY_MAGIC and error == 0, (magic, error)
        discard(s, read_mib * MiB)


class Server:
    def __init__(self, kind, build, image, extra=()):
        self.dir = tempfile.mkdtemp(prefix="nbdmem.")
        self.sock = os.path.join(self.dir, "s")
        binary = os.path.join(build, "tools", "strata-nbd") if kind == "strata" else "qemu-nbd"
        cmd = [binary, "-t", "-e", "0", "-f", "raw", "-k", self.sock, *extra, image]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                connect(self.sock).close()
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{kind} server did not start")
                time.sleep(0.05)
        time.sleep(0.3)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def flood(server, image_mib, clients=16, read_mib=32):
    before = settled_rss_kib(server.proc.pid)
    conns = [connect(server.sock) for _ in range(clients)]
    sent = [queue_reads(c, image_mib, read_mib) for c in conns]
    peak = settled_rss_kib(server.proc.pid)
    # Meanwhile, a client that reads its replies: 4 READs one after another.
    reader = connect(server.sock)
    start = time.time()
    for i in range(4):
        reader.sendall(read_request(i, i * read_mib * MiB, read_mib * MiB))
        drain_replies(reader, 1, read_mib)
    reader_s = time.time() - start
    reader.close()
    for c, n in zip(conns, sent):
        drain_replies(c, n, read_mib)
    for c in conns:
        c.close()
    return (f"flood: {clients} clients, {sum(sent)} READs of {read_mib} MiB queued "
            f"({min(sent)}-{max(sent)} per client): RSS {before // 1024} -> {peak // 1024} MiB "
            f"(+{(peak - before) / 1024:.0f} MiB); meanwhile another client read "
            f"4 x {read_mib} MiB in {reader_s:.2f} s; all answered once read")


def idle(server, count=200, negotiate=True):
    before = settled_rss_kib(server.proc.pid)
    conns = [connect(server.sock, negotiate) for _ in range(count)]
    after = settled_rss_kib(server.proc.pid)
    for c in conns:
        c.close()
    what = "negotiated" if negotiate else "ungreeted"
    return (f"{'idle' if negotiate else 'greet'}: {count} {what} connections: "
            f"+{(after - before) / 1024:.1f} MiB, {(after - before) / count:.0f} KiB each")


def burst(server, count=300):
    conns, refused = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(server.sock)
            conns.append(s)
        except BlockingIOError:
            refused += 1  # EAGAIN: the listen backlog is full
            s.close()
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise
            refused += 1
            s.close()
    # An accepted connection gets the greeting.
    greeted = 0
    for s in conns:
        s.setblocking(True)
        s.settimeout(30)
        try:
            if recv_exact(s, 18)[:8] == struct.pack(">Q", NBDMAGIC):
                greeted += 1
        except (OSError, EOFError):
            pass
        s.close()
    return f"burst: {count} non-blocking connects: {len(conns)} accepted, {refused} EAGAIN, " \
           f"{greeted} greeted"


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=os.path.join(here, "build"))
    ap.add_argument("--servers", default="strata,qemu")
    ap.add_argument("--scenarios", default="flood,idle,greet,burst")
    ap.add_argument("--strata-args", default="", help="extra strata-nbd arguments")
    args = ap.parse_args()
    image_mib = 256
    workdir = tempfile.mkdtemp(prefix="nbdmem-img.")
    image = os.path.join(workdir, "disk.raw")
    with open(image, "wb") as f:
        for _ in range(image_mib):
            f.write(b"\x5a" * MiB)
    try:
        for kind in args.servers.split(","):
            for scenario in args.scenarios.split(","):
                extra = args.strata_args.split() if kind == "strata" else []
                server = Server(kind, args.build, image, extra)
                try:
                    if scenario == "flood":
                        line = flood(server, image_mib)
                    elif scenario == "idle":
                        line = idle(server)
                    elif scenario == "greet":
                        line = idle(server, negotiate=False)
                    else:
                        line = burst(server)
                finally:
                    server.stop()
                print(f"{kind:7s} {line}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
