"""strata-nbd driven by python3-libnbd: every command with and without
structured replies, sparse and DF reads, block status with REQ_ONE, errors
with libnbd's own checks switched off (bad requests reach the server), and
multi-conn flush consistency."""
import errno
import os

import pytest

from test_nbd_basic import make_chain, make_raw, serve

import nbd  # python3-libnbd

MiB = 1 << 20


def connect(uri, structured=True, contexts=("base:allocation",), strict=True):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    for c in contexts:
        h.add_meta_context(c)
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(uri)
    return h


def extents_of(h, length, offset=0, flags=0, context="base:allocation"):
    got = {}

    def cb(metacontext, off, entries, err):
        got.setdefault(metacontext, []).append((off, list(entries)))
        return 0

    h.block_status(length, offset, cb, flags)
    return got.get(context, [])


@pytest.mark.parametrize("structured", [True, False])
def test_all_commands(workdir, structured):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-f", "raw", "--discard=unmap") as s:
        h = connect(s.uri, structured=structured)
        assert h.get_structured_replies_negotiated() == structured
        assert h.can_meta_context("base:allocation") == structured
        assert h.get_size() == 16 * MiB
        h.pwrite(b"\x42" * 65536, 2 * MiB, nbd.CMD_FLAG_FUA)
        assert h.pread(65536, 2 * MiB) == b"\x42" * 65536
        h.zero(65536, 2 * MiB, nbd.CMD_FLAG_NO_HOLE)
        assert h.pread(65536, 2 * MiB) == bytes(65536)
        h.pwrite(b"\x43" * 8192, 3 * MiB)
        h.zero(8192, 3 * MiB)
        assert h.pread(8192, 3 * MiB) == bytes(8192)
        h.pwrite(b"\x44" * 4096, 4 * MiB)
        h.trim(1 * MiB, 4 * MiB)
        h.flush()
        h.cache(MiB, 0)
        assert h.pread(5, 1 * MiB) == b"hello"
        if structured:
            ext = extents_of(h, 16 * MiB)
            assert ext and ext[0][1][0] == 1 * MiB  # hole up to the data at 1 MiB
            one = extents_of(h, 16 * MiB, flags=nbd.CMD_FLAG_REQ_ONE)
            assert len(one[0][1]) == 2  # one (length, flags) pair
        h.shutdown()


def test_sparse_and_df_reads(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-r", "-f", "raw") as s:
        h = connect(s.uri)
        chunks = []

        def chunk(buf, offset, status, err):
            chunks.append((offset, len(buf), status))
            return 0

        buf = h.pread_structured(4 * MiB, 0, chunk)
        assert buf[MiB:MiB + 5] == b"hello" and buf[:MiB] == bytes(MiB)
        kinds = {c[2] for c in chunks}
        assert nbd.READ_HOLE in kinds and nbd.READ_DATA in kinds
        assert sum(c[1] for c in chunks) == 4 * MiB
        chunks.clear()
        buf2 = h.pread_structured(4 * MiB, 0, chunk, nbd.CMD_FLAG_DF)
        assert buf2 == buf
        assert len(chunks) == 1 and chunks[0][2] == nbd.READ_DATA
        h.shutdown()


def test_requests_in_flight_complete_out_of_order(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-f", "raw") as s:
        h = connect(s.uri)
        bufs = []
        for i in range(64):
            b = nbd.Buffer(65536)
            h.aio_pread(b, (i % 32) * 65536 * 4)
            bufs.append(b)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for i in range(64):
            h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([i]) * 4096), i * 4096)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for i in range(64):
            assert h.pread(4096, i * 4096) == bytes([i]) * 4096
        h.shutdown()


def expect_error(fn, code):
    with pytest.raises(nbd.Error) as e:
        fn()
    assert e.value.errnum == code, e.value


def test_bad_requests_get_errors_and_connection_survives(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-r", "-f", "raw", "-e", "2") as s:
        h = connect(s.uri, strict=False)
        plain = connect(s.uri, structured=False, contexts=(), strict=False)
        expect_error(lambda: h.pwrite(b"x" * 512, 0), errno.EPERM)
        expect_error(lambda: h.trim(512, 0), errno.EPERM)
        expect_error(lambda: h.zero(512, 0), errno.EPERM)
        expect_error(lambda: h.pread(4096, 16 * MiB), errno.EINVAL)
        expect_error(lambda: h.pread(4096, 16 * MiB - 512), errno.EINVAL)
        expect_error(lambda: h.pread(33 * MiB, 0), errno.EOVERFLOW)
        expect_error(lambda: plain.pread(33 * MiB, 0), errno.EINVAL)
        expect_error(lambda: h.pread(512, 0, 0x80), errno.EINVAL)  # unknown flag
        expect_error(lambda: extents_of(plain, 4096), errno.EINVAL)  # no context negotiated
        expect_error(lambda: extents_of(h, 4096, offset=16 * MiB), errno.EINVAL)
        # Both connections still work.
        assert h.pread(5, MiB) == b"hello" and plain.pread(5, MiB) == b"hello"
        h.shutdown()
        plain.shutdown()


def test_oversized_write_is_drained_or_dropped(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 64)
    with serve(image, "-f", "raw", "-e", "2") as s:
        h = connect(s.uri, strict=False)
        expect_error(lambda: h.pwrite(b"\1" * (40 * MiB), 0), errno.EINVAL)
        assert h.pread(5, MiB) == b"hello"
        expect_error(lambda: h.pwrite(b"\1" * (16 * MiB), 60 * MiB), errno.ENOSPC)
        assert h.pread(5, MiB) == b"hello"
        h.shutdown()
        g = connect(s.uri, strict=False)
        with pytest.raises(nbd.Error):
            g.pwrite(b"\2" * (65 * MiB), 0)  # beyond what we drain: disconnected
        other = connect(s.uri)
        assert other.pread(5, MiB) == b"hello"
        other.shutdown()


def test_multi_conn_flush_consistency(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    with serve(image, "-f", "raw", "-e", "4") as s:
        handles = [connect(s.uri) for _ in range(4)]
        assert all(h.can_multi_conn() for h in handles)
        for i, h in enumerate(handles):
            h.pwrite(bytes([0x60 + i]) * 65536, i * 65536)
        handles[3].flush()
        for i in range(4):
            for h in handles:
                assert h.pread(65536, i * 65536) == bytes([0x60 + i]) * 65536
        for h in handles:
            h.shutdown()
    with open(image, "rb") as f:
        assert f.read(65536) == b"\x60" * 65536


def test_list_and_meta_context_queries(workdir):
    _, top = make_chain(workdir)
    with serve(top, "-r", "-f", "qcow2", "-A", "-x", "chain", "-D", "backing chain") as s:
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.connect_uri(s.uri)
        names = []
        h.opt_list(lambda name, desc: names.append((name, desc)) or 0)
        assert names == [("chain", "backing chain")]
        h.set_export_name("chain")
        found = []
        h.opt_list_meta_context(lambda name: found.append(name) or 0)
        assert found == ["base:allocation", "qemu:allocation-depth"]
        for query, expect in (("qemu:", ["qemu:allocation-depth"]),
                              ("base:", ["base:allocation"]),
                              ("x-unknown:", []),
                              ("qemu:dirty-bitmap:", [])):
            h.clear_meta_contexts()
            h.add_meta_context(query)
            found = []
            h.opt_list_meta_context(lambda name: found.append(name) or 0)
            assert found == expect, query
        h.clear_meta_contexts()
        h.add_meta_context("qemu:allocation-depth")
        h.opt_go()
        assert h.can_meta_context("qemu:allocation-depth")
        assert not h.can_meta_context("base:allocation")
        ext = extents_of(h, 4 * MiB, context="qemu:allocation-depth")
        assert ext[0][1][:2] == [512 * 1024, 2]
        h.shutdown()
