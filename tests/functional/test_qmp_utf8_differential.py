"""Invalid UTF-8 and odd escapes in QMP strings, sent byte for byte to
qemu-storage-daemon and stratad: the replies must be the same (QEMU 7.2
refuses invalid UTF-8 with "JSON parse error, invalid UTF-8 sequence in
string" and keeps U+0000 as the pair C0 80), the connection must survive,
and a persistent bitmap must land on disk under the same bytes as with
QEMU and be found again under the name QMP reports."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

QSD = "qemu-storage-daemon"

# Bytes placed inside a string. Each kind the issue names, and the cases
# next to them where a lexer and a parser could disagree.
STRING_BYTES = [
    ("overlong 2", b"\xc0\xaf"),
    ("overlong 3", b"\xe0\x80\xaf"),
    ("overlong 4", b"\xf0\x80\x80\xaf"),
    ("overlong nul", b"\xc0\x80"),
    ("surrogate d800", b"\xed\xa0\x80"),
    ("surrogate dfff", b"\xed\xbf\xbf"),
    ("cesu pair", b"\xed\xa0\xbd\xed\xb8\x80"),
    ("above 10ffff", b"\xf4\x90\x80\x80"),
    ("lead f5", b"\xf5\x80\x80\x80"),
    ("5 bytes", b"\xf8\x88\x80\x80\x80"),
    ("6 bytes", b"\xfc\x84\x80\x80\x80\x80"),
    ("bare ff", b"\xff"),
    ("bare fe", b"\xfe"),
    ("ff after text", b"ab\xffcd"),
    ("truncated 2", b"\xc3"),
    ("truncated 3", b"\xe2\x82"),
    ("truncated 4", b"\xf0\x9f\x98"),
    ("truncated then ascii", b"\xe2\x82x"),
    ("lone continuation", b"\x80"),
    ("noncharacter fffe", b"\xef\xbf\xbe"),
    ("noncharacter fdd0", b"\xef\xb7\x90"),
    ("noncharacter 10ffff", b"\xf4\x8f\xbf\xbf"),
    ("valid", "é€😀".encode()),
    ("del", b"\x7f"),
    ("c1 control", b"\xc2\x80"),
    ("control", b"a\x01b"),
    ("zero byte", b"a\x00b"),
    ("tab", b"a\tb"),
    ("escaped ff", b"\\\xff"),
    ("escape d800", b"\\ud800"),
    ("escape dc00", b"\\udc00"),
    ("escape d800 then text", b"\\ud800x"),
    ("escape d800 then non-low", b"\\ud800\\u0041"),
    ("escape pair", b"\\ud83d\\ude00"),
    ("escape pair 10ffff", b"\\udbff\\udfff"),
    ("escape 0000", b"\\u0000"),
    ("escape fffe", b"\\ufffe"),
    ("escape fdd0", b"\\uFDD0"),
    ("escape short", b"\\u12"),
    ("escape not hex", b"\\uzzzz"),
    ("escape x", b"\\x"),
    ("escapes", b"\\/\\b\\f\\n\\r\\t\\\"\\'"),
]

SYNC = b'\n{"execute": "query-block", "id": "sync"}'


def replies_until_sync(client):
    """Every message up to the reply to SYNC (which is left out)."""
    out = []
    while True:
        msg = client.read_message()
        if msg.get("id") == "sync":
            assert msg == {"return": [], "id": "sync"}
            return out
        out.append(msg)


def requests(data):
    """The same bytes in the places a string can be: an argument the
    command looks up, the echoed id, a key, a single-quoted string."""
    return [
        b'{"execute": "block-dirty-bitmap-add", "arguments": {"node": "nosuch", "name": "'
        + data + b'"}}',
        b'{"execute": "query-block", "id": "' + data + b'"}',
        b'{"execute": "query-block", "arguments": {"' + data + b'": 1}}',
        b"{'execute': 'query-block', 'id': '" + data + b"'}",
    ]


def byte_replies(daemon):
    c = daemon.client()
    results = []
    for name, data in STRING_BYTES:
        for request in requests(data):
            c.send_raw(request + SYNC)
            results.append((name, request, replies_until_sync(c)))
    # The connection survived all of it and still works.
    assert c.request("query-block", id=1) == {"return": [], "id": 1}
    c.close()
    return results


def start(binary, workdir):
    os.makedirs(workdir, exist_ok=True)
    return Daemon(binary, workdir)


def test_string_bytes_same_as_qemu_storage_daemon(tmp_path):
    if shutil.which(QSD) is None:
        pytest.fail(f"{QSD} is not installed (./test installs qemu-system-common)")
    results = {}
    for name, binary in (("qsd", QSD), ("strata", strata_binary("stratad"))):
        with start(binary, str(tmp_path / name)) as d:
            results[name] = byte_replies(d)
    mismatches = [f"{n} {r!r}:\n  qsd:    {q}\n  strata: {s}"
                  for (n, r, q), (_, _, s) in zip(results["qsd"], results["strata"]) if q != s]
    assert not mismatches, "\n".join(mismatches)
    # What matters most: invalid UTF-8 is refused, not repaired.
    by_case = {(n, r): replies for n, r, replies in results["strata"]}
    for name in ("overlong 2", "surrogate d800", "cesu pair", "above 10ffff", "truncated 2"):
        data = dict(STRING_BYTES)[name]
        reply = by_case[(name, requests(data)[1])]
        assert reply == [{"error": {"class": "GenericError",
                                    "desc": "JSON parse error, invalid UTF-8 sequence in string"}}]


# Bitmap names (as JSON text inside the request) and whether QEMU accepts them.
BITMAP_NAMES = [
    (b"utf8-\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", True),
    (b"esc-\\u00e9\\ud83d\\ude00", True),
    (b"nul-\\u0000-x", True),
    (b"mod-\xc0\x80-y", True),
    (b"bad-\xc0\xaf", False),
    (b"bad-\xed\xa0\x80", False),
    (b"bad-\xf4\x90\x80\x80", False),
    (b"bad-\\udc00", False),
]


def bitmap_session(daemon, image):
    c = daemon.client()
    c.execute("blockdev-add", **{"driver": "qcow2", "node-name": "q",
                                 "file": {"driver": "file", "filename": image}})
    replies = []
    for name, _ in BITMAP_NAMES:
        c.send_raw(b'{"execute": "block-dirty-bitmap-add", "arguments": '
                   b'{"node": "q", "persistent": true, "name": "' + name + b'"}}')
        replies.append(c.read_reply())
    nodes = c.execute("query-named-block-nodes", flat=True)
    reported = sorted(b["name"] for n in nodes if n["node-name"] == "q"
                      for b in n.get("dirty-bitmaps", []))
    # Each name as reported finds its bitmap again: query it back through
    # a command that looks it up (clear), sent as the client library would.
    lookups = [c.request("block-dirty-bitmap-clear", {"node": "q", "name": n}) for n in reported]
    c.execute("blockdev-del", **{"node-name": "q"})
    c.close()
    return replies, reported, lookups


def disk_names(image):
    info = json.loads(run(["qemu-img", "info", "--output=json", image]).stdout)
    bitmaps = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
    return sorted(b["name"] for b in bitmaps)


def test_persistent_bitmap_names_same_as_qemu_storage_daemon(tmp_path):
    if shutil.which(QSD) is None:
        pytest.fail(f"{QSD} is not installed (./test installs qemu-system-common)")
    require("qemu-img")
    results = {}
    for name, binary in (("qsd", QSD), ("strata", strata_binary("stratad"))):
        workdir = str(tmp_path / name)
        os.makedirs(workdir)
        image = os.path.join(workdir, "disk.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1M"])
        with start(binary, workdir) as d:
            replies, reported, lookups = bitmap_session(d, image)
        check = subprocess.run(["qemu-img", "check", image], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        results[name] = (replies, reported, lookups, disk_names(image))
    assert results["strata"] == results["qsd"]
    replies, reported, lookups, on_disk = results["strata"]
    for (name, accepted), reply in zip(BITMAP_NAMES, replies):
        assert ("return" in reply) == accepted, (name, reply)
    assert reported == on_disk
    assert len(reported) == sum(1 for _, ok in BITMAP_NAMES if ok)
    assert all(r == {"return": {}} for r in lookups)
    # U+0000 sent as \u0000 or as C0 80 is one name, reported as \u0000.
    assert "nul-\u0000-x" in reported and "mod-\u0000-y" in reported
