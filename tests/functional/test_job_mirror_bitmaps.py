"""Bitmaps across a mirror's pivot, with a guest writing through NBD.

Users track changes on the source with dirty bitmaps. At the pivot QEMU
leaves them on the source, which no longer sees the guest's writes; with
`x-carry-bitmaps` (a Strata extension) each named bitmap goes on with the
target: the target's qcow2 then stores the persistent ones with QEMU's
flags, and qemu-nbd serves each with exactly the granules the guest wrote
since the bitmap was added, before and after the pivot. Without the member
the target has no bitmap, as in QEMU."""
import os

import pytest

from job_util import MiB, Guest, chain, check, pivot_with_guest, read_image, start  # noqa: F401
from test_bitmap_persist import dirty_map, dirty_ranges, qemu_info_bitmaps
from test_job_mirror_differential import add_target

GRAN = 65536


class RecordingGuest(Guest):
    """A guest that remembers the granules it wrote."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.granules = set()

    def note(self, offset, length):
        self.granules.update(range(offset // GRAN, (offset + length - 1) // GRAN + 1))

    def write(self, offset, data):
        super().write(offset, data)
        self.note(offset, len(data))

    def zero(self, offset, length):
        super().zero(offset, length)
        self.note(offset, length)


def granules_of(ranges):
    out = set()
    for off, length in ranges:
        out.update(range(off // GRAN, (off + length) // GRAN))
    return out


@pytest.mark.parametrize("carry", [True, False])
def test_bitmaps_go_on_with_the_target(workdir, chain, start, carry):
    initial = read_image(chain["top"])
    d, paths = start("strata")
    tpath = add_target(d, paths, "strata")
    d.ok("block-dirty-bitmap-add", node="top", name="b0", granularity=GRAN, persistent=True)
    d.ok("block-dirty-bitmap-add", node="top", name="off", granularity=GRAN, persistent=True,
         disabled=True)
    d.ok("block-dirty-bitmap-add", node="top", name="mem", granularity=GRAN)
    sock = os.path.join(str(workdir), "strata", "nbd.sock")
    d.ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.ok("block-export-add", type="nbd", id="e", **{"node-name": "top"}, writable=True)
    guest = RecordingGuest(sock, "top", bytearray(initial), seed=61)
    for _ in range(30):
        guest.random_write()  # before the job
    guest.start(pause=0.005)
    d.ok("blockdev-mirror", **{"job-id": "m", "device": "top", "target": "tgt", "sync": "full",
                               "x-carry-bitmaps": carry})
    pivot_with_guest(d, "m", guest)  # writes during, while ready and after the pivot
    guest.close()
    tgt = next(n for n in d.ok("query-named-block-nodes") if n["node-name"] == "tgt")
    names = sorted(b["name"] for b in tgt.get("dirty-bitmaps", []))
    assert names == (["b0", "mem", "off"] if carry else [])
    d.quit()
    check(tpath)
    assert read_image(tpath) == guest.model
    stored = {b["name"]: b["flags"] for b in qemu_info_bitmaps(tpath)}
    if not carry:
        assert stored == {}
        return
    # The in-memory bitmap goes with the daemon; the persistent ones are
    # stored, the disabled one as such.
    assert stored == {"b0": ["auto"], "off": []}
    assert granules_of(dirty_ranges(dirty_map(tpath, "b0"))) == guest.granules
    assert dirty_ranges(dirty_map(tpath, "off")) == []
