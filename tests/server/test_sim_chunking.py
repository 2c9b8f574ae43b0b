"""Chunked prefill and cancellation in the simulated engine (finding 7: one huge prompt stalled the
sim server for a 90 s iteration, and cancelling it did not help).

Timings are compared in engine iterations and simulated engine seconds, never in wall time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest

from autellix._core import SchedulerConfig
from autellix.exceptions import ConfigError
from autellix.server import ServerConfig
from autellix.server.engines import SimEngine
from autellix.server.engines.base import CallHandle
from autellix.server.engines.sim import vllm_batched_tokens
from autellix.sim.cost_model import preset
from autellix.tokens import estimate_tokens

from .conftest import MODEL

#: A prompt close to the default preset's KV capacity (444,640 tokens), with room for a short call.
HUGE = 400_000
SHORT = 100
#: Fast enough that a whole huge prefill (~330 engine seconds) takes a fraction of a wall second.
FAST = 1e-5
#: The finding's prompt: 900 KB, ~200k tokens.
TEXT_900KB = "word " * 180_000


def _user(text: str) -> Any:
    return {"role": "user", "content": text}


def _record(engine: SimEngine, handle: CallHandle) -> list[int]:
    """The engine iteration in which each of ``handle``'s tokens arrives."""
    seen: list[int] = []
    deliver = handle._deliver

    def recorded(token: str) -> None:
        seen.append(engine.iterations)
        deliver(token)

    handle._deliver = recorded  # type: ignore[method-assign]
    return seen


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(1_000_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


def _run(test: Callable[[SimEngine], Awaitable[None]], **options: Any) -> SimEngine:
    """Run ``test`` against a started engine of ``options``; the engine, stopped, for checks."""

    async def main() -> SimEngine:
        options.setdefault("time_scale", FAST)
        engine = SimEngine(**options)
        await engine.start()
        try:
            await asyncio.wait_for(test(engine), timeout=30)
        finally:
            await engine.stop()
        return engine

    return asyncio.run(main())


def test_default_budget_is_vllms_for_the_preset_gpu() -> None:
    assert vllm_batched_tokens(preset("llama3.1-8b-a100")) == 2048
    assert vllm_batched_tokens(preset("llama3.1-8b-h100")) == 8192
    assert SimEngine().max_batched_tokens == 2048
    assert SimEngine(max_running=4096).max_batched_tokens == 4096  # never below a full batch of decodes
    with pytest.raises(ConfigError, match="max_batched_tokens"):
        SimEngine(max_running=64, max_batched_tokens=32)
    with pytest.raises(ConfigError, match="max_batched_tokens"):
        ServerConfig(max_running=64, max_batched_tokens=32)


def test_chunks_add_up_to_the_unchunked_prefill() -> None:
    """Same prompt tokens and attention pairs either way; the engine seconds differ only by the
    fixed cost of the extra iterations."""
    unchunked_budget = preset("llama3.1-8b-a100").kv_tokens
    results: dict[int, SimEngine] = {}
    for budget in (2048, unchunked_budget):

        async def one(engine: SimEngine) -> None:
            handle = engine.submit(1, HUGE, 1)
            await _until(lambda: handle.done)

        results[budget] = _run(one, max_batched_tokens=budget)
    chunked, whole = results[2048], results[unchunked_budget]
    assert whole.iterations == 1
    assert chunked.iterations == math.ceil(HUGE / 2048)
    assert chunked.prefilled_tokens == whole.prefilled_tokens == HUGE
    assert whole.prefill_attention == HUGE * HUGE / 2
    assert chunked.prefill_attention == pytest.approx(whole.prefill_attention, rel=1e-12)
    assert chunked.busy_seconds == pytest.approx(whole.busy_seconds, rel=0.01)
    assert chunked.busy_seconds >= whole.busy_seconds
    # every iteration is bounded; the unchunked one is not
    assert chunked.max_iteration_seconds < whole.busy_seconds / 50


def test_first_token_only_after_the_whole_prefill() -> None:
    seen: list[int] = []
    generated_during_prefill: list[int] = []

    async def one(engine: SimEngine) -> None:
        handle = engine.submit(1, HUGE, 3)
        tokens = _record(engine, handle)
        await _until(lambda: engine.iterations >= 50)
        # the core's view: nothing generated while the prompt is being prefilled
        generated_during_prefill.append(engine._scheduler.call(handle.id).generated_tokens)
        await _until(lambda: handle.done)
        seen.extend(tokens)

    engine = _run(one)
    prefill = math.ceil(HUGE / engine.max_batched_tokens)
    assert seen == [prefill, prefill + 1, prefill + 2]
    assert generated_during_prefill == [0]


def test_short_call_is_not_held_behind_a_huge_prompt() -> None:
    """Submitted together (the huge one first, so first in the core's order), the short call is
    served in its first iterations while the huge prompt is prefilled alongside it."""
    short_tokens: list[int] = []

    async def both(engine: SimEngine) -> None:
        huge = engine.submit(1, HUGE, 1)
        short = engine.submit(2, SHORT, 4)
        recorded = _record(engine, short)
        await _until(lambda: short.done)
        assert not huge.done
        await _until(lambda: huge.done)
        short_tokens.extend(recorded)

    engine = _run(both)
    assert short_tokens == [1, 2, 3, 4]
    # the huge prompt still got (nearly) the whole budget: one extra iteration at most
    assert engine.iterations <= math.ceil((HUGE + 4 * SHORT) / engine.max_batched_tokens)
    assert engine.prefilled_tokens == HUGE + SHORT


def test_a_burst_of_prompts_gets_first_tokens_as_early_as_the_budget_allows() -> None:
    """Eight 1000-token prompts at once, 2048 tokens per iteration: two complete per iteration, in
    priority order (an even split of the budget would give all eight their first token last)."""
    firsts: list[int] = []

    async def burst(engine: SimEngine) -> None:
        handles = [engine.submit(program, 1000, 6) for program in range(1, 9)]
        recorded = [_record(engine, handle) for handle in handles]
        await _until(lambda: all(handle.done for handle in handles))
        firsts.extend(tokens[0] for tokens in recorded)

    engine = _run(burst, scheduler=SchedulerConfig("fcfs"))
    assert firsts == [1, 1, 2, 2, 3, 3, 4, 4]
    assert engine.prefilled_tokens == 8000


def test_cancel_mid_prefill_frees_the_engine_at_the_next_iteration() -> None:
    marks: dict[str, float] = {}
    short_tokens: list[int] = []

    async def cancel_then_short(engine: SimEngine) -> None:
        huge = engine.submit(1, HUGE, 1)
        await _until(lambda: engine.iterations >= 20)
        engine.cancel(huge)
        marks.update(
            iterations=engine.iterations, prefilled=engine.prefilled_tokens, busy=engine.busy_seconds
        )
        assert not engine.live(huge.id)
        short = engine.submit(2, SHORT, 4)
        recorded = _record(engine, short)
        await _until(lambda: short.done)
        short_tokens.extend(recorded)

    engine = _run(cancel_then_short)
    at_cancel = int(marks["iterations"])
    # the iteration under way at the cancel ends; the short call's prefill is in the next one
    assert short_tokens == [at_cancel + 2, at_cancel + 3, at_cancel + 4, at_cancel + 5]
    # none of the rest of the huge prompt was computed
    assert engine.prefilled_tokens - marks["prefilled"] == SHORT
    assert engine.prefilled_tokens < HUGE / 4
    # ... and the short call took the engine seconds of a short call, not a chunk's
    budget = engine.max_batched_tokens
    chunk_cost = preset("llama3.1-8b-a100").step_time(budget, budget * 20.5 * budget, 0, 0)
    assert engine.busy_seconds - marks["busy"] < chunk_cost


def test_preempted_partial_prefill_restarts() -> None:
    """One batch slot: the huge call is demoted past its quantum and preempted for a new call;
    re-admitted, it prefills its prompt again from the start, and only then gets its token."""
    huge_tokens: list[int] = []
    marks: dict[str, int] = {}

    async def preempt(engine: SimEngine) -> None:
        huge = engine.submit(1, HUGE, 1)
        recorded = _record(engine, huge)
        await _until(lambda: engine.iterations >= 20)
        short = engine.submit(2, SHORT, 2)
        await _until(lambda: short.done)
        marks.update(short_done=engine.iterations, preemptions=engine.preemptions)
        await _until(lambda: huge.done)
        huge_tokens.extend(recorded)

    engine = _run(
        preempt,
        scheduler=SchedulerConfig("plas"),
        max_running=1,
        time_scale=1e-4,
    )
    assert marks["preemptions"] >= 1
    assert engine.prefilled_tokens > HUGE + SHORT  # the partial prefill was recomputed
    # its whole prompt prefilled after the short call: ceil(HUGE / budget) iterations at least
    assert huge_tokens[0] - marks["short_done"] >= math.ceil(HUGE / engine.max_batched_tokens)


def test_server_answers_a_short_call_while_a_huge_prompt_prefills(serve: Callable[..., Any]) -> None:
    """Through a real server and the official client: a short call sent while a ~900 KB prompt is
    being prefilled is answered while that prefill is still under way."""
    engine = SimEngine(time_scale=0.05)  # the huge prefill: ~90 engine seconds, ~4.4 s wall
    running = serve(on_engine=engine, time_scale=0.05)
    client = openai.AsyncOpenAI(base_url=f"{running.url}/v1", api_key="x", max_retries=0, timeout=60)

    async def scenario() -> None:
        huge = asyncio.ensure_future(
            client.chat.completions.create(model=MODEL, messages=[_user(TEXT_900KB)], max_tokens=2)
        )
        await _until_async(lambda: engine.prefilled_tokens > 0)
        short = await client.chat.completions.create(model=MODEL, messages=[_user("hi")], max_tokens=2)
        assert short.choices[0].finish_reason == "length"
        assert engine.prefilled_tokens < estimate_tokens(TEXT_900KB)  # still prefilling the huge prompt
        assert not huge.done()
        huge.cancel()  # not waited for: the next test covers the cancel
        with contextlib.suppress(asyncio.CancelledError):
            await huge
        await client.close()

    asyncio.run(scenario())


def test_server_drops_a_huge_prompt_whose_client_disconnects(serve: Callable[..., Any]) -> None:
    """A client that gives up on a huge call mid-prefill: the rest of that prompt is never
    computed, and the next call is served at once."""
    engine = SimEngine(time_scale=0.02)
    running = serve(on_engine=engine, time_scale=0.02)
    client = openai.AsyncOpenAI(base_url=f"{running.url}/v1", api_key="x", max_retries=0, timeout=60)

    async def scenario() -> None:
        huge = asyncio.ensure_future(
            client.chat.completions.create(model=MODEL, messages=[_user(TEXT_900KB)], max_tokens=2)
        )
        await _until_async(lambda: engine.prefilled_tokens > 0)
        huge.cancel()  # closes the connection
        with contextlib.suppress(asyncio.CancelledError):
            await huge
        await _until_async(lambda: engine.running == 0 and engine.waiting == 0)
        dropped_at = engine.prefilled_tokens
        short = await client.chat.completions.create(model=MODEL, messages=[_user("hi")], max_tokens=2)
        assert short.choices[0].finish_reason == "length"
        assert short.usage is not None
        assert engine.prefilled_tokens == dropped_at + short.usage.prompt_tokens
        assert dropped_at < estimate_tokens(TEXT_900KB) / 2
        await client.close()

    asyncio.run(scenario())


async def _until_async(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """``predicate`` turned true, polled while another thread (the server's) makes progress."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
