"""Every job verb in every job state a QMP client can reach, against
qemu-storage-daemon: the same QMP script runs on stratad and on QEMU 7.2's
daemon over copies of the same chain, and every reply (return, or error
class and description) and the whole event sequence must be the same.

In each state the script sends every verb command QEMU's verb table
(JobVerbTable in job.c) refuses there, through both the job-* and the
block-job-* commands, then the verbs the table accepts that are refused by
a later check or accepted without effect (pause of a paused job, resume of
a job nobody paused, cancel without force of a paused job, set-speed), and
checks that the job did not move. States:

  running    intermediate commit under a speed limit (40 MiB at 64 KiB/s)
  paused     job-pause / block-job-pause of the running job
  concluded  the running job cancelled, auto-dismiss off (error "Operation
             canceled" in query-jobs)
  pending    intermediate commit with auto-finalize off; once cancelled
             there (pending -> aborting), once finalized
  concluded  the finalized job, auto-dismiss off
  ready      active commit
  standby    job-pause of the ready job; job-complete is accepted there and
             the job completes on job-resume
  paused     on-error stop after a real write error (nbdkit's error filter)
  unknown    every verb on a job id that does not exist, and on a dismissed one

Not reachable by a client, on either daemon: created and aborting are left
within the command that entered them; waiting lasts only while another job
of a grouped transaction runs, and the only jobs QEMU starts in a
transaction are backups (drive-backup, blockdev-backup), which Strata does
not have.

Nothing depends on timing: each step that moves a job waits for its event,
the running job has more than 40 s of copying left when it is cancelled
(Strata lets one 1 MiB chunk through a second when a chunk exceeds the
limit, QEMU keeps to 64 KiB/s), and the other states hold until a verb
moves them. The images end up the same on both daemons: the base reads as
the whole chain did (the cancelled commit's partial copy is mid's data,
which the finalized commit then copies in full)."""
import time

from job_util import KINDS, MiB, chain, check, qemu_io, read_image, start  # noqa: F401
from test_job_errors import setup, shape  # noqa: F401

SPEED = 64 * 1024

# QEMU's JobVerbTable: the states each verb is accepted in.
ALLOWED = {
    "cancel": {"created", "running", "paused", "ready", "standby", "waiting", "pending"},
    "pause": {"created", "running", "paused", "ready", "standby"},
    "resume": {"created", "running", "paused", "ready", "standby"},
    "set-speed": {"created", "running", "paused", "ready", "standby"},
    "complete": {"ready", "standby"},
    "finalize": {"pending"},
    "dismiss": {"concluded"},
}


def verb_commands(job):
    """(verb, command, arguments) of every verb command for `job`."""
    return [
        ("pause", "job-pause", {"id": job}),
        ("resume", "job-resume", {"id": job}),
        ("cancel", "job-cancel", {"id": job}),
        ("complete", "job-complete", {"id": job}),
        ("finalize", "job-finalize", {"id": job}),
        ("dismiss", "job-dismiss", {"id": job}),
        ("set-speed", "block-job-set-speed", {"device": job, "speed": SPEED}),
        ("pause", "block-job-pause", {"device": job}),
        ("resume", "block-job-resume", {"device": job}),
        ("cancel", "block-job-cancel", {"device": job}),
        ("cancel", "block-job-cancel", {"device": job, "force": False}),
        ("cancel", "block-job-cancel", {"device": job, "force": True}),
        ("complete", "block-job-complete", {"device": job}),
        ("finalize", "block-job-finalize", {"id": job}),
        ("dismiss", "block-job-dismiss", {"id": job}),
    ]


def refused(job, state):
    return [(cmd, args) for verb, cmd, args in verb_commands(job) if state not in ALLOWED[verb]]


def resume_unpaused(job):
    return [("job-resume", {"id": job}), ("block-job-resume", {"device": job})]


def paused_extras(job):
    """Accepted by the table in paused/standby, refused by a later check
    (already paused; cancel without force of a paused job) or a no-op."""
    return [("job-pause", {"id": job}), ("block-job-pause", {"device": job}),
            ("block-job-cancel", {"device": job}),
            ("block-job-cancel", {"device": job, "force": False}),
            ("block-job-set-speed", {"device": job, "speed": -1}),
            ("block-job-set-speed", {"device": job, "speed": SPEED})]


def event_view(e):
    """An event without what depends on timing (timestamp, len, offset)."""
    data = {k: v for k, v in e.get("data", {}).items() if k not in ("len", "offset")}
    return (e["event"], data)


def jobs_view(d):
    """query-jobs and query-block-jobs without progress and busy."""
    jobs = [{k: v for k, v in j.items() if k not in ("current-progress", "total-progress")}
            for j in d.ok("query-jobs")]
    block_jobs = [{k: v for k, v in j.items() if k not in ("len", "offset", "busy")}
                  for j in d.ok("query-block-jobs")]
    return jobs, block_jobs


class Script:
    """Sends commands to one daemon, logging (state, command, arguments,
    reply) for the comparison, and waits for events."""

    def __init__(self, d):
        self.d = d
        self.log = []
        self.must_refuse = []  # indexes in log of verbs the table refuses

    def send(self, state, cmd, args, until=None):
        """Sends a command; with until=(event, job, status) waits for that
        event to arrive after the command was sent."""
        mark = len(self.d.qmp.events)
        reply = self.d.execute(cmd, args)
        self.log.append((state, cmd, args, reply))
        if until:
            self.wait(mark, *until)
        return reply

    def wait(self, mark, name, job, status=None, timeout=120):
        deadline = time.time() + timeout
        while True:
            for e in self.d.qmp.events[mark:]:
                data = e.get("data", {})
                if (e["event"] == name and data.get("id", data.get("device")) == job
                        and (status is None or data.get("status") == status)):
                    return
            if time.time() > deadline:
                raise TimeoutError(f"{self.d.kind}: no {name} {job} {status}")
            self.d.pump(0.05)

    def probe(self, job, state, extras=()):
        """Every verb refused in `state`, then `extras`; the job must still
        be in `state` afterwards."""
        for cmd, args in refused(job, state):
            self.must_refuse.append(len(self.log))
            self.send(state, cmd, args)
        for cmd, args in extras:
            self.send(state, cmd, args)
        jobs, block_jobs = jobs_view(self.d)
        self.log.append((state, "query-jobs", None, jobs))
        self.log.append((state, "query-block-jobs", None, block_jobs))
        statuses = [j["status"] for j in jobs if j["id"] == job]
        assert statuses == [state], f"{self.d.kind}: job {job} left {state}: {jobs}"

    def events(self):
        self.d.pump()
        return [event_view(e) for e in self.d.qmp.events]

    def check_refusals(self):
        """The verbs the table refuses are refused (run on QEMU's log, this
        checks the table)."""
        for i in self.must_refuse:
            state, cmd, args, reply = self.log[i]
            assert "error" in reply, f"{self.d.kind}: {cmd} {args} in {state}: {reply}"


def commit(job, **options):
    args = {"job-id": job, "device": "top", "top-node": "mid", "base-node": "base"}
    args.update(options)
    return args


def running_paused_concluded(s):
    """Job c: running, paused (twice: job-* and block-job-* pause/resume),
    then cancelled into concluded, dismissed, and gone."""
    s.send("start", "block-commit", commit("c", speed=SPEED, **{"auto-dismiss": False}),
           until=("JOB_STATUS_CHANGE", "c", "running"))
    s.probe("c", "running", resume_unpaused("c") + [
        ("block-job-set-speed", {"device": "c", "speed": -1}),
        ("block-job-set-speed", {"device": "c", "speed": SPEED})])
    s.send("running", "job-pause", {"id": "c"}, until=("JOB_STATUS_CHANGE", "c", "paused"))
    s.probe("c", "paused", paused_extras("c"))
    s.send("paused", "block-job-resume", {"device": "c"},
           until=("JOB_STATUS_CHANGE", "c", "running"))
    s.send("running", "block-job-pause", {"device": "c"},
           until=("JOB_STATUS_CHANGE", "c", "paused"))
    s.probe("c", "paused", paused_extras("c"))
    s.send("paused", "job-resume", {"id": "c"}, until=("JOB_STATUS_CHANGE", "c", "running"))
    s.send("running", "job-cancel", {"id": "c"}, until=("JOB_STATUS_CHANGE", "c", "concluded"))
    s.probe("c", "concluded")
    s.send("concluded", "block-job-dismiss", {"id": "c"}, until=("JOB_STATUS_CHANGE", "c", "null"))
    for _, cmd, args in verb_commands("c"):
        s.send("dismissed", cmd, args)


def pending_concluded(s):
    """Job q: pending, cancelled there. Job p: pending, finalized (mid is
    committed into base and leaves the chain), concluded, dismissed."""
    manual = {"auto-finalize": False, "auto-dismiss": False}
    s.send("start", "block-commit", commit("q", **manual), until=("BLOCK_JOB_PENDING", "q"))
    s.probe("q", "pending")
    s.send("pending", "job-cancel", {"id": "q"}, until=("JOB_STATUS_CHANGE", "q", "concluded"))
    s.probe("q", "concluded")
    s.send("concluded", "job-dismiss", {"id": "q"}, until=("JOB_STATUS_CHANGE", "q", "null"))
    s.send("start", "block-commit", commit("p", **manual), until=("BLOCK_JOB_PENDING", "p"))
    s.probe("p", "pending")
    s.send("pending", "block-job-finalize", {"id": "p"},
           until=("JOB_STATUS_CHANGE", "p", "concluded"))
    s.probe("p", "concluded")
    s.send("concluded", "job-dismiss", {"id": "p"}, until=("JOB_STATUS_CHANGE", "p", "null"))


def ready_standby(s):
    """Job a, an active commit of top into base: ready, standby; completed
    while in standby, which takes effect on resume."""
    s.send("start", "block-commit", {"job-id": "a", "device": "top"},
           until=("BLOCK_JOB_READY", "a"))
    s.probe("a", "ready", resume_unpaused("a") + [
        ("block-job-set-speed", {"device": "a", "speed": 0})])
    s.send("ready", "job-pause", {"id": "a"}, until=("JOB_STATUS_CHANGE", "a", "standby"))
    s.probe("a", "standby", paused_extras("a"))
    s.send("standby", "block-job-set-speed", {"device": "a", "speed": 0})
    s.send("standby", "job-complete", {"id": "a"})
    s.probe("a", "standby", [("block-job-complete", {"device": "a"})])
    s.send("standby", "job-resume", {"id": "a"}, until=("JOB_STATUS_CHANGE", "a", "null"))


def unknown(s):
    for _, cmd, args in verb_commands("nosuch"):
        s.send("unknown", cmd, args)


def compare(logs, events):
    """Fails with every step whose reply differs."""
    s_log, q_log = logs["strata"], logs["qsd"]
    assert [e[:3] for e in s_log] == [e[:3] for e in q_log], "the scripts diverged"
    mismatches = [f"{state}: {cmd} {args}:\n  qsd:    {q}\n  strata: {s}"
                  for (state, cmd, args, s), (_, _, _, q) in zip(s_log, q_log) if s != q]
    assert not mismatches, "\n".join(mismatches)
    assert events["strata"] == events["qsd"]


def one_error_per_stop(events):
    """test_job_errors.shape on this test's events (status in a dict)."""
    return shape(events, lambda e: e[0] == "JOB_STATUS_CHANGE" and e[1]["status"] == "running")


def test_verbs_in_every_state_match_qemu(workdir, chain, start):
    # More data in mid: the speed-limited commit has most of a minute of work.
    qemu_io(chain["mid"], f"write -P 0x5a {16 * MiB} {40 * MiB}")
    whole_chain = read_image(chain["top"])
    logs, events = {}, {}
    for kind in KINDS:
        d, paths = start(kind)  # the fixture kills a daemon a failure leaves
        s = Script(d)
        running_paused_concluded(s)
        pending_concluded(s)
        ready_standby(s)
        unknown(s)
        logs[kind], events[kind] = s.log, s.events()
        d.quit()
        s.check_refusals()
        check(paths["base"])
        same = read_image(paths["base"]) == whole_chain
        assert same, f"{kind}: the base does not read as the chain did"
    compare(logs, events)


def test_verbs_while_paused_on_an_error_match_qemu(setup):
    """on-error stop after a real write error: the job is user-paused by
    the error; pause, cancel without force and the refused verbs, then a
    forced block-job-cancel while the writes still fail."""
    logs, events = {}, {}
    for kind in KINDS:
        d, server, paths = setup(kind, "base")
        s = Script(d)
        s.send("start", "block-commit", commit("e", **{"on-error": "stop"}),
               until=("JOB_STATUS_CHANGE", "e", "paused"))
        s.probe("e", "paused", paused_extras("e"))
        s.send("paused", "block-job-cancel", {"device": "e", "force": True},
               until=("JOB_STATUS_CHANGE", "e", "null"))
        logs[kind], events[kind] = s.log, one_error_per_stop(s.events())
        d.quit()
        server.stop()
        s.check_refusals()
    compare(logs, events)
    assert ("BLOCK_JOB_ERROR", {"device": "e", "operation": "write",
                                "action": "stop"}) in events["strata"]
