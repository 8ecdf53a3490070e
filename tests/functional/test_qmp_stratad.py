"""stratad's qemu-storage-daemon command line: options, keyval syntax,
pid file, daemonizing, signals and clean shutdown (image locks released,
checked with qemu-img)."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon, QmpClient
from test_qmp_block import nodes, qcow2_image, raw_image


def stratad(*args, **kwargs):
    return run([strata_binary("stratad"), *args], check=False, timeout=30, **kwargs)


def test_help_and_version():
    r = stratad("-h")
    assert r.returncode == 0 and "--blockdev" in r.stdout and "--chardev" in r.stdout
    r = stratad("--version")
    assert r.returncode == 0 and r.stdout.startswith("stratad version")
    assert stratad("-V").stdout == r.stdout


def test_bad_command_lines_fail_with_a_message(workdir):
    r = stratad("--nosuch")
    assert r.returncode == 1 and "Unknown option '--nosuch'" in r.stderr
    r = stratad("--blockdev")
    assert r.returncode == 1 and "requires an argument" in r.stderr
    r = stratad("--blockdev", "driver=file,node-name=f0")
    assert r.returncode == 1 and "Parameter 'filename' is missing" in r.stderr
    r = stratad("--blockdev", "driver=null-co,node-name=n0,size=abc")
    assert r.returncode == 1 and "Parameter 'size' expects integer" in r.stderr
    r = stratad("--monitor", "chardev=nope")
    assert r.returncode == 1 and 'chardev "nope" not found' in r.stderr
    r = stratad("--chardev", "file,id=x,path=/dev/null")
    assert r.returncode == 1
    r = stratad("--object", "secret,id=s0")
    assert r.returncode == 1 and "Either 'data' or 'file' must be provided" in r.stderr


def test_keyval_and_json_blockdevs(workdir):
    path = raw_image(workdir, "a,b.raw")
    escaped = path.replace(",", ",,")
    args = ["--blockdev", f"driver=file,node-name=f0,filename={escaped},read-only=on",
            "--blockdev", "raw,node-name=r0,file=f0,read-only=on",
            "--blockdev", "driver=raw,node-name=r1,file.driver=file,"
                          f"file.filename={escaped},file.read-only=on,read-only=on,"
                          "cache.no-flush=on",
            "--blockdev", '{"driver": "null-co", "node-name": "n0", "size": 65536}',
            "--object", "secret,id=sec0,data=c2VjcmV0,format=base64"]
    with Daemon(strata_binary("stratad"), workdir, args) as d:
        c = d.client()
        info = nodes(c)
        assert info["f0"]["file"] == path and info["f0"]["ro"] is True
        assert info["r0"]["children"] == [{"child": "file", "node-name": "f0"}]
        assert info["r1"]["cache"]["no-flush"] is True
        assert info["n0"]["image"]["virtual-size"] == 65536
        assert c.error("object-add", {"qom-type": "secret", "id": "sec0", "data": "x"})[0] == (
            "GenericError")
        c.execute("object-add", **{"qom-type": "secret", "id": "sec1", "data": "x"})
        c.execute("object-del", id="sec1")


def test_legacy_chardev_flags(workdir):
    sock = os.path.join(str(workdir), "legacy.sock")
    with Daemon(strata_binary("stratad"), workdir,
                ["--chardev", f"socket,id=old,path={sock},server,nowait",
                 "--monitor", "chardev=old,mode=control,pretty=on"]) as d:
        with d.client(path=sock) as c:
            assert c.execute("query-block") == []
        assert d.client().execute("query-block") == []


def test_pidfile_daemonize_and_sigterm(workdir):
    require("qemu-img")
    path = qcow2_image(workdir, "d.qcow2")
    sock = os.path.join(str(workdir), "d.sock")
    pidfile = os.path.join(str(workdir), "d.pid")
    r = stratad("--daemonize", "--pidfile", pidfile,
                "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                "--monitor", "m",
                "--blockdev", f"driver=file,node-name=f0,filename={path}",
                "--blockdev", "driver=qcow2,node-name=r0,file=f0")
    assert r.returncode == 0, r.stderr
    # The parent returned only after startup: socket and pid file exist.
    assert os.path.exists(sock)
    pid = int(open(pidfile).read())
    with QmpClient(sock) as c:
        assert "r0" in nodes(c)
    # The image is locked while the daemon holds it writable.
    locked = run(["qemu-img", "info", path], check=False)
    assert locked.returncode != 0 and "lock" in locked.stderr
    # A second daemon on the same pid file is refused.
    r = stratad("--pidfile", pidfile)
    assert r.returncode == 1 and "Cannot lock pid file" in r.stderr
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while os.path.exists(f"/proc/{pid}"):
        assert time.time() < deadline
        time.sleep(0.05)
    assert not os.path.exists(pidfile)
    assert not os.path.exists(sock)
    run(["qemu-img", "info", path])  # unlocked again


def test_sigint_and_quit_release_locks(workdir):
    require("qemu-img")
    path = qcow2_image(workdir, "disk.qcow2")
    args = ["--blockdev", f"driver=qcow2,node-name=q0,file.driver=file,file.filename={path}"]
    with Daemon(strata_binary("stratad"), workdir, args) as d:
        c = d.client()
        assert "q0" in nodes(c)
        assert run(["qemu-img", "check", path], check=False).returncode != 0
        d.proc.send_signal(signal.SIGINT)
        assert d.proc.wait(20) == 0
    run(["qemu-img", "check", path])
    with Daemon(strata_binary("stratad"), workdir, args) as d:
        d.client().execute("quit")
        assert d.proc.wait(20) == 0
    run(["qemu-img", "check", path])


def test_export_and_nbd_server_hook(workdir):
    """--nbd-server and --export go through nbd-server-start and
    block-export-add; without those commands they fail cleanly."""
    with Daemon(strata_binary("stratad"), workdir, name="probe.sock") as d:
        names = {e["name"] for e in d.client().execute("query-commands")}
    sock = os.path.join(str(workdir), "nbd.sock")
    args = ["--blockdev", "driver=null-co,node-name=n0",
            "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=e0,node-name=n0,name=n0"]
    if "nbd-server-start" in names and "block-export-add" in names:
        with Daemon(strata_binary("stratad"), workdir, args) as d:
            c = d.client()
            # The monitor listens before the later options are applied.
            deadline = time.time() + 20
            while not os.path.exists(sock):
                assert time.time() < deadline and d.proc.poll() is None
                time.sleep(0.05)
            assert [e["id"] for e in c.execute("query-block-exports")] == ["e0"]
            c.execute("quit")
            assert d.proc.wait(20) == 0
    else:
        mon = os.path.join(str(workdir), "m.sock")
        r = stratad("--chardev", f"socket,id=m,path={mon},server=on,wait=off",
                    "--monitor", "m", *args)
        assert r.returncode == 1 and "--nbd-server" in r.stderr


@pytest.mark.parametrize("how", ["quit", signal.SIGTERM])
def test_shutdown_flushes_and_unlocks(workdir, how):
    """What QMP changed is on disk once the daemon is gone, and the image is
    unlocked: qemu-img opens it without -U."""
    require("qemu-img")
    path = qcow2_image(workdir, "grow.qcow2", "1M")
    created = os.path.join(str(workdir), "created.qcow2")
    open(created, "wb").close()
    args = ["--blockdev", f"driver=qcow2,node-name=q0,file.driver=file,file.filename={path}",
            "--blockdev", f"driver=file,node-name=fc,filename={created}"]
    with Daemon(strata_binary("stratad"), workdir, args) as d:
        c = d.client()
        c.execute("block_resize", **{"node-name": "q0", "size": 3 << 20})
        c.run_job("blockdev-create", **{"job-id": "j", "options": {
            "driver": "qcow2", "file": "fc", "size": 2 << 20}})
        c.execute("blockdev-add", driver="qcow2", **{"node-name": "qc", "file": "fc"})
        c.execute("block_resize", **{"node-name": "qc", "size": 4 << 20})
        if how == "quit":
            assert c.execute("quit") == {}
        else:
            d.proc.send_signal(how)
        assert d.proc.wait(20) == 0
    for image, size in ((path, 3 << 20), (created, 4 << 20)):
        info = json.loads(run(["qemu-img", "info", "--output=json", image]).stdout)
        assert info["virtual-size"] == size
        run(["qemu-img", "check", image])
