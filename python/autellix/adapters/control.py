"""The plug-in's control channel: hints from the autellix front that ``vllm serve`` has no endpoint for.

``autellix serve --engine vllm`` gives each vLLM child a private unix socket path (in a 0700
temporary directory) as the plug-in setting ``control``. The plug-in listens there
(:class:`ControlListener`, a daemon thread; stdlib only) for newline-delimited JSON messages:

* ``{"finish": "<program id as forwarded>"}`` (optionally with ``"tenant"``): the program makes no
  more calls (``POST /v1/programs/{id}/finish`` on the front, or the end of an anonymous program);
  its retained KV contexts are freed at once instead of at its TTL.

The thread only parses and queues; the scheduler, which is single-threaded, applies the queue at
the start of its next ``schedule()`` (:meth:`ControlListener.drain`), so no scheduler state is
ever touched off its thread. Malformed lines are logged and skipped. Users of plain ``vllm
serve`` have no front to send these: their programs end with a ``last_call`` hint or the program
TTL.

:func:`send` is the front's side: one connection per batch of messages, with a short timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("autellix.adapters.control")

#: longest message line accepted (a program id is at most a few hundred characters)
MAX_LINE = 4096
#: messages queued before the oldest are dropped (the scheduler drains every step)
MAX_QUEUED = 100_000


@dataclass(frozen=True)
class Finish:
    """The finish hint for one program, as the plug-in names it."""

    program: str
    tenant: str = ""


def parse(line: bytes) -> Finish | None:
    """One message line; ``None`` (and a log line) for anything malformed."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        log.warning("autellix control: a line that is not JSON was skipped")
        return None
    if not isinstance(message, dict):
        log.warning("autellix control: a message that is not a JSON object was skipped")
        return None
    program, tenant = message.get("finish"), message.get("tenant", "")
    if not isinstance(program, str) or not program or not isinstance(tenant, str):
        log.warning("autellix control: a message without a program name to finish was skipped")
        return None
    return Finish(program, tenant)


class ControlListener:
    """A daemon thread accepting connections on a unix socket and queueing their messages."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._queue: deque[Finish] = deque(maxlen=MAX_QUEUED)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        os.chmod(self.path, 0o600)  # the directory is 0700 already; the socket too
        self._server.listen(16)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="autellix-control", daemon=True)
        self._thread.start()

    def drain(self) -> list[Finish]:
        """The messages received since the last drain, oldest first (the scheduler's thread)."""
        out = []
        while True:
            try:
                out.append(self._queue.popleft())
            except IndexError:
                return out

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                self._closed.wait(0.05)  # closed (the loop ends), or a failed accept: no busy loop
                continue
            with conn:
                self._read(conn)

    def _read(self, conn: socket.socket) -> None:
        # One sender at a time is enough: the front writes a few bytes and closes at once.
        conn.settimeout(5.0)
        buffer = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._take(line)
                if len(buffer) > MAX_LINE:
                    log.warning("autellix control: a line over %d bytes was dropped", MAX_LINE)
                    return
        except OSError as exc:
            log.warning("autellix control: connection failed: %s", exc)
            return
        self._take(buffer)

    def _take(self, line: bytes) -> None:
        if line.strip():
            message = parse(line)
            if message is not None:
                self._queue.append(message)


def listen_path(path: str, rank: int = 0) -> str:
    """Where engine ``rank`` of a data-parallel vLLM server listens: ``path``, then ``path.1``, ..."""
    return path if rank == 0 else f"{path}.{rank}"


def targets(path: str) -> list[str]:
    """Every listener of the server given ``path`` (its data-parallel engines: ``path.N``)."""
    base = Path(path)
    found = [str(p) for p in sorted(base.parent.glob(base.name + ".*")) if p.is_socket()]
    return [path, *found]


def encode(messages: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(json.dumps(dict(m), separators=(",", ":")).encode() + b"\n" for m in messages)


def send(path: str, messages: Iterable[Mapping[str, Any]], timeout: float = 1.0) -> None:
    """Write ``messages`` to the plug-in listening at ``path`` (OSError if it cannot be reached
    within ``timeout`` seconds)."""
    data = encode(messages)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(data)
