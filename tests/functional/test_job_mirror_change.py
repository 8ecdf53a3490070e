"""block-job-change and query-block-jobs' actively-synced (QEMU 8.2).

qemu-storage-daemon 7.2 has neither, so these run on stratad alone and
assert the messages of QEMU's source (blockdev.c's find_block_job,
blockjob.c's block_job_change_locked with the type check of QEMU 9.1,
mirror.c's mirror_change, the QAPI union's members). A background mirror
that is ready under a writing guest is not actively synced; switched to
write-blocking it becomes so while the guest keeps writing, and the pivot
leaves the target as the guest wrote it."""
import time

from job_util import MiB, chain, check, read_image, start, start_guest  # noqa: F401
from test_job_mirror_differential import add_target


def change(d, job, type_="mirror", **extra):
    r = d.execute("block-job-change", {"id": job, "type": type_, **extra})
    if "error" in r:
        return (r["error"]["class"], r["error"]["desc"])
    return r["return"]


def job_info(d, job):
    return next(j for j in d.ok("query-block-jobs") if j["device"] == job)


def wait_synced(d, job, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if job_info(d, job)["actively-synced"]:
            return
        time.sleep(0.05)
    raise TimeoutError(job_info(d, job))


def test_block_job_change_errors(workdir, chain, start):
    d, paths = start("strata")
    add_target(d, paths, "strata")
    wb = {"copy-mode": "write-blocking"}
    assert change(d, "m", **wb) == ("DeviceNotActive", "Block job 'm' not found")
    assert change(d, "m") == ("GenericError", "Parameter 'copy-mode' is missing")
    assert change(d, "m", "commit", **wb) == ("GenericError", "Parameter 'copy-mode' is unexpected")
    d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt", "sync": "full",
                               "speed": 1 * MiB, "auto-dismiss": False})
    assert change(d, "m", "commit") == ("GenericError", "Job 'm' is 'mirror' job, not 'commit'")
    assert change(d, "m", **{"copy-mode": "background"}) == {}  # already so
    assert job_info(d, "m")["actively-synced"] is False
    assert change(d, "m", **wb) == {}
    assert change(d, "m", **wb) == {}  # already so
    assert change(d, "m", **{"copy-mode": "background"}) == (
        "GenericError", "Change to copy mode 'background' is not implemented")
    d.ok("block-job-set-speed", device="m", speed=0)
    d.wait_event("BLOCK_JOB_READY", "m")
    wait_synced(d, "m")
    d.ok("job-cancel", id="m")
    d.wait_event("JOB_STATUS_CHANGE", "m", "concluded")
    assert change(d, "m", **wb) == (
        "GenericError", "Job 'm' in state 'concluded' cannot accept command verb 'change'")
    d.ok("job-dismiss", id="m")
    # An active commit (type commit) cannot change, and has no
    # actively-synced member.
    d.ok("block-commit", **{"job-id": "c", "device": "top", "speed": 1 * MiB})
    assert change(d, "c", "commit") == ("GenericError", "Job type does not support change")
    assert "actively-synced" not in job_info(d, "c")
    d.ok("job-cancel", id="c")
    d.wait_event("JOB_STATUS_CHANGE", "c", "null")
    d.quit()


def test_switch_a_ready_background_mirror_to_write_blocking(workdir, chain, start):
    initial = read_image(chain["top"])
    d, paths = start("strata")
    tpath = add_target(d, paths, "strata")
    d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt",
                               "sync": "full"})
    guest = start_guest(d, workdir, "strata", initial, seed=21)
    d.wait_event("BLOCK_JOB_READY", "m", timeout=120)
    # Background mode: the guest's writes only mark the bitmap.
    assert job_info(d, "m")["actively-synced"] is False
    assert change(d, "m", **{"copy-mode": "write-blocking"}) == {}
    wait_synced(d, "m")  # with the guest still writing
    writes = guest.writes
    time.sleep(0.3)
    assert guest.writes > writes
    assert job_info(d, "m")["actively-synced"] is True
    d.ok("job-complete", id="m")
    d.wait_event("JOB_STATUS_CHANGE", "m", "null")
    guest.stop()
    for _ in range(20):
        guest.random_write()
    guest.close()
    d.quit()
    check(tpath)
    assert read_image(tpath) == guest.model
