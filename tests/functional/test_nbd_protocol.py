"""The NBD wire protocol byte by byte, for what no installed client does:
extended headers (64-bit requests and replies, BLOCK_STATUS_EXT, block
status payloads; libnbd 1.14 predates them) and malformed input, each of
which must get the spec's answer (an error reply, or a disconnect) while
other clients carry on."""
import os
import socket
import struct

import nbd  # python3-libnbd, to check other clients are unaffected

from test_nbd_basic import make_raw, serve

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9
OPT = dict(EXPORT_NAME=1, ABORT=2, LIST=3, STARTTLS=5, INFO=6, GO=7, STRUCTURED_REPLY=8,
           LIST_META_CONTEXT=9, SET_META_CONTEXT=10, EXTENDED_HEADERS=11)
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_UNKNOWN = ERR + 1, ERR + 2, ERR + 3, ERR + 6
ERR_EXT_HEADER_REQD = ERR + 10
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_BLOCK_STATUS = 0, 1, 2, 3, 7
FLAG_PAYLOAD_LEN, FLAG_BLOCK_STATUS_PAYLOAD = 1 << 5, 1 << 12
EXT_REQUEST, EXT_REPLY = 0x21E41C71, 0x6E8A278C
MiB = 1 << 20


class Client:
    def __init__(self, path, flags=3):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(20)
        self.s.connect(path)
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        assert (magic, opt, hflags) == (NBDMAGIC, IHAVEOPT, 3)
        if flags is not None:
            self.s.sendall(struct.pack(">I", flags))

    def recv(self, n):
        data = b""
        while len(data) < n:
            chunk = self.s.recv(n - len(data))
            if not chunk:
                raise EOFError(f"closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    def closed_by_server(self):
        try:
            return self.s.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def option(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv(20))
        assert magic == REPLY_MAGIC
        return opt, rtype, self.recv(length)

    def replies(self, opt, data=b""):
        """Sends an option; returns its replies up to the final one."""
        self.option(opt, data)
        out = []
        while True:
            _, rtype, payload = self.reply()
            out.append((rtype, payload))
            if rtype == REP_ACK or rtype & ERR:
                return out

    def go(self, name=b"", infos=()):
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
        data += b"".join(struct.pack(">H", i) for i in infos)
        reps = self.replies(OPT["GO"], data)
        assert reps[-1][0] == REP_ACK, reps
        for rtype, payload in reps:
            if rtype == REP_INFO and struct.unpack(">H", payload[:2])[0] == 0:
                _, self.size, self.flags = struct.unpack(">HQH", payload)
        return reps

    def ext_request(self, cmd, offset, length, flags=0, cookie=1, payload=b""):
        self.s.sendall(struct.pack(">IHHQQQ", EXT_REQUEST, flags, cmd, cookie, offset, length)
                       + payload)

    def ext_chunk(self):
        magic, flags, ctype, cookie, offset, length = struct.unpack(">IHHQQQ", self.recv(32))
        assert magic == EXT_REPLY
        return flags, ctype, cookie, offset, self.recv(length)


def meta_data(name, queries):
    data = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    return data + b"".join(struct.pack(">I", len(q)) + q for q in queries)


def libnbd_still_works(sock):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///?socket={sock}")
    assert h.pread(5, MiB) == b"hello"
    h.shutdown()


def test_extended_headers(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-f", "raw", "-A", "-e", "0") as s:
        c = Client(s.sock)
        assert c.replies(OPT["EXTENDED_HEADERS"])[-1][0] == REP_ACK
        assert c.replies(OPT["EXTENDED_HEADERS"])[-1][0] == ERR_INVALID
        assert c.replies(OPT["STRUCTURED_REPLY"])[-1][0] == ERR_EXT_HEADER_REQD
        reps = c.replies(OPT["SET_META_CONTEXT"],
                         meta_data(b"", [b"base:allocation", b"qemu:allocation-depth"]))
        ids = {p[4:].decode(): struct.unpack(">I", p[:4])[0] for t, p in reps if t == REP_META}
        assert set(ids) == {"base:allocation", "qemu:allocation-depth"}
        c.go()
        assert c.flags & FLAG_BLOCK_STATUS_PAYLOAD
        # 64-bit read: data comes in an extended chunk echoing the offset.
        c.ext_request(CMD_READ, MiB, 4096, cookie=7)
        flags, ctype, cookie, offset, payload = c.ext_chunk()
        assert (flags & 1, ctype, cookie, offset) == (1, 1, 7, MiB)
        assert struct.unpack(">Q", payload[:8])[0] == MiB and payload[8:13] == b"hello"
        # Write with PAYLOAD_LEN, flush: NONE chunks.
        c.ext_request(CMD_WRITE, 2 * MiB, 4096, FLAG_PAYLOAD_LEN, 8, b"\x77" * 4096)
        assert c.ext_chunk()[:3] == (1, 0, 8)
        c.ext_request(CMD_FLUSH, 0, 0, cookie=9)
        assert c.ext_chunk()[:3] == (1, 0, 9)
        # Block status: one BLOCK_STATUS_EXT chunk per context.
        c.ext_request(CMD_BLOCK_STATUS, 0, 16 * MiB, cookie=10)
        seen = {}
        while True:
            flags, ctype, cookie, offset, payload = c.ext_chunk()
            assert ctype == 6 and cookie == 10
            ctx, count = struct.unpack(">II", payload[:8])
            seen[ctx] = [struct.unpack(">QQ", payload[8 + 16 * i:24 + 16 * i])
                         for i in range(count)]
            if flags & 1:
                break
        assert seen[ids["base:allocation"]][0] == (MiB, 3)
        assert sum(e[0] for e in seen[ids["qemu:allocation-depth"]]) == 16 * MiB
        # Block status limited to one context by a payload, effect length 64-bit.
        c.ext_request(CMD_BLOCK_STATUS, 0, 12, FLAG_PAYLOAD_LEN, 11,
                      struct.pack(">QI", 1 << 40, ids["qemu:allocation-depth"]))
        flags, ctype, cookie, offset, payload = c.ext_chunk()
        assert flags & 1 and ctype == 6
        assert struct.unpack(">I", payload[:4])[0] == ids["qemu:allocation-depth"]
        # An unknown context id in the payload: EINVAL error chunk.
        c.ext_request(CMD_BLOCK_STATUS, 0, 12, FLAG_PAYLOAD_LEN, 12, struct.pack(">QI", 4096, 99))
        flags, ctype, cookie, offset, payload = c.ext_chunk()
        assert ctype == 0x8001 and struct.unpack(">I", payload[:4])[0] == 22
        # A compact request after extended headers: the stream is lost.
        # (padded to the 32 bytes the server reads as one header)
        c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, CMD_READ, 13, 0, 512) + bytes(4))
        assert c.closed_by_server()
        libnbd_still_works(s.sock)


def test_handshake_errors_and_recovery(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-f", "raw", "-x", "disk", "-D", "desc", "-e", "0") as s:
        c = Client(s.sock)
        assert c.replies(99)[-1][0] == ERR_UNSUP
        assert c.replies(4)[-1][0] == ERR_UNSUP  # PEEK_EXPORT, withdrawn
        assert c.replies(OPT["STARTTLS"])[-1][0] == ERR_POLICY
        assert c.replies(OPT["LIST"], b"junk")[-1][0] == ERR_INVALID
        assert c.replies(OPT["SET_META_CONTEXT"],
                         meta_data(b"disk", [b"base:allocation"]))[-1][0] == ERR_INVALID
        assert c.replies(OPT["STRUCTURED_REPLY"])[-1][0] == REP_ACK
        assert c.replies(OPT["STRUCTURED_REPLY"])[-1][0] == ERR_INVALID
        # Lengths that run past the option data.
        assert c.replies(OPT["INFO"], struct.pack(">I", 50) + b"disk")[-1][0] == ERR_INVALID
        assert c.replies(OPT["LIST_META_CONTEXT"],
                         struct.pack(">I", 4) + b"disk" + struct.pack(">II", 1, 99))[-1][0] \
            == ERR_INVALID
        bad_info = struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0)
        assert c.replies(OPT["INFO"], bad_info)[-1][0] == ERR_UNKNOWN
        reps = c.replies(OPT["LIST"])
        assert reps[0][0] == REP_SERVER and reps[0][1] == struct.pack(">I", 4) + b"disk" + b"desc"
        reps = c.go(b"disk", infos=(1, 2, 3))
        kinds = [struct.unpack(">H", p[:2])[0] for t, p in reps if t == REP_INFO]
        assert kinds == [1, 2, 3, 0]
        assert c.size == 16 * MiB
        # Simple-reply READ then a bad magic: dropped.
        c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, CMD_READ, 5, MiB, 5))
        # Structured negotiated: an OFFSET_DATA chunk (20-byte header).
        magic, flags, ctype, cookie, length = struct.unpack(">IHHQI", c.recv(20))
        assert (magic, ctype, cookie) == (0x668E33EF, 1, 5)
        assert c.recv(length)[8:] == b"hello"
        c.s.sendall(b"\xde\xad\xbe\xef" * 7)
        assert c.closed_by_server()

        # Bad client flags, bad option magic, garbage: disconnect.
        assert Client(s.sock, flags=0x80).closed_by_server()
        g = Client(s.sock)
        g.s.sendall(os.urandom(64))
        assert g.closed_by_server()
        # Non-fixed newstyle clients may only send EXPORT_NAME.
        n = Client(s.sock, flags=0)
        n.option(OPT["LIST"])
        assert n.closed_by_server()
        # EXPORT_NAME of an unknown export: disconnect; of a known one: size,
        # flags and (without NO_ZEROES) 124 zero bytes.
        e = Client(s.sock)
        e.option(OPT["EXPORT_NAME"], b"nope")
        assert e.closed_by_server()
        e = Client(s.sock, flags=1)
        e.option(OPT["EXPORT_NAME"], b"disk")
        size, flags = struct.unpack(">QH", e.recv(10))
        assert size == 16 * MiB and e.recv(124) == bytes(124)
        e.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, CMD_DISC, 0, 0, 0))
        assert e.closed_by_server()
        # ABORT gets an ACK.
        a = Client(s.sock)
        assert a.replies(OPT["ABORT"])[-1][0] == REP_ACK
        h = nbd.NBD()
        h.connect_uri(s.uri_for("disk"))
        assert h.pread(5, MiB) == b"hello"
        h.shutdown()


def test_client_vanishing_mid_request(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-f", "raw", "-e", "0") as s:
        for _ in range(5):
            c = Client(s.sock)
            c.go()
            # A write whose payload never fully arrives, then many reads.
            c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, CMD_WRITE, 1, 0, 65536) + b"x" * 100)
            c.s.close()
            d = Client(s.sock)
            d.go()
            for i in range(32):
                d.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, CMD_READ, i, 0, 1 << 20))
            d.s.close()
        libnbd_still_works(s.sock)
        with open(image, "rb") as f:
            assert f.read(100) == bytes(100)  # the partial write never happened
