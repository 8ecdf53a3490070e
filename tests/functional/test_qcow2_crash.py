"""Crash safety: the writer is killed at random points during allocating
writes; QEMU's check then finds no corruption (leaks allowed, repaired by
strata-img check -r leaks) and every write flushed before the kill reads
back. With lazy refcounts the next read-write open repairs the image.
"""
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import require, run, strata_binary

MiB = 1 << 20
CLUSTER = 65536


def writer(image):
    return subprocess.Popen([strata_binary("strata-io"), "-f", "qcow2", image],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def wait_for(proc, marker):
    for line in proc.stdout:
        if line.replace("strata-io> ", "").strip() == marker:
            return
    raise AssertionError(f"writer ended before {marker}")


def crash_round(image, rng, durable, size):
    proc = writer(image)
    touched = set()
    for r in range(3):
        batch = []
        for _ in range(rng.randint(5, 30)):
            c = rng.randrange(0, size // CLUSTER)
            off = c * CLUSTER + rng.choice([0, 512, 4096])
            length = rng.choice([4096, CLUSTER, 3 * CLUSTER])
            length = min(length, size - off)
            pat = rng.randrange(1, 255)
            proc.stdin.write(f"write -P {pat} {off} {length}\n")
            batch.append((off, length, pat))
            for k in range(off // 4096, (off + length + 4095) // 4096):
                touched.add(k)
        proc.stdin.write(f"flush\necho flushed {r}\n")
        proc.stdin.flush()
        wait_for(proc, f"flushed {r}")
        for off, length, pat in batch:
            for k in range((off + 4095) // 4096, (off + length) // 4096):
                durable[k] = pat
                touched.discard(k)
    # Unflushed allocating writes, then the kill.
    for _ in range(200):
        c = rng.randrange(0, size // CLUSTER)
        proc.stdin.write(f"write -P 0xee {c * CLUSTER + 512} {2 * CLUSTER}\n")
        for k in range((c * CLUSTER) // 4096, (c * CLUSTER + 3 * CLUSTER) // 4096):
            durable.pop(k, None)
    try:
        proc.stdin.flush()
    except BrokenPipeError:
        pass
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for k in touched:
        durable.pop(k, None)


def verify(image, durable):
    cmds = [f"read -P {pat} {k * 4096} 4096" for k, pat in sorted(durable.items())]
    if not cmds:
        return
    res = subprocess.run([strata_binary("strata-io"), "-r", "-f", "qcow2", image],
                         input="\n".join(cmds) + "\n", capture_output=True, text=True)
    bad = [line for line in res.stdout.splitlines() if not line.startswith("read ")]
    assert res.returncode == 0, bad[:10]


@pytest.mark.parametrize("lazy", [False, True])
def test_kill_during_allocating_writes(workdir, lazy):
    require("qemu-img")
    size = 32 * MiB
    image = os.path.join(workdir, "crash.qcow2")
    opts = "lazy_refcounts=on" if lazy else "lazy_refcounts=off"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, image, str(size)])
    rng = random.Random(7 if lazy else 11)
    durable = {}
    for _ in range(4):
        crash_round(image, rng, durable, size)
        if lazy:
            # The dirty bit is set; a read-write open repairs the refcounts.
            run([strata_binary("strata-io"), "-f", "qcow2", "-c", "flush", image])
        chk = run(["qemu-img", "check", image], check=False)
        assert chk.returncode in (0, 3), chk.stdout + chk.stderr
        assert "ERROR" not in chk.stdout + chk.stderr
        rep = run([strata_binary("strata-img"), "check", "-r", "leaks", image], check=False)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        assert run(["qemu-img", "check", image], check=False).returncode == 0
        verify(image, durable)
