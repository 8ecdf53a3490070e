"""block-set-write-threshold and BLOCK_WRITE_THRESHOLD: the same script
against qemu-storage-daemon and stratad. A qcow2 node `d` over its file
node `f` is exported over NBD and written with python3-libnbd; each step
records its QMP replies, the events it caused and the thresholds
query-named-block-nodes shows afterwards. The transcripts must be equal,
and the key facts are also asserted on their own.

Events are collected without waiting: each step ends with a QMP command,
and both daemons send an event that a write raised before the reply to a
command issued after that write completed.
"""
import os

import nbd
import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

QSD = "qemu-storage-daemon"
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


class Side:
    """One daemon serving qcow2 node `d` (file node `f`) over NBD."""

    def __init__(self, kind, workdir):
        self.dir = os.path.join(str(workdir), kind)
        os.makedirs(self.dir)
        self.image = os.path.join(self.dir, "d.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", self.image, str(4 * GiB)])
        binary = strata_binary("stratad") if kind == "strata" else QSD
        self.daemon = Daemon(binary, self.dir)
        try:
            self.setup()
        except BaseException:
            self.kill()
            raise

    def setup(self):
        self.qmp = self.daemon.client()
        self.ok("blockdev-add", driver="qcow2", **{"node-name": "d", "discard": "unmap"},
                file={"driver": "file", "filename": self.image, "node-name": "f"})
        sock = os.path.join(self.dir, "nbd.sock")
        self.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        self.ok("block-export-add", type="nbd", id="e", **{"node-name": "d"}, writable=True)
        self.nbd = nbd.NBD()
        self.nbd.connect_uri(f"nbd+unix:///d?socket={sock}")

    def ok(self, cmd, **args):
        reply = self.qmp.request(cmd, args)
        assert "return" in reply, f"{cmd} {args}: {reply}"
        return reply["return"]

    def reply(self, cmd, args):
        """A command's outcome: "ok", or (class, desc) of its error."""
        r = self.qmp.request(cmd, args)
        return "ok" if "return" in r else (r["error"]["class"], r["error"]["desc"])

    def arm(self, node, threshold):
        return self.reply("block-set-write-threshold",
                          {"node-name": node, "write-threshold": threshold})

    def thresholds(self):
        """{node: write_threshold} of the named nodes; also collects the
        events sent before the reply."""
        nodes = self.ok("query-named-block-nodes")
        return {n["node-name"]: n["write_threshold"] for n in nodes}

    def events(self):
        out = [(e["event"], e.get("data")) for e in self.qmp.events]
        self.qmp.events.clear()
        return out

    def file_size(self):
        return os.stat(self.image).st_size

    def close(self):
        self.nbd.shutdown()
        self.ok("quit")
        self.daemon.proc.wait(30)
        self.qmp.close()

    def kill(self):
        self.daemon.proc.kill()
        self.daemon.proc.wait()


def event(node, amount, threshold):
    return ("BLOCK_WRITE_THRESHOLD",
            {"node-name": node, "amount-exceeded": amount, "write-threshold": threshold})


def step(side, name, action):
    """Runs `action`, then returns (name, what it returned, events, thresholds)."""
    result = action()
    thresholds = side.thresholds()
    return (name, result, side.events(), thresholds)


def arguments_script(s):
    """Argument checking and the value query-named-block-nodes shows."""
    return [
        step(s, "unknown node", lambda: s.arm("nope", 4096)),
        step(s, "missing threshold",
             lambda: s.reply("block-set-write-threshold", {"node-name": "d"})),
        step(s, "string threshold", lambda: s.arm("d", "4096")),
        step(s, "fractional threshold", lambda: s.arm("d", 1.5)),
        step(s, "negative threshold, unknown node", lambda: s.arm("nope", -1)),
        step(s, "largest threshold", lambda: s.arm("d", (1 << 64) - 1)),
        step(s, "negative threshold", lambda: s.arm("d", -2)),
        step(s, "zero", lambda: s.arm("d", 0)),
    ]


def format_node_script(s):
    """Thresholds on the node the guest writes to (offsets are guest offsets)."""
    data = b"\x5a" * 4096
    return [
        step(s, "arm d at 1M", lambda: s.arm("d", MiB)),
        step(s, "write below", lambda: s.nbd.pwrite(data, MiB - 4096)),
        step(s, "write across", lambda: s.nbd.pwrite(data, MiB - 512)),
        step(s, "write after the event", lambda: s.nbd.pwrite(data, 2 * MiB)),
        step(s, "arm again at 3M", lambda: s.arm("d", 3 * MiB)),
        step(s, "write-zeroes across", lambda: s.nbd.zero(300, 3 * MiB - 100)),
        step(s, "arm at 4M", lambda: s.arm("d", 4 * MiB)),
        step(s, "unaligned trim across", lambda: s.nbd.trim(65536 + 300, 4 * MiB - 100)),
        step(s, "arm at 5M then disarm", lambda: (s.arm("d", 5 * MiB), s.arm("d", 0))),
        step(s, "write past a disarmed threshold", lambda: s.nbd.pwrite(data, 6 * MiB)),
        step(s, "read past an armed threshold",
             lambda: (s.arm("d", 1), len(s.nbd.pread(4096, 6 * MiB)))),
        step(s, "disarm", lambda: s.arm("d", 0)),
    ]


# Guest writes that allocate: new clusters, a new L2 table (512 MiB on),
# a new refcount block (2 GiB on), an unaligned run of clusters, a large write.
ALLOCATING = [(0, 512), (65536, 65536), (100000, 200000), (512 * MiB, 4096),
              (512 * MiB + 10 * 65536, 3 * 65536 + 5), (2 * GiB + 4096, 512),
              (3000 * MiB, MiB)]
# Where the file node's threshold is armed, relative to the file's size.
DELTAS = (0, 1, 4096, 65535, 65536)


def file_node_script(s):
    """Thresholds on the protocol node below qcow2, armed relative to the
    file's current size (as a thin-provisioning manager does): the qcow2
    node's cluster and metadata allocations are what passes them."""
    steps = []
    for delta in DELTAS:
        for offset, length in ALLOCATING:
            offset += delta * 7  # a different cluster each round

            def action(offset=offset, length=length, delta=delta):
                armed = s.file_size() + delta
                s.arm("f", armed)
                s.nbd.pwrite(b"\x41" * length, offset)
                return (armed, s.file_size())
            steps.append(step(s, f"f at size+{delta}, write {offset}+{length}", action))
    steps.append(step(s, "disarm f", lambda: s.arm("f", 0)))
    # A rewrite of allocated clusters writes inside the file: nothing fires.
    steps.append(step(s, "rewrite below an armed f", lambda: (
        s.arm("f", s.file_size()), s.nbd.pwrite(b"\x42" * 65536, 0))))
    # Both armed: the qcow2 node is checked before it writes to its file.
    steps.append(step(s, "both armed, allocating write", lambda: (
        s.arm("d", 3500 * MiB), s.nbd.pwrite(b"\x43" * 4096, 3500 * MiB))))
    steps.append(step(s, "disarm f", lambda: s.arm("f", 0)))
    return steps


def schema_view(s):
    """The command's and the event's members in query-qmp-schema, with
    types resolved to their JSON type (QEMU masks type names)."""
    schema = {e["name"]: e for e in s.ok("query-qmp-schema")}

    def members(type_name):
        return sorted((m["name"], schema[m["type"]].get("json-type"))
                      for m in schema[type_name]["members"])
    command = schema["block-set-write-threshold"]
    ev = schema["BLOCK_WRITE_THRESHOLD"]
    return {"command": members(command["arg-type"]),
            "ret": schema[command["ret-type"]]["meta-type"],
            "event": members(ev["arg-type"])}


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory):
    require(QSD)
    workdir = tmp_path_factory.mktemp("threshold")
    out = {}
    for kind in ("qsd", "strata"):
        s = Side(kind, workdir)
        try:
            out[kind] = {"arguments": arguments_script(s), "format": format_node_script(s),
                         "file": file_node_script(s), "schema": schema_view(s)}
            s.close()
        finally:
            if s.daemon.proc.poll() is None:
                s.kill()
        run(["qemu-img", "check", s.image])
    return out


def steps_of(transcript):
    return {name: (result, events, thresholds) for name, result, events, thresholds in transcript}


def test_arguments(transcripts):
    assert transcripts["strata"]["arguments"] == transcripts["qsd"]["arguments"]
    steps = steps_of(transcripts["strata"]["arguments"])
    assert steps["unknown node"][0] == ("GenericError", "Device 'nope' not found")
    assert steps["string threshold"][0] == (
        "GenericError", "Parameter 'write-threshold' expects uint64")
    assert steps["largest threshold"] == ("ok", [], {"d": -1, "f": 0})
    assert steps["negative threshold"] == ("ok", [], {"d": -2, "f": 0})
    assert steps["zero"] == ("ok", [], {"d": 0, "f": 0})


def test_format_node(transcripts):
    assert transcripts["strata"]["format"] == transcripts["qsd"]["format"]
    steps = steps_of(transcripts["strata"]["format"])
    assert steps["write below"][1:] == ([], {"d": MiB, "f": 0})
    assert steps["write across"][1:] == ([event("d", 3584, MiB)], {"d": 0, "f": 0})
    assert steps["write after the event"][1] == []
    assert steps["write-zeroes across"][1] == [event("d", 200, 3 * MiB)]
    assert steps["unaligned trim across"][1] == [event("d", 65536 + 200, 4 * MiB)]
    assert steps["write past a disarmed threshold"][1] == []
    assert steps["read past an armed threshold"][1:] == ([], {"d": 1, "f": 0})


def test_file_node(transcripts):
    assert transcripts["strata"]["file"] == transcripts["qsd"]["file"]
    steps = transcripts["strata"]["file"]
    fired = [s for s in steps if s[2]]
    for name, (armed, after), events, thresholds in steps[:len(ALLOCATING) * len(DELTAS)]:
        # A write that grows the file past the threshold passes it once; the
        # end of the request that did is at most the file's size afterwards.
        if after > armed:
            assert len(events) == 1, name
            assert events[0][1]["node-name"] == "f", name
            assert events[0][1]["write-threshold"] == armed, name
            assert 0 < events[0][1]["amount-exceeded"] <= after - armed, name
            assert thresholds["f"] == 0, name
        else:
            assert events == [] and thresholds["f"] == armed, name
    assert len(fired) > len(ALLOCATING)
    by_name = steps_of(steps)
    assert by_name["rewrite below an armed f"][1] == []
    both = by_name["both armed, allocating write"]
    assert [e[1]["node-name"] for e in both[1]] == ["d", "f"]
    assert both[1][0] == event("d", 4096, 3500 * MiB)


def test_schema(transcripts):
    assert transcripts["strata"]["schema"] == transcripts["qsd"]["schema"]
    assert transcripts["strata"]["schema"]["event"] == [
        ("amount-exceeded", "int"), ("node-name", "string"), ("write-threshold", "int")]
