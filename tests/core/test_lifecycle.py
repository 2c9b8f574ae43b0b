"""A call's lifecycle through the ``Scheduler`` binding: submit, step, finish, token progress,
the snapshots and reprs it returns, and ``submit_many``."""

from __future__ import annotations

import pytest

from autellix import (
    AutellixError,
    CallInfo,
    CallState,
    Decision,
    InvalidArgumentError,
    InvalidTransitionError,
    ProgramInfo,
    Scheduler,
    SchedulerConfig,
    UnknownCallError,
)

from .conftest import BIG_KV, flat

# ----------------------------------------------------------------------------- submit / step / finish


def test_fresh_scheduler() -> None:
    s = Scheduler()
    assert len(s) == 0
    assert s.num_programs == 0
    assert s.now == 0.0
    assert s.engines() == []
    assert s.engine_load(0) == (0, 0)
    assert s.queue_depths(0) == [0] * 7
    assert 1 not in s
    assert repr(s) == 'Scheduler(policy="plas", programs=0, live_calls=0, now=0)'


def test_submit_records_call_and_program() -> None:
    s = Scheduler(flat())
    s.submit(7, 3, 2.5, thread=4, engine=1, prompt_tokens=512)
    c = s.call(7)
    assert isinstance(c, CallInfo)
    assert (c.id, c.program, c.thread, c.engine) == (7, 3, 4, 1)
    assert c.state == CallState.WAITING
    assert (c.level, c.priority, c.path_start) == (0, 0.0, 0.0)
    assert (c.arrival, c.waiting_time, c.service) == (2.5, 0.0, 0.0)
    assert (c.prompt_tokens, c.generated_tokens) == (512, 0)

    p = s.program(3)
    assert isinstance(p, ProgramInfo)
    assert (p.id, p.arrival, p.last_arrival) == (3, 2.5, 2.5)
    assert (p.attained_service, p.waiting_time, p.critical_path) == (0.0, 0.0, 0.0)
    assert p.engine == 1
    assert (p.active_calls, p.finished_calls, p.threads) == (1, 0, 1)
    assert p.last_completion is None
    assert p.live_calls == [7]

    assert len(s) == 1
    assert 7 in s
    assert 3 not in s  # a program id is not a call id
    assert s.num_programs == 1
    assert s.now == 2.5
    assert s.engines() == [1]
    assert s.engine_load(1) == (0, 1)
    assert s.engine_load(0) == (0, 0)
    assert s.queue_depths(1) == [1, 0, 0, 0]


def test_lifecycle_accounting() -> None:
    s = Scheduler(flat())
    s.submit(1, 10, 0.0, prompt_tokens=5)
    # Waiting time of a queued call grows with the scheduler's clock.
    s.collect_garbage(1.5)
    assert s.call(1).waiting_time == 1.5
    assert s.call(1).service == 0.0

    d = s.step(0, 2.0, 4, 1000)
    assert (d.running, d.admitted, d.preempted, d.too_large) == ([1], [1], [], [])
    c = s.call(1)
    assert c.state == CallState.RUNNING
    assert (c.waiting_time, c.service) == (2.0, 0.0)
    assert s.engine_load(0) == (1, 0)
    assert s.queue_depths(0) == [0, 0, 0, 0]

    d = s.step(0, 5.0, 4, 1000, progress=[(1, 7)])
    assert (d.running, d.admitted) == ([1], [])
    c = s.call(1)
    assert (c.waiting_time, c.service, c.generated_tokens) == (2.0, 3.0, 7)
    # Nothing is charged to the program before the call ends.
    assert s.program(10).attained_service == 0.0

    d = s.step(0, 6.0, 4, 1000, finished=[1])
    assert d.running == []
    assert 1 not in s
    assert len(s) == 0
    with pytest.raises(UnknownCallError):
        s.call(1)
    p = s.program(10)
    assert p.attained_service == 4.0
    assert p.waiting_time == 2.0
    assert p.critical_path == 4.0
    assert (p.active_calls, p.finished_calls) == (0, 1)
    assert p.last_completion == 6.0
    assert p.live_calls == []
    assert s.num_programs == 1  # kept until its TTL runs out
    assert s.engine_load(0) == (0, 0)


def test_finish_method_equals_step_finished() -> None:
    results: list[ProgramInfo] = []
    for via_step in (False, True):
        s = Scheduler(flat())
        s.submit(1, 1, 0.0)
        s.step(0, 1.0, 1, BIG_KV)
        if via_step:
            s.step(0, 4.0, 1, BIG_KV, finished=[1])
        else:
            s.finish(1, 4.0)
        results.append(s.program(1))
    a, b = results
    assert (
        (a.attained_service, a.waiting_time, a.critical_path, a.finished_calls, a.last_completion)
        == (
            b.attained_service,
            b.waiting_time,
            b.critical_path,
            b.finished_calls,
            b.last_completion,
        )
        == (3.0, 1.0, 3.0, 1, 4.0)
    )


def test_step_finished_and_progress_together() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2, 3], [1, 2, 3])
    assert s.step(0, 0.0, 2, BIG_KV).running == [1, 2]
    d = s.step(0, 1.0, 2, BIG_KV, finished=[1], progress=[(2, 10), (3, 4), (2, 1)])
    assert d.running == [2, 3]
    assert d.admitted == [3]
    assert s.call(2).generated_tokens == 11
    assert s.call(3).generated_tokens == 4  # progress may name a queued call
    assert 1 not in s
    assert s.program(1).finished_calls == 1


def test_add_tokens_grows_kv_footprint() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit(1, 1, 0.0, prompt_tokens=10)
    s.add_tokens(1, 5)
    s.add_tokens(1, 0)
    assert s.call(1).generated_tokens == 5
    d = s.step(0, 0.0, 1, 14)
    assert d.too_large == [1]
    assert d.running == []
    assert s.step(0, 0.0, 1, 15).running == [1]


def test_token_counts_saturate() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit(1, 1, 0.0, prompt_tokens=2**64 - 1)
    s.add_tokens(1, 2**64 - 1)
    s.add_tokens(1, 2**64 - 1)
    assert s.call(1).generated_tokens == 2**64 - 1
    assert s.step(0, 0.0, 1, 2**64 - 2).too_large == [1]
    assert s.step(0, 0.0, 1, 2**64 - 1).running == [1]


def test_info_objects_are_frozen_snapshots() -> None:
    s = Scheduler(flat())
    s.submit(1, 1, 0.0)
    c = s.call(1)
    p = s.program(1)
    s.step(0, 1.0, 1, BIG_KV)
    s.finish(1, 3.0)
    assert c.state == CallState.WAITING
    assert c.waiting_time == 0.0
    assert p.active_calls == 1
    assert p.live_calls == [1]
    with pytest.raises(AttributeError):
        c.level = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.active_calls = 0  # type: ignore[misc]


def test_reprs() -> None:
    s = Scheduler(flat("atlas"))
    s.submit(1, 2, 0.0)
    assert repr(s.call(1)) == "CallInfo(id=1, program=2, state=waiting, level=0, waiting_time=0, service=0)"
    assert repr(s.program(2)) == (
        "ProgramInfo(id=2, attained_service=0, critical_path=0, waiting_time=0, active_calls=1)"
    )
    d = s.step(0, 0.0, 1, BIG_KV)
    assert repr(d) == "Decision(running=1, admitted=[1], preempted=[], too_large=[], demoted=0, promoted=0)"
    assert repr(s) == 'Scheduler(policy="atlas", programs=1, live_calls=1, now=0)'


def test_call_state_enum() -> None:
    states = [CallState.WAITING, CallState.RUNNING, CallState.PREEMPTED, CallState.FINISHED]
    assert [int(x) for x in states] == [0, 1, 2, 3]
    assert [str(x) for x in states] == ["waiting", "running", "preempted", "finished"]
    assert len(set(states)) == 4
    assert CallState.RUNNING == CallState.RUNNING
    assert CallState.RUNNING != CallState.WAITING
    assert {CallState.RUNNING: 1}[CallState.RUNNING] == 1


def test_decision_fields() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    d = s.step(0, 0.0, 8, BIG_KV)
    assert isinstance(d, Decision)
    assert (d.running, d.admitted, d.preempted, d.too_large, d.expired_programs) == ([], [], [], [], [])
    assert (d.demoted, d.promoted) == (0, 0)
    s.submit(1, 1, 0.0)
    d = s.step(0, 0.0, 8, BIG_KV)
    for field in (d.running, d.admitted, d.preempted, d.too_large, d.expired_programs):
        assert isinstance(field, list)
    assert isinstance(d.demoted, int)
    assert isinstance(d.promoted, int)
    with pytest.raises(AttributeError):
        d.running = []  # type: ignore[misc]


def test_decoded_adds_tokens_to_every_call_of_the_last_batch() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2, 3], [1, 2, 3], prompt_tokens=[10, 10, 10])
    assert s.step(0, 0.0, 2, BIG_KV).running == [1, 2]
    s.step(0, 1.0, 2, BIG_KV, decoded=1, progress=[(2, 4)])
    assert [s.call(c).generated_tokens for c in (1, 2, 3)] == [1, 5, 0]
    # The budget sees the grown footprints: 11 + 15 tokens no longer fit in 25.
    d = s.step(0, 2.0, 2, 25, decoded=0)
    assert d.running == [1]
    assert d.preempted == [2]


def test_decoded_is_applied_only_after_validation() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit(1, 1, 0.0)
    s.step(0, 0.0, 1, BIG_KV)
    with pytest.raises(UnknownCallError):
        s.step(0, 1.0, 1, BIG_KV, decoded=3, finished=[99])
    assert s.call(1).generated_tokens == 0


def test_errors_derive_from_autellix_error_smoke() -> None:
    # Sanity that the scheduler's common failures are typed (test_errors.py goes through all).
    s = Scheduler()
    with pytest.raises(UnknownCallError):
        s.finish(1, 0.0)
    s.submit(1, 1, 0.0)
    with pytest.raises(InvalidTransitionError):
        s.finish(1, 0.0)
    with pytest.raises(InvalidArgumentError):
        s.step(0, float("nan"), 1, 1)
    assert issubclass(InvalidArgumentError, AutellixError)


# ----------------------------------------------------------------------------- submit_many


def test_submit_many_columns() -> None:
    s = Scheduler(flat())
    s.submit_many(
        1.0,
        [10, 11, 12, 13],
        [1, 1, 2, 1],
        threads=[0, 5, 0, 5],
        engines=[0, 0, 3, 0],
        prompt_tokens=[1, 2, 3, 4],
    )
    assert len(s) == 4
    assert s.num_programs == 2
    assert s.engines() == [0, 3]
    assert s.engine_load(0) == (0, 3)
    assert s.engine_load(3) == (0, 1)
    expected = {10: (1, 0, 0, 1), 11: (1, 5, 0, 2), 12: (2, 0, 3, 3), 13: (1, 5, 0, 4)}
    for cid, (program, thread, engine, tokens) in expected.items():
        c = s.call(cid)
        assert (c.program, c.thread, c.engine, c.prompt_tokens) == (program, thread, engine, tokens)
        assert c.arrival == 1.0
        assert c.state == CallState.WAITING
    p = s.program(1)
    assert p.live_calls == [10, 11, 13]
    assert p.threads == 2
    assert p.active_calls == 3
    assert p.engine == 0
    # Arrival order is kept inside a queue.
    assert s.step(0, 1.0, 8, BIG_KV).running == [10, 11, 13]


def test_submit_many_defaults_and_sequences() -> None:
    s = Scheduler(flat())
    s.submit_many(0.0, range(100, 105), (7,) * 5)
    assert len(s) == 5
    for cid in range(100, 105):
        c = s.call(cid)
        assert (c.program, c.thread, c.engine, c.prompt_tokens) == (7, 0, 0, 0)
    assert s.program(7).threads == 1


def test_submit_many_empty_is_a_no_op() -> None:
    s = Scheduler()
    s.submit_many(0.0, [], [])
    s.submit_many(0.0, [], [], threads=[], engines=[], prompt_tokens=[], parents=[])
    assert len(s) == 0
    assert s.num_programs == 0
    assert s.engines() == []
