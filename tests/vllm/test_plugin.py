"""``AutellixScheduler`` driven as vLLM's EngineCore drives a scheduler (real vLLM 0.33, CPU)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.request import RequestStatus

from autellix import CallState, ConfigError, SchedulerConfig
from autellix.adapters.vllm import AutellixScheduler, ProgramOrderedQueue
from autellix.testing.vllm_harness import make_request

from .conftest import Engine

Make = Callable[..., Engine]


def _contend(e: Engine) -> None:
    """A long program fills both slots; then a short program's call arrives."""
    e.add("long-0", 64, 120, program="long")
    e.add("long-1", 64, 120, program="long")
    e.step(40)
    e.add("short-0", 32, 5, program="short")
    e.run()


def test_short_program_admitted_first_under_plas(engine: Make) -> None:
    e = engine("plas", max_num_seqs=2)
    _contend(e)
    assert e.finished[0] == "short-0"  # it preempted a call of the long program
    assert e.loop.tokens == {"long-0": 120, "long-1": 120, "short-0": 5}
    stock = engine(stock=True, max_num_seqs=2)
    _contend(stock)
    assert stock.finished[-1] == "short-0"  # vLLM alone: FCFS, no preemption for a waiting call


def test_fcfs_policy_keeps_arrival_order(engine: Make) -> None:
    e = engine("fcfs", max_num_seqs=2)
    _contend(e)
    assert e.finished[-1] == "short-0"


def _starved_call_finish_index(e: Engine) -> int:
    """A program with much service queues a short call while fresh programs keep arriving faster
    than the one slot serves them (each takes ~11 steps, one arrives every 8)."""
    e.add("hog-0", 32, 150, program="hog")
    e.run()
    e.add("hog-1", 32, 2, program="hog")
    for i in range(40):
        e.add(f"fresh-{i}", 32, 10, program=f"fresh-{i}")
        e.step(8)
    e.run()
    return e.finished.index("hog-1")


def test_anti_starvation_promotes_a_long_waiting_program(engine: Make) -> None:
    # One slot; fresh programs (no service) always outrank the hog under PLAS ...
    starved = _starved_call_finish_index(engine("plas", max_num_seqs=1, tick=0.01, starvation_beta="none"))
    assert starved == 41  # ... so without anti-starvation it runs after all 40 of them.
    # With beta = 1 it is promoted to the top queue once its wait reaches its program's service
    # (150 steps), when about 14 fresh calls are done.
    promoted = _starved_call_finish_index(engine("plas", max_num_seqs=1, tick=0.01, starvation_beta=1.0))
    assert promoted < 25


def test_preemption_frees_and_restores_kv(engine: Make) -> None:
    # 40 blocks of 16 tokens: two long calls (up to 32 blocks each) cannot both stay resident
    e = engine("plas", num_blocks=40, max_num_seqs=4)
    total = e.free_blocks
    e.add("a", 200, 300, program="a")
    e.step(30)
    e.add("b", 200, 300, program="b")
    e.add("c", 16, 8, program="c")
    manager = e.scheduler.kv_cache_manager
    preempted = set()
    while e.loop.busy():
        e.step()
        for r in e.scheduler.requests.values():
            if r.status == RequestStatus.PREEMPTED:  # its blocks went back to the pool
                preempted.add(r.request_id)
                assert not any(manager.get_block_ids(r.request_id))
        held = sum(len(manager.get_block_ids(r.request_id)[0]) for r in e.scheduler.running)
        assert held <= total - e.free_blocks  # no block counted twice, none leaked
    assert preempted
    assert e.loop.tokens == {"a": 300, "b": 300, "c": 8}  # preempted calls recomputed, none lost
    assert e.free_blocks == total
    assert len(e.scheduler.programs) == 0


def test_core_preemption_recomputes_in_vllm(engine: Make) -> None:
    e = engine("plas", max_num_seqs=1)
    e.add("old", 64, 100, program="old")
    e.step(30)
    before = e.scheduler.requests["old"].num_computed_tokens
    e.add("new", 16, 4, program="new")
    e.step(2)
    old = e.scheduler.requests["old"]
    assert old.status == RequestStatus.PREEMPTED and old.num_computed_tokens == 0 and before > 0
    assert not e.scheduler.programs.is_running("old")
    e.run()
    assert e.finished == ["new", "old"]
    assert e.loop.tokens["old"] == 100


def test_aborts_leave_no_state(engine: Make) -> None:
    e = engine("atlas", max_num_seqs=2)
    total = e.free_blocks
    for i in range(6):
        e.add(f"r{i}", 40, 50, program=f"p{i % 2}", thread_id=f"t{i}")
    e.step(10)
    running = [r.request_id for r in e.scheduler.running]
    waiting = [r.request_id for r in e.scheduler.waiting]
    assert running and waiting
    e.scheduler.finish_requests([running[0], waiting[0]], RequestStatus.FINISHED_ABORTED)
    e.step(3)
    e.scheduler.finish_requests(None, RequestStatus.FINISHED_ABORTED)  # abort all (shutdown)
    e.run()
    assert not e.scheduler.requests and not e.scheduler.running and len(e.scheduler.waiting) == 0
    assert e.free_blocks == total
    assert len(e.scheduler.programs) == 0
    core = e.scheduler.programs.core
    assert len(core) == 0
    for program in core.engines():
        assert core.engine_load(program) == (0, 0)


def test_requests_without_program_are_single_call_programs(engine: Make) -> None:
    e = engine("plas", max_num_seqs=2)
    e.add("anon-a", 16, 5)
    e.add("anon-b", 16, 5)
    e.add("sess-1", 16, 5, session="chat-9")
    e.add("sess-2", 16, 5, session="chat-9")
    tracker = e.scheduler.programs
    calls = {rid: tracker.call_id(rid) for rid in ("anon-a", "anon-b", "sess-1", "sess-2")}
    programs = {rid: tracker.core.call(c).program for rid, c in calls.items() if c is not None}
    assert programs["anon-a"] != programs["anon-b"]
    assert programs["sess-1"] == programs["sess-2"] != programs["anon-a"]
    e.run()
    assert set(e.finished) == set(calls)
    # anonymous programs end with their call; the session's program stays until its TTL
    assert tracker.core.num_programs == 1


def test_thread_and_parent_ids_reach_the_core(engine: Make) -> None:
    e = engine("atlas", max_num_seqs=4)
    e.add("root", 16, 4, program="tree")
    e.run()
    e.add("left", 16, 4, program="tree", thread_id="l", parent_ids=["root"])
    e.add("right", 16, 4, program="tree", thread_id="r", parent_ids="root")
    e.add("stray", 16, 4, program="tree", parent_ids=["no-such-call"])  # dropped, not fatal
    tracker = e.scheduler.programs
    program = tracker.core.call(tracker.call_id("left") or 0).program
    assert tracker.core.program(program).threads >= 3
    e.run()
    assert tracker.core.program(program).finished_calls == 4


@pytest.mark.parametrize("policy", SchedulerConfig.policies())
def test_random_workload_completes_under_every_policy(engine: Make, policy: str) -> None:
    rng = random.Random(policy)
    e = engine(policy, num_blocks=80, max_num_seqs=6, max_num_batched_tokens=256)
    total, expected = e.free_blocks, {}
    for i in range(40):
        tokens = rng.randint(1, 60)
        expected[f"r{i}"] = tokens
        e.add(f"r{i}", rng.randint(1, 200), tokens, program=f"p{rng.randint(0, 6)}")
        e.step(rng.randint(0, 4))
        if rng.random() < 0.1:
            victim = f"r{rng.randint(0, i)}"
            e.scheduler.finish_requests([victim], RequestStatus.FINISHED_ABORTED)
            expected[victim] = -1
    e.run()
    for rid, tokens in expected.items():
        if tokens >= 0:
            assert e.loop.tokens.get(rid) == tokens, rid
    assert e.free_blocks == total and not e.scheduler.requests
    assert len(e.scheduler.programs) == 0


def test_queue_shows_vllm_only_admitted_requests() -> None:
    admitted: set[str] = set()
    q = ProgramOrderedQueue(lambda r: r.request_id in admitted)
    a, b, c = (make_request(x, 4, 1) for x in "abc")
    for r in (a, b, c):
        q.add_request(r)
    assert len(q) == 3 and not q
    with pytest.raises(IndexError):
        q.peek_request()
    q.admit(c)
    q.admit(a)
    assert q and q.peek_request() is c and q.pop_request() is c
    admitted.add("c")
    q.prepend_request(c)  # skipped by vLLM this step: back at the head
    assert [r.request_id for r in q] == ["c", "a", "b"]
    q.hold(a)
    q.remove_requests([c])
    assert sorted(r.request_id for r in q) == ["a", "b"] and not q  # both held again


def test_bad_settings_fail_at_startup(engine: Make) -> None:
    with pytest.raises(ConfigError, match="policy"):
        engine("shortest-first")
    with pytest.raises(ConfigError, match="unknown autellix setting"):
        engine("plas", quantum=3)


def test_plugin_is_an_async_scheduler(engine: Make) -> None:
    e = engine("plas")
    assert isinstance(e.scheduler, AsyncScheduler) and isinstance(e.scheduler, AutellixScheduler)
    e.add("x", 8, 2, program="p")
    e.step()
    assert e.scheduler.programs.core.call(e.scheduler.programs.call_id("x") or 0).state in (
        CallState.RUNNING,
        CallState.WAITING,
    )
