"""Server processes for the loopback benchmarks: a free port, start and wait for ``/health``, stop,
``python -m autellix serve`` command lines, and a process's CPU time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from autellix.server.engines.vllm import free_port

__all__ = [
    "LOOPBACK",
    "autellix_serve",
    "cpu_seconds",
    "free_port",
    "loopback_url",
    "serving",
    "start",
    "stop",
]

LOOPBACK = "127.0.0.1"


def autellix_serve(port: int, *options: str) -> list[str]:
    """``python -m autellix serve --port <port> <options>`` with this interpreter."""
    return [sys.executable, "-m", "autellix", "serve", "--port", str(port), *options]


def start(argv: list[str], url: str, name: str, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Run ``argv`` (the installed autellix: a checkout's python/ lacks the compiled core unless
    built in place) until ``url``/health answers 200; SystemExit with its stderr if it dies."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"{name} exited with status {proc.returncode}:\n{err[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                assert proc.stderr is not None  # no longer read: keep a full pipe from blocking it
                proc.stderr.close()
                proc.stderr = None
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit(f"{name} did not answer /health within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a clean uvicorn shutdown), then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def loopback_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


@contextlib.contextmanager
def serving(argv: list[str], url: str, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` :func:`start`-ed (answering at ``url``) while the block runs, :func:`stop`-ped after."""
    proc = start(argv, url, name)
    try:
        yield proc
    finally:
        stop(proc)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
