"""The ``openai`` engine: an autellix server in front of real upstream servers (autellix sim
servers on loopback), driven by the official ``openai`` client."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from autellix.exceptions import ConfigError
from autellix.server import ServerConfig
from autellix.server.engines.vllm import free_port

from .conftest import MODEL, MSG, Running, finish_time, wait_for

LONG_MSG: list[Any] = [{"role": "user", "content": "word " * 2500}]  # ~2800 estimated tokens
LONG = 100_000  # max_tokens of a call that runs until the test closes it

Serve = Callable[..., Running]


def _front(serve: Serve, *upstreams: Running, **options: Any) -> Running:
    return serve(engine="openai", upstreams=tuple(u.url for u in upstreams), **options)


def _calls_served(s: Running) -> float:
    """Calls the server has ended (its ``autellix_calls_total``, all finish reasons)."""
    with s.http() as h:
        text = h.get("/metrics").text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("autellix_calls_total{")
    )


def _live(s: Running, name: str) -> int:
    with s.http() as h:
        r = h.get(f"/v1/programs/{name}")
    return len(r.json()["live_calls"]) if r.status_code == 200 else 0


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="upstream"):
        ServerConfig(engine="openai")
    with pytest.raises(ConfigError, match="engine"):
        ServerConfig(engine="vllm-magic")
    with pytest.raises(ConfigError, match="balancer"):
        ServerConfig(engine="openai", upstreams=("http://x",), balancer="random")
    with pytest.raises(ConfigError, match="http"):
        ServerConfig(engine="openai", upstreams=("x:80",))


def test_relays_tokens_and_usage(serve: Serve) -> None:
    up = serve()
    c = _front(serve, up).client()
    direct = up.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=5)
    out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=5)
    assert out.choices[0].message.content == " tok" * 5
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and direct.usage is not None
    assert out.usage.completion_tokens == 5
    assert out.usage.prompt_tokens == direct.usage.prompt_tokens  # the upstream's count
    chunks = list(
        c.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=4, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == " tok" * 4
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    plain = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=3)
    assert plain.choices[0].text == " tok" * 3
    assert plain.usage is not None and plain.usage.completion_tokens == 3
    streamed = list(c.completions.create(model=MODEL, prompt="Once", max_tokens=2, stream=True))
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == " tok" * 2
    # without max_tokens the upstream's default applies
    out = c.chat.completions.create(model=MODEL, messages=MSG)
    assert out.usage is not None and out.usage.completion_tokens == up.config.default_max_tokens
    assert out.choices[0].finish_reason == "stop"


def test_program_tagging_reaches_the_front(serve: Serve) -> None:
    up = serve()
    front = _front(serve, up)
    c = front.client()
    first = c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=3, extra_body={"program_id": "agent"}
    )
    c.chat.completions.create(
        model=MODEL,
        messages=MSG,
        max_tokens=3,
        extra_headers={
            "X-Autellix-Program-Id": "agent",
            "X-Autellix-Thread-Id": "b",
            "X-Autellix-Parent-Ids": first.id,
        },
    )
    entry = front.program("agent")
    assert entry["finished_calls"] == 2
    assert entry["active_calls"] == 0
    assert entry["threads"] >= 2
    assert entry["attained_service"] > 0
    # the autellix fields are not forwarded: the upstream saw anonymous calls
    with up.http() as h:
        assert h.get("/v1/programs/agent").status_code == 404


@pytest.mark.parametrize(("policy", "first"), [("plas", "fresh"), ("fcfs", "busy")])
def test_front_decides_priority(serve: Serve, policy: str, first: str) -> None:
    """One upstream slot. ``busy`` has attained service and a call in flight, then queues a
    second; ``fresh`` queues one after it. The front's PLAS runs fresh first; FCFS busy. (A
    0.05 s first boundary, so that 0.1 s of service puts busy below the top queue.)"""
    up = serve(time_scale=0.1)  # the upstream itself has plenty of room
    front = _front(serve, up, policy=policy, max_inflight=1, first_boundary=0.05)
    c = front.client()
    done: dict[str, float] = {}
    c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=100, extra_body={"program_id": "busy"})
    with c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "busy"}
    ) as blocker:
        next(iter(blocker))
        wait_for(lambda: front.program("busy")["attained_service"] > 0.1)
        busy = finish_time(c, "busy", done)
        wait_for(lambda: front.program("busy")["active_calls"] == 2)
        fresh = finish_time(c, "fresh", done)
        wait_for(lambda: _live(front, "fresh") == 1)
        time.sleep(0.05)
        assert done == {}  # both wait in the front's queue behind the blocker
    # the blocker's stream is closed: its upstream call is cancelled and the slot freed
    busy.join(timeout=20)
    fresh.join(timeout=20)
    assert set(done) == {"busy", "fresh"}
    assert min(done, key=lambda k: done[k]) == first


def test_program_aware_keeps_long_calls_on_one_upstream(serve: Serve) -> None:
    ups = [serve(), serve()]
    front = _front(serve, *ups, max_inflight=8)
    c = front.client()
    with c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=LONG, stream=True) as blocker:
        next(iter(blocker))  # a short call: the least-loaded upstream, 0
        # the program's first long call goes to the least-loaded upstream (1) and pins it there
        c.chat.completions.create(
            model=MODEL, messages=LONG_MSG, max_tokens=2, extra_body={"program_id": "p"}
        )
    wait_for(lambda: _calls_served(ups[0]) == 1)
    assert _calls_served(ups[1]) == 1
    # both are idle now: least-loaded would pick 0, but long calls of p stay on 1
    for _ in range(3):
        c.chat.completions.create(
            model=MODEL, messages=LONG_MSG, max_tokens=2, extra_body={"program_id": "p"}
        )
    assert (_calls_served(ups[0]), _calls_served(ups[1])) == (1, 4)
    # a short call of p goes to the least-loaded upstream
    c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2, extra_body={"program_id": "p"})
    assert (_calls_served(ups[0]), _calls_served(ups[1])) == (2, 4)


def test_unreachable_upstream_is_502(serve: Serve) -> None:
    """Without health checks, the first failures (fewer than eject it) are 502s naming the upstream;
    a stream's too, as its response waits for the first token."""
    front = serve(engine="openai", upstreams=(f"http://127.0.0.1:{free_port()}",), upstream_health_interval=0)
    c = front.client(timeout=10)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3, extra_body={"program_id": "p"})
    assert err.value.status_code == 502
    body = err.value.response.json()["error"]
    assert body["type"] == "upstream_error"
    # which upstream failed and how, but not its address (that goes to the server's log)
    assert body["message"].startswith("upstream 0 failed: ClientConnectorError")
    assert "127.0.0.1" not in body["message"]
    with pytest.raises(openai.InternalServerError, match="upstream 0 failed") as err:
        list(c.completions.create(model=MODEL, prompt="hi", max_tokens=3, stream=True))
    assert err.value.status_code == 502
    assert time.monotonic() - started < 5
    entry = front.program("p")
    assert entry["active_calls"] == 0 and entry["live_calls"] == []
    assert entry["finished_calls"] == 0  # a failed call is not a finished one


def test_cancel_frees_the_inflight_slot(serve: Serve) -> None:
    up = serve()
    front = _front(serve, up, max_inflight=1)
    c = front.client()
    stream = c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "leaver"}
    )
    for _, _ in zip(range(5), stream, strict=False):
        pass
    assert _live(front, "leaver") == 1
    stream.close()
    wait_for(lambda: _live(front, "leaver") == 0)
    # the upstream call was cancelled too (its stream closed)
    wait_for(lambda: _calls_served(up) == 1)
    out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3, timeout=10)
    assert out.usage is not None and out.usage.completion_tokens == 3


def test_forwarded_body_and_priority() -> None:
    """What reaches the upstream: the client's body less the autellix fields, streaming, with the
    queue level as ``priority`` only when enabled; a 5xx ends the call with an error. The upstream
    is a real HTTP server on loopback (aiohttp's) that records each body it receives."""
    import asyncio
    import json

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from autellix.server.engines import CallHandle, UpstreamEngine
    from autellix.server.protocol import ChatCompletionRequest

    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if body["messages"][0]["content"] == "fail":
            return web.Response(status=503, text="overloaded")
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
        return web.Response(text=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n")

    async def run(forward: bool, content: str, identity: bool = False) -> CallHandle:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        async with TestServer(app, host="127.0.0.1") as upstream:
            engine = UpstreamEngine(
                [str(upstream.make_url("/v1"))], forward_priority=forward, forward_identity=identity
            )
            await engine.start()
            body = ChatCompletionRequest.model_validate(
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": content}],
                    "program_id": "p",
                    "temperature": 0.5,
                }
            )
            handle = engine.submit(1, 10, 16, body=body)
            while await handle.tokens.get() is not None:
                pass
            await engine.stop()
        return handle

    ok = asyncio.run(run(True, "hello"))
    assert ok.finish_reason == "stop" and ok.generated == 1 and ok.error is None
    assert seen[-1]["stream"] is True and seen[-1]["temperature"] == 0.5
    assert isinstance(seen[-1]["priority"], int) and "program_id" not in seen[-1]
    asyncio.run(run(False, "hello"))
    assert "priority" not in seen[-1] and "vllm_xargs" not in seen[-1]
    asyncio.run(run(False, "hello", identity=True))  # for the autellix vLLM plug-in
    assert seen[-1]["vllm_xargs"] == {"program_id": "p"} and "program_id" not in seen[-1]
    failed = asyncio.run(run(False, "fail"))
    assert failed.finish_reason == "error"
    assert failed.error is not None and "503" in failed.error and "overloaded" in failed.error


def test_parents_stay_valid_when_the_core_preempts_forwarded_calls(serve: Serve) -> None:
    """Issue 15, finding 1: 8 programs each make a call, then a second naming the first as its
    parent, through a front with 2 upstream slots. A 10 ms first boundary makes the calls in
    flight use up their quanta, so the core would preempt them for the fresh programs' calls;
    a forwarded call cannot be paused, so it keeps running in the core's view and its completion
    is recorded: every parent is valid and the process table matches what the clients saw."""
    up = serve(time_scale=0.1)  # 60-130 tokens: 40-90 ms wall upstream
    front = _front(serve, up, max_inflight=2, first_boundary=0.01)

    def program(i: int) -> tuple[str, str]:
        name = f"agent-{i}"
        with front.client() as c:
            first = c.chat.completions.create(
                model=MODEL, messages=MSG, max_tokens=60 + 10 * i, extra_body={"program_id": name}
            )
            second = c.chat.completions.create(
                model=MODEL,
                messages=MSG,
                max_tokens=130 - 10 * i,
                extra_headers={"X-Autellix-Program-Id": name, "X-Autellix-Parent-Ids": first.id},
            )
        assert second.choices[0].finish_reason == "length"
        return first.id, second.id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(program, range(8)))
    assert len({call for pair in ids for call in pair}) == 16
    for i in range(8):
        entry = front.program(f"agent-{i}")
        assert (entry["finished_calls"], entry["active_calls"], entry["live_calls"]) == (2, 0, [])
    assert _calls_served(front) == _calls_served(up) == 16
    with front.http() as h:
        metrics = h.get("/metrics").text.splitlines()
    tries = [float(line.split()[-1]) for line in metrics if line.startswith("autellix_preemptions_total ")]
    assert tries[0] >= 1  # the core did preempt calls in flight (and took them back)
