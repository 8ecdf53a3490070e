"""Pid files of stratad and strata-nbd next to those of qemu-storage-daemon
and qemu-nbd: mode 0600 whatever the umask allows beyond it, the pid
inside, locked while the server runs (a second server given the same file
refuses to start with QEMU's message and leaves the file alone), and the
same errors for a file that cannot be created."""
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import strata_binary, unix_listening

QSD = "qemu-storage-daemon"
LOCKED = "Cannot lock pid file: Resource temporarily unavailable"


def need(tool):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (./test installs it)")


def daemon_cmd(kind, workdir, pidfile, n):
    sock = os.path.join(workdir, f"{kind}{n}.sock")
    if kind in ("qsd", "stratad"):
        binary = QSD if kind == "qsd" else strata_binary("stratad")
        return [binary, "--pidfile", pidfile, "--chardev",
                f"socket,id=m,path={sock},server=on,wait=off", "--monitor", "chardev=m"], sock
    binary = "qemu-nbd" if kind == "qemu-nbd" else strata_binary("strata-nbd")
    image = os.path.join(workdir, "disk.raw")
    with open(image, "ab") as f:
        f.truncate(1 << 20)
    return [binary, "-t", "-r", "-f", "raw", "-k", sock, "--pid-file", pidfile, image], sock


def wait_for(check, what, proc):
    deadline = time.time() + 20
    while not check():
        assert proc.poll() is None, f"server exited: {proc.stderr.read()}"
        assert time.time() < deadline, f"no {what}"
        time.sleep(0.02)


def session(kind, workdir):
    """What a user sees of the pid file through one server's life."""
    os.makedirs(workdir)
    old_umask = os.umask(0o022)
    try:
        return observe(kind, workdir)
    finally:
        os.umask(old_umask)


def observe(kind, workdir):
    pidfile = os.path.join(workdir, "server.pid")
    cmd, sock = daemon_cmd(kind, workdir, pidfile, 1)
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: unix_listening(sock) and os.path.exists(pidfile)
                 and open(pidfile).read().endswith("\n"), "pid file", first)
        seen = {"mode": oct(stat.S_IMODE(os.stat(pidfile).st_mode)),
                "content is the pid": open(pidfile).read() == f"{first.pid}\n"}
        cmd2, _ = daemon_cmd(kind, workdir, pidfile, 2)
        second = subprocess.run(cmd2, capture_output=True, text=True, timeout=60)
        # The message without the program name in front of it.
        seen["second"] = (second.returncode, second.stderr.strip().split(": ", 1)[1])
        seen["file kept"] = open(pidfile).read() == f"{first.pid}\n"
        first.send_signal(signal.SIGTERM)
        seen["exit"] = first.wait(20)
        seen["removed at exit"] = not os.path.exists(pidfile)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    bad = os.path.join(workdir, "no-such-dir", "server.pid")
    cmd3, _ = daemon_cmd(kind, workdir, bad, 3)
    r = subprocess.run(cmd3, capture_output=True, text=True, timeout=60)
    seen["uncreatable"] = (r.returncode,
                           r.stderr.strip().split(": ", 1)[1].replace(workdir, "DIR"))
    return seen


def test_stratad_pidfile_as_qemu_storage_daemon(tmp_path):
    need(QSD)
    qsd = session("qsd", str(tmp_path / "q"))
    strata = session("stratad", str(tmp_path / "s"))
    assert strata == qsd
    assert qsd["mode"] == "0o600"
    assert qsd["second"] == (1, "cannot create PID file: " + LOCKED)


def test_strata_nbd_pid_file_as_qemu_nbd(tmp_path):
    need("qemu-nbd")
    qemu = session("qemu-nbd", str(tmp_path / "q"))
    strata = session("strata-nbd", str(tmp_path / "s"))
    # Deliberate difference (docs/tools/strata-nbd.md): strata-nbd removes
    # its pid file on a clean exit, qemu-nbd leaves it behind.
    assert qemu.pop("removed at exit") is False
    assert strata.pop("removed at exit") is True
    assert strata == qemu
    assert qemu["mode"] == "0o600"
    assert qemu["second"] == (1, LOCKED)
