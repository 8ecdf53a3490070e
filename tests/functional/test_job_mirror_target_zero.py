"""blockdev-mirror's target-is-zero (QEMU 10.1; qemu-storage-daemon 7.2 has
no such member, so these run on stratad alone, checked with qemu-img).

On a fresh qcow2 target the job writes no zeroes where the target still
reads as zeroes: the ranges the source reads as zeroes stay unallocated in
the target (qemu-img map), where without the member they are written as
zeroes. drive-mirror into the image it creates for sync full does the same
by itself. Zeroes the guest writes over data already copied still reach the
target, in background and write-blocking mode: the pivoted target reads
as the guest wrote."""
import json
import os

import pytest

from job_util import chain, check, pivot_with_guest, read_image, run, start, start_guest  # noqa: F401
from test_job_mirror_differential import add_target


def present_bytes(path):
    """Bytes qemu-img map says the image itself decides (data or zero
    flags), without its backing file."""
    out = run(["qemu-img", "map", "--output=json", path]).stdout
    return sum(e["length"] for e in json.loads(out) if e.get("present", e["data"]))


@pytest.mark.parametrize("target_is_zero", [False, True])
def test_zero_ranges_are_not_written_to_a_zero_target(workdir, chain, start, target_is_zero):
    initial = read_image(chain["top"])
    d, paths = start("strata")
    tpath = add_target(d, paths, "strata")
    d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt", "sync": "full",
                               "target-is-zero": target_is_zero})
    d.wait_event("BLOCK_JOB_READY", "m", timeout=120)
    d.ok("job-cancel", id="m")
    d.wait_event("JOB_STATUS_CHANGE", "m", "null")
    d.quit()
    check(tpath)
    assert read_image(tpath) == initial
    data = sum(1 for i in range(0, len(initial), 65536) if any(initial[i:i + 65536]))
    present = present_bytes(tpath)
    if target_is_zero:
        assert present == data * 65536
    else:
        assert present > data * 65536


def test_drive_mirror_into_a_new_image_writes_no_zeroes(workdir, chain, start):
    """drive-mirror sync full creates a target without a backing file, which
    reads as zeroes: the job treats it as target-is-zero."""
    initial = read_image(chain["top"])
    d, paths = start("strata")
    tpath = os.path.join(os.path.dirname(paths["top"]), "new.qcow2")
    d.ok("drive-mirror", **{"job-id": "m", "device": "top", "target": tpath, "sync": "full",
                            "format": "qcow2"})
    d.wait_event("BLOCK_JOB_READY", "m", timeout=120)
    d.ok("job-cancel", id="m")
    d.wait_event("JOB_STATUS_CHANGE", "m", "null")
    d.quit()
    check(tpath)
    assert read_image(tpath) == initial
    data = sum(1 for i in range(0, len(initial), 65536) if any(initial[i:i + 65536]))
    assert present_bytes(tpath) == data * 65536


@pytest.mark.parametrize("mode", ["background", "write-blocking"])
def test_guest_zeroes_over_copied_data_reach_the_target(workdir, chain, start, mode):
    initial = read_image(chain["top"])
    d, paths = start("strata")
    tpath = add_target(d, paths, "strata")
    guest = start_guest(d, workdir, "strata", initial, seed=33)
    d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt", "sync": "full",
                               "copy-mode": mode, "target-is-zero": True})
    pivot_with_guest(d, "m", guest)
    for _ in range(200):
        guest.zero(guest.rng.randrange(0, len(guest.model) // 4096 - 16) * 4096, 16 * 4096)
    assert guest.read(0, len(guest.model)) == bytes(guest.model)
    guest.close()
    d.quit()
    check(tpath)
    assert read_image(tpath) == guest.model
