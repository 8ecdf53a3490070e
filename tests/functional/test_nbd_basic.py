"""strata-nbd seen by real NBD clients: nbdinfo's view of exports, flags and
block status must equal what qemu-nbd reports for the same image.

Also holds the helpers the other test_nbd_*.py files import.
"""
import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import require, run, strata_binary, unix_listening


def short_dir():
    """A short directory for Unix sockets (sun_path is limited to 108 bytes),
    removed when the test process exits."""
    d = tempfile.mkdtemp(prefix="nbd", dir="/tmp")
    atexit.register(shutil.rmtree, d, True)
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc, check, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {proc.stderr.read()}")
        if check():
            return
        time.sleep(0.02)
    raise RuntimeError(f"server did not start listening on {what}")


def _port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Served:
    def __init__(self, proc, uri, sock=None, port=None):
        self.proc, self.uri, self.sock, self.port = proc, uri, sock, port

    def uri_for(self, name=""):
        if self.sock:
            return f"nbd+unix:///{name}?socket={self.sock}"
        return f"nbd://127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def serve(image, *args, server="strata", tcp=False, name=""):
    """Runs strata-nbd (or qemu-nbd) on `image`; yields a Served."""
    binary = strata_binary("strata-nbd") if server == "strata" else shutil.which("qemu-nbd")
    cmd = [binary, "-t", *args]
    tmp = short_dir()
    sock = port = None
    if tcp:
        port = free_port()
        cmd += ["-b", "127.0.0.1", "-p", str(port)]
    else:
        sock = os.path.join(tmp, "s")
        cmd += ["-k", sock]
    cmd.append(image)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        if tcp:
            _wait_ready(proc, lambda: _port_open(port), f"port {port}")
        else:
            _wait_ready(proc, lambda: unix_listening(sock), sock)
        served = Served(proc, None, sock, port)
        served.uri = served.uri_for(name)
        yield served
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def make_raw(path, size_mb=64):
    """A sparse raw image with a few data areas."""
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
        f.seek(1 << 20)
        f.write(b"hello" * 1000)
        f.seek(6 << 20)
        f.write(os.urandom(256 << 10))
        f.seek((size_mb << 20) - 4096)
        f.write(b"\xaa" * 4096)
    return path


def make_chain(workdir):
    """base.qcow2 <- top.qcow2 with data at both layers and zero clusters."""
    require("qemu-img")
    base = os.path.join(workdir, "base.qcow2")
    top = os.path.join(workdir, "top.qcow2")
    run(["qemu-img", "create", "-f", "qcow2", base, "64M"])
    run(["qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 2 4M 64k", "-c", "write -P 5 20M 3M",
         base])
    run(["qemu-img", "create", "-f", "qcow2", "-b", base, "-F", "qcow2", top])
    run(["qemu-io", "-c", "write -P 3 512k 1M", "-c", "write -z 8M 1M", "-c", "write -z 21M 64k",
         "-c", "discard 4M 64k", top])
    return base, top


def nbdinfo(*args):
    require("nbdinfo")
    return run(["nbdinfo", *args]).stdout


def normalized(text, served):
    """nbdinfo output without the parts that name the socket."""
    return "\n".join(l for l in text.splitlines() if "uri:" not in l)


def test_info_and_map_equal_qemu_nbd_raw(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"))
    outputs = {}
    for server in ("strata", "qemu"):
        with serve(image, "-f", "raw", "-x", "disk", "-D", "a test disk", "-A",
                   server=server, name="disk") as s:
            outputs[server] = (normalized(nbdinfo("--list", s.uri), s),
                               nbdinfo("--map", s.uri),
                               nbdinfo("--map=qemu:allocation-depth", s.uri),
                               nbdinfo("--map", "--totals", s.uri))
    assert outputs["strata"] == outputs["qemu"]
    assert "a test disk" in outputs["strata"][0]
    assert "qemu:allocation-depth" in outputs["strata"][0]
    assert "hole,zero" in outputs["strata"][1] and "data" in outputs["strata"][1]


def test_map_equal_qemu_nbd_qcow2_chain(workdir):
    _, top = make_chain(workdir)
    outputs = {}
    for server in ("strata", "qemu"):
        with serve(top, "-r", "-f", "qcow2", "-A", server=server) as s:
            outputs[server] = (normalized(nbdinfo(s.uri), s),
                               nbdinfo("--map", s.uri),
                               nbdinfo("--map=qemu:allocation-depth", s.uri))
    assert outputs["strata"] == outputs["qemu"]
    depth_map = outputs["strata"][2]
    assert "backing depth 2" in depth_map and "local" in depth_map and "absent" in depth_map


def test_read_only_and_flags(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 8)
    with serve(image, "-r", "-f", "raw") as s:
        info = nbdinfo(s.uri)
    assert "is_read_only: true" in info
    assert "can_multi_conn: false" in info  # as qemu-nbd with the default -e 1
    assert "can_trim: false" in info and "can_zero: false" in info
    with serve(image, "-f", "raw", "-e", "3") as s:
        info = nbdinfo(s.uri)
    assert "is_read_only: false" in info and "can_multi_conn: true" in info


def test_unknown_export_is_refused(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 8)
    with serve(image, "-f", "raw", "-x", "one") as s:
        bad = run(["nbdinfo", s.uri_for("two")], check=False)
        assert bad.returncode != 0
        good = nbdinfo(s.uri_for("one"))
        assert "export-size: 8388608" in good


def test_exits_after_last_client_without_persistent(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 8)
    tmp = short_dir()
    sock = os.path.join(tmp, "s")
    proc = subprocess.Popen([strata_binary("strata-nbd"), "-f", "raw", "-k", sock, image],
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(proc, lambda: unix_listening(sock), sock)
        nbdinfo(f"nbd+unix:///?socket={sock}")
        assert proc.wait(timeout=20) == 0
        assert not os.path.exists(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_fork_and_pid_file(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), 8)
    tmp = short_dir()
    sock = os.path.join(tmp, "s")
    pid_file = os.path.join(tmp, "pid")
    try:
        r = run([strata_binary("strata-nbd"), "--fork", "--pid-file", pid_file, "-t", "-f", "raw",
                 "-k", sock, image], timeout=30)
        assert r.returncode == 0
        assert os.path.exists(sock)
        pid = int(open(pid_file).read())
        assert "export-size: 8388608" in nbdinfo(f"nbd+unix:///?socket={sock}")
        os.kill(pid, 15)
        deadline = time.time() + 20
        while os.path.exists(pid_file) and time.time() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(pid_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_bad_command_line():
    r = run([strata_binary("strata-nbd"), "--no-such-flag", "x"], check=False)
    # As qemu-nbd (getopt's wording, then the hint).
    assert r.returncode == 1
    assert r.stderr == ("strata-nbd: unrecognized option '--no-such-flag'\n"
                        "strata-nbd: Try `strata-nbd --help' for more information.\n")
    r = run([strata_binary("strata-nbd"), "-f", "raw", "-k", "/tmp/nonexistent-dir/x/s",
             "/nonexistent-image"], check=False)
    assert r.returncode == 1
