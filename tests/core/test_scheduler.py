"""The ``Scheduler`` binding: lifecycle, bookkeeping, the four policies, batch formation, and the
paper's worked example, all driven through the Python API."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    UnknownProgramError,
    demo,
)

BIG_KV = 1 << 40


def flat(policy: str = "plas", *, ttl: float | None = None) -> SchedulerConfig:
    """Four queues with boundaries 1/4/16 and quanta long enough that nothing is demoted, no
    anti-starvation: the priority at arrival alone decides the order."""
    return SchedulerConfig(
        policy, boundaries=[1.0, 4.0, 16.0], quanta=[1e6] * 4, starvation_beta=None, program_ttl=ttl
    )


def run_alone(
    s: Scheduler, call: int, program: int, start: float, end: float, *, engine: int = 0, thread: int = 0
) -> None:
    """Submits `call`, runs it from `start` to `end` on its engine (nothing else queued there), and
    finishes it."""
    s.submit(call, program, start, engine=engine, thread=thread)
    d = s.step(engine, start, 1, BIG_KV)
    assert d.running == [call]
    s.finish(call, end)


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


def test_submit_many_parents_within_batch() -> None:
    s = Scheduler(flat("atlas"))
    run_alone(s, 1, 1, 0.0, 3.0)  # a finished root with path end 3
    s.submit_many(
        3.0,
        [2, 3, 4],
        [1, 1, 1],
        threads=[1, 2, 3],
        parents=[[1], [2], [1, 2, 3]],
    )
    assert [s.call(c).path_start for c in (2, 3, 4)] == [3.0, 3.0, 3.0]
    p = s.program(1)
    assert p.live_calls == [2, 3, 4]
    assert p.active_calls == 3
    assert p.finished_calls == 1


def test_submit_many_none_parents_mean_implicit() -> None:
    s = Scheduler(flat("atlas"))
    run_alone(s, 1, 1, 0.0, 2.0)  # thread 0 of program 1
    # None: the previous call of the thread (here call 1, ending at 2); []: explicitly a root.
    s.submit_many(2.0, [2, 3], [1, 1], threads=[0, 9], parents=[None, []])
    assert s.call(2).path_start == 2.0
    assert s.call(3).path_start == 0.0


# ----------------------------------------------------------------------------- policies


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


def atlas_fork_join(policy: str) -> Scheduler:
    """Program 1: thread 1 runs a1 (2 s) then a2 (1 s, implicit parent a1); thread 2 runs b1 (5 s);
    all from t=0 on. Returns the scheduler at t=5, all three finished."""
    s = Scheduler(flat(policy))
    s.submit(11, 1, 0.0, thread=1)
    s.submit(21, 1, 0.0, thread=2)
    assert s.step(0, 0.0, 8, BIG_KV).running == [11, 21]
    s.finish(11, 2.0)
    s.submit(12, 1, 2.0, thread=1)  # implicit parent: 11
    c12 = s.call(12)
    assert c12.path_start == 2.0
    s.step(0, 2.0, 8, BIG_KV)
    s.finish(12, 3.0)
    s.finish(21, 5.0)
    return s


def test_atlas_critical_path_of_fork_join() -> None:
    s = atlas_fork_join("atlas")
    p = s.program(1)
    assert p.critical_path == 5.0  # max(2 + 1, 5)
    assert p.attained_service == 8.0  # 2 + 1 + 5
    assert p.threads == 2
    assert p.finished_calls == 3
    s.submit(30, 1, 5.0, thread=1, parents=[12, 21])  # the join
    c = s.call(30)
    assert c.path_start == 5.0
    assert c.priority == 5.0  # ATLAS ranks by the critical path ...
    assert c.level == 2
    s.step(0, 5.0, 1, BIG_KV)
    s.finish(30, 6.0)
    assert s.program(1).critical_path == 6.0
    assert s.program(1).attained_service == 9.0


def test_plas_on_the_same_dag_ranks_by_total_service() -> None:
    s = atlas_fork_join("plas")
    s.submit(30, 1, 5.0, thread=1, parents=[12, 21])
    c = s.call(30)
    assert c.path_start == 5.0  # tracked whatever the policy
    assert c.priority == 8.0  # ... PLAS by the summed service
    assert c.level == 2


def test_atlas_implicit_parent_is_previous_call_of_same_thread() -> None:
    s = atlas_fork_join("atlas")
    s.submit(13, 1, 5.0, thread=1)  # implicit parent 12: path end 3
    s.submit(22, 1, 5.0, thread=2)  # implicit parent 21: path end 5
    s.submit(40, 1, 5.0, thread=3)  # a new thread: a root
    assert s.call(13).path_start == 3.0
    assert s.call(22).path_start == 5.0
    assert s.call(40).path_start == 0.0
    assert s.program(1).threads == 3


def test_atlas_running_parent_counts_with_service_so_far() -> None:
    s = Scheduler(flat("atlas"))
    s.submit(1, 1, 0.0)
    s.step(0, 0.0, 1, BIG_KV)
    s.submit(2, 1, 2.5, thread=1, parents=[1])
    assert s.call(2).path_start == 2.5
    assert s.call(2).priority == 0.0  # nothing completed yet


def test_atlas_fresh_program_beats_long_critical_path() -> None:
    s = atlas_fork_join("atlas")
    s.submit(30, 1, 5.0, thread=1)
    s.submit(50, 2, 5.0)
    assert s.step(0, 5.0, 1, BIG_KV).running == [50]


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


def test_fcfs_never_promotes() -> None:
    s = Scheduler(SchedulerConfig("fcfs", starvation_beta=1.0, service_floor=1e-3))
    s.submit_many(0.0, [1, 2], [1, 2])
    s.step(0, 0.0, 1, BIG_KV)
    assert s.step(0, 1e5, 1, BIG_KV).promoted == 0
    assert s.call(2).state == CallState.WAITING


def starving_run(beta: float | None) -> list[Decision]:
    """MLFQ: call 1 of program 1 is demoted to the bottom queue, then a stream of fresh calls of
    program 2 keeps the single slot busy every 0.5 s."""
    cfg = SchedulerConfig(
        "mlfq", boundaries=[1.0, 2.0], quanta=[1.0, 1.0, 100.0], starvation_beta=beta, service_floor=1.0
    )
    s = Scheduler(cfg)
    s.submit(1, 1, 0.0)
    s.step(0, 0.0, 1, BIG_KV)
    assert s.step(0, 2.5, 1, BIG_KV).demoted == 2
    decisions = []
    t = 2.5
    for cid in range(100, 118):
        s.submit(cid, 2, t)
        d = s.step(0, t, 1, BIG_KV)
        decisions.append(d)
        t += 0.5
        if cid in s and s.call(cid).state == CallState.RUNNING:
            s.finish(cid, t)
    return decisions


def test_anti_starvation_promotes_to_top_queue() -> None:
    decisions = starving_run(2.0)
    assert decisions[0].preempted == [1]
    # Deadline = since + beta * (max(floor, T_p) + T_c) - W = 2.5 + 2 * (1 + 2.5) = 9.5: the 15th step.
    assert [d.promoted for d in decisions[:14]] == [0] * 14
    assert decisions[14].promoted == 1
    assert 1 not in decisions[14].running  # promoted behind the call that arrived in the same step
    assert decisions[15].running == [1]
    assert decisions[15].admitted == [1]


def test_starvation_beta_none_never_promotes() -> None:
    decisions = starving_run(None)
    assert sum(d.promoted for d in decisions) == 0
    assert all(1 not in d.running for d in decisions)


# ----------------------------------------------------------------------------- batch formation


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


# ----------------------------------------------------------------------------- abort / end / GC


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


# ----------------------------------------------------------------------------- engines and time


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


# ----------------------------------------------------------------------------- the paper's example


@pytest.mark.parametrize(
    ("policy", "quantum", "total"),
    [("fcfs", 1.0, 18.0), ("plas", 1.0, 12.0), ("mlfq", 4.0, 18.0), ("mlfq", 1.0, 11.0)],
)
def test_paper_worked_example(policy: str, quantum: float, total: float) -> None:
    """Section 11 of the paper through the Python API (autellix.demo runs it)."""
    out = demo.run(policy, quantum)
    assert out.total_waiting == total
    programs = out.programs.values()
    assert sum(p.waiting_time for p in programs) == total
    assert all(p.active_calls == 0 for p in programs)
    assert [p.finished_calls for p in programs] == [len(c) for c in demo.PROGRAMS.values()]
    # Every decode step is served exactly once.
    assert sum(p.attained_service for p in programs) == sum(map(sum, demo.PROGRAMS.values()))


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


# ----------------------------------------------------------------------------- property: no call lost

Op = tuple[str, int, int, int]

OPS = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 3), st.integers(0, 1), st.integers(0, 60)),
    st.tuples(st.just("step"), st.integers(0, 1), st.integers(0, 4), st.integers(0, 150)),
    st.tuples(st.just("finish"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("abort"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("preempt"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("tokens"), st.integers(0, 50), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("end"), st.integers(0, 3), st.just(0), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 30), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SchedulerConfig.policies()), st.lists(OPS, max_size=60))
def test_no_call_lost(policy: str, ops: list[Op]) -> None:
    """A model of every call's engine, state and KV footprint stays in step with the scheduler:
    every submitted call is live, finished or aborted, and batches respect the capacity."""
    s = Scheduler(SchedulerConfig(policy, program_ttl=1e9))
    live: dict[int, tuple[int, int]] = {}  # call -> (program, engine)
    kv: dict[int, int] = {}
    running: set[int] = set()
    finished: dict[int, int] = {}  # program -> finished calls
    programs: set[int] = set()
    counts = {"submitted": 0, "finished": 0, "aborted": 0}
    t = 0.0
    latest = 0.0  # the latest time the scheduler was given
    next_id = 0

    def pick(k: int) -> int | None:
        ids = sorted(live)
        return ids[k % len(ids)] if ids else None

    for op, a, b, c in ops:
        if op == "submit":
            s.submit(next_id, a, t, engine=b, prompt_tokens=c, thread=next_id % 2)
            latest = t
            live[next_id] = (a, b)
            programs.add(a)
            kv[next_id] = c
            next_id += 1
            counts["submitted"] += 1
        elif op == "step":
            engine, max_running, budget = a, b, c
            done = sorted(x for x in running if live[x][1] == engine and x % 3 == 0)
            d = s.step(engine, t, max_running, budget, finished=done)
            latest = t
            for x in done:
                finished[live[x][0]] = finished.get(live[x][0], 0) + 1
                del live[x]
                running.discard(x)
            counts["finished"] += len(done)
            mine = {x for x, (_, e) in live.items() if e == engine}
            assert set(d.running) <= mine
            assert len(d.running) <= max_running
            assert sum(kv[x] for x in d.running) <= budget
            assert all(kv[x] > budget for x in d.too_large)
            assert set(d.admitted) <= set(d.running)
            assert set(d.preempted) <= running & mine
            assert set(d.admitted) == set(d.running) - running
            running = (running - mine) | set(d.running)
        elif op in ("finish", "abort", "preempt", "tokens"):
            cid = pick(a)
            if cid is None:
                continue
            if op == "tokens":
                s.add_tokens(cid, b)
                kv[cid] += b
            elif op == "abort":
                s.abort(cid, t)
                latest = t
                del live[cid]
                running.discard(cid)
                counts["aborted"] += 1
            elif cid in running:
                if op == "finish":
                    s.finish(cid, t)
                    latest = t
                    finished[live[cid][0]] = finished.get(live[cid][0], 0) + 1
                    del live[cid]
                    counts["finished"] += 1
                else:
                    s.preempt(cid, t)
                    latest = t
                running.discard(cid)
            else:
                with pytest.raises(InvalidTransitionError):
                    (s.finish if op == "finish" else s.preempt)(cid, t)
        elif op == "end":
            if a not in programs:
                with pytest.raises(UnknownProgramError):
                    s.end_program(a, t)
                continue
            aborted = s.end_program(a, t)
            latest = t
            assert sorted(aborted) == sorted(x for x, (p, _) in live.items() if p == a)
            for x in aborted:
                del live[x]
                running.discard(x)
            counts["aborted"] += len(aborted)
            finished.pop(a, None)
            programs.discard(a)
        else:
            t += a / 10

        # Invariants after every operation.
        assert counts["submitted"] == counts["finished"] + counts["aborted"] + len(live)
        assert len(s) == len(live)
        assert s.now == latest
        for x, (p, e) in live.items():
            info = s.call(x)
            assert (info.program, info.engine) == (p, e)
            assert (info.state == CallState.RUNNING) == (x in running)
            assert info.prompt_tokens + info.generated_tokens == kv[x]
        for e in (0, 1):
            n_run = sum(1 for x in running if live[x][1] == e)
            n_all = sum(1 for _, ee in live.values() if ee == e)
            assert s.engine_load(e) == (n_run, n_all - n_run)
            assert sum(s.queue_depths(e)) == n_all - n_run
        assert s.num_programs == len(programs)
        for p in programs:
            info_p = s.program(p)
            assert info_p.finished_calls == finished.get(p, 0)
            assert sorted(info_p.live_calls) == sorted(x for x, (q, _) in live.items() if q == p)


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
