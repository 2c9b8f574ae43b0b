"""``autellix serve`` for real: uvicorn on loopback, driven by the official ``openai`` client."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from autellix import ConfigError, SchedulerConfig
from autellix.server import ServerConfig
from autellix.server.engines import make_engine
from autellix.server.engines.base import retry_after

from .conftest import MODEL, MSG, Running, finish_time, wait_for

LONG = 100_000  # max_tokens of a call that runs until the test closes it

Serve = Callable[..., Running]


def test_health_and_models(serve: Serve) -> None:
    s = serve(model="my-model")
    with s.http() as h:
        health = h.get("/health")
    assert health.status_code == 200
    assert health.json()["policy"] == "plas"
    assert [m.id for m in s.client().models.list()] == ["my-model"]


def test_chat_completion(serve: Serve) -> None:
    c = serve().client()
    out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=5)
    assert out.id.startswith("chatcmpl-")
    assert out.choices[0].message.content == " tok" * 5
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert out.usage.completion_tokens == 5
    assert out.usage.prompt_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5
    # max_completion_tokens is the newer spelling; without any, the server's default applies
    out = c.chat.completions.create(model=MODEL, messages=MSG, max_completion_tokens=3)
    assert out.usage is not None and out.usage.completion_tokens == 3
    out = c.chat.completions.create(model=MODEL, messages=MSG, temperature=0.2, top_p=0.9)
    assert out.usage is not None and out.usage.completion_tokens == 16
    assert out.choices[0].finish_reason == "stop"


def test_chat_completion_streaming(serve: Serve) -> None:
    c = serve(default_max_tokens=7).client()
    chunks = list(
        c.chat.completions.create(
            model=MODEL, messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == " tok" * 7
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert len({ch.id for ch in chunks}) == 1


def test_completions(serve: Serve) -> None:
    c = serve().client()
    out = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4)
    assert out.id.startswith("cmpl-")
    assert out.choices[0].text == " tok" * 4
    assert out.usage is not None and out.usage.completion_tokens == 4
    chunks = list(c.completions.create(model=MODEL, prompt="Once", max_tokens=3, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == " tok" * 3
    assert chunks[-1].choices[0].finish_reason == "length"


def test_program_tagging_reaches_the_process_table(serve: Serve) -> None:
    s = serve(policy="atlas")
    c = s.client()
    first = c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=4, extra_headers={"X-Autellix-Program-Id": "agent-1"}
    )
    c.chat.completions.create(
        model=MODEL,
        messages=MSG,
        max_tokens=4,
        extra_body={"program_id": "agent-1", "thread_id": "branch-a", "parent_ids": [first.id]},
    )
    c.chat.completions.create(
        model=MODEL,
        messages=MSG,
        max_tokens=4,
        extra_headers={
            "X-Autellix-Program-Id": "agent-1",
            "X-Autellix-Thread-Id": "branch-b",
            "X-Autellix-Parent-Ids": first.id,
        },
    )
    entry = s.program("agent-1")
    assert entry["id"] == "agent-1"
    assert entry["finished_calls"] == 3
    assert entry["active_calls"] == 0
    assert entry["attained_service"] > 0
    assert entry["critical_path"] > 0
    assert entry["threads"] >= 2
    assert entry["live_calls"] == []
    with s.http() as h:
        done = h.post("/v1/programs/agent-1/finish")
        assert done.status_code == 200, done.text
        assert done.json() == {"id": "agent-1", "aborted_calls": []}
        gone = h.get("/v1/programs/agent-1")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "program_not_found"


def test_anonymous_call_is_its_own_program(serve: Serve) -> None:
    s = serve()
    with s.http() as h:
        r = h.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200
        name = r.headers["X-Autellix-Program-Id"]
        # ended with its call
        assert h.get(f"/v1/programs/{name}").status_code == 404


@pytest.mark.parametrize(("policy", "first"), [("plas", "fresh"), ("fcfs", "busy")])
def test_priority_under_contention(serve: Serve, policy: str, first: str) -> None:
    """One slot. Program ``busy`` has a long call running (lots of attained service) and then
    queues a second call; a ``fresh`` program queues one after it. PLAS runs the fresh program's
    call first (least attained service); FCFS runs them in arrival order."""
    s = serve(policy=policy, max_running=1)
    c = s.client()
    done: dict[str, float] = {}
    # ~15 s of engine time: the lowest level, and anti-starvation (beta 8) will not promote its
    # next call before ~120 s (1.2 s wall at this time scale) of waiting
    c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2000, extra_body={"program_id": "busy"})
    assert s.program("busy")["attained_service"] > 10.0
    with c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "busy"}
    ) as blocker:
        next(iter(blocker))
        busy = finish_time(c, "busy", done)
        wait_for(lambda: s.program("busy")["active_calls"] == 2)
        fresh = finish_time(c, "fresh", done)

        def fresh_arrived() -> bool:
            with s.http() as h:
                return h.get("/v1/programs/fresh").status_code == 200 or "fresh" in done

        wait_for(fresh_arrived)
    # the blocker's stream is closed: its call is cancelled and the slot freed
    busy.join(timeout=30)
    fresh.join(timeout=30)
    assert set(done) == {"busy", "fresh"}
    assert min(done, key=lambda k: done[k]) == first


def test_queue_full_is_429_with_retry_after(serve: Serve) -> None:
    s = serve(policy="fcfs", max_running=1, max_queued=1)
    c = s.client()
    done: dict[str, float] = {}
    with c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=LONG, stream=True) as blocker:
        next(iter(blocker))
        waiting = finish_time(c, "waiting", done)
        wait_for(lambda: _exists(s, "waiting"))
        with pytest.raises(openai.RateLimitError) as err:
            c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
        assert err.value.status_code == 429
        # nothing has completed yet: one rate window (10 s), not a constant 1
        assert int(err.value.response.headers["Retry-After"]) == 10
        body = err.value.response.json()
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["code"] == "queue_full"
    waiting.join(timeout=30)
    assert "waiting" in done
    # capacity is back
    out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    assert out.usage is not None and out.usage.completion_tokens == 2


def _exists(s: Running, name: str) -> bool:
    with s.http() as h:
        return h.get(f"/v1/programs/{name}").status_code == 200


def test_disconnect_cancels_the_call(serve: Serve) -> None:
    s = serve(policy="fcfs", max_running=1)
    c = s.client()
    stream = c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "leaver"}
    )
    for _, _ in zip(range(5), stream, strict=False):
        pass
    assert len(s.program("leaver")["live_calls"]) == 1
    stream.close()
    wait_for(lambda: s.program("leaver")["live_calls"] == [])
    entry = s.program("leaver")
    assert entry["active_calls"] == 0
    assert entry["finished_calls"] == 0  # aborted, not completed
    # the only slot is free again
    out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3, timeout=10)
    assert out.usage is not None and out.usage.completion_tokens == 3


def test_finish_aborts_live_calls(serve: Serve) -> None:
    s = serve(max_running=1)
    c = s.client()
    with c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "p"}
    ) as stream:
        it = iter(stream)
        next(it)
        with s.http() as h:
            r = h.post("/v1/programs/p/finish")
        assert r.status_code == 200
        assert len(r.json()["aborted_calls"]) == 1
        reasons = [ch.choices[0].finish_reason for ch in it if ch.choices]
        assert reasons[-1] == "length"  # cut short (``abort`` is not an OpenAI finish reason)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert body["message"] and body["type"]
    return body


CHAT = {"model": MODEL, "messages": MSG, "max_tokens": 2}


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        ({**CHAT, "model": "gpt-9"}, {}, 404, "does not exist"),
        ({**CHAT, "messages": []}, {}, 400, "messages"),
        ({"model": MODEL}, {}, 400, "messages"),
        ({**CHAT, "max_tokens": 0}, {}, 400, "max_tokens"),
        ({**CHAT, "max_tokens": "many"}, {}, 400, "max_tokens"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, {}, 400, "role"),
        ({**CHAT, "max_tokens": 10_000_000}, {}, 400, "KV capacity"),
        (CHAT, {"X-Autellix-Program-Id": "bad id!"}, 400, "invalid program id"),
        (CHAT, {"X-Autellix-Program-Id": "x" * 129}, 400, "invalid program id"),
        ({**CHAT, "thread_id": ""}, {"X-Autellix-Program-Id": "p"}, 400, "invalid thread id"),
        ({**CHAT, "program_id": "a"}, {"X-Autellix-Program-Id": "b"}, 400, "differ"),
        (CHAT, {"X-Autellix-Program-Id": "p", "X-Autellix-Parent-Ids": "chatcmpl-x"}, 400, "parent"),
        ({**CHAT, "parent_ids": ["chatcmpl-1"]}, {}, 400, "need a program id"),
        ({**CHAT, "program_id": "p", "parent_ids": ["chatcmpl-999999"]}, {}, 400, "999999"),
    ],
)
def test_bad_chat_requests(
    serve: Serve, body: dict[str, Any], headers: dict[str, str], status: int, needle: str
) -> None:
    s = serve()
    with s.http() as h:
        err = _error(h.post("/v1/chat/completions", json=body, headers=headers), status)
    assert needle in err["message"]


def test_bad_requests_of_other_kinds(serve: Serve) -> None:
    s = serve(max_body_bytes=2000)
    with s.http() as h:
        raw = h.post(
            "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert _error(raw, 400)["type"] == "invalid_request_error"
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        assert _error(h.post("/v1/chat/completions", json=big), 413)["code"] == "body_too_large"

        def chunked() -> Any:
            yield b'{"model": "autellix-sim", "prompt": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        assert _error(h.post("/v1/completions", content=chunked()), 413)["code"] == "body_too_large"
        assert _error(h.post("/v1/completions", json={"model": MODEL}), 400)["message"].count("prompt")
        assert _error(h.get("/v1/programs/nobody"), 404)["code"] == "program_not_found"
        assert _error(h.post("/v1/programs/nobody/finish"), 404)["code"] == "program_not_found"
        assert _error(h.get("/v1/programs/bad%20id"), 400)["code"] == "invalid_id"
        assert _error(h.get("/v1/nothing-here"), 404)["type"] == "not_found_error"
        wrong_method = h.get("/v1/chat/completions")
        assert _error(wrong_method, 405)["type"] == "invalid_request_error"
        assert wrong_method.headers["allow"] == "POST"
    # the official client raises its typed errors
    c = s.client()
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="other", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=MSG, extra_headers={"X-Autellix-Program-Id": "#"})


def test_scheduler_settings_default_to_the_cores() -> None:
    core = SchedulerConfig()
    config = ServerConfig()
    assert (config.first_boundary, config.starvation_beta) == (None, core.starvation_beta)
    assert config.scheduler_config() == core


def test_scheduler_settings_reach_the_engines_core() -> None:
    config = ServerConfig(policy="mlfq", first_boundary=0.2, starvation_beta=3.0, program_ttl=60.0)
    boundaries, quanta = SchedulerConfig.ladder(0.2)
    expected = SchedulerConfig(
        "mlfq", boundaries=boundaries, quanta=quanta, starvation_beta=3.0, program_ttl=60.0
    )
    assert config.scheduler_config() == expected
    for time_scale in (1.0, 0.5):  # the sim engine's core: the same ladder and beta, in engine time
        core = make_engine(dataclasses.replace(config, time_scale=time_scale))._scheduler.config
        assert (core.boundaries[0], core.quanta, core.starvation_beta) == (0.2, quanta, 3.0)
        assert core.program_ttl == 60.0 / time_scale
    assert ServerConfig(starvation_beta=None).scheduler_config().starvation_beta is None
    upstream = make_engine(ServerConfig(engine="openai", upstreams=("http://x",), first_boundary=0.2))
    assert upstream._scheduler.config.boundaries[0] == 0.2


@pytest.mark.parametrize(
    "options",
    [
        {"first_boundary": 0.0},
        {"first_boundary": -1.0},
        {"first_boundary": float("inf")},
        {"first_boundary": float("nan")},
        {"first_boundary": 1e308},  # the ladder overflows: refused by the core
        {"starvation_beta": 0.0},
        {"starvation_beta": float("inf")},
    ],
)
def test_bad_scheduler_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**options)


def test_retry_after_is_the_time_to_drain_the_excess() -> None:
    assert retry_after(1, 2.0) == 1.0  # clamped up to a second
    assert retry_after(30, 2.0) == 15.0
    assert retry_after(10_000, 2.0) == 60.0  # clamped down to a minute
    assert retry_after(5, 0.0) == 10.0  # nothing completed lately: one rate window
