"""A program's lifetime: aborting calls, ``end_program``, and garbage collection after the idle TTL."""

from __future__ import annotations

import pytest

from autellix import Scheduler, UnknownCallError, UnknownProgramError

from .conftest import BIG_KV, flat, run_alone


def test_abort_waiting_and_running_calls() -> None:
    s = Scheduler(flat())
    s.submit_many(0.0, [1, 2], [1, 1], threads=[0, 1])
    s.step(0, 0.0, 1, BIG_KV)  # 1 runs, 2 waits
    s.abort(2, 1.0)
    s.abort(1, 3.0)
    assert len(s) == 0
    p = s.program(1)
    assert p.attained_service == 3.0  # an aborted call's service still counts
    assert p.waiting_time == 1.0
    assert p.finished_calls == 0
    assert p.active_calls == 0
    assert p.last_completion is None
    assert s.engine_load(0) == (0, 0)
    # An aborted call's id may be used again at once; it is no thread's implicit parent.
    s.submit(1, 1, 3.0)
    assert s.call(1).path_start == 0.0


def test_end_program_aborts_live_calls() -> None:
    s = Scheduler(flat())
    run_alone(s, 1, 1, 0.0, 1.0)
    s.submit_many(1.0, [2, 3, 4], [1, 1, 2], threads=[0, 1, 0])
    # Program 1 has 1 s of service (queue 1), program 2 none (queue 0).
    assert s.step(0, 1.0, 2, BIG_KV).running == [4, 2]
    assert sorted(s.end_program(1, 2.0)) == [2, 3]  # one running, one waiting
    assert s.num_programs == 1
    assert len(s) == 1
    assert 2 not in s
    assert 3 not in s
    assert s.engine_load(0) == (1, 0)
    with pytest.raises(UnknownProgramError):
        s.program(1)
    # The program's finished calls are forgotten too: ids reusable, unusable as parents.
    with pytest.raises(UnknownCallError):
        s.submit(9, 1, 2.0, parents=[1])
    s.submit(1, 5, 2.0)
    assert s.call(1).program == 5
    assert s.end_program(2, 2.0) == [4]
    assert s.end_program(5, 2.0) == [1]
    assert s.num_programs == 0
    assert len(s) == 0


def test_end_program_of_idle_program_returns_empty() -> None:
    s = Scheduler(flat())
    run_alone(s, 1, 1, 0.0, 1.0)
    assert s.end_program(1, 1.0) == []
    assert s.num_programs == 0


def test_collect_garbage_after_ttl() -> None:
    s = Scheduler(flat(ttl=10.0))
    run_alone(s, 1, 1, 0.0, 5.0)  # idle from 5 on
    run_alone(s, 2, 2, 5.0, 6.0)
    s.submit(3, 3, 6.0)  # a program with a live call is never collected
    assert s.collect_garbage(14.9) == []
    assert s.num_programs == 3
    assert s.collect_garbage(15.0) == [1]
    assert s.num_programs == 2
    with pytest.raises(UnknownProgramError):
        s.program(1)
    # step collects too, and reports it.
    d = s.step(0, 100.0, 0, BIG_KV)
    assert d.expired_programs == [2]
    assert s.collect_garbage(1e9) == []
    assert s.program(3).active_calls == 1


def test_new_call_restarts_the_idle_clock() -> None:
    s = Scheduler(flat(ttl=10.0))
    run_alone(s, 1, 1, 0.0, 5.0)
    run_alone(s, 2, 1, 12.0, 13.0)
    assert s.collect_garbage(16.0) == []
    assert s.program(1).finished_calls == 2
    assert s.collect_garbage(23.0) == [1]


def test_zero_ttl_and_default_ttl() -> None:
    s = Scheduler(flat(ttl=0.0))
    run_alone(s, 1, 1, 0.0, 5.0)
    assert s.collect_garbage(5.0) == [1]
    s = Scheduler(flat())
    assert s.config.program_ttl == 600.0
    run_alone(s, 1, 1, 0.0, 5.0)
    assert s.collect_garbage(604.0) == []
    assert s.collect_garbage(605.0) == [1]


def test_abort_makes_program_idle() -> None:
    s = Scheduler(flat(ttl=1.0))
    s.submit(1, 1, 0.0)
    s.abort(1, 2.0)
    assert s.collect_garbage(2.5) == []
    assert s.collect_garbage(3.0) == [1]
