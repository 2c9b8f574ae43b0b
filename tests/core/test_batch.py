"""Batch formation and preemption: ``max_running``, the KV budget (no backfilling), preemption by
a higher queue, and preemption reported by the engine."""

from __future__ import annotations

from autellix import CallState, Scheduler, SchedulerConfig

from .conftest import BIG_KV, flat, run_alone


def test_max_running_caps_the_batch() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, list(range(10)), list(range(10)))
    d = s.step(0, 0.0, 3, BIG_KV)
    assert d.running == [0, 1, 2]
    assert d.admitted == [0, 1, 2]
    assert s.engine_load(0) == (3, 7)
    assert s.step(0, 0.0, 0, BIG_KV).running == []
    assert s.engine_load(0) == (0, 10)  # max_running 0 preempts everything


def test_kv_budget_too_large_and_no_backfilling() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2, 3, 4], [1, 2, 3, 4], prompt_tokens=[60, 150, 30, 20])
    d = s.step(0, 0.0, 10, 100)
    assert d.running == [1, 3]  # 60 + 30; call 2 alone exceeds the budget
    assert d.too_large == [2]
    assert s.call(2).state == CallState.WAITING  # skipped, still queued
    assert s.call(4).state == CallState.WAITING  # 90 + 20 > 100: stop at the first misfit
    assert s.engine_load(0) == (2, 2)
    # A bigger engine budget admits the rest, in order, after the calls already running.
    d = s.step(0, 1.0, 10, 1000)
    assert d.running == [1, 3, 2, 4]
    assert d.admitted == [2, 4]
    assert d.too_large == []


def test_kv_growth_preempts_later_calls() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2], [1, 2], prompt_tokens=[60, 30])
    assert s.step(0, 0.0, 10, 100).running == [1, 2]
    d = s.step(0, 1.0, 10, 100, progress=[(1, 20)])  # call 1 now needs 80
    assert d.running == [1]
    assert d.preempted == [2]
    assert s.call(2).state == CallState.PREEMPTED
    assert s.call(2).service == 1.0


def test_kv_budget_sum_does_not_overflow() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2], [1, 2], prompt_tokens=[2**63, 2**63])
    d = s.step(0, 0.0, 10, 2**64 - 1)
    assert d.running == [1]


def test_higher_priority_waiting_call_preempts_lower_level_running_call() -> None:
    s = Scheduler(flat("plas"))
    run_alone(s, 1, 1, 0.0, 5.0)
    s.submit(2, 1, 5.0)  # priority 5: queue 2
    assert s.step(0, 5.0, 1, BIG_KV).running == [2]
    s.submit(3, 2, 6.0)  # fresh program: queue 0
    d = s.step(0, 6.0, 1, BIG_KV)
    assert d.running == [3]
    assert d.admitted == [3]
    assert d.preempted == [2]
    c = s.call(2)
    assert c.state == CallState.PREEMPTED
    assert (c.level, c.service, c.waiting_time) == (2, 1.0, 0.0)
    assert s.engine_load(0) == (1, 1)
    assert s.queue_depths(0) == [0, 0, 1, 0]
    # Once the preemptor finishes, the preempted call resumes.
    d = s.step(0, 7.0, 1, BIG_KV, finished=[3])
    assert d.running == [2]
    assert d.admitted == [2]
    c = s.call(2)
    assert c.state == CallState.RUNNING
    assert (c.service, c.waiting_time) == (1.0, 1.0)


def test_waiting_call_does_not_preempt_running_call_of_same_queue() -> None:
    s = Scheduler(flat("plas"))
    s.submit(1, 1, 0.0)
    s.step(0, 0.0, 1, BIG_KV)
    s.submit(2, 2, 1.0)  # same queue, but call 1 already runs
    d = s.step(0, 1.0, 1, BIG_KV)
    assert d.running == [1]
    assert d.preempted == []


def test_engine_preempt_requeues_and_keeps_service() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    s.submit_many(0.0, [1, 2], [1, 2])
    s.step(0, 0.0, 1, BIG_KV)
    s.preempt(1, 2.0)
    c = s.call(1)
    assert c.state == CallState.PREEMPTED
    assert c.service == 2.0
    assert s.engine_load(0) == (0, 2)
    # It keeps its FCFS position: ahead of call 2.
    d = s.step(0, 3.0, 1, BIG_KV)
    assert d.running == [1]
    assert d.admitted == [1]
    assert s.call(1).waiting_time == 1.0
