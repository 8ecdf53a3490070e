"""TLS: strata-nbd with QEMU-style tls-creds-x509 and tls-creds-psk objects,
checked with python3-libnbd and nbdinfo (GnuTLS on the client side).
Certificates and keys are made here with openssl."""
import os
import secrets
import subprocess

import nbd  # python3-libnbd
import pytest

from conftest import require, run
from test_nbd_basic import make_raw, serve

MiB = 1 << 20


def openssl(*args, cwd):
    run(["openssl", *args], cwd=cwd)


def make_x509(dirpath):
    """ca-cert.pem, server-cert.pem/server-key.pem for localhost and
    client-cert.pem/client-key.pem, all signed by the CA."""
    require("openssl")
    os.makedirs(dirpath, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca-key.pem", "-out", "ca-cert.pem", cwd=dirpath)
    ext = os.path.join(dirpath, "ext.cnf")
    with open(ext, "w") as f:
        f.write("[server]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
                "[client]\nextendedKeyUsage=clientAuth\n"
                "keyUsage=digitalSignature,keyEncipherment\n")
    for who, cn in (("server", "localhost"), ("client", "client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{who}-key.pem", "-out", f"{who}.csr", cwd=dirpath)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-extensions", who,
                "-out", f"{who}-cert.pem", cwd=dirpath)
    return dirpath


def tls_handle(port, certs=None, psk=None, username=None, tls=None):
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE if tls is None else tls)
    if certs:
        h.set_tls_certificates(certs)
    if psk:
        h.set_tls_psk_file(psk)
        h.set_tls_username(username)
    h.add_meta_context("base:allocation")
    h.connect_tcp("localhost", str(port))
    return h


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_x509(str(tmp_path_factory.mktemp("pki")))


def test_x509(workdir, certs):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    obj = f"tls-creds-x509,id=tls0,dir={certs},endpoint=server,verify-peer=on"
    with serve(image, "-f", "raw", "-e", "0", "--object", obj, "--tls-creds", "tls0",
               tcp=True) as s:
        h = tls_handle(s.port, certs=certs)
        assert h.get_tls_negotiated()
        assert h.pread(5, MiB) == b"hello"
        h.pwrite(b"\x33" * (4 * MiB), 8 * MiB)
        assert h.pread(4 * MiB, 8 * MiB) == b"\x33" * (4 * MiB)
        h.flush()
        got = []
        h.block_status(16 * MiB, 0, lambda ctx, off, ents, err: got.extend(ents) or 0)
        assert got[:2] == [MiB, 3]
        h.shutdown()
        # FORCEDTLS: a client without TLS gets nowhere.
        plain = nbd.NBD()
        plain.set_tls(nbd.TLS_DISABLE)
        with pytest.raises(nbd.Error):
            plain.connect_tcp("localhost", str(s.port))
        # With verify-peer, a client without a certificate is refused.
        anon = os.path.join(workdir, "anon")
        os.makedirs(anon)
        os.symlink(os.path.join(certs, "ca-cert.pem"), os.path.join(anon, "ca-cert.pem"))
        with pytest.raises(nbd.Error):
            tls_handle(s.port, certs=anon)
        # nbdinfo agrees, over an nbds:// URI.
        out = run(["nbdinfo", f"nbds://localhost:{s.port}/?tls-certificates={certs}"]).stdout
        assert "with TLS" in out and "export-size: 16777216" in out


def test_x509_without_client_verification(workdir, certs):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    anon = os.path.join(workdir, "anon")
    os.makedirs(anon)
    os.symlink(os.path.join(certs, "ca-cert.pem"), os.path.join(anon, "ca-cert.pem"))
    obj = f"tls-creds-x509,id=tls0,dir={certs},endpoint=server,verify-peer=off"
    with serve(image, "-r", "-f", "raw", "--object", obj, "--tls-creds", "tls0", tcp=True) as s:
        h = tls_handle(s.port, certs=anon)
        assert h.pread(5, MiB) == b"hello"
        h.shutdown()


def test_psk(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    pskdir = os.path.join(workdir, "psk")
    os.makedirs(pskdir)
    key = secrets.token_hex(32)
    psk_file = os.path.join(pskdir, "keys.psk")
    with open(psk_file, "w") as f:
        f.write(f"alice:{key}\n")
    obj = f"tls-creds-psk,id=tls0,dir={pskdir},endpoint=server,username=alice"
    with serve(image, "-f", "raw", "-e", "0", "--object", obj, "--tls-creds", "tls0",
               tcp=True) as s:
        h = tls_handle(s.port, psk=psk_file, username="alice")
        assert h.get_tls_negotiated()
        data = os.urandom(MiB)
        h.pwrite(data, 3 * MiB)
        assert h.pread(MiB, 3 * MiB) == data
        h.shutdown()
        wrong = os.path.join(workdir, "wrong.psk")
        with open(wrong, "w") as f:
            f.write(f"alice:{secrets.token_hex(32)}\n")
        with pytest.raises(nbd.Error):
            tls_handle(s.port, psk=wrong, username="alice")
        # The server is still serving.
        h = tls_handle(s.port, psk=psk_file, username="alice")
        assert h.pread(5, MiB) == b"hello"
        h.shutdown()


def test_bad_tls_configuration(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 8)
    from conftest import strata_binary
    r = run([strata_binary("strata-nbd"), "-f", "raw", "--tls-creds", "nope", "-k",
             os.path.join(workdir, "s"), image], check=False, timeout=20)
    assert r.returncode == 1 and "nope" in r.stderr
    r = run([strata_binary("strata-nbd"), "-f", "raw", "--object",
             f"tls-creds-x509,id=t,dir={workdir},endpoint=server", "--tls-creds", "t", "-k",
             os.path.join(workdir, "s"), image], check=False, timeout=20)
    assert r.returncode == 1 and "server-cert.pem" in r.stderr
