"""blockdev-create and x-blockdev-amend as jobs: the same QMP script
against qemu-storage-daemon and stratad, comparing every reply and the full
event sequence (JOB_STATUS_CHANGE created -> running -> waiting -> pending
-> concluded -> null on job-dismiss; aborting on failure), as libvirt drives
blockdev-create."""
import json
import os
import shutil
import time

import pytest

from conftest import require, run, strata_binary
from qmp_client import Daemon

QSD = "qemu-storage-daemon"


def script(w):
    """(command, arguments, wait-for-job) steps; a step with a job id waits
    until that job is concluded before the next step."""
    f = lambda name: os.path.join(w, name)  # noqa: E731
    return [
        ("query-jobs", None, None),
        # Success, then every verb refused in the concluded state.
        ("blockdev-create", {"job-id": "j1", "options": {
            "driver": "file", "filename": f("a.raw"), "size": 1048576}}, "j1"),
        ("query-jobs", None, None),
        ("query-block-jobs", None, None),
        ("job-pause", {"id": "j1"}, None),
        ("job-resume", {"id": "j1"}, None),
        ("job-cancel", {"id": "j1"}, None),
        ("job-complete", {"id": "j1"}, None),
        ("job-finalize", {"id": "j1"}, None),
        ("block-job-cancel", {"device": "j1"}, None),
        ("block-job-pause", {"device": "j1"}, None),
        ("block-job-dismiss", {"id": "j1"}, None),
        ("block-job-set-speed", {"device": "j1", "speed": 1}, None),
        # Duplicate and invalid ids.
        ("blockdev-create", {"job-id": "j1", "options": {
            "driver": "file", "filename": f("b.raw"), "size": 1048576}}, None),
        ("blockdev-create", {"job-id": "1x", "options": {
            "driver": "file", "filename": f("b.raw"), "size": 1048576}}, None),
        ("blockdev-create", {"job-id": "a b", "options": {
            "driver": "file", "filename": f("b.raw"), "size": 1048576}}, None),
        ("blockdev-create", {"options": {
            "driver": "file", "filename": f("b.raw"), "size": 1048576}}, None),
        ("job-dismiss", {"id": "j1"}, None),
        ("job-dismiss", {"id": "j1"}, None),
        ("query-jobs", None, None),
        # A failing job: aborting, concluded, error in query-jobs.
        ("blockdev-create", {"job-id": "j2", "options": {
            "driver": "file", "filename": f("nodir/a.raw"), "size": 1048576}}, "j2"),
        ("query-jobs", None, None),
        ("job-dismiss", {"id": "j2"}, None),
        # qcow2 on a file node; then on a node that does not exist.
        ("blockdev-add", {"driver": "file", "node-name": "f", "filename": f("img.qcow2")}, None),
        ("blockdev-create", {"job-id": "j3", "options": {
            "driver": "qcow2", "file": "f", "size": 4194304}}, "j3"),
        ("query-jobs", None, None),
        ("job-dismiss", {"id": "j3"}, None),
        ("blockdev-create", {"job-id": "j4", "options": {
            "driver": "qcow2", "file": "nosuch", "size": 4194304}}, "j4"),
        ("query-jobs", None, None),
        ("job-dismiss", {"id": "j4"}, None),
        # x-blockdev-amend.
        ("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f"}, None),
        ("x-blockdev-amend", {"job-id": "a1", "node-name": "q",
                              "options": {"driver": "qcow2"}}, "a1"),
        ("query-jobs", None, None),
        ("job-dismiss", {"id": "a1"}, None),
        ("x-blockdev-amend", {"job-id": "a2", "node-name": "f",
                              "options": {"driver": "qcow2"}}, None),
        ("x-blockdev-amend", {"job-id": "a2", "node-name": "q",
                              "options": {"driver": "file"}}, None),
        ("x-blockdev-amend", {"job-id": "a2", "node-name": "f",
                              "options": {"driver": "file"}}, None),
        ("x-blockdev-amend", {"job-id": "a2", "node-name": "nosuch",
                              "options": {"driver": "qcow2"}}, None),
        ("x-blockdev-amend", {"job-id": "2a", "node-name": "q",
                              "options": {"driver": "qcow2"}}, None),
        ("x-blockdev-amend", {"job-id": "a3", "node-name": "q", "force": True, "options": {
            "driver": "qcow2", "encrypt": {"format": "luks", "state": "inactive",
                                           "keyslot": 1}}}, "a3"),
        ("query-jobs", None, None),
        # Unknown jobs.
        ("job-pause", {"id": "nosuch"}, None),
        ("job-cancel", {"id": "nosuch"}, None),
        ("job-dismiss", {"id": "nosuch"}, None),
        ("block-job-set-speed", {"device": "nosuch", "speed": -1}, None),
        ("block-job-resume", {"device": "nosuch"}, None),
        ("block-job-complete", {"device": "nosuch"}, None),
        ("block-job-finalize", {"id": "nosuch"}, None),
        ("query-block-jobs", None, None),
    ]


def events_view(events):
    return [(e["event"], e.get("data")) for e in events]


def wait_concluded(client, job_id):
    deadline = time.time() + 30
    while time.time() < deadline:
        reply = client.request("query-jobs")
        jobs = {j["id"]: j for j in reply["return"]}
        if job_id not in jobs or jobs[job_id]["status"] == "concluded":
            return
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not conclude")


def drive(daemon, steps):
    c = daemon.client()
    replies = []
    for name, args, wait in steps:
        replies.append(c.request(name, args))
        if wait:
            wait_concluded(c, wait)
    # quit dismisses the concluded job a3 (null), as QEMU's
    # job_cancel_sync_all does.
    replies.append(c.request("quit"))
    try:
        while True:
            msg = c.read_message()
            if "event" in msg:
                c.events.append(msg)
    except (ConnectionError, OSError):
        pass
    daemon.proc.wait(20)
    return replies, events_view(c.events)


def test_blockdev_create_and_amend_jobs_match_qemu_storage_daemon(tmp_path):
    if shutil.which(QSD) is None:
        pytest.fail(f"{QSD} is not installed (./test installs qemu-system-common)")
    require("qemu-img")
    results = {}
    for name, binary in (("qsd", QSD), ("strata", strata_binary("stratad"))):
        w = str(tmp_path / "run")
        if os.path.exists(w):
            shutil.rmtree(w)
        os.makedirs(w)
        open(os.path.join(w, "img.qcow2"), "wb").close()
        with Daemon(binary, w) as d:
            results[name] = drive(d, script(w))
        # The images are usable by QEMU's tools.
        assert os.path.getsize(os.path.join(w, "a.raw")) == 1048576
        info = json.loads(run(["qemu-img", "info", "--output=json",
                               os.path.join(w, "img.qcow2")]).stdout)
        assert info["format"] == "qcow2" and info["virtual-size"] == 4194304
        run(["qemu-img", "check", os.path.join(w, "img.qcow2")])
    steps = script(str(tmp_path / "run"))
    (q_replies, q_events), (s_replies, s_events) = results["qsd"], results["strata"]
    mismatches = [f"step {i} {steps[i][:2] if i < len(steps) else 'quit'}:\n"
                  f"  qsd:    {json.dumps(q)}\n  strata: {json.dumps(s)}"
                  for i, (q, s) in enumerate(zip(q_replies, s_replies)) if q != s]
    assert not mismatches, "\n".join(mismatches)
    assert s_events == q_events
