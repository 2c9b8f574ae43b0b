"""Priority at arrival and the multi-level feedback queue: PLAS and FCFS ranking, quantum
demotion one queue down, the bottom queue's renewal."""

from __future__ import annotations

from autellix import CallState, Scheduler, SchedulerConfig

from .conftest import BIG_KV, flat, run_alone


def test_plas_ranks_program_with_more_service_after_fresh_program() -> None:
    s = Scheduler(flat("plas"))
    run_alone(s, 1, 1, 0.0, 5.0)  # program 1 attains 5 s of service
    s.submit(2, 1, 5.0)  # program 1's next call arrives first ...
    s.submit(3, 2, 5.0)  # ... a fresh program's call second
    assert s.call(2).priority == 5.0
    assert s.call(2).level == 2  # 4 <= 5 < 16
    assert s.call(3).priority == 0.0
    assert s.call(3).level == 0
    assert s.queue_depths(0) == [1, 0, 1, 0]
    d = s.step(0, 5.0, 1, BIG_KV)
    assert d.running == [3]
    assert s.call(2).state == CallState.WAITING
    assert s.step(0, 5.0, 2, BIG_KV).running == [3, 2]


def test_plas_priority_is_summed_service_of_completed_calls() -> None:
    s = Scheduler(flat("plas"))
    s.submit_many(0.0, [1, 2], [1, 1], threads=[0, 1])
    s.step(0, 0.0, 2, BIG_KV)
    s.finish(1, 1.0)
    s.submit(3, 1, 1.0)  # call 2 is still running: only call 1's service counts
    assert s.call(3).priority == 1.0
    s.finish(2, 2.5)
    s.submit(4, 1, 2.5)
    assert s.call(4).priority == 3.5
    assert s.program(1).attained_service == 3.5


def test_mlfq_every_new_call_enters_top_queue() -> None:
    cfg = SchedulerConfig("mlfq", boundaries=[1.0, 2.0], quanta=[1.0, 1.0, 100.0], starvation_beta=None)
    s = Scheduler(cfg)
    s.submit(1, 1, 0.0)
    assert s.step(0, 0.0, 1, BIG_KV).demoted == 0
    assert s.step(0, 0.5, 1, BIG_KV).demoted == 0
    assert s.call(1).level == 0
    d = s.step(0, 1.0, 1, BIG_KV)  # quantum of queue 0 used up
    assert d.demoted == 1
    assert d.running == [1]
    assert s.call(1).level == 1
    d = s.step(0, 10.0, 1, BIG_KV)
    assert d.demoted == 1
    assert s.call(1).level == 2  # the bottom queue: never demoted further
    s.step(0, 500.0, 1, BIG_KV)
    assert s.call(1).level == 2
    s.finish(1, 500.0)
    assert s.program(1).attained_service == 500.0
    s.submit(2, 1, 500.0)
    c = s.call(2)
    assert c.level == 0
    assert c.priority == 0.0


def test_bottom_queue_quantum_renewal_is_not_a_demotion() -> None:
    cfg = SchedulerConfig("mlfq", boundaries=[1.0], quanta=[1.0, 10.0], starvation_beta=None)
    s = Scheduler(cfg)
    s.submit(1, 1, 0.0)
    s.step(0, 0.0, 1, BIG_KV)
    assert s.step(0, 1.0, 1, BIG_KV).demoted == 1
    assert s.call(1).level == 1  # the bottom queue
    d = s.step(0, 50.0, 1, BIG_KV)
    assert s.call(1).level == 1
    assert d.demoted == 0


def test_plas_demotes_on_quantum_too() -> None:
    cfg = SchedulerConfig("plas", boundaries=[1.0, 2.0], quanta=[1.0, 1.0, 100.0], starvation_beta=None)
    s = Scheduler(cfg)
    s.submit(1, 1, 0.0)
    s.step(0, 0.0, 1, BIG_KV)
    d = s.step(0, 2.5, 1, BIG_KV)  # both queue-0 and queue-1 quanta used up
    assert d.demoted == 2
    assert s.call(1).level == 2
    s.finish(1, 3.0)
    s.submit(2, 1, 3.0)
    assert s.call(2).level == 2  # unlike MLFQ, PLAS remembers the program's service


def test_fcfs_runs_in_arrival_order_and_never_demotes() -> None:
    s = Scheduler(SchedulerConfig("fcfs"))
    run_alone(s, 1, 1, 0.0, 100.0)
    s.submit(2, 1, 100.0)  # the program with 100 s of service arrives first
    s.submit(3, 2, 100.0)
    s.submit(4, 3, 101.0)
    for cid in (2, 3, 4):
        assert s.call(cid).level == 0
        assert s.call(cid).priority == 0.0
    assert s.queue_depths(0) == [3, 0, 0, 0, 0, 0, 0]
    assert s.step(0, 101.0, 2, BIG_KV).running == [2, 3]
    d = s.step(0, 1e6, 2, BIG_KV)
    assert d.demoted == 0
    assert d.running == [2, 3]
    assert d.preempted == []
    assert [s.call(c).level for c in (2, 3, 4)] == [0, 0, 0]
