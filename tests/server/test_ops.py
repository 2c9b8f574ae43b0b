"""Operating the server: ``/metrics``, API keys, per-key concurrency, non-streaming disconnects."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import MODEL, MSG, Running, wait_for

LONG = 100_000

Serve = Callable[..., Running]


def scrape(s: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (sample name, sorted labels) -> value."""
    with httpx.Client(base_url=s.url, timeout=10) as h:  # no API key: /metrics is open
        r = h.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _background(c: openai.OpenAI, program: str, results: list[Any], max_tokens: int = 3) -> threading.Thread:
    def run() -> None:
        try:
            results.append(
                c.chat.completions.create(
                    model=MODEL, messages=MSG, max_tokens=max_tokens, extra_body={"program_id": program}
                )
            )
        except openai.APIError as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_named_program_is_observed_when_finished(serve: Serve) -> None:
    s = serve()
    c = s.client()
    for _ in range(2):
        c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2, extra_body={"program_id": "named"})
    assert value(scrape(s), "autellix_program_service_seconds_count") == 0  # still live
    service = s.program("named")["attained_service"]
    with s.http() as h:
        assert h.post("/v1/programs/named/finish").status_code == 200
    after = scrape(s)
    assert value(after, "autellix_program_service_seconds_count") == 1
    assert value(after, "autellix_program_service_seconds_sum") == pytest.approx(service)


def test_metrics_after_known_traffic(serve: Serve) -> None:
    s = serve(policy="fcfs", max_running=1, max_queued=2)
    c = s.client()
    empty = scrape(s)
    assert value(empty, "autellix_calls_running") == 0
    assert value(empty, "autellix_programs_live") == 0
    assert value(empty, "autellix_preemptions_total") == 0
    assert value(empty, "autellix_call_latency_seconds_count") == 0
    assert [k for k in empty if k[0] == "autellix_queue_depth"]  # one series per level
    for _ in range(3):
        c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4)
    c.completions.create(model=MODEL, prompt="hi")  # server default max tokens: "stop"
    done = scrape(s)
    assert value(done, "autellix_calls_total", finish_reason="length") == 3
    assert value(done, "autellix_calls_total", finish_reason="stop") == 1
    assert value(done, "autellix_time_to_first_token_seconds_count") == 4
    assert value(done, "autellix_call_latency_seconds_count") == 4
    assert (
        0
        < value(done, "autellix_time_to_first_token_seconds_sum")
        < value(done, "autellix_call_latency_seconds_sum")
    )
    assert value(done, "autellix_call_latency_seconds_bucket", le="+Inf") == 4
    # the four anonymous programs ended with their calls: one service and wait sample each
    assert value(done, "autellix_program_service_seconds_count") == 4
    assert value(done, "autellix_program_wait_seconds_count") == 4
    assert value(done, "autellix_program_service_seconds_sum") > 0

    # contention: one call runs, two wait, a third waiter is refused
    results: list[Any] = []
    with c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "blocker"}
    ) as blocker:
        next(iter(blocker))
        waiters = [_background(c, f"w{i}", results) for i in range(2)]
        wait_for(lambda: value(scrape(s), "autellix_calls_waiting") == 2)
        busy = scrape(s)
        assert value(busy, "autellix_calls_running") == 1
        assert value(busy, "autellix_engine_load_ratio") == 1.0
        depths = [v for (name, _), v in busy.items() if name == "autellix_queue_depth"]
        assert sum(depths) == 2
        assert value(busy, "autellix_programs_live") == 3
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
        assert value(scrape(s), "autellix_rejected_requests_total", reason="queue_full") == 1
    for t in waiters:
        t.join(timeout=30)
    assert len(results) == 2 and not any(isinstance(r, Exception) for r in results)
    after = scrape(s)
    assert value(after, "autellix_calls_total", finish_reason="abort") == 1  # the closed stream
    assert value(after, "autellix_calls_total", finish_reason="length") == 5
    assert value(after, "autellix_calls_running") == 0
    assert value(after, "autellix_calls_waiting") == 0


def test_preemptions_are_counted(serve: Serve) -> None:
    """PLAS, one slot: a program with lots of attained service is at a low priority level; a
    fresh program's call preempts its running call."""
    s = serve(policy="plas", max_running=1)
    c = s.client()
    results: list[Any] = []
    c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=200, extra_body={"program_id": "long"})
    assert s.program("long")["attained_service"] > 1.0
    with c.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "long"}
    ) as blocker:
        it = iter(blocker)
        next(it)
        _background(c, "fresh", results).join(timeout=30)
        assert len(results) == 1 and not isinstance(results[0], Exception)
        next(it)  # the long call runs again
    assert value(scrape(s), "autellix_preemptions_total") >= 1


def test_metrics_registries_are_per_app(serve: Serve) -> None:
    a, b = serve(), serve()
    a.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    assert value(scrape(a), "autellix_calls_total", finish_reason="length") == 1
    assert value(scrape(b), "autellix_calls_total", finish_reason="length") == 0


def test_api_keys(serve: Serve) -> None:
    s = serve(api_keys=("k1", "k2"))
    with httpx.Client(base_url=s.url, timeout=10) as h:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k1"}):
            for method, path in (
                ("GET", "/v1/models"),
                ("POST", "/v1/chat/completions"),
                ("GET", "/v1/programs/p"),
                ("GET", "/v1/nothing"),
            ):
                r = h.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (headers, path, r.text)
                err = r.json()["error"]
                assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
                assert r.headers["WWW-Authenticate"] == "Bearer"
        assert h.get("/health").status_code == 200
        assert h.get("/metrics").status_code == 200
        ok = h.get("/v1/models", headers={"Authorization": "Bearer k2"})
        assert ok.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        s.client(api_key="wrong").models.list()
    out = s.client(api_key="k1").chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    assert out.usage is not None and out.usage.completion_tokens == 2


def test_per_key_concurrency_limit(serve: Serve) -> None:
    s = serve(api_keys=("a", "b"), max_concurrent_per_key=1)
    ca, cb = s.client(api_key="a"), s.client(api_key="b")
    with ca.chat.completions.create(model=MODEL, messages=MSG, max_tokens=LONG, stream=True) as stream:
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as err:
            ca.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
        assert err.value.response.headers["Retry-After"] == "1"
        assert err.value.response.json()["error"]["code"] == "concurrency_limit"
        # other routes and other keys are not limited
        assert ca.models.list().data
        out = cb.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
        assert out.usage is not None and out.usage.completion_tokens == 2
        assert value(scrape(s), "autellix_rejected_requests_total", reason="key_concurrency") == 1
    # the stream is over: the key's slot is free again
    wait_for(lambda: value(scrape(s), "autellix_calls_running") == 0)
    out = ca.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    assert out.usage is not None and out.usage.completion_tokens == 2


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_non_streaming_disconnect_cancels(serve: Serve, path: str) -> None:
    s = serve(policy="fcfs", max_running=1)
    body: dict[str, Any] = {"model": MODEL, "max_tokens": LONG, "program_id": "leaver"}
    body.update({"messages": MSG} if path.endswith("chat/completions") else {"prompt": "hi"})
    with httpx.Client(base_url=s.url, timeout=httpx.Timeout(10, read=0.3)) as h:
        with pytest.raises(httpx.ReadTimeout):
            h.post(path, json=body)
    wait_for(lambda: s.program("leaver")["live_calls"] == [])
    entry = s.program("leaver")
    assert entry["active_calls"] == 0 and entry["finished_calls"] == 0
    assert value(scrape(s), "autellix_calls_total", finish_reason="abort") == 1
    # the only slot is free again
    out = s.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=3, timeout=10)
    assert out.usage is not None and out.usage.completion_tokens == 3
