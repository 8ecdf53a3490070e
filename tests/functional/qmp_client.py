"""A small QMP client (standard library only) and helpers to run a daemon.

QmpClient speaks the protocol over a Unix or TCP socket: it reads the
greeting, negotiates capabilities, sends commands and keeps events that
arrive before a reply. Daemon starts stratad or qemu-storage-daemon with a
QMP monitor on a Unix socket and stops it again.
"""
import json
import os
import socket
import subprocess
import time


class QmpError(Exception):
    def __init__(self, error):
        super().__init__(f"{error['class']}: {error['desc']}")
        self.error_class = error["class"]
        self.desc = error["desc"]


class QmpClient:
    def __init__(self, path=None, host=None, port=None, timeout=30.0, negotiate=True):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address = path
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (host, port)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.buffer = b""
        self.events = []
        self.greeting = self.read_message()
        if negotiate:
            self.execute("qmp_capabilities")

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def read_line(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def read_message(self):
        line = self.read_line()
        assert line.endswith(b"\r"), f"QMP lines end in CRLF: {line!r}"
        line.decode("ascii")  # output must be ASCII
        return json.loads(line)

    def read_reply(self):
        """Next message that is not an event (events are kept)."""
        while True:
            msg = self.read_message()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def request(self, command, arguments=None, id=None, oob=False):
        msg = {"exec-oob" if oob else "execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        if id is not None:
            msg["id"] = id
        self.send_raw(json.dumps(msg))
        return self.read_reply()

    def execute(self, command, **arguments):
        reply = self.request(command, arguments)
        if "error" in reply:
            raise QmpError(reply["error"])
        return reply["return"]

    def run_job(self, command, **arguments):
        """Runs a job-starting command (blockdev-create, ...) as libvirt
        does: waits until the job is concluded, dismisses it, and raises
        QmpError with the job's error if it failed."""
        job_id = arguments["job-id"]
        self.execute(command, **arguments)
        deadline = time.time() + 60
        while True:
            jobs = {j["id"]: j for j in self.execute("query-jobs")}
            job = jobs.get(job_id)
            if job is None or job["status"] == "concluded":
                break
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id} did not conclude")
            time.sleep(0.01)
        if job is not None:
            self.execute("job-dismiss", id=job_id)
        if job is not None and "error" in job:
            raise QmpError({"class": "GenericError", "desc": job["error"]})

    def job_error(self, command, arguments):
        """Runs a job-starting command whose job must fail; returns (class,
        desc) of the job's error."""
        try:
            self.run_job(command, **arguments)
        except QmpError as e:
            return e.error_class, e.desc
        raise AssertionError(f"{command} unexpectedly succeeded")

    def error(self, command, arguments=None):
        """Runs a command that must fail; returns (class, desc)."""
        reply = self.request(command, arguments)
        assert "error" in reply, f"{command} unexpectedly succeeded: {reply}"
        return reply["error"]["class"], reply["error"]["desc"]


class Daemon:
    """stratad or qemu-storage-daemon with a QMP monitor on `sock`."""

    def __init__(self, binary, workdir, args=(), name="qmp.sock"):
        self.sock = os.path.join(str(workdir), name)
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        cmd = [binary, "--chardev", f"socket,id=mon0,path={self.sock},server=on,wait=off",
               "--monitor", "chardev=mon0", *args]
        self.stderr_path = os.path.join(str(workdir), name + ".stderr")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.time() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{binary} exited: {self.read_stderr()}")
            if time.time() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise TimeoutError(f"{binary} did not create {self.sock}")
            time.sleep(0.01)

    def read_stderr(self):
        self.stderr.flush()
        with open(self.stderr_path) as f:
            return f.read()

    def client(self, path=None, **kwargs):
        """A client of the main monitor, or of another monitor socket `path`."""
        # The socket file appears at bind(), a moment before listen().
        deadline = time.time() + 10
        while True:
            try:
                return QmpClient(path or self.sock, **kwargs)
            except (ConnectionRefusedError, FileNotFoundError):
                if time.time() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
