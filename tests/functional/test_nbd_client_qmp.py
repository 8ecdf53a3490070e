"""The NBD client driver inside stratad, driven over QMP: TLS with PSK and
X.509 credentials against qemu-nbd, the link state in query-named-block-nodes
during a reconnect, and blockdev-reopen between read-only and read-write.
Data going through the driver is checked over a second NBD hop: stratad
exports the nbd node and qemu-io reads and writes that export, while the
image file behind qemu-nbd is read directly."""
import os
import secrets
import shutil
import subprocess
import time

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon, QmpError
from test_nbd_basic import short_dir
from test_nbd_client import nbd_server, qemu_io, wait_for_socket, stop
from test_nbd_tls import make_x509

MiB = 1 << 20


@pytest.fixture
def sockdir():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def raw_with_pattern(workdir, size=8 * MiB):
    """A raw image whose second MiB holds 0x5a."""
    path = os.path.join(str(workdir), "disk.raw")
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(MiB)
        f.write(b"\x5a" * MiB)
    return path


def psk_dir(workdir, name, key, user="alice"):
    d = os.path.join(str(workdir), name)
    os.makedirs(d)
    with open(os.path.join(d, "keys.psk"), "w") as f:
        f.write(f"{user}:{key}\n")
    return d


def nbd_node(sock, name="remote", **extra):
    opts = {"driver": "nbd", "node-name": name, "export": "exp",
            "server": {"type": "unix", "path": sock}}
    opts.update(extra)
    return opts


def export_node(c, sock, node="remote", writable=True):
    """Serves `node` from stratad on `sock` as export "out"."""
    c.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    c.execute("block-export-add", type="nbd", id="out", **{"node-name": node},
              name="out", writable=writable)
    return f"nbd+unix:///out?socket={sock}"


def node_info(c, name):
    return next(n for n in c.execute("query-named-block-nodes") if n["node-name"] == name)


def qemu_io_ro(target, *commands, check=True):
    cmd = ["qemu-io", "-r", "-f", "raw"]
    for c in commands:
        cmd += ["-c", c]
    return run(cmd + [target], check=check)


def read_file(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_tls_psk_against_qemu_nbd(workdir, sockdir):
    require("qemu-nbd")
    image = raw_with_pattern(workdir)
    key = secrets.token_hex(32)
    server_keys = psk_dir(workdir, "server", key)
    client_keys = psk_dir(workdir, "client", key)
    wrong_keys = psk_dir(workdir, "wrong", secrets.token_hex(32))
    sock = os.path.join(sockdir, "s")
    tls = [f"--object=tls-creds-psk,id=tls0,endpoint=server,dir={server_keys}",
           "--tls-creds=tls0"]
    with nbd_server("qemu-nbd", image, sock=sock, extra=tls), \
            Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        for id, keys in (("good", client_keys), ("bad", wrong_keys)):
            c.execute("object-add", **{"qom-type": "tls-creds-psk"}, id=id, dir=keys,
                      endpoint="client", username="alice")
        # Wrong key: the server drops the TLS handshake; the open fails with
        # a message that says so and the daemon carries on.
        cls, desc = c.error("blockdev-add", nbd_node(sock, "wrong", **{"tls-creds": "bad"}))
        assert cls == "GenericError" and "TLS handshake failed" in desc, desc
        # Without TLS the server turns the client away.
        cls, desc = c.error("blockdev-add", nbd_node(sock, "plain"))
        assert "TLS" in desc, desc
        c.execute("blockdev-add", **nbd_node(sock, **{"tls-creds": "good"}))
        out = export_node(c, os.path.join(sockdir, "out"))
        check = qemu_io(out, "read -P 0x5a 1M 1M", "read -P 0 0 1M",
                        "write -P 0xc3 4M 512k", "flush")
        assert "Pattern verification failed" not in check.stdout, check.stdout
        assert "wrote 524288/524288" in check.stdout, check.stdout
        assert read_file(image, 4 * MiB, 512 << 10) == b"\xc3" * (512 << 10)
        names = [n["node-name"] for n in c.execute("query-named-block-nodes")]
        assert "wrong" not in names and "plain" not in names


def test_tls_x509_against_qemu_nbd(workdir, sockdir):
    """qemu-nbd with tls-creds-x509 and verify-peer=on: stratad connects with
    its client certificate, checks the server's name when tls-hostname is
    given, and refuses a server signed by another CA."""
    require("qemu-nbd")
    image = raw_with_pattern(workdir)
    certs = make_x509(os.path.join(str(workdir), "pki"))
    other = make_x509(os.path.join(str(workdir), "other-pki"))
    sock = os.path.join(sockdir, "s")
    tls = [f"--object=tls-creds-x509,id=tls0,endpoint=server,dir={certs},verify-peer=on",
           "--tls-creds=tls0"]
    with nbd_server("qemu-nbd", image, sock=sock, extra=tls), \
            Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        for id, pki in (("good", certs), ("foreign", other)):
            c.execute("object-add", **{"qom-type": "tls-creds-x509"}, id=id, dir=pki,
                      endpoint="client")
        cls, desc = c.error("blockdev-add", nbd_node(sock, "foreign", **{"tls-creds": "foreign"}))
        assert cls == "GenericError" and "TLS" in desc, desc
        cls, desc = c.error("blockdev-add", nbd_node(
            sock, "misnamed", **{"tls-creds": "good", "tls-hostname": "elsewhere.example"}))
        assert cls == "GenericError" and "TLS" in desc, desc
        c.execute("blockdev-add", **nbd_node(sock, **{"tls-creds": "good",
                                                    "tls-hostname": "localhost"}))
        out = export_node(c, os.path.join(sockdir, "out"))
        check = qemu_io(out, "read -P 0x5a 1M 1M", "write -P 0x3c 2M 256k", "flush")
        assert "Pattern verification failed" not in check.stdout, check.stdout
        assert read_file(image, 2 * MiB, 256 << 10) == b"\x3c" * (256 << 10)
        names = [n["node-name"] for n in c.execute("query-named-block-nodes")]
        assert "foreign" not in names and "misnamed" not in names


def test_state_reported_during_reconnect(workdir, sockdir):
    require("qemu-nbd")
    image = raw_with_pattern(workdir)
    sock = os.path.join(sockdir, "s")
    with Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        with nbd_server("qemu-nbd", image, sock=sock):
            c.execute("blockdev-add", **nbd_node(sock, **{"reconnect-delay": 3}))
            assert node_info(c, "remote")["x-link-state"] == "connected"
        # The server is gone: requests would wait, the node says so.
        deadline = time.time() + 10
        while node_info(c, "remote")["x-link-state"] == "connected":
            assert time.time() < deadline, "the lost connection was not noticed"
            time.sleep(0.05)
        assert node_info(c, "remote")["x-link-state"] == "reconnecting"
        with nbd_server("qemu-nbd", image, sock=sock):
            deadline = time.time() + 10
            while node_info(c, "remote")["x-link-state"] != "connected":
                assert time.time() < deadline, "no reconnection"
                time.sleep(0.05)
            out = export_node(c, os.path.join(sockdir, "out"))
            check = qemu_io(out, "read -P 0x5a 1M 64k")
            assert "Pattern verification failed" not in check.stdout, check.stdout
        # Gone for longer than the delay: requests fail, the node says so.
        deadline = time.time() + 15
        while node_info(c, "remote")["x-link-state"] != "failed":
            assert time.time() < deadline, "the node did not give up"
            time.sleep(0.1)
        failed = qemu_io(out, "read 0 4k", check=False)
        assert "Input/output error" in failed.stdout + failed.stderr, failed


def test_reopen_read_only_and_back(workdir, sockdir):
    require("qemu-nbd")
    image = raw_with_pattern(workdir)
    sock = os.path.join(sockdir, "s")
    with nbd_server("qemu-nbd", image, sock=sock), \
            Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        c.execute("blockdev-add", **nbd_node(sock))
        assert node_info(c, "remote")["ro"] is False
        c.execute("blockdev-reopen", options=[nbd_node(sock, **{"read-only": True})])
        assert node_info(c, "remote")["ro"] is True
        # A read-only node can only be exported read-only.
        out = export_node(c, os.path.join(sockdir, "out"), writable=False)
        denied = qemu_io(out, "write -P 0x11 0 4k", check=False)
        assert "wrote" not in denied.stdout
        check = qemu_io_ro(out, "read -P 0x5a 1M 4k")
        assert "Pattern verification failed" not in check.stdout
        c.execute("blockdev-reopen", options=[nbd_node(sock)])
        assert node_info(c, "remote")["ro"] is False
        c.execute("block-export-add", type="nbd", id="out2", **{"node-name": "remote"},
                  name="out2", writable=True)
        out2 = out.replace("/out?", "/out2?")
        wrote = qemu_io(out2, "write -P 0x11 0 4k", "flush")
        assert "wrote 4096/4096" in wrote.stdout, wrote.stdout
    assert read_file(image, 0, 4096) == b"\x11" * 4096


def test_reopen_read_write_refused_on_read_only_export(workdir, sockdir):
    require("qemu-nbd")
    image = raw_with_pattern(workdir)
    sock = os.path.join(sockdir, "s")
    with nbd_server("qemu-nbd", image, sock=sock, extra=["-r"]), \
            Daemon(strata_binary("stratad"), workdir) as d:
        c = d.client()
        c.execute("blockdev-add", **nbd_node(sock, **{"read-only": True}))
        cls, desc = c.error("blockdev-reopen", {"options": [nbd_node(sock)]})
        assert cls == "GenericError"
        assert "read-only" in desc, desc
        assert node_info(c, "remote")["ro"] is True
        out = export_node(c, os.path.join(sockdir, "out"), writable=False)
        check = qemu_io_ro(out, "read -P 0x5a 1M 4k")
        assert "Pattern verification failed" not in check.stdout
