"""strata-nbd's options beside qemu-nbd's: --aio, -n/--nocache, -L/--list,
--image-opts, -T/--trace and --tls-authz with authz-simple, authz-list and
authz-list-file objects. Refusals are compared message for message; served
exports are compared through nbdinfo and libnbd; -L is compared with
qemu-nbd -L against both servers."""
import json
import os
import shutil
import subprocess

import nbd  # python3-libnbd
import pytest

from conftest import require, run, strata_binary
from test_nbd_basic import make_raw, serve, short_dir

MiB = 1 << 20


def both_exit(args, timeout=20):
    """Runs both servers with `args` where they must exit at once; returns
    (qemu, strata) as (rc, stderr with the program name replaced)."""
    out = []
    for prog in ("qemu-nbd", strata_binary("strata-nbd")):
        res = subprocess.run([prog, *args], capture_output=True, text=True, timeout=timeout)
        name = os.path.basename(prog)
        out.append((res.returncode, res.stderr.replace(name + ":", "PROG:")))
    return out


@pytest.fixture(scope="module")
def qcow2_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    raw = make_raw(os.path.join(d, "src.raw"), 16)
    image = os.path.join(d, "disk.qcow2")
    run(["qemu-img", "convert", "-O", "qcow2", raw, image])
    run(["qemu-img", "bitmap", "--add", image, "b0"])
    return image


def test_refusals_match_qemu_nbd(qcow2_image, tmp_path):
    require("qemu-nbd")
    sockdir = short_dir()
    sock = os.path.join(sockdir, "s")
    img = qcow2_image
    cases = [
        ["--aio=foo", img],
        ["--aio=threads", "--aio=native", img],
        ["-n", "--cache=none", img],
        ["--nocache", "-n", img],
        ["--cache=foo", img],
        ["-L", img],
        ["-L", "-x", "e"],
        ["-L", "-n"],
        ["-L", "--aio=threads"],
        ["-L", "--fork"],
        ["-L", "-k", os.path.join(str(tmp_path), "nothere.sock")],
        ["--image-opts", "-f", "qcow2", img],
        ["--tls-authz=a0", img],
        ["-k", sock, "-f", "qcow2", "--aio=native", img],
        ["-k", sock, "--object", "authz-simple,id=a0", img],
        ["-k", sock, "--object", "authz-simple,id=a0,identity=x,foo=1", img],
        ["-k", sock, "--object", "authz-list,id=a0,policy=maybe", img],
        ["-k", sock, "--object",
         '{"qom-type": "authz-list", "id": "a0", "rules": [{"match": "x", "policy": "bad"}]}',
         img],
        ["-k", sock, "--object", '{"qom-type": "authz-simple", "id": "a0"}', img],
    ]
    try:
        for args in cases:
            qemu, strata = both_exit(args)
            assert strata == qemu, args
            assert qemu[0] != 0, args
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def export_view(uri):
    """What a client sees of an export: nbdinfo's export facts and a hash
    of the contents."""
    info = json.loads(run(["nbdinfo", "--json", uri]).stdout)["exports"][0]
    keys = ("export-size", "is_read_only", "can_flush", "can_fua", "can_trim", "can_zero",
            "can_multi_conn", "can_cache", "can_fast_zero")
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    data = b"".join(h.pread(min(4 * MiB, size - off), off) for off in range(0, size, 4 * MiB))
    h.shutdown()
    return {k: info.get(k) for k in keys}, data


@pytest.mark.parametrize("args", [
    ["-f", "qcow2", "--aio=threads"],
    ["-f", "qcow2", "--aio=io_uring"],
    ["-f", "qcow2", "-n"],
    ["-f", "qcow2", "--nocache", "--aio=native"],
    ["-f", "qcow2", "--cache=writeback", "--aio=threads", "-r"],
    ["--image-opts"],
    ["--image-opts", "-r"],
    ["-f", "qcow2", "-T", "nbd_*"],
], ids=lambda a: " ".join(a))
def test_accepted_options_serve_as_qemu_nbd(qcow2_image, args):
    require("nbdinfo")
    image = qcow2_image
    if "--image-opts" in args:
        # file.driver is left for the server to infer, as qemu-nbd does.
        image = f"driver=qcow2,file.filename={qcow2_image}"
    views = []
    for server in ("qemu", "strata"):
        with serve(image, *args, server=server) as s:
            views.append(export_view(s.uri))
    assert views[1] == views[0]


def test_image_opts_probes_the_format(qcow2_image):
    """Without driver= the format is probed, as qemu-nbd does."""
    views = []
    for server in ("qemu", "strata"):
        with serve(f"file.filename={qcow2_image}", "--image-opts", server=server) as s:
            views.append(export_view(s.uri))
    assert views[1] == views[0]
    assert views[0][0]["export-size"] == 16 * MiB


def list_with(prog, *args):
    res = subprocess.run([prog, "-L", *args], capture_output=True, text=True, timeout=30)
    return res.returncode, res.stdout, res.stderr.replace(os.path.basename(prog) + ":", "PROG:")


def test_list_as_qemu_nbd(qcow2_image):
    """strata-nbd -L prints what qemu-nbd -L prints, against either server."""
    require("qemu-nbd")
    for server in ("qemu", "strata"):
        with serve(qcow2_image, "-f", "qcow2", "-x", "disk", "-D", "a described export", "-B",
                   "b0", "-A", "-e", "2", server=server) as s:
            theirs = list_with("qemu-nbd", "-k", s.sock)
            ours = list_with(strata_binary("strata-nbd"), "-k", s.sock)
            assert ours == theirs, server
            assert theirs[0] == 0 and " export: 'disk'" in theirs[1]
            assert "qemu:dirty-bitmap:b0" in theirs[1]
        with serve(qcow2_image, "-f", "qcow2", "-r", server=server, tcp=True) as s:
            theirs = list_with("qemu-nbd", "-b", "127.0.0.1", "-p", str(s.port))
            ours = list_with(strata_binary("strata-nbd"), "-b", "127.0.0.1", "-p", str(s.port))
            assert ours == theirs, server
            assert "readonly" in theirs[1]


def make_pki(d):
    """A CA, a server certificate for localhost and a client certificate
    whose subject has several attributes (so their order shows)."""
    require("openssl")
    os.makedirs(d, exist_ok=True)

    def openssl(*args):
        run(["openssl", *args], cwd=d)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca-key.pem", "-out", "ca-cert.pem")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("[server]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\n[client]\nextendedKeyUsage=clientAuth\n")
    for who, subj in (("server", "/CN=localhost"), ("client", "/C=GB/O=Example Org/CN=client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", f"{who}-key.pem",
                "-out", f"{who}.csr")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-extensions", who,
                "-out", f"{who}-cert.pem")
    return d


# The subject as qemu-nbd (GnuTLS) names it: the certificate's own order.
CLIENT_DN = "C=GB,O=Example Org,CN=client"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def tls_client_ok(sock, pki_dir=None, psk=None, username=None):
    """Whether a libnbd client gets through TLS (and the server's check)."""
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    if pki_dir:
        h.set_tls_certificates(pki_dir)
    if psk:
        h.set_tls_psk_file(psk)
        h.set_tls_username(username)
    try:
        h.connect_unix(sock)
        h.pread(512, 0)
        h.shutdown()
        return True
    except nbd.Error:
        return False


def x509_args(pki_dir, authz_object):
    return ["-f", "qcow2", "--object",
            f"tls-creds-x509,id=t0,dir={pki_dir},endpoint=server,verify-peer=on",
            "--object", authz_object, "--tls-creds=t0", "--tls-authz=a0"]


AUTHZ_CASES = [
    ("authz-simple,id=a0,identity=" + CLIENT_DN.replace(",", ",,"), True),
    ("authz-simple,id=a0,identity=CN=someone else", False),
    (json.dumps({"qom-type": "authz-list", "id": "a0", "policy": "deny",
                 "rules": [{"match": "C=GB,*,CN=client", "policy": "allow", "format": "glob"}]}),
     True),
    (json.dumps({"qom-type": "authz-list", "id": "a0", "policy": "allow",
                 "rules": [{"match": CLIENT_DN, "policy": "deny"}]}), False),
    ("authz-list,id=a0,policy=allow", True),
]


@pytest.mark.parametrize("authz,allowed", AUTHZ_CASES, ids=[str(i) for i in range(len(AUTHZ_CASES))])
def test_tls_authz_x509_as_qemu_nbd(qcow2_image, pki, authz, allowed):
    require("qemu-nbd")
    for server in ("qemu", "strata"):
        with serve(qcow2_image, *x509_args(pki, authz), server=server) as s:
            assert tls_client_ok(s.sock, pki_dir=pki) == allowed, (server, authz)


def test_tls_authz_psk(qcow2_image, tmp_path):
    """With PSK, --tls-authz checks the client's identity (docs: authz-psk;
    qemu-nbd 7.2 lets every PSK client in)."""
    d = str(tmp_path)
    with open(os.path.join(d, "keys.psk"), "w") as f:
        f.write("alice:" + "11" * 32 + "\nbob:" + "22" * 32 + "\n")
    for user in ("alice", "bob"):
        with open(os.path.join(d, f"{user}.psk"), "w") as f:
            f.write(f"{user}:" + ("11" if user == "alice" else "22") * 32 + "\n")
    args = ["-f", "qcow2", "--object", f"tls-creds-psk,id=t0,dir={d},endpoint=server",
            "--object", "authz-simple,id=a0,identity=alice", "--tls-creds=t0", "--tls-authz=a0"]
    for server in ("qemu", "strata"):
        with serve(qcow2_image, *args, server=server) as s:
            assert tls_client_ok(s.sock, psk=os.path.join(d, "alice.psk"), username="alice")
            bob = tls_client_ok(s.sock, psk=os.path.join(d, "bob.psk"), username="bob")
            assert bob == (server == "qemu"), server


def test_tls_authz_list_file(qcow2_image, pki, tmp_path):
    """authz-list-file (not built into the qemu-nbd here): the rules file is
    read again at each connection unless refresh=off."""
    rules = os.path.join(str(tmp_path), "rules.json")

    def write(policy):
        with open(rules, "w") as f:
            json.dump({"policy": "deny", "rules": [{"match": CLIENT_DN, "policy": policy}]}, f)

    write("allow")
    with serve(qcow2_image, *x509_args(pki, f"authz-list-file,id=a0,filename={rules}")) as s:
        assert tls_client_ok(s.sock, pki_dir=pki)
        write("deny")
        assert not tls_client_ok(s.sock, pki_dir=pki)
        with open(rules, "w") as f:
            f.write("not json")
        assert not tls_client_ok(s.sock, pki_dir=pki)
        write("allow")
        assert tls_client_ok(s.sock, pki_dir=pki)
    write("allow")
    obj = f"authz-list-file,id=a0,filename={rules},refresh=off"
    with serve(qcow2_image, *x509_args(pki, obj)) as s:
        write("deny")
        assert tls_client_ok(s.sock, pki_dir=pki)
    res = subprocess.run([strata_binary("strata-nbd"), *x509_args(pki, "authz-list-file,id=a0"),
                          qcow2_image], capture_output=True, text=True, timeout=20)
    assert res.returncode == 1
    assert "Parameter 'filename' is missing" in res.stderr


def test_list_with_tls(qcow2_image, pki):
    """-L over TLS with client credentials, against both servers: over TCP
    the server's certificate is checked against the -b name; over a Unix
    socket there is no name, which both refuse."""
    server_args = ["-f", "qcow2", "-x", "secure", "--object",
                   f"tls-creds-x509,id=t0,dir={pki},endpoint=server", "--tls-creds=t0"]
    client = ["--object", f"tls-creds-x509,id=c0,dir={pki},endpoint=client", "--tls-creds=c0"]
    for server in ("qemu", "strata"):
        with serve(qcow2_image, *server_args, server=server, tcp=True) as s:
            where = ["-b", "localhost", "-p", str(s.port)]
            theirs = list_with("qemu-nbd", *where, *client)
            ours = list_with(strata_binary("strata-nbd"), *where, *client)
            assert ours == theirs, server
            assert theirs[0] == 0 and " export: 'secure'" in theirs[1]
            plain = list_with(strata_binary("strata-nbd"), *where)
            assert plain[0] == 1
        with serve(qcow2_image, *server_args, server=server) as s:
            theirs = list_with("qemu-nbd", "-k", s.sock, *client)
            ours = list_with(strata_binary("strata-nbd"), "-k", s.sock, *client)
            assert ours == theirs, server
            assert theirs[0] == 1


def test_trace_file(qcow2_image, tmp_path):
    """-T ...,file=FILE writes strata-nbd's debug log to FILE."""
    log = os.path.join(str(tmp_path), "trace.log")
    with serve(qcow2_image, "-f", "qcow2", "-T", f"enable=nbd_*,file={log}") as s:
        h = nbd.NBD()
        h.connect_uri(s.uri)
        h.pread(4096, 0)
        h.shutdown()
    assert os.path.getsize(log) > 0
    res = subprocess.run([strata_binary("strata-nbd"), "-T", "bogus=1", qcow2_image],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 1 and "Invalid parameter 'bogus'" in res.stderr
