"""qcow2 writes that fail on the file leak nothing: the fault filter under a
qcow2 node fails the first N requests of a kind (writes, write-zeroes,
flushes, any) while strata-io allocates data clusters and L2 tables, writes
zeroes and flushes; afterwards qemu-img check finds no leak and no
corruption, and the image takes new writes that qemu-io reads back."""
import json
import os

import pytest

from conftest import require, run, strata_binary

COMMANDS = ["write -P 1 0 1M", "flush", "write -z 8M 1M", "write -P 3 8M 100k", "flush",
            "write -P 1 0 1M", "write -P 2 40M 1M", "flush"]


@pytest.mark.parametrize("event", ["write", "zeroes", "flush", "any"])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_failed_writes_leak_no_cluster(workdir, event, count):
    require("qemu-img")
    path = os.path.join(str(workdir), "a.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"])
    spec = {"driver": "qcow2",
            "file": {"driver": "fault", "rules": [{"event": event, "count": count}],
                     "file": {"driver": "file", "filename": path}}}
    args = [strata_binary("strata-io")]
    for c in COMMANDS:
        args += ["-c", c]
    run(args + ["json:" + json.dumps(spec)], check=False)  # early commands fail
    res = run(["qemu-img", "check", path], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    run([strata_binary("strata-io"), "-f", "qcow2", "-c", "write -P 1 0 1M",
         "-c", "write -P 2 40M 1M", path])
    run(["qemu-io", "-f", "qcow2", "-c", "read -P 1 0 1M", "-c", "read -P 2 40M 1M", path])
    res = run(["qemu-img", "check", path], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
