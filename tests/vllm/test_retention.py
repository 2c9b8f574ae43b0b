"""The KV planner inside ``AutellixScheduler`` (``kv_policy`` ``autellix``) on the real vLLM 0.33
scheduler and block pool: retained contexts, soft holds, program ends, admission, metrics."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from vllm.v1.request import Request, RequestStatus

from autellix.adapters.kv_metrics import KvMetrics
from autellix.adapters.vllm import AutellixScheduler
from autellix.testing import vllm_harness as harness

from .conftest import Engine

Make = Callable[..., Engine]


def _watch(e: Engine) -> tuple[dict[str, int], list[str]]:
    """Record each request's prefix-cache hit when vLLM first schedules it (computed tokens of
    ``scheduled_new_reqs``) and every preemption vLLM carries out."""
    hits: dict[str, int] = {}
    preempted: list[str] = []
    scheduler = e.scheduler
    schedule, preempt = scheduler.schedule, scheduler._preempt_request

    def watched_schedule(*args: Any, **kwargs: Any) -> Any:
        out = schedule(*args, **kwargs)
        for new in out.scheduled_new_reqs:
            hits.setdefault(new.req_id, new.num_computed_tokens)
        return out

    def watched_preempt(request: Request, *args: Any, **kwargs: Any) -> Any:
        preempted.append(request.request_id)
        return preempt(request, *args, **kwargs)

    scheduler.schedule = watched_schedule
    scheduler._preempt_request = watched_preempt
    return hits, preempted


def _call(e: Engine, request_id: str, tokens: list[int], max_tokens: int, **extra: Any) -> Request:
    request = harness.make_request(request_id, tokens, max_tokens, extra_args=extra or None)
    e.scheduler.add_request(request)
    return request


def _tokens(request_id: str, n: int) -> list[int]:
    return list(harness.make_request(request_id, n, 1).prompt_token_ids)


def _next_prompt(request: Request, n: int) -> list[int]:
    """The program's next call: everything so far (prompt and output) plus a tool result."""
    return [*request.all_token_ids, *_tokens(f"{request.request_id}-tool", n)]


def _check(e: Engine) -> None:
    """Every held block is referenced and hashed, the planner counts exactly the blocks held, and
    blocks held + free never exceed the pool."""
    scheduler = e.scheduler
    if isinstance(scheduler, AutellixScheduler) and scheduler.kv is not None:
        scheduler.kv.check()
        assert (
            len({id(b) for b in scheduler.kv.held()}) + e.free_blocks <= scheduler.kv_cache_config.num_blocks
        )


def _all_back(e: Engine) -> None:
    assert not e.loop.busy()
    assert e.free_blocks == e.scheduler.kv_cache_config.num_blocks - 1
    kv = e.scheduler.kv
    assert kv is not None and len(kv) == 0 and kv.planner.gpu_blocks == 0 and len(kv.planner) == 0


def _tool_wait_under_load(e: Engine) -> int:
    """A two-call program whose tool wait spans ten other programs' calls, each of which fills
    much of the cache; the second call's prefix-cache hit."""
    hits, _ = _watch(e)
    first = _call(e, "agent-0", _tokens("agent-0", 100), 20, program_id="agent")
    e.run()
    for i in range(10):
        e.add(f"load-{i}", 200, 30, program=f"load-{i}", last_call=1)
    e.run()
    _call(e, "agent-1", _next_prompt(first, 16), 5, program_id="agent", last_call=True)
    e.run()
    return hits["agent-1"]


def test_a_context_survives_a_tool_wait_under_load(engine: Make) -> None:
    e = engine("plas", num_blocks=64, max_num_seqs=2, kv_policy="autellix")
    # 119 tokens had KV (the last sampled token never ran): 7 full blocks
    assert _tool_wait_under_load(e) == 7 * 16
    stats = e.scheduler.autellix_stats()
    assert stats["kv_retained_hits_total"] == 1 and stats["kv_retained_hit_tokens_total"] == 112
    assert stats["kv_retained_contexts"] == 0  # last_call ended the program: its contexts went
    _all_back(e)
    # vLLM's LRU prefix cache alone (stock, and the plug-in's default kv_policy) lost it
    assert _tool_wait_under_load(engine(stock=True, num_blocks=64, max_num_seqs=2)) == 0
    lru = engine("plas", num_blocks=64, max_num_seqs=2)
    assert lru.scheduler.kv is None and lru.scheduler.autellix_stats() == {}
    assert _tool_wait_under_load(lru) == 0


def _pressure(e: Engine) -> tuple[list[str], dict[str, int]]:
    """Programs that keep their contexts while others' calls need all the memory."""
    _, preempted = _watch(e)
    firsts = [_call(e, f"agent{i}-0", _tokens(f"agent{i}", 90), 30, program_id=f"agent{i}") for i in range(3)]
    for _ in range(60):
        e.step()
        _check(e)
    for i in range(6):
        e.add(f"load-{i}", 150, 120, program="load")
    while e.loop.busy():
        e.step()
        _check(e)
    for i, first in enumerate(firsts):
        _call(e, f"agent{i}-1", _next_prompt(first, 20), 4, program_id=f"agent{i}")
    while e.loop.busy():
        e.step()
        _check(e)
    return preempted, dict(e.loop.tokens)


@pytest.mark.parametrize("num_blocks", [30, 40])
def test_holds_never_cost_a_running_request_its_memory(engine: Make, num_blocks: int) -> None:
    lru = engine("fcfs", num_blocks=num_blocks, max_num_seqs=2)
    e = engine("fcfs", num_blocks=num_blocks, max_num_seqs=2, kv_policy="autellix")
    lru_preempted, lru_tokens = _pressure(lru)
    preempted, tokens = _pressure(e)
    # the same preemptions as vLLM's own cache management (the held blocks were given back
    # first), and every token generated; vLLM alone (FCFS) preempts the same calls
    assert preempted == lru_preempted and tokens == lru_tokens
    assert _pressure(engine(stock=True, num_blocks=num_blocks, max_num_seqs=2)) == (preempted, tokens)
    stats = e.scheduler.autellix_stats()
    assert stats["kv_reclaimed_blocks_total:drop"] > 0  # the load did need the held blocks
    for name in ("agent0", "agent1", "agent2", "load"):
        assert e.scheduler.finish_program(name)
    assert not e.scheduler.finish_program("agent0")  # ended already
    _all_back(e)


def test_a_queued_call_gives_its_context_up_to_a_running_one(engine: Make) -> None:
    # One slot, 29 blocks: agent's context (6 blocks) is acquired by its next call, which queues
    # behind a long call that grows to 24 blocks; that call takes the context, not a preemption.
    e = engine("fcfs", num_blocks=30, max_num_seqs=1, kv_policy="autellix")
    hits, preempted = _watch(e)
    first = _call(e, "agent-0", _tokens("agent-0", 90), 10, program_id="agent")
    e.run()
    e.add("long-0", 16, 370, program="long", last_call=1)
    e.step(3)
    _call(e, "agent-1", _next_prompt(first, 8), 4, program_id="agent", last_call=1)
    assert e.scheduler.kv.acquired("agent-1") is not None
    while e.loop.busy():
        e.step()
        _check(e)
    assert not preempted and e.loop.tokens == {"agent-0": 10, "long-0": 370, "agent-1": 4}
    # its context went to the running call (what that call did not overwrite still hit: a
    # given-back block keeps its hash in vLLM's LRU until it is reused)
    assert hits["agent-1"] < 6 * 16
    assert e.scheduler.autellix_stats()["kv_forced_releases_total"] == 1
    _all_back(e)


def test_a_program_filling_half_the_cache_defers_no_one(engine: Make) -> None:
    # One program's 40-block context in a 63-block cache: deferring a newcomer would make it wait
    # for that whole program to end, so admission lets it in (admission_min_programs).
    e = engine("plas", num_blocks=64, kv_policy="autellix")
    e.add("big-0", 40 * 16, 2, program="big")
    e.run()
    e.add("new-0", 32, 4, program="new")
    e.run()
    assert e.loop.tokens["new-0"] == 4
    assert e.scheduler.autellix_stats()["programs_deferred_total"] == 0
    assert e.scheduler.kv.planner.gpu_blocks >= 40  # and the big program's context is still held


def test_with_kv_admission_off_no_program_waits(engine: Make) -> None:
    e = engine("plas", num_blocks=64, kv_policy="autellix", kv_admission="off")
    for i in range(4):  # the four 14-block contexts that defer "new" with admission on
        e.add(f"big{i}-0", 14 * 16, 2, program=f"big{i}")
    e.run()
    e.add("new-0", 32, 4, program="new")
    e.step(20)
    assert e.loop.tokens["new-0"] == 4 and e.scheduler.kv.planner.gpu_blocks >= 56
    assert e.scheduler.autellix_stats()["programs_deferred_total"] == 0


def test_queued_calls_give_their_contexts_up_when_nothing_runs(engine: Make) -> None:
    # One slot, 29 blocks: two programs' contexts (6 blocks each) are acquired by their next
    # calls, queued behind a 20-block call that only fits without them. Nothing runs, so
    # nothing else would ever free a block: the queued calls give them up, and all three run.
    e = engine("fcfs", num_blocks=30, max_num_seqs=1, kv_policy="autellix")
    first = {}
    for name in ("a", "b"):
        first[name] = _call(e, f"{name}-0", _tokens(f"{name}-0", 90), 10, program_id=name)
        e.run()
    assert e.scheduler.kv.planner.gpu_blocks == 12
    e.add("big-0", 20 * 16, 2, program="big", last_call=1)
    for name in ("a", "b"):
        _call(e, f"{name}-1", _next_prompt(first[name], 8), 4, program_id=name, last_call=1)
        assert e.scheduler.kv.acquired(f"{name}-1") is not None
    e.run(max_steps=500)
    assert e.loop.tokens == {"a-0": 10, "b-0": 10, "big-0": 2, "a-1": 4, "b-1": 4}
    assert e.scheduler.autellix_stats()["kv_forced_releases_total"] == 2
    _all_back(e)


def test_allocations_pass_through_the_plugin_only_while_contexts_are_held(engine: Make) -> None:
    e = engine("plas", num_blocks=64, kv_policy="autellix")
    manager = e.scheduler.kv_cache_manager
    assert e.scheduler._allocate_slots is not None
    vllms, wrapped = e.scheduler._allocate_slots
    first = _call(e, "a-0", _tokens("a-0", 90), 4, program_id="a")
    e.step()
    assert manager.allocate_slots is vllms  # nothing held: vLLM's own method, no extra frame
    e.run()
    assert len(e.scheduler.kv) == 1
    _call(e, "a-1", _next_prompt(first, 8), 4, program_id="a", last_call=1)
    e.step()
    assert manager.allocate_slots is wrapped  # a context to give back if an allocation fails
    e.run()
    e.step()
    assert len(e.scheduler.kv) == 0 and manager.allocate_slots is vllms
    _all_back(e)


def _two_tools(e: Engine, hinted: bool) -> dict[str, int]:
    """Two programs' contexts (6 blocks each) when a call needs one of them: "slow" (its tool
    takes minutes) finished first, "quick" (its tool takes 0.1 s) after it."""
    hits, _ = _watch(e)
    slow = _call(
        e, "slow-0", _tokens("slow-0", 90), 10, program_id="slow", **({"tool_seconds": 300} if hinted else {})
    )
    e.run()
    quick = _call(
        e,
        "quick-0",
        _tokens("quick-0", 90),
        10,
        program_id="quick",
        **({"tool_seconds": "0.1"} if hinted else {}),
    )
    e.run()
    e.add("big-0", 30 * 16, 2, program="big", last_call=1)
    e.run()
    _call(e, "slow-1", _next_prompt(slow, 8), 2, program_id="slow", last_call=1)
    _call(e, "quick-1", _next_prompt(quick, 8), 2, program_id="quick", last_call=1)
    e.run()
    _all_back(e)
    return {name: hits[f"{name}-1"] for name in ("slow", "quick")}


def test_tool_seconds_is_a_prior_of_the_gap(engine: Make) -> None:
    # Unhinted, both wait the planner's prior gap: the context idle since later is due later and
    # goes; hinted, the slow tool's context goes although it went idle first.
    unhinted = _two_tools(engine("fcfs", num_blocks=40, max_num_seqs=1, kv_policy="autellix"), False)
    assert unhinted["slow"] == 6 * 16 and unhinted["quick"] < 6 * 16
    hinted = _two_tools(engine("fcfs", num_blocks=40, max_num_seqs=1, kv_policy="autellix"), True)
    assert hinted["quick"] == 6 * 16 and hinted["slow"] < 6 * 16


def test_program_ends_give_every_block_back(engine: Make) -> None:
    e = engine("plas", num_blocks=128, max_num_seqs=4, kv_policy="autellix", program_ttl=1.0)
    kv = e.scheduler.kv
    assert kv is not None
    e.add("fin-0", 100, 10, program="fin")
    e.add("last-0", 100, 10, program="last")
    e.add("ttl-0", 100, 10, program="ttl")
    e.run()
    assert len(kv) == 3 and kv.planner.gpu_blocks == 3 * 6  # 109 tokens of KV each: 6 full blocks
    held = e.free_blocks
    # the finish hint
    assert e.scheduler.finish_program("fin")
    assert len(kv) == 2 and e.free_blocks == held + 6
    # a last call: no context kept for it, and the program's earlier ones go with it
    e.add("last-1", 40, 10, program="last", last_call="true")
    e.run()
    assert len(kv) == 1 and e.free_blocks == held + 12
    # the core's program TTL (1 s): another program's calls keep the engine stepping past it
    e.add("other-0", 16, 60, program="other", last_call=1)
    e.run()
    assert e.now > 1.0 and len(kv) == 0
    _all_back(e)
    assert e.scheduler.autellix_stats()["kv_reclaimed_blocks_total:end"] == 3 * 6


def test_a_finish_hint_waits_for_the_live_calls(engine: Make) -> None:
    e = engine("plas", num_blocks=128, kv_policy="autellix")
    kv = e.scheduler.kv
    assert kv is not None
    e.add("p-0", 64, 5, program="p")
    e.run()
    e.add("p-1", 64, 40, program="p", thread_id="a")
    e.step(4)
    assert e.scheduler.finish_program("p")
    assert len(kv) == 1  # still live: p-1 runs
    e.run()
    assert e.finished[-1] == "p-1" and e.loop.tokens["p-1"] == 40
    _all_back(e)


class RandomPrograms:
    """A random agent workload, one move at a time: 8 programs whose calls mostly continue their
    previous call (a tool result appended), some aborts and finish hints, ``last_call`` hints,
    and (with ``tool_seconds``) expected tool durations."""

    def __init__(self, e: Any, rng: random.Random, tool_seconds: bool = False) -> None:
        self.e, self.rng, self.tool_seconds = e, rng, tool_seconds
        self.names = [f"p{i}" for i in range(8)]
        self.last: dict[str, Request] = {}  # program -> its latest request
        self.calls = 0

    def move(self) -> str:
        """Make one move; which: call, abort, finish, reset (the caller's to make) or none."""
        rng, scheduler = self.rng, self.e.scheduler
        roll = rng.random()
        name = rng.choice(self.names)
        if roll < 0.12:
            self.calls += 1
            previous = self.last.get(name)
            prompt = (
                _next_prompt(previous, rng.randint(1, 40))
                if previous is not None and previous.is_finished() and rng.random() < 0.8
                else _tokens(f"fresh-{self.calls}", rng.randint(8, 120))
            )
            extra: dict[str, Any] = {"thread_id": rng.choice(["a", "b"])}
            if self.tool_seconds:
                extra["tool_seconds"] = rng.random() * 3
            if rng.random() < 0.1:
                extra["last_call"] = 1
            request_id = f"{name}-{self.calls}"
            self.last[name] = _call(
                self.e, request_id, prompt[:400], rng.randint(1, 40), program_id=name, **extra
            )
            return "call"
        if roll < 0.14:
            live = [r for r in scheduler.requests if not scheduler.requests[r].is_finished()]
            if live:  # prefetch requests included: an abort mid-load is vLLM's P/D path
                scheduler.finish_requests([rng.choice(live)], RequestStatus.FINISHED_ABORTED)
            return "abort"
        if roll < 0.16:
            scheduler.finish_program(name)
            return "finish"
        return "reset" if roll < 0.165 else "none"

    def finish_all(self) -> None:
        for name in self.names:
            self.e.scheduler.finish_program(name)


@pytest.mark.parametrize("seed", [16, 17, 18])
def test_random_workloads_give_every_block_back(engine: Make, seed: int) -> None:
    rng = random.Random(seed)
    e = engine("plas", num_blocks=48, max_num_seqs=3, kv_policy="autellix", tick=0.05)
    scheduler = e.scheduler
    kv = scheduler.kv
    preempt = scheduler._preempt_request
    by_vllm = []

    def preempted(request: Request, *args: Any, drop_stale_output: bool = False) -> Any:
        # vLLM's own preemption (the core's drops the stale output): only when no context was
        # idle
        if not drop_stale_output:
            by_vllm.append(request.request_id)
            assert kv.idle() == 0
        return preempt(request, *args, drop_stale_output=drop_stale_output)

    scheduler._preempt_request = preempted
    workload = RandomPrograms(e, rng)
    for _ in range(600):
        if workload.move() == "reset":
            scheduler.reset_prefix_cache()  # refused while requests run, but the holds go first
        e.step()
        _check(e)
    e.run()
    _check(e)
    workload.finish_all()
    _all_back(e)
    stats = scheduler.autellix_stats()
    assert stats["kv_retained_contexts_total"] > 10 and stats["kv_retained_hits_total"] > 0
    assert stats["kv_reclaimed_blocks_total:drop"] > 0  # memory did run short


def test_a_new_program_waits_while_working_sets_do_not_fit(engine: Make) -> None:
    def four(e: Engine) -> None:
        for i in range(4):  # four 14-block contexts of 63 blocks: room for 4 typical programs
            e.add(f"big{i}-0", 14 * 16, 2, program=f"big{i}")
        e.run()
        e.add("new-0", 32, 4, program="new")  # 56 + 14 > 63
        e.step(20)

    e = engine("plas", num_blocks=64, kv_policy="autellix")
    four(e)
    stats = e.scheduler.autellix_stats()
    assert "new-0" not in e.loop.tokens and stats["deferred_programs"] == 1
    assert stats["deferred_requests"] == 1 and stats["programs_deferred_total"] == 1
    # a program of one call leaves no context to protect: never deferred, even behind "new" (no
    # program id, or last_call on its first call)
    e.add("chat-0", 32, 4)
    e.add("once-0", 32, 4, program="once", last_call=True)
    e.step(20)
    assert e.loop.tokens["chat-0"] == 4 and e.loop.tokens["once-0"] == 4
    stats = e.scheduler.autellix_stats()
    assert "new-0" not in e.loop.tokens and stats["programs_deferred_total"] == 1
    assert e.scheduler.finish_program("big0")  # its working set is gone: "new" fits
    e.run()
    assert e.loop.tokens["new-0"] == 4 and e.scheduler.autellix_stats()["deferred_programs"] == 0

    # never longer than the bound: beta (1) x max(1 s, mean service of ended programs)
    e = engine("plas", num_blocks=64, kv_policy="autellix", starvation_beta=1.0)
    four(e)
    deferred_at = e.now - 20 * e.tick
    while "new-0" not in e.loop.tokens:
        e.step()
    assert 1.0 <= e.now - deferred_at <= 1.0 + 10 * e.tick
    assert e.scheduler.kv.planner.gpu_blocks == 56  # admitted past the bound, the contexts kept
    stats = e.scheduler.autellix_stats()
    assert stats["deferral_bound_seconds"] == 1.0 and stats["longest_deferral_seconds"] >= 1.0
    # a deferred program's requests can be aborted: it leaves the queue
    e.add("late-0", 32, 4, program="late")
    e.step()
    assert e.scheduler.autellix_stats()["deferred_programs"] == 1
    e.scheduler.finish_requests(["late-0"], RequestStatus.FINISHED_ABORTED)
    assert e.scheduler.autellix_stats()["deferred_programs"] == 0
    e.run()
    assert all(e.scheduler.finish_program(f"big{i}") for i in range(4)) and e.scheduler.finish_program("new")
    assert not e.scheduler.finish_program("late")  # forgotten with its last request
    _all_back(e)


def test_retention_is_off_where_it_cannot_work(model_config: Any) -> None:
    scheduler = harness.make_scheduler(
        AutellixScheduler,
        model_config,
        num_blocks=64,
        prefix_caching=False,
        additional_config={"autellix": {"kv_policy": "autellix"}},
    )
    assert scheduler.kv is None and scheduler.autellix_settings.kv_policy == "autellix"


def test_reset_prefix_cache_drops_the_holds(engine: Make) -> None:
    e = engine("plas", num_blocks=64, kv_policy="autellix")
    e.add("p-0", 100, 10, program="p")
    e.run()
    assert e.scheduler.kv.planner.gpu_blocks == 6
    assert e.scheduler.reset_prefix_cache()  # vLLM refuses while any block is referenced
    assert len(e.scheduler.kv) == 0 and e.free_blocks == 63
    assert e.scheduler.finish_program("p")
    _all_back(e)


def test_metrics_follow_the_stats(engine: Make) -> None:
    e = engine("plas", num_blocks=64, max_num_seqs=2, kv_policy="autellix")
    _tool_wait_under_load(e)
    registry = CollectorRegistry()
    labels = {"model_name": "tiny", "engine": "0"}
    metrics = KvMetrics(labels, registry)
    metrics.update(e.scheduler.autellix_stats())
    metrics.update(e.scheduler.autellix_stats())  # counters grow by the difference only
    metrics.deferred(2.5)
    value = registry.get_sample_value
    assert value("autellix:kv_retained_hits_total", labels) == 1
    assert value("autellix:kv_retained_hit_tokens_total", labels) == 112
    assert value("autellix:kv_retained_blocks", labels) == 0
    assert value("autellix:kv_reclaimed_blocks_total", {**labels, "action": "end"}) == 7
    assert value("autellix:program_deferral_seconds_count", labels) == 1


def test_a_finish_hint_on_the_control_channel_frees_the_context_at_the_next_step(
    engine: Make, tmp_path: Any
) -> None:
    """The front's finish hint over the plug-in's control socket (a real unix socket and the
    plug-in's reader thread): queued off the scheduler's thread, applied by the next schedule()."""
    from autellix.adapters import control

    path = str(tmp_path / "control.sock")
    e = engine("plas", num_blocks=64, kv_policy="autellix", control=path)
    scheduler = e.scheduler
    assert scheduler.control is not None and scheduler.control.path == path
    try:
        e.add("p-0", 100, 10, program="key-1:p")
        e.add("q-0", 100, 10, program="q")
        e.run()
        assert len(scheduler.kv) == 2
        control.send(path, [{"finish": "key-1:p"}, {"finish": "nobody"}])
        deadline = time.monotonic() + 10
        while len(scheduler.control._queue) < 2:  # the reader thread queued both ...
            assert time.monotonic() < deadline, "the control thread never queued the messages"
            time.sleep(0.01)
        assert len(scheduler.kv) == 2  # ... and nothing changed off the scheduler's thread
        e.add("q-1", 16, 2, program="q", last_call=1)  # something to step for
        e.step()
        assert len(scheduler.kv) == 1 and not scheduler.finish_program("key-1:p")
        e.run()
        _all_back(e)
    finally:
        scheduler.shutdown()
    assert not (tmp_path / "control.sock").exists()
