"""Anti-starvation: a queued call whose waiting/service ratio reaches beta is promoted to the top
queue; never under FCFS or with ``starvation_beta=None``."""

from __future__ import annotations

from autellix import CallState, Decision, Scheduler, SchedulerConfig

from .conftest import BIG_KV


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
