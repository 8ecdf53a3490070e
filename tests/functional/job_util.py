"""Helpers for block job tests: backing chains made with qemu-img/qemu-io,
a daemon (stratad or qemu-storage-daemon) with the chain opened node by
node, event collection, and a guest that writes through an NBD export while
a job runs and keeps a model of what it wrote."""
import json
import os
import random
import shutil
import subprocess
import threading
import time

import nbd
import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

QSD = "qemu-storage-daemon"
KINDS = ["strata", "qsd"]
MiB = 1 << 20


def qemu_io(path, *commands, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in commands:
        args += ["-c", c]
    run(args + [path])


def make_chain(workdir, size=64 * MiB, layers=("base", "mid", "top"), cluster=65536):
    """qcow2 files base <- mid <- top with a pattern per layer (data, zeroes,
    discards and unallocated holes); returns {layer: path}."""
    os.makedirs(str(workdir), exist_ok=True)
    paths = {}
    below = None
    for i, name in enumerate(layers):
        path = os.path.join(str(workdir), f"{name}.qcow2")
        args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}"]
        if below:
            args += ["-b", os.path.basename(below), "-F", "qcow2"]
        run(args + [path, str(size)], cwd=str(workdir))
        pattern = 0x11 * (i + 1)
        qemu_io(path,
                f"write -P {pattern:#x} {i * 4 * MiB} {8 * MiB}",
                f"write -P {pattern + 1:#x} {size - (i + 1) * MiB} 512k",
                f"write -z {(i * 4 + 2) * MiB} 1M",
                f"write -P {pattern + 2:#x} {30 * MiB + i * 65536} 4096")
        paths[name] = path
        below = path
    return paths


def copy_files(paths, dest):
    os.makedirs(dest, exist_ok=True)
    out = {}
    for name, path in paths.items():
        out[name] = os.path.join(dest, os.path.basename(path))
        shutil.copy(path, out[name])
    return out


def chain_commands(paths, layers=("base", "mid", "top")):
    """blockdev-add commands opening the chain node by node (as libvirt)."""
    cmds = []
    below = None
    for name in layers:
        cmds.append(("blockdev-add", {"driver": "file", "node-name": f"{name}-file",
                                      "filename": paths[name]}))
        opts = {"driver": "qcow2", "node-name": name, "file": f"{name}-file",
                "backing": below, "read-only": name != layers[-1]}
        cmds.append(("blockdev-add", opts))
        below = name
    return cmds


def daemon_binary(kind):
    return strata_binary("stratad") if kind == "strata" else QSD


class JobDaemon:
    """A daemon with a QMP client that keeps every event."""

    def __init__(self, kind, workdir, args=()):
        self.kind = kind
        self.workdir = str(workdir)
        self.daemon = Daemon(daemon_binary(kind), workdir, args)
        try:
            self.qmp = self.daemon.client()
        except Exception:
            self.daemon.stop()  # not kept anywhere yet: nothing else would stop it
            raise

    def execute(self, cmd, args=None):
        return self.qmp.request(cmd, args)

    def ok(self, cmd, **args):
        reply = self.qmp.request(cmd, args)
        assert "return" in reply, f"{self.kind}: {cmd} {args}: {reply}"
        return reply["return"]

    def pump(self, timeout=0.05):
        """Reads events that arrived without a command, for `timeout`
        seconds at most (a daemon may send events without pause)."""
        self.qmp.sock.settimeout(timeout)
        end = time.time() + timeout
        try:
            while time.time() < end:
                msg = self.qmp.read_message()
                if "event" in msg:
                    self.qmp.events.append(msg)
        except (TimeoutError, OSError):
            pass
        finally:
            self.qmp.sock.settimeout(30)

    def wait_event(self, name, job=None, status=None, timeout=120):
        deadline = time.time() + timeout
        while True:
            for e in self.qmp.events:
                if e["event"] != name:
                    continue
                data = e.get("data", {})
                if job and data.get("id", data.get("device")) != job:
                    continue
                if status and data.get("status") != status:
                    continue
                return e
            if time.time() > deadline:
                raise TimeoutError(f"{self.kind}: no {name} {job} {status}: {self.qmp.events}")
            self.pump(0.05)

    def job_events(self, job):
        """(event, status-or-type, error?) of one job, in order."""
        out = []
        for e in self.qmp.events:
            data = e.get("data", {})
            if data.get("id", data.get("device")) != job:
                continue
            if e["event"] == "JOB_STATUS_CHANGE":
                out.append(("JOB_STATUS_CHANGE", data["status"]))
            else:
                out.append((e["event"], data.get("type"), "error" in data))
        return out

    def quit(self):
        try:
            self.qmp.request("quit")
        except (ConnectionError, OSError):
            pass
        self.daemon.proc.wait(30)
        self.qmp.close()

    def kill(self):
        self.daemon.proc.kill()
        self.daemon.proc.wait()


def read_image(path, fmt="qcow2"):
    """The guest-visible bytes of an image (through its backing chain)."""
    raw = path + ".read.raw"
    run(["qemu-img", "convert", "-f", fmt, "-O", "raw", path, raw])
    with open(raw, "rb") as f:
        data = f.read()
    os.unlink(raw)
    return bytearray(data)


class Guest:
    """Writes random patterns through an NBD export in a thread, keeping a
    model of the disk (start it with the disk's current content)."""

    def __init__(self, sock, export, model, seed=1, block=4096):
        self.h = nbd.NBD()
        self.h.set_export_name(export)
        self.h.connect_unix(sock)
        self.model = model
        self.rng = random.Random(seed)
        self.block = block
        self.stop_flag = threading.Event()
        self.thread = None
        self.writes = 0
        self.error = None

    def write(self, offset, data):
        self.h.pwrite(data, offset)
        self.model[offset:offset + len(data)] = data

    def zero(self, offset, length):
        self.h.zero(length, offset)
        self.model[offset:offset + length] = bytes(length)

    def random_write(self):
        size = len(self.model)
        n = self.rng.choice([1, 1, 2, 16])
        offset = self.rng.randrange(0, size // self.block - n) * self.block
        if self.rng.random() < 0.1:
            self.zero(offset, n * self.block)
        else:
            b = self.rng.randrange(1, 255)
            self.write(offset, bytes([b]) * (n * self.block))
        self.writes += 1

    def _loop(self, pause):
        try:
            while not self.stop_flag.is_set():
                self.random_write()
                if pause:
                    time.sleep(pause)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def start(self, pause=0.0):
        self.thread = threading.Thread(target=self._loop, args=(pause,), daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_flag.set()
        if self.thread:
            self.thread.join(30)
        if self.error:
            raise self.error
        self.h.flush()

    def read(self, offset, length):
        out = bytearray()
        while length:
            n = min(length, 16 * MiB)
            out += self.h.pread(n, offset)
            offset += n
            length -= n
        return bytes(out)

    def close(self):
        self.h.shutdown()


# Fixtures and helpers of the differential job tests (import them into
# the test module: `from job_util import chain, start`).

@pytest.fixture
def chain(workdir):
    require("qemu-storage-daemon")
    return make_chain(os.path.join(str(workdir), "orig"))


@pytest.fixture
def start(workdir, chain):
    """start(kind) -> (daemon, paths): a daemon over its own copy of the
    chain; daemons a failed test leaves running are killed afterwards."""
    daemons = []

    def _start(kind):
        paths = copy_files(chain, os.path.join(str(workdir), kind))
        d = JobDaemon(kind, os.path.join(str(workdir), kind))
        daemons.append(d)
        for cmd, args in chain_commands(paths):
            d.ok(cmd, **args)
        return d, paths

    yield _start
    for d in daemons:
        if d.daemon.proc.poll() is None:
            d.kill()


def backing_chain(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", "--backing-chain",
                           "-U", path]).stdout)
    # Names are absolute on both sides (QEMU writes the base's file name):
    # compare the file names within each run's directory.
    return [(os.path.basename(i["filename"]),
             i.get("backing-filename") and os.path.basename(i["backing-filename"]))
            for i in info]


def check(path):
    run(["qemu-img", "check", path])


def run_both(start, body):
    """Runs body(daemon, paths) on both daemons; returns {kind: result}."""
    out = {}
    for kind in KINDS:
        d, paths = start(kind)
        try:
            out[kind] = body(d, paths)
        finally:
            d.quit()
        out[kind] = (out[kind], paths)
    return out




def start_guest(d, workdir, kind, initial, seed):
    """Exports `top` of daemon `d` over NBD and starts a guest writing to it
    about 200 times a second (under the jobs' speed once dirty); returns the
    guest, whose model starts as `initial`."""
    sock = os.path.join(str(workdir), kind, "nbd.sock")
    d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.ok("block-export-add", type="nbd", id="e", **{"node-name": "top"}, writable=True)
    guest = Guest(sock, "top", bytearray(initial), seed=seed)
    guest.start(pause=0.005)
    return guest


def wait_offset(d, at_least, timeout=60):
    """Waits until the one block job has copied `at_least` bytes; returns
    query-block-jobs, asserting the job is part way."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = d.ok("query-block-jobs")
        if jobs and jobs[0]["offset"] >= at_least:
            break
        time.sleep(0.05)
    assert jobs and 0 < jobs[0]["offset"] < jobs[0]["len"], jobs
    return jobs


def pivot_with_guest(d, job, guest):
    """A mirror with `guest` writing: ready, more writes while ready (the
    target must get them too), job-complete, then writes that the target
    serves; the guest reads back its model."""
    d.wait_event("BLOCK_JOB_READY", job, timeout=180)
    guest.stop()
    for _ in range(30):
        guest.random_write()
    d.ok("job-complete", id=job)
    d.wait_event("JOB_STATUS_CHANGE", job, "null")
    for _ in range(20):
        guest.random_write()
    assert guest.read(0, len(guest.model)) == bytes(guest.model)
