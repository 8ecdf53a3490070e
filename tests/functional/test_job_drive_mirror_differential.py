"""drive-mirror against qemu-storage-daemon: the same QMP script on both
daemons. The target file is created (mode absolute-paths: qcow2 or raw,
naming the source's backing file for sync top) or opened as it is (mode
existing); a guest writes through an NBD export of the source the whole
time; after the pivot the target's image reads as the guest wrote it
(qemu-img convert against the model, qemu-img check), its backing chain
(qemu-img info --backing-chain) and the job's events are QEMU's, and
argument errors give QEMU's class and message and leave the same files
behind."""
import json
import os

import pytest

from conftest import run
from job_util import (KINDS, MiB, backing_chain, chain, check, read_image,  # noqa: F401
                      pivot_with_guest, start, start_guest)


def reply(d, cmd, **args):
    r = d.execute(cmd, args)
    if "error" in r:
        return ("error", r["error"]["class"], r["error"]["desc"].replace(d.workdir, "DIR"))
    return ("return", r["return"])


def target_path(paths, name="tgt.qcow2"):
    return os.path.join(os.path.dirname(paths["top"]), name)


BAD = [
    ({"device": "nosuch", "sync": "full"}, None),
    ({"sync": "full", "replaces": "top"}, None),
    ({"sync": "full", "mode": "existing", "format": "qcow2"}, None),  # no such file
    ({"sync": "full", "granularity": 100}, "tgt.qcow2"),  # created, then refused
    ({"sync": "incremental"}, "tgt.qcow2"),
    ({"sync": "full", "format": "raw", "buf-size": -1}, "tgt.qcow2"),
]


def test_drive_mirror_argument_errors_match_qemu(workdir, chain, start):
    out = {}
    for kind in KINDS:
        d, paths = start(kind)
        results = []
        for args, _ in BAD:
            tgt = target_path(paths)
            if os.path.exists(tgt):
                os.unlink(tgt)
            full = {"job-id": "m", "device": "top", "target": tgt, **args}
            results.append((reply(d, "drive-mirror", **full), os.path.exists(tgt)))
        # Nothing was left behind: the id is free and no job runs.
        results.append(d.ok("query-block-jobs"))
        d.quit()
        out[kind] = results
    for (args, _), s, q in zip(BAD + [("jobs", None)], out["strata"], out["qsd"]):
        assert s == q, args


def drive_mirror_with_guest(start, workdir, kind, initial, args, prepare=None):
    d, paths = start(kind)
    tpath = target_path(paths, args.pop("name", "tgt.qcow2"))
    if prepare:
        prepare(paths, tpath)
    d.ok("drive-mirror", **{"job-id": "m", "device": "top", "target": tpath, **args})
    guest = start_guest(d, workdir, kind, initial, seed=31)
    pivot_with_guest(d, "m", guest)
    guest.close()
    nodes = sorted(n["node-name"] for n in d.ok("query-named-block-nodes")
                   if not n["node-name"].startswith("#"))
    events = d.job_events("m")
    d.quit()
    return tpath, guest.model, events, nodes


def existing_over_mid(paths, tpath):
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", paths["mid"], "-F", "qcow2", tpath,
         str(64 * MiB)])


ALONE = [("tgt.qcow2", None)]
OVER_MID = [("tgt.qcow2", "mid.qcow2"), ("mid.qcow2", "base.qcow2"), ("base.qcow2", None)]

# (id, arguments, set-up, format, the target's backing chain afterwards)
CASES = [
    ("full-qcow2", {"sync": "full"}, None, "qcow2", ALONE),
    ("top-qcow2", {"sync": "top"}, None, "qcow2", OVER_MID),
    # Only what the guest writes is copied (whole granules); the rest reads
    # through the source, which becomes the target's backing file.
    ("none-qcow2", {"sync": "none"}, None, "qcow2",
     [("tgt.qcow2", "top.qcow2")] + [("top.qcow2", "mid.qcow2")] + OVER_MID[1:]),
    ("full-raw", {"sync": "full", "format": "raw", "name": "tgt.raw"}, None, "raw", None),
    ("top-existing", {"sync": "top", "mode": "existing", "format": "qcow2",
                      "node-name": "new"}, existing_over_mid, "qcow2", OVER_MID),
]


@pytest.mark.parametrize("case,args,prepare,fmt,want_chain", CASES, ids=[c[0] for c in CASES])
def test_drive_mirror_with_a_guest_pivot_onto_the_new_image(workdir, chain, start, case, args,
                                                            prepare, fmt, want_chain):
    initial = read_image(chain["top"])
    runs = {}
    for kind in KINDS:
        tpath, model, events, nodes = drive_mirror_with_guest(start, workdir, kind, initial,
                                                              dict(args), prepare)
        assert (kind, read_image(tpath, fmt) == model) == (kind, True)
        runs[kind] = (events, nodes)
        if fmt != "qcow2":
            continue
        check(tpath)
        info = json.loads(run(["qemu-img", "info", "--output=json", "-U", tpath]).stdout)
        if kind == "qsd" and info.get("backing-filename", "").startswith("json:"):
            # QEMU names a backing node opened with explicit options by a
            # json: pseudo-filename that qemu-img cannot open again; Strata
            # writes the backing node's file name.
            continue
        assert (kind, backing_chain(tpath)) == (kind, want_chain)
    assert runs["strata"] == runs["qsd"]
