"""stratad's NBD server driven over QMP and its command line, checked with
real NBD clients (nbdinfo, qemu-io, qemu-img, python3-libnbd)."""
import os
import secrets
import shutil
import signal
import socket
import time

import nbd
import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon
from test_nbd_basic import short_dir


@pytest.fixture
def sockdir():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def qcow2(workdir, name="disk.qcow2", size="4M"):
    require("qemu-img")
    path = os.path.join(str(workdir), name)
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, size])
    return path


def disk_args(path, node="disk"):
    return ["--blockdev", f"driver=file,node-name={node}-file,filename={path}",
            "--blockdev", f"driver=qcow2,node-name={node},file={node}-file"]


def uri(sock, name):
    return f"nbd+unix:///{name}?socket={sock}"


def start_server(c, sock, **kwargs):
    c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}}, **kwargs)


def add_export(c, id, node, **kwargs):
    c.execute("block-export-add", type="nbd", id=id, **{"node-name": node}, **kwargs)


def map_of(context, target):
    out = run(["nbdinfo", f"--map={context}", target]).stdout
    return [tuple(int(x) for x in line.split()[:3]) for line in out.splitlines()]


def wait_event(c, name, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in c.events:
            if e["event"] == name:
                c.events.remove(e)
                return e
        c.execute("query-block-exports")  # lets events arrive
        time.sleep(0.02)
    raise TimeoutError(f"no {name} event")


def test_command_line_export_serves_data(workdir, sockdir):
    """--nbd-server and --export: nbdinfo lists the export with its
    description; qemu-io writes through it and qemu-img reads it back."""
    require("nbdinfo")
    path = qcow2(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    args = [*disk_args(path), "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=e0,node-name=disk,name=vol,writable=on,description=demo"]
    with Daemon(strata_binary("stratad"), workdir, args) as d:
        c = d.client()  # startup is over once the monitor answers
        out = run(["nbdinfo", "--list", f"nbd+unix:///?socket={sock}"]).stdout
        assert 'export="vol"' in out and "description: demo" in out
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 64k 64k", uri(sock, "vol")])
        read = run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 64k 64k", uri(sock, "vol")])
        assert "Pattern verification failed" not in read.stdout
        assert c.execute("query-block-exports") == [
            {"id": "e0", "type": "nbd", "node-name": "disk", "shutting-down": False}]
        c.execute("quit")
        assert d.proc.wait(20) == 0
    run(["qemu-img", "check", path])
    read = run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 64k 64k", path])
    assert "Pattern verification failed" not in read.stdout


def test_bitmap_and_depth_contexts_over_qmp(workdir, sockdir):
    """An export with a bitmap and allocation-depth offers both contexts; the
    bitmap is busy while exported and free again once the export is gone."""
    require("nbdinfo")
    path = qcow2(workdir)
    run(["qemu-io", "-f", "qcow2", "-c", "write 0 64k", path])
    run(["qemu-img", "bitmap", "--add", "--disable", path, "b0"])
    run(["qemu-img", "bitmap", "--enable", path, "b0"])
    run(["qemu-io", "-f", "qcow2", "-c", "write 1M 64k", path])
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        start_server(c, sock)
        add_export(c, "e0", "disk", bitmaps=["b0"], writable=True,
                   **{"allocation-depth": True})
        cls, desc = c.error("block-dirty-bitmap-remove", {"node": "disk", "name": "b0"})
        assert "in use" in desc
        out = map_of("qemu:dirty-bitmap:b0", uri(sock, "disk"))
        assert out[:2] == [(0, 1048576, 0), (1048576, 65536, 1)]
        depth = map_of("qemu:allocation-depth", uri(sock, "disk"))
        assert depth[0] == (0, 65536, 1) and depth[1][2] == 0
        c.execute("block-export-del", id="e0")
        assert wait_event(c, "BLOCK_EXPORT_DELETED")["data"] == {"id": "e0"}
        c.execute("block-dirty-bitmap-remove", node="disk", name="b0")


def test_hard_delete_disconnects_and_safe_refuses(workdir, sockdir):
    path = qcow2(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        start_server(c, sock)
        add_export(c, "e0", "disk")
        h = nbd.NBD()
        h.connect_uri(uri(sock, "disk"))
        assert len(h.pread(4096, 0)) == 4096
        assert c.error("block-export-del", {"id": "e0"})[1] == "export 'e0' still in use"
        c.execute("block-export-del", id="e0", mode="hard")
        assert wait_event(c, "BLOCK_EXPORT_DELETED")["data"] == {"id": "e0"}
        with pytest.raises(nbd.Error):
            h.pread(4096, 0)
        assert c.execute("query-block-exports") == []
        # The id and the name are free again.
        add_export(c, "e0", "disk")
        h2 = nbd.NBD()
        h2.connect_uri(uri(sock, "disk"))
        assert len(h2.pread(512, 0)) == 512


def test_writable_export_follows_snapshot(workdir, sockdir):
    """After blockdev-snapshot the export writes into the overlay, as QEMU's
    BlockBackend follows the graph change."""
    path = qcow2(workdir)
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", path])
    overlay = os.path.join(str(workdir), "overlay.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", path, "-F", "qcow2", overlay])
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        start_server(c, sock)
        add_export(c, "e0", "disk", writable=True)
        h = nbd.NBD()
        h.connect_uri(uri(sock, "disk"))
        c.execute("blockdev-add", driver="qcow2", **{"node-name": "ov"}, backing=None,
                  file={"driver": "file", "filename": overlay})
        c.execute("blockdev-snapshot", node="disk", overlay="ov")
        assert c.execute("query-block-exports")[0]["node-name"] == "ov"
        h.pwrite(b"\x22" * 65536, 0)
        h.flush()
        assert h.pread(65536, 65536) == b"\x11" * 65536
        h.shutdown()
        c.execute("quit")
        assert d.proc.wait(20) == 0
    base = run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 1M", path]).stdout
    assert "Pattern verification failed" not in base
    top = run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x22 0 64k", "-c",
               "read -P 0x11 64k 64k", overlay]).stdout
    assert "Pattern verification failed" not in top
    run(["qemu-img", "check", overlay])


@pytest.mark.parametrize("how", ["quit", "sigterm"])
def test_shutdown_closes_exports_first(workdir, sockdir, how):
    """quit and SIGTERM drop NBD clients and emit BLOCK_EXPORT_DELETED before
    the images close; the image is clean afterwards."""
    path = qcow2(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        start_server(c, sock)
        add_export(c, "e0", "disk", writable=True)
        h = nbd.NBD()
        h.connect_uri(uri(sock, "disk"))
        h.pwrite(b"\x33" * 4096, 0)
        if how == "quit":
            c.request("quit")
        else:
            d.proc.send_signal(signal.SIGTERM)
        events = []
        try:
            while True:
                events.append(c.read_message())
        except (ConnectionError, OSError):
            pass
        assert d.proc.wait(20) == 0
        names = [e.get("event") for e in events + c.events]
        assert "BLOCK_EXPORT_DELETED" in names
    run(["qemu-img", "check", path])
    assert "Pattern verification failed" not in run(
        ["qemu-io", "-f", "qcow2", "-c", "read -P 0x33 0 4k", path]).stdout


def test_handshake_timeout_drops_silent_clients(workdir, sockdir):
    """A client that connects and says nothing is dropped after
    handshake-max-seconds; a client negotiating meanwhile is served."""
    path = qcow2(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        start_server(c, sock, **{"handshake-max-seconds": 1})
        add_export(c, "e0", "disk")
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(sock)
        silent.settimeout(10)
        start = time.time()
        greeting = silent.recv(18)
        assert greeting[:8] == b"NBDMAGIC"
        h = nbd.NBD()
        h.connect_uri(uri(sock, "disk"))
        while silent.recv(4096):
            pass
        elapsed = time.time() - start
        assert 0.5 < elapsed < 5
        assert len(h.pread(4096, 0)) == 4096  # served past the deadline


def alice_psk(workdir):
    """A tls-creds-psk directory with a fresh key for user alice: (dir, keys.psk)."""
    pskdir = os.path.join(str(workdir), "psk")
    os.makedirs(pskdir)
    psk_file = os.path.join(pskdir, "keys.psk")
    with open(psk_file, "w") as f:
        f.write(f"alice:{secrets.token_hex(32)}\n")
    return pskdir, psk_file


def test_handshake_timeout_drops_client_stalled_in_starttls(workdir, sockdir):
    """A client that asks for STARTTLS, gets the ACK, then sends the first
    byte of a TLS record and nothing more is dropped after
    handshake-max-seconds like any silent client; a TLS client is served."""
    import struct
    from test_nbd_tls import tls_handle
    from test_nbd_basic import free_port
    path = qcow2(workdir)
    pskdir, psk_file = alice_psk(workdir)
    port = free_port()
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        c.execute("object-add", **{"qom-type": "tls-creds-psk"}, id="tls0", dir=pskdir,
                  endpoint="server", username="alice")
        c.execute("nbd-server-start", addr={"type": "inet", "data": {
            "host": "127.0.0.1", "port": str(port)}},
            **{"tls-creds": "tls0", "handshake-max-seconds": 1})
        add_export(c, "e0", "disk", name="")
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        start = time.time()
        greeting = stalled.recv(18, socket.MSG_WAITALL)
        assert greeting[:16] == b"NBDMAGICIHAVEOPT"
        stalled.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
        stalled.sendall(b"IHAVEOPT" + struct.pack(">II", 5, 0))  # NBD_OPT_STARTTLS
        reply = stalled.recv(20, socket.MSG_WAITALL)
        assert struct.unpack(">QIII", reply)[1:] == (5, 1, 0)  # NBD_REP_ACK
        stalled.sendall(b"\x16")  # a handshake record begins, and stops
        h = tls_handle(port, psk=psk_file, username="alice")
        while stalled.recv(4096):
            pass
        elapsed = time.time() - start
        assert 0.5 < elapsed < 5
        assert len(h.pread(4096, 0)) == 4096  # served past the deadline


def test_max_connections_one(workdir, sockdir):
    """max-connections=1: a second client is not served while the first is
    connected, and multi-conn is not advertised."""
    path = qcow2(workdir)
    sock = os.path.join(sockdir, "nbd.sock")
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        start_server(c, sock, **{"max-connections": 1})
        add_export(c, "e0", "disk")
        h = nbd.NBD()
        h.connect_uri(uri(sock, "disk"))
        assert not h.can_multi_conn()
        second = socket.socket(socket.AF_UNIX)
        second.connect(sock)
        second.settimeout(0.5)
        with pytest.raises(socket.timeout):
            second.recv(18)
        h.shutdown()
        second.settimeout(10)
        assert second.recv(8) == b"NBDMAGIC"


def test_stratad_nbd_server_errors(workdir, sockdir):
    """Bad --nbd-server / --export arguments stop stratad with QEMU's
    messages."""
    sock = os.path.join(sockdir, "nbd.sock")
    # Run without a monitor and wait for the exit: waiting for a monitor
    # socket races with the exit (the socket may appear first).
    for args, message in (
            (["--blockdev", "driver=null-co,node-name=n0",
              "--export", "type=nbd,id=e0,node-name=n0"], "NBD server not running"),
            (["--nbd-server", f"addr.type=unix,addr.path={sock},tls-creds=nosuch"],
             "No TLS credentials with id 'nosuch'")):
        r = run([strata_binary("stratad"), *args], check=False, timeout=30)
        assert r.returncode != 0
        assert message in r.stderr


def test_tls_psk_through_object_add(workdir):
    """object-add tls-creds-psk and nbd-server-start tls-creds: only a client
    with the key is served."""
    from test_nbd_basic import free_port
    from test_nbd_tls import tls_handle
    path = qcow2(workdir)
    pskdir, psk_file = alice_psk(workdir)
    port = free_port()
    with Daemon(strata_binary("stratad"), workdir, disk_args(path)) as d:
        c = d.client()
        assert "keys.psk" in c.error("object-add", {
            "qom-type": "tls-creds-psk", "id": "bad", "dir": str(workdir),
            "endpoint": "server"})[1]
        c.execute("object-add", **{"qom-type": "tls-creds-psk"}, id="tls0", dir=pskdir,
                  endpoint="server", username="alice")
        c.execute("nbd-server-start", addr={"type": "inet", "data": {
            "host": "127.0.0.1", "port": str(port)}}, **{"tls-creds": "tls0"})
        add_export(c, "e0", "disk", name="")
        h = tls_handle(port, psk=psk_file, username="alice")
        assert h.get_tls_negotiated()
        assert len(h.pread(4096, 0)) == 4096
        h.shutdown()
        plain = nbd.NBD()
        with pytest.raises(nbd.Error):
            plain.connect_tcp("127.0.0.1", str(port))
