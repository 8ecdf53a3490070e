"""blockdev-mirror against qemu-storage-daemon: the same QMP script on both
daemons, with a guest writing through an NBD export of the source the
whole time. Argument checks give QEMU's error class and message; a mirror
with sync full and top reaches ready, pivots on job-complete (the guest's
next writes land on the target), and the target reads exactly what the
guest wrote (against the model, and qemu-img check); the event sequences
are QEMU's. (sync none copies whole granules around the guest's writes:
its target needs a model of granules, not of bytes; not covered here.)"""
import os

from conftest import run
from job_util import (KINDS, MiB, chain, check, read_image, start,  # noqa: F401
                      pivot_with_guest, start_guest)


def add_target(d, paths, kind, name="tgt", size=64 * MiB, backing=None):
    path = os.path.join(os.path.dirname(paths["top"]), f"{name}.qcow2")
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        args += ["-b", backing, "-F", "qcow2"]
    run(args + [path, str(size)])
    d.ok("blockdev-add", driver="file", **{"node-name": f"{name}-file"}, filename=path)
    opts = {"driver": "qcow2", "node-name": name, "file": f"{name}-file"}
    if backing:
        opts["backing"] = None
    d.ok("blockdev-add", **opts)
    return path


def reply(d, cmd, **args):
    r = d.execute(cmd, args)
    if "error" in r:
        return ("error", r["error"]["class"], r["error"]["desc"])
    return ("return", r["return"])


BAD = [
    {"target": "tgt", "sync": "full", "granularity": 100},
    {"target": "tgt", "sync": "full", "granularity": 128 * MiB},
    {"target": "tgt", "sync": "full", "granularity": 3 * 4096},
    {"target": "tgt", "sync": "full", "buf-size": -1},
    {"target": "top", "sync": "full"},
    {"target": "nosuch", "sync": "full"},
    {"target": "mid", "sync": "full"},
    {"target": "tgt", "sync": "incremental"},
    {"target": "tgt", "sync": "full", "replaces": "nosuch"},
    {"target": "tgt", "sync": "full", "replaces": "mid"},
    {"target": "tgt", "sync": "full", "replaces": "small"},
    {"target": "tgt", "sync": "full", "speed": -1},
]


def test_blockdev_mirror_argument_errors_match_qemu(workdir, chain, start):
    replies = {}
    for kind in KINDS:
        d, paths = start(kind)
        add_target(d, paths, kind)
        add_target(d, paths, kind, name="small", size=32 * MiB)
        out = [reply(d, "blockdev-mirror", **{"job-id": "m", "device": "top", **a}) for a in BAD]
        out.append(reply(d, "blockdev-mirror", **{"job-id": "m", "device": "nosuch",
                                                  "target": "tgt", "sync": "full"}))
        # A job that is refused leaves nothing behind: the same id works.
        out.append(reply(d, "blockdev-mirror", **{"job-id": "m", "device": "top",
                                                  "target": "tgt", "sync": "full",
                                                  "speed": 1 * MiB}))
        out.append(reply(d, "blockdev-mirror", **{"job-id": "m", "device": "top",
                                                  "target": "tgt", "sync": "full"}))
        out.append(reply(d, "blockdev-del", **{"node-name": "tgt"}))
        d.ok("job-cancel", id="m")
        d.wait_event("JOB_STATUS_CHANGE", "m", "null")
        replies[kind] = out
        d.quit()
    for args, s, q in zip(BAD + ["device", "ok", "id in use", "del"], replies["strata"],
                          replies["qsd"]):
        assert s == q, f"blockdev-mirror {args}"


def mirror_with_guest(start, workdir, kind, initial, sync, seed):
    d, paths = start(kind)
    backing = paths["mid"] if sync == "top" else None
    tpath = add_target(d, paths, kind, backing=backing)
    if backing:
        # sync top: the target shares the source's backing chain.
        d.ok("blockdev-del", **{"node-name": "tgt"})
        d.ok("blockdev-add", driver="qcow2", **{"node-name": "tgt"}, file="tgt-file",
             backing="mid")
    d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt", "sync": sync,
                               "speed": 32 * MiB})
    guest = start_guest(d, workdir, kind, initial, seed)
    pivot_with_guest(d, "m", guest)
    guest.close()
    events = d.job_events("m")
    d.quit()
    return tpath, guest.model, events


def test_mirror_full_and_top_with_a_guest_pivot_onto_the_target(workdir, chain, start):
    initial = read_image(chain["top"])
    for sync, seed in (("full", 3), ("top", 4)):
        events = {}
        for kind in KINDS:
            tpath, model, events[kind] = mirror_with_guest(start, workdir, kind, initial, sync,
                                                           seed)
            check(tpath)
            # The target alone (with its backing chain for top) reads
            # exactly what the guest sees.
            assert (kind, sync, read_image(tpath) == model) == (kind, sync, True)
        assert events["strata"] == events["qsd"], f"sync {sync}"
