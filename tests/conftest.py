"""Shared fixtures. Real samples come from ``$GLCNET_DATA`` or ``../shared/data``.

In CI (``CI=true``) missing real data is an error, not a skip.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # one pytest process per core (make test: -n 2): one thread each,
    os.environ["OMP_NUM_THREADS"] = "1"  # also for the CLIs the tests start; two workers x two threads on
    os.environ["MKL_NUM_THREADS"] = "1"  # two cores spin against each other (OpenMP) and run slower


def shared_data_dir() -> Path:
    return Path(os.environ.get("GLCNET_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real RS samples (see its README)."""
    d = shared_data_dir()
    if not (d / "README.md").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real sample data missing at {d} (set GLCNET_DATA); required in CI")
        pytest.skip(f"real sample data not found at {d}")
    return d


def run_cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``glcnet`` CLI in a subprocess; return the completed process."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "glcnet.cli", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"glcnet {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def call_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real ``glcnet`` entry point (``glcnet.cli.main``) in this process, its stdout and
    stderr captured: what ``run_cli`` checks, without starting an interpreter and importing torch
    and Lightning again (seconds per call). For refusals and quick commands; signals, DDP and
    anything that needs a fresh process use ``run_cli``."""
    from glcnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    p = subprocess.CompletedProcess(["glcnet", *map(str, args)], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"glcnet {' '.join(map(str, args))} failed ({code}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on a 2-core machine: one intra-op thread avoids OpenMP spin contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's headless ``chromium`` (``.ci/run`` installs it); in CI a missing browser is an error."""
    from browser import find_chromium

    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not found; required in CI (apt-get install chromium, done by .ci/run)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def run_cli_tty(*args: str, timeout: float = 300) -> tuple[int, str]:
    """Run the real ``glcnet`` CLI with stdout and stderr on a pseudo-terminal (as in a user's shell);
    return the exit status and everything it wrote."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    e = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "glcnet.cli", *map(str, args)], stdin=slave, stdout=slave,
                         stderr=slave, env=e, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
