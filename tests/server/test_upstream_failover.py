"""The ``openai`` engine when upstreams die, stop, refuse or fail: retries, ejection and health
checks, statuses passed through, timeouts. The front is a real ``autellix serve`` server driven by
the official ``openai`` client; upstreams are autellix sim servers and small real aiohttp servers
(in a thread of their own) that answer 400/429/500, never answer, or close every connection; a
killed upstream is a port nobody listens on."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from autellix.balancer import PROGRAM_AWARE_THRESHOLD, LeastLoaded, ProgramAware, RoundRobin
from autellix.exceptions import InvalidArgumentError
from autellix.server.engines.upstream_health import (
    BASE_EJECTION_S,
    EJECT_AFTER,
    MAX_EJECTION_S,
    UpstreamHealth,
)
from autellix.server.engines.vllm import free_port

from .conftest import MODEL, MSG, Running, wait_for
from .test_upstream import LONG_MSG, Serve

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: health checks fast enough for the tests to see them within a wait_for
FAST_CHECKS: dict[str, Any] = {"upstream_health_interval": 0.05, "upstream_health_timeout": 0.3}


def _chunk(text: str, reason: str | None = None) -> str:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": reason}
    return f"data: {json.dumps({'choices': [choice]})}\n\n"


async def _good(request: web.Request) -> web.StreamResponse:
    """A healthy OpenAI-compatible upstream: ``/health`` and a one-token stream."""
    if request.method == "GET":
        return web.json_response({"status": "ok"})
    await request.read()
    return web.Response(text=_chunk("hi", "stop") + "data: [DONE]\n\n", content_type="text/event-stream")


class Fake:
    """A real HTTP server on loopback (aiohttp, on its own loop in a thread) answering every request
    with ``handler``, or, with ``handler=None``, a TCP server closing every connection at once.
    :attr:`requests` counts what reached it (connections, for the closing one)."""

    def __init__(self, handler: Handler | None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.paths: list[str] = []
        self._handler = handler
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._stop: Callable[[], Awaitable[None]] = self._call(self._boot())

    def _call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _boot(self) -> Callable[[], Awaitable[None]]:
        if self._handler is None:

            async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self.requests += 1
                writer.close()

            server = await asyncio.start_server(close, "127.0.0.1", self.port)

            async def stop_tcp() -> None:
                server.close()
                await server.wait_closed()

            return stop_tcp
        handler = self._handler

        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.paths.append(request.path)
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)  # handlers that never answer are cut
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner.cleanup

    @staticmethod
    async def _cancel_handlers() -> None:
        """End the handlers that never answer (the server is gone: nobody waits for them)."""
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._call(self._cancel_handlers())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@pytest.fixture
def fake() -> Iterator[Callable[..., Fake]]:
    started: list[Fake] = []

    def start(handler: Handler | None = _good, port: int | None = None) -> Fake:
        server = Fake(handler, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _dead() -> str:
    """A killed upstream: a port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


def _openai_front(serve: Serve, *urls: str, **options: Any) -> Running:
    return serve(engine="openai", upstreams=urls, **options)


def _health(front: Running) -> tuple[int, dict[str, Any]]:
    with front.http() as h:
        r = h.get("/health")
    return r.status_code, r.json()


def _metric(front: Running, name: str) -> float:
    with front.http() as h:
        lines = h.get("/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name + " "))


def _settled(front: Running, *programs: str) -> None:
    """Nothing leaked in the core: no call running or waiting, no live call of ``programs``."""
    wait_for(lambda: _metric(front, "autellix_calls_running") == 0)
    assert _metric(front, "autellix_calls_waiting") == 0
    for name in programs:
        entry = front.program(name)
        assert (entry["active_calls"], entry["live_calls"]) == (0, [])


def _ask(c: openai.OpenAI, program: str = "p", messages: Any = MSG, **kw: Any) -> str:
    out = c.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=3, extra_body={"program_id": program}, **kw
    )
    return out.choices[0].message.content or ""


def test_calls_to_a_dead_upstream_are_retried_and_it_is_ejected(
    serve: Serve, fake: Callable[..., Fake]
) -> None:
    """Passive detection only (no health checks): every call succeeds, as the ones placed on the
    upstream that closes connections never reached it and are retried on the live one; after
    EJECT_AFTER failures it is ejected, so few tries reach it."""
    closing = fake(None)
    live = serve()
    front = _openai_front(serve, closing.url, _dead(), live.url, upstream_health_interval=0)
    c = front.client(timeout=10)
    for _ in range(10):  # idle upstreams tie: least-loaded picks the first available one
        assert _ask(c) == " tok" * 3
        stream = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2, stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == " tok" * 2
    assert 1 <= closing.requests <= 2 * EJECT_AFTER  # ejected, tried again after its backoff at most once
    assert _metric(front, "autellix_upstream_ejections_total") >= 2  # both bad upstreams
    status, body = _health(front)
    assert status == 200 and body["upstreams"]["total"] == 3
    _settled(front, "p")


def test_health_checks_eject_and_bring_back_an_upstream(serve: Serve, fake: Callable[..., Fake]) -> None:
    """A killed upstream is ejected by its failing checks; when it comes back (a server on the
    same port) a passing check returns it and it takes calls again; killed again, it goes out
    again, and no call fails meanwhile."""
    live = serve()
    port = free_port()
    front = _openai_front(serve, f"http://127.0.0.1:{port}", live.url, **FAST_CHECKS)
    wait_for(lambda: _health(front)[1].get("upstreams") == {"up": 1, "total": 2})
    c = front.client(timeout=10)
    for _ in range(5):
        assert _ask(c) == " tok" * 3  # all on the live one
    back = fake(_good, port=port)
    wait_for(lambda: _health(front)[1].get("upstreams") == {"up": 2, "total": 2})
    assert "/health" in back.paths  # what the checks ask

    def served_by_back() -> bool:
        return _ask(c) == "hi"

    wait_for(served_by_back)  # idle upstreams tie: the first one, back in play
    back.stop()  # killed again: calls placed on it are retried until a check ejects it
    for _ in range(10):
        assert _ask(c) == " tok" * 3
    wait_for(lambda: _health(front)[1].get("upstreams") == {"up": 1, "total": 2})
    _settled(front, "p")


def test_health_check_falls_back_to_models(serve: Serve, fake: Callable[..., Fake]) -> None:
    """An upstream without /health (404) is checked with /v1/models."""

    async def no_health(request: web.Request) -> web.StreamResponse:
        if request.path == "/health":
            return web.json_response({"detail": "Not Found"}, status=404)
        return await _good(request)

    up = fake(no_health)
    front = _openai_front(serve, up.url, **FAST_CHECKS)
    wait_for(lambda: up.paths.count("/v1/models") >= 2)
    assert up.paths.count("/health") == 1  # asked once, then the fallback
    assert _health(front) == (
        200,
        {"status": "ok", "policy": front.config.policy, "upstreams": {"up": 1, "total": 1}},
    )


def test_pinned_program_moves_off_a_dead_upstream(serve: Serve, fake: Callable[..., Fake]) -> None:
    """Program-aware balancing pins a program's long calls to one upstream; once that one dies,
    the program is re-placed on a live one and stays there (even when the dead one comes back)."""
    pinned = fake(_good)
    live = serve()
    front = _openai_front(serve, pinned.url, live.url, upstream_health_interval=0)
    c = front.client(timeout=10)
    assert _ask(c, "agent", LONG_MSG) == "hi"  # idle upstreams tie: pinned to the first
    assert _ask(c, "agent", LONG_MSG) == "hi"
    port = pinned.port
    pinned.stop()
    for _ in range(5):
        assert _ask(c, "agent", LONG_MSG) == " tok" * 3  # retried once, then re-pinned
    again = fake(_good, port=port)
    for _ in range(3):
        assert _ask(c, "agent", LONG_MSG) == " tok" * 3
    assert again.requests == 0
    _settled(front, "agent")


def test_no_upstream_available_is_503_with_retry_after(serve: Serve) -> None:
    front = _openai_front(serve, _dead(), _dead(), **FAST_CHECKS)
    wait_for(lambda: _health(front)[0] == 503)
    assert _health(front)[1]["error"]["code"] == "no_upstream"
    c = front.client(timeout=5)
    with pytest.raises(openai.InternalServerError) as err:
        _ask(c)
    assert err.value.status_code == 503
    assert err.value.response.json()["error"]["code"] == "no_upstream"
    assert int(err.value.response.headers["retry-after"]) >= 1
    with pytest.raises(openai.InternalServerError) as err:
        list(c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2, stream=True))
    assert err.value.status_code == 503  # the stream's response waited: a proper status
    _settled(front, "p")


#: what the refusing upstream answers, by the prompt's text
_REFUSALS = {
    "bad": (
        400,
        {
            "error": {
                "message": "max_tokens is too large: " + "x" * 600,
                "type": "BadRequestError",
                "code": 400,
            }
        },
    ),
    "busy": (429, {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}}),
    "boom": (500, {"error": {"message": "internal failure"}}),
}


async def _refusing(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return web.json_response({"status": "ok"})
    body = await request.json()
    status, error = _REFUSALS[body["messages"][0]["content"]]
    headers = {"Retry-After": "7"} if status == 429 else None
    return web.json_response(error, status=status, headers=headers)


def _say(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_upstream_statuses_pass_through(serve: Serve, fake: Callable[..., Fake]) -> None:
    """An upstream's 400 and 429 reach the client as they are (message cut short, type, code, the
    429's Retry-After), streamed or not; the SDK does not retry the 400; a 500 is a 502; a 4xx
    does not eject the upstream."""
    up = fake(_refusing)
    front = _openai_front(serve, up.url, upstream_health_interval=0)
    retrying = front.client(timeout=10, max_retries=2)
    with pytest.raises(openai.BadRequestError) as bad:
        _ask(retrying, messages=_say("bad"))
    assert up.requests == 1  # neither the front nor the SDK retried it
    error = bad.value.response.json()["error"]
    assert error["message"].startswith("max_tokens is too large") and error["message"].endswith("…")
    assert len(error["message"]) < 400 and "127.0.0.1" not in error["message"]
    assert (error["type"], error["code"]) == ("BadRequestError", "400")
    c = front.client(timeout=10)
    with pytest.raises(openai.BadRequestError):
        list(c.chat.completions.create(model=MODEL, messages=_say("bad"), max_tokens=2, stream=True))
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as busy:  # a stream's response waits: a status too
            c.chat.completions.create(model=MODEL, messages=_say("busy"), max_tokens=2, stream=stream)
        assert busy.value.response.headers["retry-after"] == "7"
        assert busy.value.response.json()["error"] == {
            "message": "slow down",
            "type": "rate_limit_error",
            "code": "rate_limited",
            "param": None,
        }
    for _ in range(EJECT_AFTER):
        with pytest.raises(openai.InternalServerError) as boom:
            _ask(c, messages=_say("boom"))
        assert boom.value.status_code == 502
        assert "internal failure" in boom.value.message
    assert _metric(front, "autellix_upstream_ejections_total") == 1  # the 5xx, not the 4xx
    _settled(front, "p")


def test_stopped_upstream_times_out_with_504(serve: Serve, fake: Callable[..., Fake]) -> None:
    """An upstream that accepts and never answers (stopped) gives 504 ``upstream_timeout`` after the
    first-token timeout; one that stops mid-stream ends the stream with an upstream_timeout error
    event after the read timeout; its health checks time out and eject it."""

    async def stopped(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def stops_midway(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.json_response({"status": "ok"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk("hi").encode())
        await asyncio.Event().wait()
        return response

    timeouts = {"upstream_first_token_timeout": 0.5, "upstream_read_timeout": 0.3}
    up = fake(stopped)
    front = _openai_front(serve, up.url, upstream_health_interval=0, **timeouts)
    c = front.client(timeout=20)
    with pytest.raises(openai.APIStatusError) as err:
        _ask(c)
    assert err.value.status_code == 504
    assert err.value.response.json()["error"]["code"] == "upstream_timeout"
    with pytest.raises(openai.APIStatusError) as err:
        list(c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2, stream=True))
    assert err.value.status_code == 504
    _settled(front, "p")

    midway = fake(stops_midway)
    front = _openai_front(serve, midway.url, upstream_health_interval=0, **timeouts)
    c = front.client(timeout=20)
    stream = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=5, stream=True)
    texts = []
    with pytest.raises(openai.APIError, match="timed out"):
        for ch in stream:
            texts.append(ch.choices[0].delta.content if ch.choices else None)
    assert "hi" in texts  # the stream had started: only an error event can end it

    checked = _openai_front(serve, up.url, **FAST_CHECKS)
    wait_for(lambda: _health(checked)[0] == 503)  # the checks time out too


def test_calls_stranded_on_a_stopped_upstream_move_when_it_is_ejected(
    serve: Serve, fake: Callable[..., Fake]
) -> None:
    """An upstream that stops while it holds a call (SIGSTOP: connections accepted, nothing
    answered, health checks time out): once its checks eject it, the call, which has delivered no
    token, moves to the other upstream and succeeds, long before the first-token timeout."""
    stopped = asyncio.Event()

    async def stops_on_a_call(request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and not stopped.is_set():
            return web.json_response({"status": "ok"})
        stopped.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    frozen, live = fake(stops_on_a_call), fake()
    # least-loaded ties go to the first upstream: the call is sent to the one that stops
    front = _openai_front(
        serve, frozen.url, live.url, balancer="least-loaded", upstream_first_token_timeout=60, **FAST_CHECKS
    )
    wait_for(lambda: _health(front) == (200, {**_health(front)[1], "upstreams": {"up": 2, "total": 2}}))
    assert _ask(front.client(timeout=20)) == "hi"
    assert frozen.paths.count("/v1/chat/completions") == 1 and live.paths.count("/v1/chat/completions") == 1
    _settled(front, "p")


def test_ejection_backs_off_and_checks_override_it() -> None:
    """Outlier ejection after EJECT_AFTER failures in a row, for a time that doubles per ejection in
    a row up to the cap and resets after a success; a failing check ejects until a passing one."""
    health = UpstreamHealth(2, check_interval=1.0)
    now = 100.0
    lengths = []
    for _ in range(5):
        assert not any(health.failed(0, now) for _ in range(EJECT_AFTER - 1))
        assert health.failed(0, now)
        assert health.mask(now) == [False, True]
        assert not health.failed(0, now)  # failures of calls already sent don't extend it
        until = now
        while not health.available(0, until):
            until += 0.25
        lengths.append(until - now)
        now = until
    assert lengths == [
        BASE_EJECTION_S,
        2 * BASE_EJECTION_S,
        4 * BASE_EJECTION_S,
        MAX_EJECTION_S,
        MAX_EJECTION_S,
    ]
    health.succeeded(0)
    for _ in range(EJECT_AFTER):
        health.failed(0, now)
    assert health.retry_after(now) == BASE_EJECTION_S  # the doubling started over
    assert health.checked(1, ok=False, now=now) is False  # ejected by its check: none left
    assert health.up(now) == 0 and health.retry_after(now) == 1.0
    assert health.checked(0, ok=True, now=now) is True  # a passing check lifts the ejection
    assert health.checked(1, ok=False, now=now + 60) is None  # stays out until a check passes
    assert health.mask(now + 60) == [True, False]
    assert health.ejections == 5 + 1 + 1


def test_balancers_choose_only_available_engines() -> None:
    up = [False, True, True]
    assert LeastLoaded().choose(1, 10, [0, 5, 3], up) == 2
    rr = RoundRobin()
    assert [rr.choose(1, 10, [0, 0, 0], up) for _ in range(4)] == [1, 2, 1, 2]
    pa = ProgramAware()
    assert pa.choose(7, PROGRAM_AWARE_THRESHOLD + 1, [0, 0, 0]) == 0  # pinned
    assert pa.choose(7, PROGRAM_AWARE_THRESHOLD + 1, [0, 9, 3], up) == 2  # re-pinned, stays
    assert pa.choose(7, PROGRAM_AWARE_THRESHOLD + 1, [0, 9, 3]) == 2
    with pytest.raises(InvalidArgumentError):
        LeastLoaded().choose(1, 10, [0, 0], [False, False])
