"""Issue 15, finding 6: a call the server refuses leaves nothing behind. A program named only for
a refused call (400: over the engine's KV capacity, a parent the core rejects; 429: queue full)
is forgotten again; programs the core holds are untouched. Sizes are read from the server's
:class:`~autellix.identity.ProgramRegistry` and the core's process table, not from RSS."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvicorn

from autellix.server import ServerConfig, create_app
from autellix.server.engines.vllm import free_port
from autellix.server.state import Server

from .conftest import MODEL, MSG, Running, wait_for

Start = Callable[..., tuple[Running, Server]]
#: a request's body and headers
Request = tuple[dict[str, Any], dict[str, str]]
REFUSED = 1500  # refused calls per kind


@pytest.fixture
def served() -> Iterator[Start]:
    """Like conftest's ``serve``, with the app's :class:`Server` (its program registry)."""
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**options: Any) -> tuple[Running, Server]:
        config = ServerConfig(time_scale=0.01, **options)
        app = create_app(config)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        wait_for(lambda: server.started, timeout=60)
        return Running(f"http://127.0.0.1:{port}", config), app.state.server

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=10)


def _refuse(s: Running, requests: list[Request]) -> set[int]:
    """Send each (body, headers), four clients at a time; the statuses seen."""

    def send(request: Request) -> int:
        body, headers = request
        return h.post("/v1/chat/completions", json=body, headers=headers).status_code

    with s.http() as h, ThreadPoolExecutor(4) as pool:
        return set(pool.map(send, requests))


def _chat(name: str | None, **fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": MSG, "max_tokens": 2, **fields}
    return body if name is None else {**body, "program_id": name}


def test_refused_calls_leave_no_program_behind(served: Start) -> None:
    s, server = served()
    with s.client() as c:
        first = c.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=2, extra_body={"program_id": "keep"}
        )
    baseline = (len(server.programs), server.engine.stats().live_programs)
    assert baseline == (1, 1)
    # over the simulated engine's KV capacity (444,640 tokens), named and anonymous: 400 before
    # the core sees the call
    huge: list[Request] = [
        (_chat(f"kv-{i}" if i % 4 else None, max_tokens=1_000_000), {}) for i in range(REFUSED)
    ]
    assert _refuse(s, huge) == {400}
    # a parent the core does not know: the core refuses the call (400)
    orphans = [
        (_chat(f"orphan-{i}"), {"X-Autellix-Parent-Ids": f"chatcmpl-{10**9 + i}"}) for i in range(REFUSED)
    ]
    assert _refuse(s, orphans) == {400}
    # refused calls of a live program leave it alone: its finished call is still a valid parent
    assert _refuse(s, [(_chat("keep", max_tokens=1_000_000), {})] * 10) == {400}
    assert (len(server.programs), server.engine.stats().live_programs) == baseline
    assert s.program("keep")["finished_calls"] == 1
    with s.client() as c:
        c.chat.completions.create(
            model=MODEL,
            messages=MSG,
            max_tokens=2,
            extra_headers={"X-Autellix-Program-Id": "keep", "X-Autellix-Parent-Ids": first.id},
        )
    assert s.program("keep")["finished_calls"] == 2


def test_calls_refused_for_a_full_queue_leave_no_program_behind(served: Start) -> None:
    s, server = served(max_queued=0)  # every call is refused with 429
    busy = [
        (_chat(f"busy-{i}" if i % 4 else None), {"X-Autellix-Thread-Id": f"t{i}"}) for i in range(REFUSED)
    ]
    assert _refuse(s, busy) == {429}
    assert (len(server.programs), server.engine.stats().live_programs) == (0, 0)
