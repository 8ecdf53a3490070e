"""The NBD client driver against three real servers (qemu-nbd, nbdkit with
the memory and file plugins, and Strata's own strata-nbd): data written and
zeroed through the driver is checked with qemu-io over the same export (or
in the backing file afterwards); block status through the driver equals
qemu-img map over NBD; strata-img convert from NBD equals the source."""
import contextlib
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import require, run, strata_binary, unix_listening
from test_nbd_basic import make_raw, short_dir

MiB = 1 << 20


def wait_for_socket(proc, sock, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {proc.stderr.read()}")
        if unix_listening(sock):
            return
        time.sleep(0.02)
    raise RuntimeError(f"server did not listen on {sock}")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_command(kind, image, sock):
    if kind == "qemu-nbd":
        require("qemu-nbd")
        return ["qemu-nbd", "-t", "-f", "raw", "-x", "exp", "-k", sock, image]
    if kind == "strata-nbd":
        return [strata_binary("strata-nbd"), "-t", "-f", "raw", "-x", "exp", "-k", sock, image]
    require("nbdkit")
    if kind == "nbdkit-memory":
        return ["nbdkit", "-f", "-U", sock, "-e", "exp", "memory", "64M"]
    return ["nbdkit", "-f", "-U", sock, "-e", "exp", "file", f"file={image}"]


@contextlib.contextmanager
def nbd_server(kind, image, sock=None, extra=()):
    """Runs an NBD server exporting `image` as "exp" on a Unix socket."""
    tmp = None
    if sock is None:
        tmp = short_dir()
        sock = os.path.join(tmp, "s")
    cmd = server_command(kind, image, sock)
    cmd[1:1] = list(extra)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        wait_for_socket(proc, sock)
        yield sock
    finally:
        stop(proc)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def uri(sock):
    return f"nbd+unix:///exp?socket={sock}"


def node_json(sock, **extra):
    opts = {"driver": "nbd", "server": {"type": "unix", "path": sock}, "export": "exp"}
    opts.update(extra)
    return "json:" + json.dumps(opts)


def strata_io(image, *commands, read_only=False, check=True):
    cmd = [strata_binary("strata-io")] + (["-r"] if read_only else [])
    for c in commands:
        cmd += ["-c", c]
    return run(cmd + [image], check=check)


def qemu_io(target, *commands, check=True):
    require("qemu-io")
    cmd = ["qemu-io", "-f", "raw"]
    for c in commands:
        cmd += ["-c", c]
    return run(cmd + [target], check=check)


def assert_pattern(target, *checks):
    """checks: (pattern, offset, length); read with qemu-io -P."""
    out = qemu_io(target, *[f"read -P {p} {o} {l}" for p, o, l in checks])
    assert "Pattern verification failed" not in out.stdout, out.stdout


SERVERS = ["qemu-nbd", "nbdkit-memory", "nbdkit-file", "strata-nbd"]


@pytest.mark.parametrize("kind", SERVERS)
def test_write_zero_trim_flush_read(workdir, kind):
    image = os.path.join(workdir, "disk.raw")
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    with nbd_server(kind, image) as sock:
        target = node_json(sock)
        out = strata_io(target, "write -P 0xab 0 2M", "write -P 0x5a 3M 64k",
                        "write -z 1M 512k", "write -z -u 4M 1M", "discard 8M 1M", "flush",
                        "read -P 0xab 0 1M", "read -P 0 1M 512k", "read -P 0x5a 3M 64k")
        assert "wrote 2097152/2097152 bytes at offset 0" in out.stdout
        assert "Pattern verification failed" not in out.stdout
        # Another client of the same export (QEMU's) sees the data.
        assert_pattern(uri(sock), ("0xab", 0, MiB), ("0", MiB, 512 << 10),
                       ("0xab", 1536 << 10, 512 << 10), ("0x5a", 3 * MiB, 64 << 10),
                       ("0", 4 * MiB, MiB))
    if kind != "nbdkit-memory":
        with open(image, "rb") as f:
            data = f.read(4 * MiB)
        assert data[:MiB] == b"\xab" * MiB
        assert data[MiB:MiB + (512 << 10)] == bytes(512 << 10)
        assert data[3 * MiB:3 * MiB + (64 << 10)] == b"\x5a" * (64 << 10)


@pytest.mark.parametrize("kind", ["qemu-nbd", "nbdkit-file", "strata-nbd"])
def test_map_matches_qemu_img_map(workdir, kind):
    image = make_raw(os.path.join(workdir, "disk.raw"))
    with nbd_server(kind, image) as sock:
        ours = json.loads(run([strata_binary("strata-img"), "map", "--output=json",
                               uri(sock)]).stdout)
        theirs = json.loads(run(["qemu-img", "map", "--output=json", uri(sock)]).stdout)
    keys = ("start", "length", "depth", "present", "zero", "data", "offset")
    assert [{k: e.get(k) for k in keys} for e in ours] == \
        [{k: e.get(k) for k in keys} for e in theirs]
    assert any(e["data"] for e in ours) and any(not e["data"] for e in ours)


@pytest.mark.parametrize("kind", ["qemu-nbd", "nbdkit-file", "strata-nbd"])
def test_convert_from_nbd_equals_source(workdir, kind):
    image = make_raw(os.path.join(workdir, "disk.raw"))
    out = os.path.join(workdir, "out.qcow2")
    with nbd_server(kind, image) as sock:
        run([strata_binary("strata-img"), "convert", "-O", "qcow2", uri(sock), out])
        info = run([strata_binary("strata-img"), "info", uri(sock)]).stdout
    assert "virtual size: 64 MiB" in info
    run(["qemu-img", "check", out])
    run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", image, out])


def test_convert_to_nbd_and_tcp_uri(workdir):
    src = make_raw(os.path.join(workdir, "src.raw"), size_mb=16)
    dst = os.path.join(workdir, "dst.raw")
    with open(dst, "wb") as f:
        f.truncate(16 * MiB)
    port = __import__("test_nbd_basic").free_port()
    proc = subprocess.Popen(["qemu-nbd", "-t", "-f", "raw", "-x", "exp", "-b", "127.0.0.1", "-p",
                             str(port), dst], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while run(["nbdinfo", "--size", f"nbd://127.0.0.1:{port}/exp"], check=False).returncode:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        run([strata_binary("strata-img"), "convert", "-n", "-O", "raw", src,
             f"nbd://127.0.0.1:{port}/exp"])
    finally:
        stop(proc)
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst])


def test_read_only_export(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), size_mb=8)
    with nbd_server("qemu-nbd", image, extra=["-r"]) as sock:
        out = strata_io(node_json(sock), "read -P 0 0 64k", read_only=True)
        assert "read 65536/65536 bytes" in out.stdout
        bad = strata_io(node_json(sock), "write 0 4k", check=False)
        assert bad.returncode != 0
        assert "read-only" in (bad.stdout + bad.stderr)


def test_missing_export_and_server_fail_cleanly(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), size_mb=8)
    with nbd_server("qemu-nbd", image) as sock:
        bad = run([strata_binary("strata-img"), "info",
                   f"nbd+unix:///nope?socket={sock}"], check=False)
        assert bad.returncode == 1 and "nope" in bad.stderr
    gone = run([strata_binary("strata-img"), "info", uri(sock)], check=False)
    assert gone.returncode == 1 and "Failed to connect" in gone.stderr


def test_open_timeout_waits_for_the_server(workdir):
    image = make_raw(os.path.join(workdir, "disk.raw"), size_mb=8)
    tmp = short_dir()
    sock = os.path.join(tmp, "s")
    client = subprocess.Popen([strata_binary("strata-io"), "-r", "-c", "read -P 0xaa 8384512 4k",
                               node_json(sock, **{"open-timeout": 10})],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    with nbd_server("qemu-nbd", image, sock=sock):
        out, err = client.communicate(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)
    assert client.returncode == 0, err
    assert "read 4096/4096 bytes" in out


PROMPT = "strata-io> "  # printed before each command read from stdin, as qemu-io's


class Pipe:
    """strata-io driven one command at a time over stdin."""

    def __init__(self, target):
        self.proc = subprocess.Popen([strata_binary("strata-io"), target], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1)
        self.marks = 0

    def command(self, line):
        self.marks += 1
        mark = f"mark{self.marks}"
        self.proc.stdin.write(f"{line}\necho {mark}\n")
        self.proc.stdin.flush()
        out = []
        while True:
            text = self.proc.stdout.readline().replace(PROMPT, "")
            assert text, "strata-io exited: " + "".join(out)
            if text.strip() == mark:
                return "".join(out)
            out.append(text)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=20)


def test_reconnect_within_delay_then_failure_after(workdir):
    image = os.path.join(workdir, "disk.raw")
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    tmp = short_dir()
    sock = os.path.join(tmp, "s")
    try:
        with nbd_server("qemu-nbd", image, sock=sock):
            pipe = Pipe(node_json(sock, **{"reconnect-delay": 4}))
            assert "wrote" in pipe.command("write -P 0x11 0 64k")
        # The server is gone; it comes back within the delay and the write
        # issued meanwhile goes through on the new connection.
        pipe.proc.stdin.write("write -P 0x22 64k 64k\necho done\n")
        pipe.proc.stdin.flush()
        time.sleep(1.5)
        with nbd_server("qemu-nbd", image, sock=sock):
            line = pipe.proc.stdout.readline()
            while "done" not in line:
                assert ("wrote 65536/65536" in line or " ops; " in line or "warning" in line), line
                line = pipe.proc.stdout.readline()
            assert "read 65536/65536" in pipe.command("read -P 0x22 64k 64k")
        # Gone for longer than the delay: the request fails with an I/O error.
        start = time.time()
        failed = pipe.command("read 0 4k")
        assert time.time() - start < 15
        assert "Input/output error" in failed or "not connected" in failed, failed
        pipe.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(image, "rb") as f:
        assert f.read(128 << 10) == b"\x11" * (64 << 10) + b"\x22" * (64 << 10)


def test_no_reconnect_delay_fails_at_once(workdir):
    image = os.path.join(workdir, "disk.raw")
    with open(image, "wb") as f:
        f.truncate(4 * MiB)
    tmp = short_dir()
    sock = os.path.join(tmp, "s")
    try:
        with nbd_server("qemu-nbd", image, sock=sock):
            pipe = Pipe(node_json(sock))
            assert "read 4096/4096" in pipe.command("read 0 4k")
        start = time.time()
        failed = pipe.command("read 0 4k")
        assert time.time() - start < 5
        assert "read 4096/4096" not in failed
        pipe.close()
        assert pipe.proc.returncode == 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
