"""QMP protocol behaviour of stratad: greeting, negotiation, envelopes, bad
input, framing, bounds, several monitors, Unix and TCP."""
import json
import os
import socket
import time

import pytest

from conftest import strata_binary
from qmp_client import Daemon, QmpClient


def test_greeting_and_negotiation(daemon):
    c = daemon.client(negotiate=False)
    qmp = c.greeting["QMP"]
    assert set(qmp["version"]["qemu"]) == {"major", "minor", "micro"}
    assert isinstance(qmp["version"]["package"], str)
    assert qmp["capabilities"] == ["oob"]
    assert c.error("query-version") == (
        "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
    assert c.error("qmp_capabilities", {"enable": ["foo"]}) == (
        "GenericError", "Parameter 'null' does not accept value 'foo'")
    assert c.execute("qmp_capabilities") == {}
    assert c.error("qmp_capabilities") == (
        "CommandNotFound", "Capabilities negotiation is already complete, command ignored")
    assert c.execute("query-version") == c.greeting["QMP"]["version"]


def test_id_is_echoed_verbatim(daemon):
    c = daemon.client()
    for ident in [1, "x", {"a": [1, None, True]}, [], 1.5]:
        reply = c.request("query-block", id=ident)
        assert reply == {"return": [], "id": ident}
    reply = c.request("nosuch", id="e")
    assert reply["id"] == "e"
    assert reply["error"] == {"class": "CommandNotFound",
                              "desc": "The command nosuch has not been found"}


def test_envelope_errors(daemon):
    c = daemon.client()
    cases = [
        (b'[1, 2]', "QMP input must be a JSON object", False),
        (b'"str"', "QMP input must be a JSON object", False),
        (b'42\n', "QMP input must be a JSON object", False),
        (b'{"foo": 1}', "QMP input member 'foo' is unexpected", False),
        (b'{"execute": 1}', "QMP input member 'execute' must be a string", False),
        (b'{"execute": "query-block", "arguments": []}',
         "QMP input member 'arguments' must be an object", False),
        (b'{"execute": "query-block", "id": 7, "extra": 2}',
         "QMP input member 'extra' is unexpected", True),
        (b'{"arguments": {}}', "QMP input lacks member 'execute'", False),
    ]
    for raw, desc, has_id in cases:
        c.send_raw(raw)
        reply = c.read_reply()
        assert reply["error"] == {"class": "GenericError", "desc": desc}, raw
        assert ("id" in reply) == has_id
    reply = c.request("query-version", oob=True, id=3)
    assert reply["error"]["desc"] == "QMP input member 'exec-oob' is unexpected"


def test_oob_capability(daemon):
    c = daemon.client(negotiate=False)
    c.execute("qmp_capabilities", enable=["oob"])
    reply = c.request("query-version", oob=True, id=1)
    assert reply == {"id": 1, "error": {"class": "GenericError",
                                        "desc": "The command query-version does not support OOB"}}


def test_argument_validation_messages(daemon):
    c = daemon.client()
    assert c.error("query-version", {"x": 1}) == ("GenericError", "Parameter 'x' is unexpected")
    assert c.error("blockdev-del", {}) == ("GenericError", "Parameter 'node-name' is missing")
    assert c.error("blockdev-del", {"node-name": 1}) == (
        "GenericError", "Invalid parameter type for 'node-name', expected: string")
    assert c.error("block_resize", {"node-name": "x", "size": "1"}) == (
        "GenericError", "Invalid parameter type for 'size', expected: integer")
    assert c.error("query-named-block-nodes", {"flat": "yes"}) == (
        "GenericError", "Invalid parameter type for 'flat', expected: boolean")
    assert c.error("transaction", {"actions": {}}) == (
        "GenericError", "Invalid parameter type for 'actions', expected: array")
    assert c.error("transaction", {"actions": [1]}) == (
        "GenericError", "Invalid parameter type for 'actions[0]', expected: object")
    assert c.error("transaction", {"actions": [{"type": "blockdev-snapshot",
                                                "data": {"node": 1}}]}) == (
        "GenericError", "Invalid parameter type for 'actions[0].data.node', expected: string")
    assert c.error("transaction", {"actions": [{"type": "nosuch", "data": {}}]}) == (
        "GenericError", "Parameter 'type' does not accept value 'nosuch'")
    assert c.error("blockdev-add", {"driver": "raw", "node-name": "q",
                                    "file": {"driver": "file"}}) == (
        "GenericError", "Parameter 'file.filename' is missing")
    assert c.error("blockdev-add", {"driver": "raw", "node-name": "q",
                                    "file": {"driver": "file", "filename": "x",
                                             "cache": {"direct": "a"}}}) == (
        "GenericError", "Invalid parameter type for 'file.cache.direct', expected: boolean")


def test_parse_errors_keep_the_connection(daemon):
    c = daemon.client()
    for raw, reason in [(b'{"execute": }', "expecting value"),
                        (b'{"a" 1}', "missing : in object pair"),
                        (b'{1:2}', "key is not a string in object"),
                        (b'[1 2]', "expected separator in list"),
                        (b'abc ', "invalid keyword 'abc'"),
                        (b'\x01', "stray '\x01'")]:
        c.send_raw(raw)
        reply = c.read_reply()
        assert reply == {"error": {"class": "GenericError",
                                   "desc": "JSON parse error, " + reason}}, raw
    assert c.execute("query-block") == []


def test_split_and_batched_requests(daemon):
    c = daemon.client()
    text = '{"execute": "query-block", "id": "a"}{"execute": "query-version", "id": "b"}'
    for ch in text:
        c.send_raw(ch)
    assert c.read_reply() == {"return": [], "id": "a"}
    assert c.read_reply()["id"] == "b"
    c.send_raw("".join(f'{{"execute": "query-block", "id": {i}}}' for i in range(50)))
    for i in range(50):
        assert c.read_reply() == {"return": [], "id": i}
    c.send_raw("{'execute': 'query-block', 'id': 'it\\'s'}")
    assert c.read_reply() == {"return": [], "id": "it's"}


def test_output_is_ascii_with_crlf(daemon):
    c = daemon.client()
    reply = c.request("query-block", id="\u00e9\U0001F600")
    assert reply["id"] == "\u00e9\U0001F600"


def test_huge_request_is_refused_and_connection_survives(daemon):
    c = daemon.client()
    blob = "x" * (9 << 20)
    c.send_raw('{"execute": "query-block", "id": "' + blob + '"}')
    reply = c.read_reply()
    assert reply["error"]["class"] == "GenericError"
    assert reply["error"]["desc"].startswith("JSON parse error")
    assert "id" not in reply
    assert c.execute("query-block") == []


def test_deep_nesting_is_refused(daemon):
    c = daemon.client()
    c.send_raw("[" * 5000 + "]" * 5000)
    assert c.read_reply()["error"]["desc"].startswith("JSON parse error")
    assert c.execute("query-block") == []


def test_several_monitors_and_disconnects(daemon):
    clients = [daemon.client() for _ in range(4)]
    # One client leaves in the middle of a request, another with a command
    # whose reply it never reads.
    clients[0].send_raw('{"execute": "query-named-block-nod')
    clients[0].close()
    clients[1].send_raw('{"execute": "query-qmp-schema"}')
    clients[1].close()
    raw = daemon.client(negotiate=False)
    raw.sock.close()
    for c in clients[2:]:
        assert c.execute("query-block") == []
    fresh = daemon.client()
    assert fresh.execute("query-version")["package"]
    assert daemon.proc.poll() is None


def test_tcp_monitor(workdir):
    port_probe = socket.socket()
    port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    args = ["--chardev", f"socket,id=tcp0,host=127.0.0.1,port={port},server=on,wait=off",
            "--monitor", "chardev=tcp0"]
    with Daemon(strata_binary("stratad"), workdir, args) as d:
        deadline = time.time() + 10
        while True:
            try:
                c = QmpClient(host="127.0.0.1", port=port)
                break
            except ConnectionRefusedError:
                assert time.time() < deadline
                time.sleep(0.05)
        assert c.execute("query-block") == []
        assert d.client().execute("query-block") == []


def test_query_commands_and_schema(daemon):
    c = daemon.client()
    names = {e["name"] for e in c.execute("query-commands")}
    for required in ["qmp_capabilities", "query-version", "query-commands", "query-qmp-schema",
                     "quit", "blockdev-add", "blockdev-del", "blockdev-reopen",
                     "query-named-block-nodes", "query-block", "query-blockstats",
                     "blockdev-snapshot", "blockdev-snapshot-sync", "block_resize",
                     "blockdev-create", "transaction"]:
        assert required in names
    schema = c.execute("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    commands = [e for e in schema if e["meta-type"] == "command"]
    assert {e["name"] for e in commands} == names
    # Every referenced type is present, and the shapes are QEMU's.
    for e in schema:
        for key in ("arg-type", "ret-type", "element-type"):
            if key in e:
                assert e[key] in by_name, e
    resize = by_name["block_resize"]
    args = by_name[resize["arg-type"]]
    assert args["meta-type"] == "object"
    assert args["members"] == [{"name": "device", "type": "str", "default": None},
                               {"name": "node-name", "type": "str", "default": None},
                               {"name": "size", "type": "int"}]
    add = by_name[by_name["blockdev-add"]["arg-type"]]
    assert add["tag"] == "driver"
    cases = {v["case"] for v in add["variants"]}
    assert {"file", "raw", "null-co"} <= cases
    file_branch = by_name[next(v["type"] for v in add["variants"] if v["case"] == "file")]
    assert {"name": "filename", "type": "str"} in file_branch["members"]
    txn = by_name[by_name["transaction"]["arg-type"]]
    action = by_name[by_name[txn["members"][0]["type"]]["element-type"]]
    assert {v["case"] for v in action["variants"]} >= {"abort", "blockdev-snapshot",
                                                       "blockdev-snapshot-sync"}
    builtins = {e["name"]: e["json-type"] for e in schema if e["meta-type"] == "builtin"}
    assert builtins.get("str") == "string" and builtins.get("int") == "int"


def test_quit_shuts_down_cleanly(daemon):
    c = daemon.client()
    other = daemon.client()
    assert c.execute("quit") == {}
    assert daemon.proc.wait(20) == 0
    with pytest.raises((ConnectionError, OSError)):
        other.execute("query-block")
    assert not os.path.exists(daemon.sock)


def test_client_leaving_during_a_running_command(daemon, workdir):
    """The command finishes without its client; other monitors wait their
    turn (commands run one at a time) and are answered."""
    target = os.path.join(str(workdir), "slow.raw")
    c = daemon.client()
    c.send_raw(json.dumps({"execute": "blockdev-create", "arguments": {
        "job-id": "j", "options": {"driver": "file", "filename": target,
                                   "size": 64 << 20, "preallocation": "full"}}}))
    time.sleep(0.05)
    c.close()
    other = daemon.client()
    assert other.execute("query-block") == []
    deadline = time.time() + 20
    while not (os.path.exists(target) and os.path.getsize(target) == 64 << 20):
        assert time.time() < deadline
        time.sleep(0.05)
    assert daemon.proc.poll() is None
