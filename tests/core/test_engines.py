"""Several engines and the caller's clock: engines are independent, and time never goes backwards."""

from __future__ import annotations

from autellix import CallState, Scheduler, SchedulerConfig

from .conftest import BIG_KV, flat


def test_engines_are_independent() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2, 3, 4], [1, 2, 3, 4], engines=[0, 1, 0, 1])
    assert s.engines() == [0, 1]
    d0 = s.step(0, 0.0, 1, BIG_KV)
    assert d0.running == [1]
    assert s.engine_load(0) == (1, 1)
    assert s.engine_load(1) == (0, 2)
    d1 = s.step(1, 0.0, 2, BIG_KV)
    assert d1.running == [2, 4]
    assert d1.preempted == []
    # A step of engine 1 never touches engine 0's batch.
    assert s.step(1, 1.0, 0, BIG_KV).preempted == [2, 4]
    assert s.call(1).state == CallState.RUNNING
    assert s.engine_load(0) == (1, 1)
    assert s.queue_depths(1)[0] == 2


def test_program_engine_is_latest_calls_engine() -> None:
    s = Scheduler(flat())
    s.submit(1, 1, 0.0, engine=2)
    assert s.program(1).engine == 2
    s.submit(2, 1, 0.0, engine=5, thread=1)
    assert s.program(1).engine == 5
    assert s.engines() == [2, 5]


def test_step_on_unknown_engine() -> None:
    s = Scheduler()
    s.submit(1, 1, 0.0, engine=4)
    d = s.step(9, 1.0, 8, BIG_KV)
    assert (d.running, d.admitted, d.preempted, d.too_large) == ([], [], [], [])
    assert s.engines() == [4]
    assert s.queue_depths(9) == [0] * 7
    assert s.engine_load(9) == (0, 0)
    assert s.call(1).state == CallState.WAITING


def test_engines_stay_listed_when_empty() -> None:
    s = Scheduler()
    s.submit(1, 1, 0.0, engine=3)
    s.abort(1, 0.0)
    assert s.engines() == [3]
    assert s.engine_load(3) == (0, 0)


def test_len_and_contains_track_live_calls() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2, 3], [1, 1, 2], threads=[0, 1, 0])
    assert len(s) == 3
    assert all(c in s for c in (1, 2, 3))
    s.step(0, 0.0, 3, BIG_KV)
    s.finish(1, 1.0)
    s.abort(2, 1.0)
    assert len(s) == 1
    assert (1 in s, 2 in s, 3 in s) == (False, False, True)
    assert s.program(1).live_calls == []
    assert s.program(2).live_calls == [3]


def test_time_never_goes_backwards() -> None:
    s = Scheduler(flat())
    s.submit(1, 1, 10.0)
    s.submit(2, 1, 5.0, thread=1)  # earlier: read as 10
    assert s.now == 10.0
    assert s.call(2).arrival == 10.0
    assert s.program(1).last_arrival == 10.0
    s.step(0, 3.0, 2, BIG_KV)
    assert s.now == 10.0
    assert s.call(1).waiting_time == 0.0
    s.finish(1, 1.0)
    p = s.program(1)
    assert p.last_completion == 10.0
    assert p.attained_service == 0.0
    assert s.collect_garbage(0.0) == []
    assert s.now == 10.0
    s.step(0, 12.0, 2, BIG_KV)
    assert s.now == 12.0
    assert s.call(2).service == 2.0


def test_reads_do_not_advance_time() -> None:
    s = Scheduler()
    s.submit(1, 1, 1.0)
    s.call(1)
    s.program(1)
    s.queue_depths(0)
    s.engine_load(0)
    s.add_tokens(1, 3)  # takes no time
    assert s.now == 1.0
    assert s.call(1).waiting_time == 0.0
