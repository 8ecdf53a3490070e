"""Shared fixtures for the functional tests.

The tests drive Strata's real binaries (from STRATA_BUILD_DIR) and check what
they do with peers nobody here wrote: qemu-img, qemu-io, nbdinfo, nbdcopy,
python3-libnbd.
"""
import os
import shutil
import subprocess

import pytest

from qmp_client import Daemon

BUILD_DIR = os.environ.get(
    "STRATA_BUILD_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "build"))


def strata_binary(name):
    path = os.path.join(BUILD_DIR, "tools", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is not built")
    return path


def run(cmd, check=True, **kwargs):
    """Runs a command, returning CompletedProcess with text output."""
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kwargs)


def unix_listening(path):
    """True once some process listens on the Unix socket `path`. The socket
    file appears at bind(), a moment before listen(); a connect in between is
    refused, so waiting for the file alone is racy. /proc/net/unix marks
    listening sockets with the __SO_ACCEPTCON flag (0x10000)."""
    try:
        with open("/proc/net/unix") as f:
            lines = f.readlines()[1:]
    except OSError:
        return os.path.exists(path)
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
            return True
    return False


def require(tool):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (./test installs it)")


@pytest.fixture
def workdir(tmp_path):
    """A scratch directory; on tmpfs when the machine has one, for speed."""
    return tmp_path


@pytest.fixture
def daemon(workdir):
    """A stratad with a QMP monitor, stopped after the test."""
    with Daemon(strata_binary("stratad"), workdir) as d:
        yield d


def raw_image(workdir, name="disk.raw", size=1 << 20):
    """A sparse raw image file of `size` bytes."""
    path = os.path.join(str(workdir), name)
    with open(path, "wb") as f:
        f.truncate(size)
    return path
