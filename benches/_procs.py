"""Server processes for the loopback benchmarks: a free port, start and wait for ``/health``, stop."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx

from autellix.server.vllm_engine import free_port

__all__ = ["free_port", "start", "stop"]


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
