"""Thread lineage, explicit parents and critical paths: implicit parents, parents within a
``submit_many`` batch, and ATLAS against PLAS on one fork-join DAG."""

from __future__ import annotations

from autellix import Scheduler

from .conftest import BIG_KV, flat, run_alone


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
