"""I/O throttling: the throttle-group object and the throttle filter.

- The same QMP script (object-add with good and bad limits, qom-get and
  qom-set, blockdev-add of throttle nodes, object-del of a group in use)
  against qemu-storage-daemon and stratad: the replies must be equal.
- Rates, with tolerant bounds: 8 MiB written (nbdcopy) through an NBD
  export of a throttle node limited to 4 MiB/s takes about 2 s; the same
  for reads; two nodes in one group share the budget; new limits set with
  qom-set apply to requests that already wait.
- Requests queued in the filter do not hold up a hard export removal, a
  blockdev-del of the node afterwards, or quit.
"""
import os
import subprocess
import time

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

QSD = "qemu-storage-daemon"
KINDS = ["strata", "qsd"]
MiB = 1 << 20


def binary(kind):
    return strata_binary("stratad") if kind == "strata" else QSD


class Side:
    """A daemon of `kind` in its own directory with a QMP client."""

    def __init__(self, kind, workdir, args=()):
        self.kind = kind
        self.dir = os.path.join(str(workdir), kind)
        os.makedirs(self.dir, exist_ok=True)
        self.daemon = Daemon(binary(kind), self.dir, args)
        self.qmp = self.daemon.client()
        self.nbd_sock = os.path.join(self.dir, "nbd.sock")

    def reply(self, cmd, args=None):
        """A command's outcome: its return value, or (class, desc)."""
        r = self.qmp.request(cmd, args)
        return r["return"] if "return" in r else (r["error"]["class"], r["error"]["desc"])

    def ok(self, cmd, **args):
        r = self.qmp.request(cmd, args)
        assert "return" in r, f"{self.kind}: {cmd} {args}: {r}"
        return r["return"]

    def image(self, name, size=64 * MiB):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.truncate(size)
        return path

    def throttled_export(self, node, group, image, export=None):
        """file node `node`-file, throttle node `node` in `group`, exported
        writable under the name `node`."""
        self.ok("blockdev-add", driver="file", filename=image, **{"node-name": f"{node}-file"})
        self.ok("blockdev-add", driver="throttle", file=f"{node}-file",
                **{"node-name": node, "throttle-group": group})
        if not os.path.exists(self.nbd_sock):
            self.ok("nbd-server-start", addr={"type": "unix", "data": {"path": self.nbd_sock}})
        self.ok("block-export-add", type="nbd", id=export or node, writable=True,
                **{"node-name": node})
        return f"nbd+unix:///{node}?socket={self.nbd_sock}"

    def wait_event(self, name, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for e in self.qmp.events:
                if e["event"] == name:
                    return e
            self.qmp.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                self.qmp.events.append(self.qmp.read_message())
            except (TimeoutError, OSError):
                pass
            finally:
                self.qmp.sock.settimeout(30)
        raise TimeoutError(f"{self.kind}: no {name} within {timeout} s")

    def quit(self, timeout=20):
        try:
            self.qmp.request("quit")
        except (ConnectionError, OSError):
            pass
        self.daemon.proc.wait(timeout)
        self.qmp.close()

    def kill(self):
        if self.daemon.proc.poll() is None:
            self.daemon.proc.kill()
            self.daemon.proc.wait()
        self.daemon.stderr.close()


@pytest.fixture
def sides(workdir):
    made = []

    def make(kind, args=()):
        s = Side(kind, workdir, args)
        made.append(s)
        return s
    yield make
    for s in made:
        s.kill()


def random_file(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


# The QMP script both daemons answer the same way.

def group(gid, **props):
    return {"qom-type": "throttle-group", "id": gid, **props}


SCRIPT = [
    ("object-add", group("g0")),
    ("qom-get", {"path": "g0", "property": "limits"}),
    ("qom-get", {"path": "/objects/g0", "property": "type"}),
    # throttle_is_valid() and throttle_limits_to_config() refusals.
    ("object-add", group("bad", limits={"iops-total": 10, "iops-read": 5})),
    ("object-add", group("bad", limits={"bps-total-max": 100, "bps-write-max": 100,
                                        "bps-total": 1, "bps-write": 1})),
    ("object-add", group("bad", limits={"bps-total": -1})),
    ("object-add", group("bad", limits={"bps-write": 1000000000000001})),
    ("object-add", group("bad", limits={"bps-total-max": 100})),
    ("object-add", group("bad", limits={"bps-total": 200, "bps-total-max": 100})),
    ("object-add", group("bad", limits={"bps-total-max-length": 0})),
    ("object-add", group("bad", limits={"bps-total": 10, "bps-total-max-length": 5})),
    ("object-add", group("bad", limits={"bps-total": 5, "bps-total-max": 10,
                                        "bps-total-max-length": -1})),
    ("object-add", group("bad", limits={"iops-read-max-length": 4294967296})),
    ("object-add", group("bad", limits={"iops-size": 4096})),
    ("object-add", group("bad", limits={"iops-size": 4096, "bps-total": 5})),
    ("object-add", group("bad", limits={"foo": 1})),
    ("object-add", group("bad", limits={"bps-total": "1"})),
    ("object-add", group("bad", limits={"bps-total": 1.5})),
    ("object-add", group("bad", **{"x-iops-total": 10, "x-bps-read": -5})),
    ("object-add", group("bad", **{"x-iops-total": 10, "x-iops-read": 5})),
    ("object-add", group("bad", **{"x-iops-total": 10, "x-iops-total-max-length": 4294967296})),
    ("object-add", group("bad", **{"x-bps-total-max": 10})),
    ("object-add", group("bad", **{"x-bps-total": "abc"})),
    ("object-add", group("g0")),
    ("qom-get", {"path": "bad", "property": "limits"}),
    # Flat properties, limits, and both (limits win).
    ("object-add", group("g1", **{"x-bps-total": 100, "x-bps-total-max": 1000,
                                  "x-bps-total-max-length": 3})),
    ("qom-get", {"path": "g1", "property": "limits"}),
    ("qom-get", {"path": "/objects/g1", "property": "x-bps-total-max-length"}),
    ("object-add", group("g2", **{"x-iops-total": 10},
                         limits={"iops-total": 20, "bps-write": 3})),
    ("qom-get", {"path": "g2", "property": "limits"}),
    ("qom-get", {"path": "g2", "property": "x-iops-total"}),
    ("object-add", group("g3", limits={"iops-total": 5, "iops-size": -1})),
    ("qom-get", {"path": "g3", "property": "limits"}),
    # qom-set changes the members it names and checks the result.
    ("qom-set", {"path": "g2", "property": "x-iops-total", "value": 5}),
    ("qom-set", {"path": "g2", "property": "limits", "value": {"iops-read": 5}}),
    ("qom-set", {"path": "g2", "property": "limits", "value": {"bps-read": 5}}),
    ("qom-get", {"path": "g2", "property": "limits"}),
    ("qom-set", {"path": "g2", "property": "limits",
                 "value": {"iops-total": 0, "bps-write": 7, "bps-write-max": 70,
                           "bps-write-max-length": 3}}),
    ("qom-get", {"path": "g2", "property": "limits"}),
    ("qom-set", {"path": "g2", "property": "limits", "value": {"bps-write-max": 6}}),
    ("qom-set", {"path": "g2", "property": "limits", "value": {"bps-write": "x"}}),
    ("qom-set", {"path": "g2", "property": "limits", "value": 5}),
    ("qom-set", {"path": "g2", "property": "limits", "value": {"nope": 5}}),
    ("qom-set", {"path": "/objects/g1", "property": "limits", "value": {}}),
    ("qom-set", {"path": "g1", "property": "limits", "value": {"bps-total": 0}}),
    ("qom-get", {"path": "g1", "property": "limits"}),
    ("qom-set", {"path": "g2", "property": "nope", "value": 5}),
    ("qom-set", {"path": "g2", "property": "type", "value": "x"}),
    ("qom-get", {"path": "g2", "property": "nope"}),
    ("qom-set", {"path": "gX", "property": "limits", "value": {}}),
    ("qom-get", {"path": "gX", "property": "limits"}),
    ("qom-get", {"path": "/objects/gX", "property": "limits"}),
    ("qom-get", {"path": "", "property": "limits"}),
    ("object-add", {"qom-type": "secret", "id": "s0", "data": "x"}),
    ("qom-get", {"path": "s0", "property": "limits"}),
    # Throttle nodes.
    ("blockdev-add", {"driver": "null-co", "node-name": "n0", "size": MiB}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t0", "file": "n0"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t0", "file": "n0",
                      "throttle-group": "nope"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t0", "file": "n0",
                      "throttle-group": ""}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t0", "file": "n0",
                      "throttle-group": "s0"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t0", "throttle-group": "g1"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t0", "file": "n0",
                      "throttle-group": "g1", "foo": 1}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t0", "file": "n0",
                      "throttle-group": "g1"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "t1", "file": "n0",
                      "throttle-group": "g1"}),
    ("object-del", {"id": "g1"}),
    ("object-del", {"id": "g0"}),
    ("object-del", {"id": "g0"}),
    ("blockdev-del", {"node-name": "t0"}),
    ("object-del", {"id": "g1"}),
    ("blockdev-del", {"node-name": "t1"}),
    ("object-del", {"id": "g1"}),
    ("object-add", group("g1", limits={"bps-read": 1})),
    ("qom-get", {"path": "g1", "property": "limits"}),
]


def test_qmp_replies_match_qemu_storage_daemon(workdir, sides):
    require(QSD)
    replies = {}
    for kind in KINDS:
        s = sides(kind)
        replies[kind] = [(cmd, args, s.reply(cmd, args)) for cmd, args in SCRIPT]
        s.quit()
    for strata, qsd in zip(replies["strata"], replies["qsd"]):
        assert strata == qsd


def test_command_line_object_and_blockdev(workdir, sides):
    require(QSD)
    limits = {}
    for kind in KINDS:
        image = os.path.join(str(workdir), f"{kind}.raw")
        with open(image, "wb") as f:
            f.truncate(MiB)
        s = sides(kind, ["--object", "throttle-group,id=g,x-bps-write=4194304,x-iops-total=100",
                         "--object", "throttle-group,id=h,limits.bps-read=1048576",
                         "--blockdev", f"driver=file,node-name=f,filename={image}",
                         "--blockdev", "driver=throttle,node-name=t,file=f,throttle-group=g"])
        limits[kind] = (s.reply("qom-get", {"path": "g", "property": "limits"}),
                        s.reply("qom-get", {"path": "h", "property": "limits"}),
                        s.reply("object-del", {"id": "g"}))
        s.quit()
    assert limits["strata"] == limits["qsd"]
    assert limits["strata"][0]["bps-write"] == 4194304
    assert limits["strata"][0]["iops-total"] == 100
    assert limits["strata"][1]["bps-read"] == MiB


def test_bad_command_line_object_is_refused(workdir):
    require(QSD)
    cases = {"throttle-group,id=g,x-iops-total=10,x-iops-read=5":
             "bps/iops/max total values and read/write values cannot be used at the same time",
             "throttle-group,id=g,limits.bps-total-max=5":
             "bps_max/iops_max require corresponding bps/iops values"}
    for arg, message in cases.items():
        for kind in KINDS:
            p = subprocess.run([binary(kind), "--object", arg], capture_output=True, text=True,
                               timeout=20)
            assert p.returncode != 0 and message in p.stderr, (kind, p.stderr)


def timed(cmd):
    start = time.monotonic()
    run(cmd)
    return time.monotonic() - start


@pytest.mark.parametrize("kind", KINDS)
def test_write_rate(workdir, sides, kind):
    """8 MiB at 4 MiB/s: about 2 s (a tenth of a second's worth goes at
    once)."""
    require("nbdcopy")
    s = sides(kind)
    s.ok("object-add", **group("g", limits={"bps-write": 4 * MiB}))
    image = s.image("disk.raw")
    uri = s.throttled_export("t", "g", image)
    src = random_file(os.path.join(s.dir, "src.raw"), 8 * MiB)
    elapsed = timed(["nbdcopy", "--destination-is-zero", src, uri])
    assert 1.5 < elapsed < 6, f"{kind}: {elapsed:.2f} s"
    s.ok("block-export-del", id="t")
    s.wait_event("BLOCK_EXPORT_DELETED", 10)
    s.quit()
    with open(image, "rb") as f, open(src, "rb") as g:
        assert f.read(8 * MiB) == g.read()


@pytest.mark.parametrize("kind", KINDS)
def test_read_rate(workdir, sides, kind):
    require("nbdcopy")
    s = sides(kind)
    s.ok("object-add", **group("g", limits={"bps-read": 4 * MiB, "iops-read": 1000}))
    image = random_file(os.path.join(s.dir, "disk.raw"), 8 * MiB)
    uri = s.throttled_export("t", "g", image)
    out = os.path.join(s.dir, "out.raw")
    elapsed = timed(["nbdcopy", uri, out])
    assert 1.5 < elapsed < 6, f"{kind}: {elapsed:.2f} s"
    run(["cmp", image, out])
    s.quit()


def test_nodes_of_a_group_share_its_budget(workdir, sides):
    """Two throttle nodes in one 4 MiB/s group, written at the same time
    with 4 MiB each: together about 2 s, both finish near the end."""
    require("nbdcopy")
    s = sides("strata")
    s.ok("object-add", **group("g", limits={"bps-write": 4 * MiB}))
    uris = [s.throttled_export(n, "g", s.image(f"{n}.raw")) for n in ("a", "b")]
    src = random_file(os.path.join(s.dir, "src.raw"), 4 * MiB)
    start = time.monotonic()
    procs = [subprocess.Popen(["nbdcopy", "--destination-is-zero", src, u]) for u in uris]
    ends = []
    for p in procs:
        assert p.wait(60) == 0
        ends.append(time.monotonic() - start)
    assert 1.5 < max(ends) < 6, ends
    assert min(ends) > 1.2, ends  # neither got the whole budget
    s.quit()


def test_new_limits_apply_to_waiting_requests(workdir, sides):
    require("nbdcopy")
    s = sides("strata")
    # nbdcopy writes 256 KiB at a time: the second waits 64 s at 4 KiB/s.
    s.ok("object-add", **group("g", limits={"bps-write": 4096}))
    uri = s.throttled_export("t", "g", s.image("disk.raw"))
    src = random_file(os.path.join(s.dir, "src.raw"), 8 * MiB)
    start = time.monotonic()
    p = subprocess.Popen(["nbdcopy", "--destination-is-zero", src, uri])
    time.sleep(1)
    assert p.poll() is None
    s.ok("qom-set", path="g", property="limits", value={"bps-write": 0})
    assert s.ok("qom-get", path="g", property="limits")["bps-write"] == 0
    assert p.wait(30) == 0
    assert time.monotonic() - start < 10
    s.quit()


@pytest.mark.parametrize("end", ["export-del", "quit"])
def test_queued_requests_do_not_hold_up_removal(workdir, sides, end):
    """Writes waiting in the filter (64 KiB/s: minutes of work) are let go
    when the export is removed (mode hard) or the daemon quits; then the
    node and the group can be deleted."""
    require("qemu-io")
    s = sides("strata")
    s.ok("object-add", **group("g", limits={"bps-write": 64 * 1024}))
    uri = s.throttled_export("t", "g", s.image("disk.raw"))
    writer = subprocess.Popen(["qemu-io", "-f", "raw"] +
                              sum([["-c", f"aio_write -P 0x5a {i}M 1M"] for i in range(8)], []) +
                              ["-c", "aio_flush", uri],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.5)
    assert writer.poll() is None
    start = time.monotonic()
    if end == "quit":
        s.quit(timeout=10)
        assert time.monotonic() - start < 10
        writer.wait(30)
        return
    s.ok("block-export-del", id="t", mode="hard")
    s.wait_event("BLOCK_EXPORT_DELETED", 10)
    assert time.monotonic() - start < 10
    writer.wait(30)
    s.ok("blockdev-del", **{"node-name": "t"})
    s.ok("object-del", id="g")
    assert [n["node-name"] for n in s.ok("query-named-block-nodes")] == ["t-file"]
    s.quit()
