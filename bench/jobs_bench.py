#!/usr/bin/python3
"""bench/jobs_bench.py [--build DIR] [--runs N] [--dir DIR] [--direct] [--jobs a,b,c] [--guest]

Block jobs side by side: stratad against qemu-storage-daemon on the same
chains, run after run alternating the two, printing per job the median time
of each daemon and the median and range of the ratios qsd/strata (higher is
better for Strata), and with --guest the guest's 4 KiB random-write IOPS
during the job as a fraction of its IOPS with no job (fio's nbd engine,
queue depth 16, through the daemon's NBD export of the active layer).

Jobs (1 GiB of data each):
  active      active commit of a 1 GiB overlay into its base, to ready and complete
  inter       intermediate commit of a 1 GiB middle layer into the base
  stream      stream of a 1 GiB base into the top layer
  mirror      blockdev-mirror (sync full) of the chain into a new qcow2, to
              ready and complete
  mirror-wb   the same in copy-mode write-blocking
  mirror-nbd  the same into a qcow2 exported by a second daemon of the same
              kind, through an NBD node (live storage migration)
  backup      blockdev-backup sync full of the top layer (1 GiB of data) into a
              new qcow2
  backup-inc  blockdev-backup sync incremental from a persistent bitmap that
              marks 5% of the disk (64 KiB every 1.25 MiB, written by qemu-io)
  backup-slow the full backup into a target behind a throttle node limited
              to 20 MiB/s of writes (throttle-group; use with --guest)
  backup-fleece
              the same slow target, the backup taken through a fleecing
              image: a sync=none backup job keeps the point in time in a
              local qcow2 (filter-node-name `fl`), a snapshot-access node
              reads it, and the full backup copies that view into the slow
              target; timed until the full backup ends

--dir picks where the images live (default /dev/shm, tmpfs); --direct opens
them with cache.direct=on (use a directory on a real disk: the production
configuration).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "functional"))
from qmp_client import Daemon  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def make_chain(d, job):
    """qcow2 base <- mid <- top; the layer the job copies holds 1 GiB."""
    paths = {n: os.path.join(d, f"{n}.qcow2") for n in ("base", "mid", "top")}
    below = None
    for n in ("base", "mid", "top"):
        args = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if below:
            args += ["-b", paths[below], "-F", "qcow2"]
        sh(*args, paths[n], "1G")
        below = n
    full = {"active": "top", "inter": "mid", "stream": "base"}.get(job, "top")
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1G", paths[full])
    for n in ("base", "mid", "top"):
        if n != full:
            sh("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64M", paths[n])
    if job == "backup-inc":
        sh("qemu-img", "bitmap", "--add", paths["top"], "b0")
        writes = []
        for off in range(0, GiB, 20 * 64 * 1024):
            writes += ["-c", f"write -P 0x33 {off} 64k"]
        sh("qemu-io", "-f", "qcow2", *writes, paths["top"])
    return paths


def open_chain(qmp, paths, direct):
    below = None
    for n in ("base", "mid", "top"):
        qmp.execute("blockdev-add", driver="file", **{"node-name": f"{n}-f"},
                    filename=paths[n], cache={"direct": direct, "no-flush": False})
        qmp.execute("blockdev-add", driver="qcow2", **{"node-name": n}, file=f"{n}-f",
                    backing=below, **{"read-only": n != "top"},
                    cache={"direct": direct, "no-flush": False})
        below = n


def wait_event(qmp, name, job, status=None, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in qmp.events:
            d = e.get("data", {})
            if e["event"] == name and d.get("id", d.get("device")) == job and \
                    (status is None or d.get("status") == status):
                return
        qmp.sock.settimeout(0.2)
        try:
            msg = qmp.read_message()
            if "event" in msg:
                qmp.events.append(msg)
        except (TimeoutError, OSError):
            pass
        finally:
            qmp.sock.settimeout(30)
    raise TimeoutError(f"{name} {job}")


MIRRORS = ("mirror", "mirror-wb", "mirror-nbd")
BACKUPS = ("backup", "backup-inc", "backup-slow", "backup-fleece")
SLOW = ("backup-slow", "backup-fleece")


def daemon_binary(kind, build):
    if kind == "strata":
        return os.path.join(build, "tools", "stratad")
    return "qemu-storage-daemon"


def add_node(qmp, path, name, direct):
    """A new 1 GiB qcow2 at `path`, opened as node `name`."""
    sh("qemu-img", "create", "-q", "-f", "qcow2", path, "1G")
    cache = {"direct": direct, "no-flush": False}
    qmp.execute("blockdev-add", driver="file", **{"node-name": f"{name}-f"}, filename=path,
                cache=cache)
    qmp.execute("blockdev-add", driver="qcow2", **{"node-name": name}, file=f"{name}-f",
                cache=cache)


def add_target(qmp, d, direct):
    add_node(qmp, os.path.join(d, "tgt.qcow2"), "tgt", direct)


def prepare_target(kind, build, job, d, qmp, direct):
    """A mirror's target node `tgt`; for mirror-nbd, in a second daemon
    (returned, to be stopped after the run)."""
    if job not in MIRRORS + BACKUPS:
        return None
    if job != "mirror-nbd":
        add_target(qmp, d, direct)
        if job in SLOW:
            qmp.execute("object-add", **{"qom-type": "throttle-group", "id": "tg",
                                         "limits": {"bps-write": 20 * MiB}})
            qmp.execute("blockdev-add", driver="throttle", **{"node-name": "tgt-t"},
                        file="tgt", **{"throttle-group": "tg"})
        if job == "backup-fleece":
            add_node(qmp, os.path.join(d, "fleece.qcow2"), "fleece", direct)
        return None
    td = os.path.join(d, "target")
    os.makedirs(td)
    target = Daemon(daemon_binary(kind, build), td)
    tq = target.client()
    add_target(tq, td, direct)
    sock = os.path.join(td, "nbd.sock")
    tq.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    tq.execute("block-export-add", type="nbd", id="t", **{"node-name": "tgt"}, writable=True)
    qmp.execute("blockdev-add", driver="nbd", **{"node-name": "tgt"},
                server={"type": "unix", "path": sock}, export="tgt")
    return target, tq


def start_job(qmp, job):
    if job == "backup-fleece":
        qmp.execute("blockdev-backup", **{"job-id": "fl-job", "device": "top",
                                          "target": "fleece", "sync": "none",
                                          "filter-node-name": "fl"})
        qmp.execute("blockdev-add", driver="snapshot-access", **{"node-name": "snap"}, file="fl")
        qmp.execute("blockdev-backup", **{"job-id": "j", "device": "snap", "target": "tgt-t",
                                          "sync": "full"})
    elif job in BACKUPS:
        args = {"job-id": "j", "device": "top", "sync": "full",
                "target": "tgt-t" if job in SLOW else "tgt"}
        if job == "backup-inc":
            args.update(sync="incremental", bitmap="b0")
        qmp.execute("blockdev-backup", **args)
    elif job in MIRRORS:
        mode = "write-blocking" if job == "mirror-wb" else "background"
        qmp.execute("blockdev-mirror", **{"job-id": "j", "device": "top", "target": "tgt",
                                          "sync": "full", "copy-mode": mode})
    elif job == "active":
        qmp.execute("block-commit", **{"job-id": "j", "device": "top"})
    elif job == "inter":
        qmp.execute("block-commit", **{"job-id": "j", "device": "top", "top-node": "mid"})
    else:
        qmp.execute("block-stream", **{"job-id": "j", "device": "top"})


def finish_job(qmp, job):
    if job == "active" or job in MIRRORS:
        wait_event(qmp, "BLOCK_JOB_READY", "j")
        qmp.execute("job-complete", id="j")
    wait_event(qmp, "JOB_STATUS_CHANGE", "j", "null")


def fio(sock, seconds, log=None):
    args = ["fio", "--name=g", "--ioengine=nbd", f"--uri=nbd+unix:///top?socket={sock}",
            "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=1G", f"--runtime={seconds}",
            "--time_based", "--output-format=json"]
    if log:
        args += [f"--write_iops_log={log}", "--log_avg_msec=100"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def iops_between(log, t0, t1):
    """Mean IOPS fio logged between t0 and t1 (ms from fio's start)."""
    vals = []
    with open(log + "_iops.1.log") as f:
        for line in f:
            ms, v = int(line.split(",")[0]), int(line.split(",")[1])
            if t0 <= ms <= t1:
                vals.append(v)
    return statistics.mean(vals) if vals else 0.0


def one_run(kind, build, job, base_dir, direct, guest):
    d = tempfile.mkdtemp(dir=base_dir)
    try:
        paths = make_chain(d, job)
        daemon = Daemon(daemon_binary(kind, build), d)
        qmp = daemon.client()
        open_chain(qmp, paths, direct)
        target = prepare_target(kind, build, job, d, qmp, direct)
        sock = os.path.join(d, "nbd.sock")
        result = {}
        if guest:
            qmp.execute("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
            qmp.execute("block-export-add", type="nbd", id="e", **{"node-name": "top"},
                        writable=True)
            idle = fio(sock, 3)
            text = idle.communicate()[0]
            out = json.loads(text[text.index("{"):])  # after fio's "connected" line
            result["idle_iops"] = out["jobs"][0]["write"]["iops"]
            log = os.path.join(d, "iops")
            g = fio(sock, 180, log)
            time.sleep(1.0)
        t_fio0 = time.time()
        t0 = time.time()
        start_job(qmp, job)
        finish_job(qmp, job)
        t1 = time.time()
        result["seconds"] = t1 - t0
        if guest:
            g.terminate()
            g.communicate()
            a = (t0 - t_fio0 + 1.0) * 1000
            b = (t1 - t_fio0 + 1.0) * 1000
            result["job_iops"] = iops_between(log, a, b)
        qmp.execute("quit")
        daemon.proc.wait(60)
        if target:
            target[1].execute("quit")
            target[0].proc.wait(60)
        return result
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--dir", default="/dev/shm")
    p.add_argument("--direct", action="store_true")
    p.add_argument("--jobs", default="active,inter,stream")
    p.add_argument("--guest", action="store_true")
    a = p.parse_args()
    for job in a.jobs.split(","):
        res = {"strata": [], "qsd": []}
        for i in range(a.runs):
            order = ["strata", "qsd"] if i % 2 == 0 else ["qsd", "strata"]
            for kind in order:
                res[kind].append(one_run(kind, a.build, job, a.dir, a.direct, a.guest))
        ratios = [q["seconds"] / s["seconds"] for s, q in zip(res["strata"], res["qsd"])]
        line = (f"{job:7s} strata {statistics.median(r['seconds'] for r in res['strata']):6.2f} s"
                f"  qsd {statistics.median(r['seconds'] for r in res['qsd']):6.2f} s"
                f"  speed-up median {statistics.median(ratios):.2f}"
                f" (range {min(ratios):.2f}-{max(ratios):.2f})")
        if a.guest:
            for kind in ("strata", "qsd"):
                fr = [r["job_iops"] / r["idle_iops"] for r in res[kind] if r["idle_iops"]]
                idle = statistics.median(r["idle_iops"] for r in res[kind])
                during = statistics.median(r["job_iops"] for r in res[kind])
                line += (f"  {kind} guest IOPS idle {idle:.0f} during {during:.0f},"
                         f" during/idle median {statistics.median(fr):.2f}"
                         f" (range {min(fr):.2f}-{max(fr):.2f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
