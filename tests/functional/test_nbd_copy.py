"""Data through strata-nbd with real clients: nbdcopy both ways (one and
several connections), qemu-img convert/compare/map and qemu-io over
nbd+unix:// and nbd:// URIs."""
import json
import os

from conftest import require, run
from test_nbd_basic import make_chain, make_raw, serve


def test_nbdcopy_out_and_in(workdir):
    require("nbdcopy")
    src = make_raw(os.path.join(workdir, "src.raw"), 32)
    out = os.path.join(workdir, "out.raw")
    with serve(src, "-r", "-f", "raw") as s:
        run(["nbdcopy", s.uri, out])
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", src, out])

    target = os.path.join(workdir, "target.qcow2")
    run(["qemu-img", "create", "-f", "qcow2", target, "32M"])
    with serve(target, "-f", "qcow2", "-e", "4") as s:
        run(["nbdcopy", "--connections=4", src, s.uri])
        run(["qemu-img", "compare", "-f", "raw", src, s.uri])
    run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, target])
    assert run(["qemu-img", "check", target]).returncode == 0


def test_nbdcopy_multi_connection_read(workdir):
    require("nbdcopy")
    _, top = make_chain(workdir)
    out = os.path.join(workdir, "out.raw")
    with serve(top, "-r", "-f", "qcow2", "-e", "4") as s:
        run(["nbdcopy", "--connections=4", "--requests=16", s.uri, out])
    run(["qemu-img", "compare", "-F", "raw", top, out])


def test_qemu_img_convert_compare_map(workdir):
    _, top = make_chain(workdir)
    converted = os.path.join(workdir, "conv.qcow2")
    maps = {}
    for server in ("strata", "qemu"):
        with serve(top, "-r", "-f", "qcow2", server=server, tcp=(server == "strata")) as s:
            if server == "strata":
                assert s.uri.startswith("nbd://")
                run(["qemu-img", "convert", "-O", "qcow2", s.uri, converted])
                run(["qemu-img", "compare", s.uri, top])
            maps[server] = json.loads(run(["qemu-img", "map", "--output=json", s.uri]).stdout)
    assert maps["strata"] == maps["qemu"]
    run(["qemu-img", "compare", converted, top])


def test_qemu_io_over_unix_and_tcp(workdir):
    require("qemu-io")
    image = make_raw(os.path.join(workdir, "disk.raw"), 16)
    for tcp in (False, True):
        with serve(image, "-f", "raw", tcp=tcp) as s:
            r = run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 128k",
                     "-c", "write -z 2M 64k", "-c", "discard 3M 64k",
                     "-c", "write -P 0x11 -f 4M 4k", "-c", "flush",
                     "-c", "read -P 0x5a 1M 128k", "-c", "read -P 0 2M 64k",
                     "-c", "read -P 0x11 4M 4k", "-c", "aio_write -P 7 5M 4k",
                     "-c", "aio_flush", "-c", "read -P 7 5M 4k", s.uri])
            assert "Pattern verification failed" not in r.stdout + r.stderr
            # Requests past the end are refused without hurting the connection.
            r = run(["qemu-io", "-f", "raw", "-c", "read 16M 4k", "-c", "read -P 7 5M 4k",
                     s.uri], check=False)
            assert "Pattern verification failed" not in r.stdout
            assert "read 4096/4096 bytes at offset 5242880" in r.stdout
    with open(image, "rb") as f:
        f.seek(1 << 20)
        assert f.read(128 << 10) == b"\x5a" * (128 << 10)


def test_read_only_export_refuses_writes(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 8)
    before = open(image, "rb").read()
    with serve(image, "-r", "-f", "raw") as s:
        r = run(["qemu-io", "-f", "raw", "-c", "write 0 4k", s.uri], check=False)
        assert "write failed" in (r.stdout + r.stderr) or r.returncode != 0
        run(["qemu-io", "-r", "-f", "raw", "-c", "read 0 4k", s.uri])
    assert open(image, "rb").read() == before
