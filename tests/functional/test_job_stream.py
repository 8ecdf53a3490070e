"""block-stream against qemu-storage-daemon.

The same QMP script runs on both daemons over copies of the same chain
(base <- mid <- top, each layer with data, zeroes and holes): the job's
events and replies must match, the images left behind must read the same
(qemu-img compare against the chain as it was, and between the two
daemons), pass qemu-img check and name the same backing files. With a guest
writing through an NBD export while the job runs, the result must equal a
model of what the guest wrote."""
import json
import os

from conftest import require, run
from job_util import (KINDS, MiB, JobDaemon, backing_chain, chain, check,  # noqa: F401
                      read_image, run_both, start, start_guest)


def nodes(d):
    return sorted(n["node-name"] for n in d.ok("query-named-block-nodes")
                  if not n["node-name"].startswith("#"))


def stream_and_wait(d, job, **args):
    d.ok("block-stream", **{"job-id": job}, **args)
    d.wait_event("JOB_STATUS_CHANGE", job, "null")
    return d.job_events(job), d.ok("query-jobs"), nodes(d)


def assert_same_outcome(res, expected_chain, layer="top"):
    (s_out, s_paths), (q_out, q_paths) = res["strata"], res["qsd"]
    assert s_out == q_out
    assert s_out[0][-1] == ("JOB_STATUS_CHANGE", "null")
    assert ("BLOCK_JOB_COMPLETED", "stream", False) in s_out[0]
    for paths in (s_paths, q_paths):
        for p in paths.values():
            check(p)
        assert backing_chain(paths[layer])[:len(expected_chain)] == expected_chain
    run(["qemu-img", "compare", s_paths[layer], q_paths[layer]])
    return s_paths, q_paths


def test_stream_the_whole_chain(workdir, chain, start):
    before = read_image(chain["top"])
    res = run_both(start, lambda d, p: stream_and_wait(d, "s", device="top"))
    s_paths, _ = assert_same_outcome(res, [("top.qcow2", None)])
    assert read_image(s_paths["top"]) == before


def test_stream_down_to_a_base(workdir, chain, start):
    before = read_image(chain["top"])
    res = run_both(start, lambda d, p: stream_and_wait(d, "s", device="top",
                                                         **{"base-node": "base"}))
    s_paths, _ = assert_same_outcome(res, [("top.qcow2", "base.qcow2")])
    assert read_image(s_paths["top"]) == before


def test_stream_with_bottom_and_base_by_file_name(workdir, chain, start):
    before = read_image(chain["top"])

    def body(d, paths):
        first = stream_and_wait(d, "b", device="top", bottom="mid")
        return first

    res = run_both(start, body)
    s_paths, _ = assert_same_outcome(res, [("top.qcow2", "base.qcow2")])
    assert read_image(s_paths["top"]) == before

    def by_name(d, paths):
        return stream_and_wait(d, "n", device="top", base=paths["base"],
                               **{"backing-file": "renamed-base.qcow2"})

    res = run_both(start, by_name)
    for kind in KINDS:
        info = run(["qemu-img", "info", "--output=json", "-U", res[kind][1]["top"]]).stdout
        assert '"backing-filename": "renamed-base.qcow2"' in info
    assert res["strata"][0] == res["qsd"][0]


def test_stream_into_a_read_only_intermediate_layer(workdir, chain, start):
    """device=mid (read-only, below the active layer): mid is reopened
    read-write for the job and read-only again afterwards."""
    before = read_image(chain["top"])

    def body(d, paths):
        out = stream_and_wait(d, "m", device="mid")
        ro = {n["node-name"]: n["ro"] for n in d.ok("query-named-block-nodes")}
        return out, ro["mid"]

    res = run_both(start, body)
    assert res["strata"][0] == res["qsd"][0]
    assert res["strata"][0][1] is True
    for kind in KINDS:
        paths = res[kind][1]
        check(paths["mid"])
        assert backing_chain(paths["top"])[:2] == [("top.qcow2", "mid.qcow2"),
                                                   ("mid.qcow2", None)]
        assert read_image(paths["top"]) == before


def test_stream_argument_errors_match_qemu(workdir, chain, start):
    cases = [
        {"device": "nosuch"},
        {"device": "top", "base": "x", "base-node": "base"},
        {"device": "top", "base": "x", "bottom": "mid"},
        {"device": "top", "bottom": "mid", "base-node": "base"},
        {"device": "top", "base": "nosuch.qcow2"},
        {"device": "top", "base-node": "nosuch"},
        {"device": "top", "base-node": "top"},
        {"device": "mid", "base-node": "top"},
        {"device": "top", "bottom": "nosuch"},
        {"device": "mid", "bottom": "top"},
        {"device": "top", "backing-file": "x"},
        {"device": "top", "bottom": "mid", "backing-file": "x"},
        {"device": "top", "job-id": "1bad"},
        {"device": "top", "job-id": "j", "speed": -1},
        {"device": "top", "job-id": "j", "on-error": "sometimes"},
    ]

    def body(d, paths):
        replies = []
        for args in cases:
            reply = d.execute("block-stream", args)
            replies.append(reply.get("error", reply))
        d.pump()
        events = [(e["event"], e.get("data", {}).get("status")) for e in d.qmp.events]
        return replies, events, nodes(d)

    res = run_both(start, body)
    (s_replies, s_events, s_nodes), _ = res["strata"]
    (q_replies, q_events, q_nodes), _ = res["qsd"]
    for args, s, q in zip(cases, s_replies, q_replies):
        assert s == q, f"block-stream {args}"
    assert s_events == q_events
    assert s_nodes == q_nodes


def test_stream_blocks_other_jobs_and_cancel_keeps_the_chain(workdir, chain, start):
    """While a (slow) stream runs, a second stream and a commit on its chain
    and blockdev-del of an intermediate layer are refused with QEMU's
    messages; a cancelled stream leaves the chain as it was."""
    before = read_image(chain["top"])

    def body(d, paths):
        d.ok("block-stream", **{"job-id": "s", "device": "top", "speed": 1 * MiB})
        d.wait_event("JOB_STATUS_CHANGE", "s", "running")
        refusals = [d.execute("block-stream", {"job-id": "t", "device": "top"}).get("error"),
                    d.execute("block-commit", {"job-id": "c", "device": "top",
                                               "top-node": "mid"}).get("error"),
                    d.execute("blockdev-del", {"node-name": "mid"}).get("error")]
        d.ok("job-pause", id="s")
        d.wait_event("JOB_STATUS_CHANGE", "s", "paused")
        d.ok("job-resume", id="s")
        d.ok("block-job-cancel", device="s")
        d.wait_event("JOB_STATUS_CHANGE", "s", "null")
        return d.job_events("s"), refusals, nodes(d)

    res = run_both(start, body)
    assert res["strata"][0] == res["qsd"][0]
    events = res["strata"][0][0]
    assert ("BLOCK_JOB_CANCELLED", "stream", False) in events
    for kind in KINDS:
        paths = res[kind][1]
        assert backing_chain(paths["top"])[:3] == [("top.qcow2", "mid.qcow2"),
                                                   ("mid.qcow2", "base.qcow2"),
                                                   ("base.qcow2", None)]
        check(paths["top"])
        assert read_image(paths["top"]) == before


def test_stream_with_a_guest_writing(workdir, chain, start):
    """The guest writes through an NBD export of top while the whole chain
    streams into it: afterwards top stands alone and reads exactly what the
    guest wrote over the chain's data."""
    results = {}
    initial = read_image(chain["top"])
    for kind in KINDS:
        d, paths = start(kind)
        guest = start_guest(d, workdir, kind, initial, seed=11)
        model = guest.model
        d.ok("block-stream", **{"job-id": "gs", "device": "top", "speed": 16 * MiB})
        d.wait_event("JOB_STATUS_CHANGE", "gs", "null", timeout=180)
        guest.stop()
        for _ in range(20):
            guest.random_write()  # the export still serves top
        assert guest.read(0, len(model)) == bytes(model)
        guest.close()
        results[kind] = d.job_events("gs")
        d.quit()
        check(paths["top"])
        assert backing_chain(paths["top"])[0] == ("top.qcow2", None)
        assert read_image(paths["top"]) == model
        assert guest.writes > 20
    assert results["strata"] == results["qsd"]


def raw_based_chain(d, workdir):
    """base.raw (a bare `file` node as the backing node) <- mid <- top."""
    base = os.path.join(workdir, "base.raw")
    with open(base, "wb") as f:
        f.write(b"\x5a" * (4 * MiB))
    for name, below in (("mid", "base.raw"), ("top", "mid.qcow2")):
        fmt = "raw" if below.endswith(".raw") else "qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", below, "-F", fmt,
             os.path.join(workdir, f"{name}.qcow2"), str(4 * MiB)], cwd=workdir)
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 1M",
         os.path.join(workdir, "mid.qcow2")])
    d.ok("blockdev-add", driver="file", **{"node-name": "rawbase"}, filename=base,
         **{"read-only": True})
    below = "rawbase"
    for name in ("mid", "top"):
        d.ok("blockdev-add", driver="qcow2", **{"node-name": name}, backing=below,
             file={"driver": "file", "filename": os.path.join(workdir, f"{name}.qcow2")},
             **{"read-only": name == "mid"})
        below = name
    return os.path.join(workdir, "top.qcow2")


def backing_format(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", "-U", path]).stdout)
    return info.get("backing-filename-format")


def test_stream_onto_a_protocol_base_and_backing_mask_protocol(workdir):
    """A base that is a `file` node is written as format "file", as QEMU 7.2
    writes it; with backing-mask-protocol (QEMU 8.0) as "raw"."""
    require("qemu-storage-daemon")
    formats = {}
    for kind, mask in (("qsd", None), ("strata", None), ("strata-mask", True)):
        wd = os.path.join(str(workdir), kind)
        os.makedirs(wd)
        d = JobDaemon("qsd" if kind == "qsd" else "strata", wd)
        try:
            top = raw_based_chain(d, wd)
            args = {"job-id": "p", "device": "top", "base-node": "rawbase"}
            if mask:
                args["backing-mask-protocol"] = True
            d.ok("block-stream", **args)
            d.wait_event("JOB_STATUS_CHANGE", "p", "null")
        finally:
            d.quit()
        formats[kind] = backing_format(top)
        check(top)
        data = read_image(top)
        assert data[:MiB] == b"\x5a" * MiB and data[MiB:2 * MiB] == b"\x33" * MiB
    assert formats == {"qsd": "file", "strata": "file", "strata-mask": "raw"}
