#!/usr/bin/python3
"""bench/nbd_direct_bench.py [--build DIR | --strata-nbd PATH] [--runs N] [--time S]
                            [--dir DIR] [--workloads a,b] [--servers a,b]

NBD serving in the production configuration: O_DIRECT on a real disk.
strata-nbd and qemu-nbd serve the same 1 GiB fully allocated qcow2 image
(random data, written with qemu-img convert from a raw file of the same size)
with --cache=none and each --aio mode; fio's nbd engine is the client over a
Unix socket. The limit is fio itself on the raw file with io_uring and
direct=1: the same disk, the same data, no NBD and no qcow2 in between.

Servers (all by default; --servers picks some, by these names):
  qemu-native   qemu-nbd   --cache=none --aio=native
  qemu-io_uring qemu-nbd   --cache=none --aio=io_uring
  qemu-threads  qemu-nbd   --cache=none --aio=threads
  strata-threads  strata-nbd --cache=none --aio=threads
  strata-io_uring strata-nbd --cache=none --aio=io_uring
  strata-native   strata-nbd --cache=none --aio=native
  limit         fio --ioengine=io_uring --direct=1 on the raw file

Workloads (fio, numjobs 1, time based, --time seconds each, default 10):
  randread   4 KiB random read, iodepth 32
  randwrite  4 KiB random write, iodepth 32
  seqread    1 MiB sequential read, iodepth 4

Alternating runs: in run i every server runs once, a fresh server process
per run, in the order qemu-native, strata-threads, qemu-io_uring,
strata-io_uring, qemu-threads, strata-native, limit on even runs and the
reverse on odd runs. Each server must open the image with O_DIRECT (checked
in /proc/PID/fdinfo) or the run fails.

Printed per workload: median IOPS per server with the range over the runs
(and MiB/s for seqread); the ratio strata / qemu-nbd in its best mode (the
qemu-nbd mode with the highest median IOPS), run by run against that mode's
run of the same alternation round, median and range (higher is better for
Strata); the server's CPU time per GiB moved (utime + stime of the server
process, all threads, from /proc/PID/stat before and after the fio run,
over the bytes fio moved) with its median, and the ratio to qemu-nbd's
lowest-CPU mode the same way (lower is better for Strata); and each server's
median as a fraction of the fio limit. --dir picks where the image lives
(default /var/tmp, which should be a real disk; not tmpfs).
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

GiB = 1 << 30
MiB = 1 << 20
HZ = os.sysconf("SC_CLK_TCK")
O_DIRECT = 0o40000

WORKLOADS = {
    "randread": {"rw": "randread", "bs": "4k", "iodepth": 32,
                 "title": "4 KiB random read, iodepth 32"},
    "randwrite": {"rw": "randwrite", "bs": "4k", "iodepth": 32,
                  "title": "4 KiB random write, iodepth 32"},
    "seqread": {"rw": "read", "bs": "1M", "iodepth": 4,
                "title": "1 MiB sequential read, iodepth 4"},
}
QEMU = ("qemu-native", "qemu-io_uring", "qemu-threads")
STRATA = ("strata-threads", "strata-io_uring", "strata-native")
# The order of even runs: each qemu-nbd mode next to a strata-nbd mode.
ORDER = ("qemu-native", "strata-threads", "qemu-io_uring", "strata-io_uring",
         "qemu-threads", "strata-native", "limit")
LABEL = {
    "qemu-native": "qemu-nbd --aio=native",
    "qemu-io_uring": "qemu-nbd --aio=io_uring",
    "qemu-threads": "qemu-nbd --aio=threads",
    "strata-threads": "strata-nbd --aio=threads",
    "strata-io_uring": "strata-nbd --aio=io_uring",
    "strata-native": "strata-nbd --aio=native",
    "limit": "fio io_uring direct (limit)",
}


class BenchError(Exception):
    pass


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True)


class Bench:
    def __init__(self, a):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="strata-bench-", dir=a.dir)
        self.raw = os.path.join(self.dir, "disk.raw")
        self.img = os.path.join(self.dir, "disk.qcow2")
        # (a socket path must fit in 108 bytes, whatever --dir is)
        self.sockdir = tempfile.mkdtemp(prefix="strata-bench-")
        self.sock = os.path.join(self.sockdir, "nbd.sock")
        self.server = None  # the running server's Popen
        self.log = None

    # --- images -----------------------------------------------------------
    def make_images(self):
        """1 GiB of random data in a raw file (the limit's file), converted
        into a fully allocated qcow2 (the servers' image)."""
        with open("/dev/urandom", "rb") as src, open(self.raw, "wb") as dst:
            chunk = 16 * MiB
            for _ in range(GiB // chunk):
                dst.write(src.read(chunk))
            dst.flush()
            os.fsync(dst.fileno())
        sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", self.raw, self.img)
        sh("sync", "-f", self.img)  # nothing left for an O_DIRECT read to flush first
        extents = json.loads(sh("qemu-img", "map", "--output=json", "-f", "qcow2",
                                self.img).stdout)
        hole = [e for e in extents if not e["data"] or e.get("zero")]
        if hole:
            raise BenchError(f"qcow2 image not fully allocated: {hole[:3]}")

    # --- servers ----------------------------------------------------------
    def start_server(self, name):
        kind, aio = name.split("-", 1)
        binary = self.a.strata_nbd if kind == "strata" else "qemu-nbd"
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.log = os.path.join(self.dir, f"{name}.log")
        args = [binary, "-t", "-e", "0", "-f", "qcow2", "--cache=none", f"--aio={aio}",
                "-k", self.sock, self.img]
        with open(self.log, "w") as log:
            self.server = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        uri = f"nbd+unix:///?socket={self.sock}"
        while True:
            if self.server.poll() is not None:
                raise BenchError(f"{' '.join(args)} exited with status "
                                 f"{self.server.returncode}:\n{self.server_log()}")
            # Ready once it answers (the socket file appears at bind, before listen).
            if os.path.exists(self.sock) and subprocess.run(
                    ["nbdinfo", "--size", uri], capture_output=True).returncode == 0:
                break
            if time.time() > deadline:
                raise BenchError(f"{' '.join(args)} did not answer on {self.sock} "
                                 f"within 20 s:\n{self.server_log()}")
            time.sleep(0.02)
        self.check_direct(args)

    def server_log(self):
        try:
            with open(self.log) as f:
                return f.read()[-4000:] or "(no output)"
        except OSError:
            return "(no output)"

    def check_direct(self, args):
        """The production configuration: the image open with O_DIRECT."""
        pid = self.server.pid
        img = os.path.realpath(self.img)
        found = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != img:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = next(int(l.split()[1], 8) for l in f if l.startswith("flags:"))
            except (OSError, StopIteration):
                continue
            found.append(flags)
        if not found or any(not f & O_DIRECT for f in found):
            raise BenchError(f"{' '.join(args)}: the image is not open with O_DIRECT "
                             f"(open flags {[oct(f) for f in found]})")

    def stop_server(self):
        p, self.server = self.server, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def cpu_seconds(self):
        with open(f"/proc/{self.server.pid}/stat") as f:
            # The command name in field 2 may hold spaces: split after its ')'.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime

    # --- one run ----------------------------------------------------------
    def fio(self, workload, target):
        w = WORKLOADS[workload]
        args = ["fio", "--name=b", f"--rw={w['rw']}", f"--bs={w['bs']}",
                f"--iodepth={w['iodepth']}", "--numjobs=1", "--size=1G",
                f"--runtime={self.a.time}", "--time_based", "--output-format=json"]
        args += target
        p = subprocess.run(args, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(args)} failed ({p.returncode}):\n"
                             f"{p.stderr[-2000:]}{p.stdout[-2000:]}")
        text = p.stdout  # (the nbd engine prints a line before the JSON)
        job = json.loads(text[text.index("{"):])["jobs"][0]
        if job.get("error"):
            raise BenchError(f"fio error {job['error']} on {workload}:\n{p.stderr[-2000:]}")
        d = job["write"] if w["rw"] == "randwrite" else job["read"]
        return {"iops": d["iops"], "mibs": d["bw_bytes"] / MiB,
                "bytes": job["read"]["io_bytes"] + job["write"]["io_bytes"]}

    def one_run(self, name, workload):
        if name == "limit":
            return self.fio(workload, ["--ioengine=io_uring", "--direct=1",
                                       f"--filename={self.raw}"])
        self.start_server(name)
        try:
            c0 = self.cpu_seconds()
            r = self.fio(workload, ["--ioengine=nbd",
                                    f"--uri=nbd+unix:///?socket={self.sock}"])
            if self.server.poll() is not None:
                raise BenchError(f"{name} exited during the run:\n{self.server_log()}")
            c1 = self.cpu_seconds()
        finally:
            self.stop_server()
        r["cpu_gib"] = (c1 - c0) / (r["bytes"] / GiB) if r["bytes"] else float("nan")
        return r

    def cleanup(self):
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.sockdir, ignore_errors=True)


# --- report -----------------------------------------------------------------
def med(xs):
    return statistics.median(xs)


def fmt_num(x, digits=0):
    return f"{x:,.{digits}f}"


def rng(xs, digits=0):
    return f"{fmt_num(min(xs), digits)}-{fmt_num(max(xs), digits)}"


def ratio_cell(xs):
    return f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def report(workload, servers, res):
    seq = workload == "seqread"
    qemu = [s for s in QEMU if s in servers]
    best = max(qemu, key=lambda s: med(r["iops"] for r in res[s])) if qemu else None
    best_cpu = min(qemu, key=lambda s: med(r["cpu_gib"] for r in res[s])) if qemu else None
    limit = med(r["iops"] for r in res["limit"]) if "limit" in servers else None
    head = ["server", "IOPS median (range)"]
    if seq:
        head.append("MiB/s median (range)")
    head += [f"IOPS / {best or 'qemu-nbd'} (best), median (range)", "CPU s/GiB median (range)",
             f"CPU / {best_cpu or 'qemu-nbd'} (least), median (range)"]
    if limit:
        head.append("fraction of limit")
    rows = [head]
    for s in ORDER:
        if s not in servers:
            continue
        rs = res[s]
        iops = [r["iops"] for r in rs]
        row = [LABEL[s], f"{fmt_num(med(iops))} ({rng(iops)})"]
        if seq:
            mibs = [r["mibs"] for r in rs]
            row.append(f"{fmt_num(med(mibs))} ({rng(mibs)})")
        if s in STRATA and best:
            row.append(ratio_cell([r["iops"] / q["iops"] for r, q in zip(rs, res[best])]))
        else:
            row.append("")
        if s != "limit":
            cpu = [r["cpu_gib"] for r in rs]
            row.append(f"{med(cpu):.2f} ({rng(cpu, 2)})")
        else:
            row.append("")
        if s in STRATA and best_cpu:
            row.append(ratio_cell([r["cpu_gib"] / q["cpu_gib"]
                                   for r, q in zip(rs, res[best_cpu])]))
        else:
            row.append("")
        if limit:
            row.append(f"{med(iops) / limit:.2f}")
        rows.append(row)
    return table(rows)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(here, "..", "build"),
                   help="build directory holding tools/strata-nbd (default: ../build)")
    p.add_argument("--strata-nbd", help="strata-nbd binary (default: BUILD/tools/strata-nbd)")
    p.add_argument("--runs", type=int, default=5, help="runs per server and workload")
    p.add_argument("--time", type=int, default=10, help="seconds per fio run")
    p.add_argument("--dir", default="/var/tmp",
                   help="where the images go (a directory on the real disk)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--servers", default=",".join(ORDER))
    p.add_argument("--json", help="also write every run's figures to this file")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print each run's figures to stderr as it ends")
    a = p.parse_args()
    a.strata_nbd = os.path.abspath(a.strata_nbd or os.path.join(a.build, "tools", "strata-nbd"))
    workloads = a.workloads.split(",")
    servers = a.servers.split(",")
    for w in workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w} (known: {', '.join(WORKLOADS)})")
    for s in servers:
        if s not in ORDER:
            p.error(f"unknown server {s} (known: {', '.join(ORDER)})")
    if a.runs < 1 or a.time < 1:
        p.error("--runs and --time must be at least 1")
    if any(s in STRATA for s in servers) and not os.access(a.strata_nbd, os.X_OK):
        p.error(f"no strata-nbd at {a.strata_nbd} (use --build or --strata-nbd)")
    for tool in ("fio", "qemu-img", "qemu-nbd", "nbdinfo"):
        if not shutil.which(tool):
            p.error(f"{tool} not found (apt-get install fio qemu-utils libnbd-bin)")
    fstype = " ".join(sh("findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", a.dir).stdout.split())
    if fstype.split()[0] in ("tmpfs", "ramfs"):
        print(f"warning: {a.dir} is on {fstype}, not a real disk", file=sys.stderr)

    # SIGTERM and SIGHUP end the run like Ctrl-C, through the cleanup below.
    def stop(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    bench = Bench(a)
    try:
        print(f"# {a.dir} ({fstype}), {a.runs} runs of {a.time} s, "
              f"strata-nbd {a.strata_nbd}, "
              f"{sh('qemu-nbd', '--version').stdout.splitlines()[0]}, "
              f"{sh('fio', '--version').stdout.strip()}", flush=True)
        bench.make_images()
        all_runs = {}
        for w in workloads:
            res = {s: [] for s in servers}
            load0 = loadavg()
            for i in range(a.runs):
                order = [s for s in ORDER if s in servers]
                if i % 2:
                    order.reverse()
                for s in order:
                    r = bench.one_run(s, w)
                    res[s].append(r)
                    if a.verbose:
                        cpu = f", {r['cpu_gib']:.2f} CPU s/GiB" if "cpu_gib" in r else ""
                        print(f"  {w} run {i + 1}/{a.runs} {s}: {r['iops']:.0f} IOPS, "
                              f"{r['mibs']:.1f} MiB/s{cpu}", file=sys.stderr, flush=True)
            all_runs[w] = res
            print(f"\n{w}: {WORKLOADS[w]['title']}, {a.runs} runs of {a.time} s "
                  f"(load average {load0} before, {loadavg()} after)")
            print(report(w, servers, res), flush=True)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump({"runs": a.runs, "time": a.time, "results": all_runs}, f, indent=1)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
