"""block-commit, intermediate and active, against qemu-storage-daemon.

The same QMP script runs on both daemons over copies of the same chain: the
job's events must match in order, and the images left behind must read the
same (qemu-img compare), pass qemu-img check and show the same backing
chain. With a guest writing through an NBD export while the job runs, the
result must equal a model of what the guest wrote."""
from conftest import run
from job_util import (KINDS, MiB, backing_chain, chain, check, read_image,  # noqa: F401
                      run_both, start, start_guest)


def test_intermediate_commit_matches_qemu(workdir, chain, start):
    def body(d, paths):
        d.ok("block-commit", **{"job-id": "c1", "device": "top", "top-node": "mid",
                                "base-node": "base"})
        d.wait_event("JOB_STATUS_CHANGE", "c1", "null")
        jobs = d.ok("query-jobs")
        nodes = sorted(n["node-name"] for n in d.ok("query-named-block-nodes")
                       if not n["node-name"].startswith("#"))
        return d.job_events("c1"), jobs, nodes

    res = run_both(start, body)
    (s_events, s_jobs, s_nodes), s_paths = res["strata"]
    (q_events, q_jobs, q_nodes), q_paths = res["qsd"]
    assert s_events == q_events
    assert s_events[-1] == ("JOB_STATUS_CHANGE", "null")
    assert s_jobs == q_jobs == []
    assert s_nodes == q_nodes
    for paths in (s_paths, q_paths):
        for p in paths.values():
            check(p)
    # top now names base as its backing file, on both sides.
    assert backing_chain(s_paths["top"]) == backing_chain(q_paths["top"])
    assert backing_chain(s_paths["top"])[0] == ("top.qcow2", "base.qcow2")
    run(["qemu-img", "compare", s_paths["top"], q_paths["top"]])
    run(["qemu-img", "compare", s_paths["base"], q_paths["base"]])


def test_commit_argument_errors_match_qemu(workdir, chain, start):
    cases = [
        {"device": "nosuch"},
        {"device": "mid"},
        {"device": "top", "top-node": "mid", "top": "x"},
        {"device": "top", "base-node": "base", "base": "x"},
        {"device": "top", "top-node": "nosuch"},
        {"device": "top", "base-node": "nosuch"},
        {"device": "top", "top-node": "base", "base-node": "base"},
        {"device": "top", "top-node": "base", "base-node": "mid"},
        {"device": "top", "top-node": "mid", "base-node": "top"},
        {"device": "top", "base": "nosuch.qcow2"},
        {"device": "top", "top": "nosuch.qcow2"},
        {"device": "top", "backing-file": "x"},
        {"device": "top", "top-node": "top", "base-node": "base", "backing-file": "x"},
        {"device": "top", "job-id": "1bad", "top-node": "mid"},
        {"device": "top", "job-id": "j", "speed": -1, "top-node": "mid"},
        {"device": "base-file"},
    ]

    def body(d, paths):
        replies = []
        for args in cases:
            reply = d.execute("block-commit", args)
            replies.append(reply.get("error", reply))
        d.pump()
        events = [(e["event"], e.get("data", {}).get("status")) for e in d.qmp.events]
        return replies, events

    res = run_both(start, body)
    (s_replies, s_events), _ = res["strata"]
    (q_replies, q_events), _ = res["qsd"]
    for args, s, q in zip(cases, s_replies, q_replies):
        assert s == q, f"block-commit {args}"
    assert s_events == q_events


def test_active_commit_with_a_guest_writing(workdir, chain, start):
    """Active commit of top into base while a guest writes through NBD; job
    events as QEMU's, and after job-complete the base holds exactly what
    the guest sees."""
    results = {}
    initial = read_image(chain["top"])
    for kind in KINDS:
        d, paths = start(kind)
        guest = start_guest(d, workdir, kind, initial, seed=7)
        model = guest.model
        d.ok("block-commit", **{"job-id": "ac", "device": "top", "speed": 32 * MiB})
        d.wait_event("BLOCK_JOB_READY", "ac", timeout=180)
        guest.stop()
        for _ in range(50):
            guest.random_write()  # while ready: these must reach the base
        d.ok("job-complete", id="ac")
        d.wait_event("JOB_STATUS_CHANGE", "ac", "null")
        # The export now serves the base: the guest keeps going there.
        for _ in range(20):
            guest.random_write()
        assert guest.read(0, len(model)) == bytes(model)
        guest.close()
        results[kind] = d.job_events("ac")
        d.quit()
        check(paths["base"])
        assert read_image(paths["base"]) == model
        assert guest.writes > 70
    assert results["strata"] == results["qsd"]


def test_soft_and_hard_cancel_of_an_active_commit_in_ready(workdir, chain, start):
    for kind in KINDS:
        d, paths = start(kind)
        d.ok("block-commit", **{"job-id": "s", "device": "top"})
        d.wait_event("BLOCK_JOB_READY", "s")
        d.ok("block-job-cancel", device="s")  # soft: completes without pivot
        d.wait_event("JOB_STATUS_CHANGE", "s", "null")
        nodes = {n["node-name"] for n in d.ok("query-named-block-nodes")}
        assert {"top", "mid", "base"} <= nodes
        assert ("BLOCK_JOB_COMPLETED", "commit", False) in d.job_events("s")
        d.ok("block-commit", **{"job-id": "h", "device": "top"})
        d.wait_event("BLOCK_JOB_READY", "h")
        d.ok("job-cancel", id="h")  # always forced: cancelled
        d.wait_event("JOB_STATUS_CHANGE", "h", "null")
        assert ("BLOCK_JOB_CANCELLED", "commit", False) in d.job_events("h")
        d.quit()
        # top still reads through its chain as before the commits.
        assert backing_chain(paths["top"])[0] == ("top.qcow2", "mid.qcow2")
        check(paths["base"])


def test_manual_finalize_and_dismiss_and_pause_in_ready(workdir, chain, start):
    events = {}
    for kind in KINDS:
        d, paths = start(kind)
        d.ok("block-commit", **{"job-id": "m", "device": "top", "top-node": "mid",
                                "auto-finalize": False, "auto-dismiss": False})
        d.wait_event("BLOCK_JOB_PENDING", "m")
        d.ok("job-finalize", id="m")
        d.wait_event("JOB_STATUS_CHANGE", "m", "concluded")
        d.ok("job-dismiss", id="m")
        d.ok("block-commit", **{"job-id": "r", "device": "top"})
        d.wait_event("BLOCK_JOB_READY", "r")
        d.ok("job-pause", id="r")
        d.wait_event("JOB_STATUS_CHANGE", "r", "standby")
        d.ok("job-resume", id="r")
        d.wait_event("JOB_STATUS_CHANGE", "r", "ready")
        d.ok("job-complete", id="r")
        d.wait_event("JOB_STATUS_CHANGE", "r", "null")
        events[kind] = (d.job_events("m"), d.job_events("r"))
        d.quit()
        check(paths["base"])
    assert events["strata"] == events["qsd"]
