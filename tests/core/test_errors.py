"""Every error path of the binding raises its own typed exception (all under ``AutellixError``) and
leaves the scheduler exactly as it was (wrong Python types: test_wrong_types.py)."""

from __future__ import annotations

import math

import pytest

import autellix
from autellix import (
    AutellixError,
    CallState,
    ConfigError,
    CyclicParentError,
    DuplicateCallError,
    ForeignParentError,
    InternalError,
    InvalidArgumentError,
    InvalidParentError,
    InvalidTransitionError,
    Scheduler,
    SchedulerConfig,
    UnknownCallError,
    UnknownProgramError,
)

from .conftest import BIG_KV, Op, continue_run, populated, snapshot

NAN, INF = math.nan, math.inf

# (name, operation, exact exception type)
FAILURES: list[tuple[str, Op, type[BaseException]]] = [
    # unknown program
    ("program unknown", lambda s: s.program(99), UnknownProgramError),
    ("end_program unknown", lambda s: s.end_program(99, 6.0), UnknownProgramError),
    # unknown call
    ("call unknown", lambda s: s.call(99), UnknownCallError),
    ("call finished", lambda s: s.call(1), UnknownCallError),
    ("finish unknown", lambda s: s.finish(99, 6.0), UnknownCallError),
    ("finish finished", lambda s: s.finish(1, 6.0), UnknownCallError),
    ("abort unknown", lambda s: s.abort(99, 6.0), UnknownCallError),
    ("abort finished", lambda s: s.abort(1, 6.0), UnknownCallError),
    ("preempt unknown", lambda s: s.preempt(99, 6.0), UnknownCallError),
    ("add_tokens unknown", lambda s: s.add_tokens(99, 1), UnknownCallError),
    ("step finished unknown", lambda s: s.step(0, 6.0, 4, BIG_KV, finished=[99]), UnknownCallError),
    ("step progress unknown", lambda s: s.step(0, 6.0, 4, BIG_KV, progress=[(99, 1)]), UnknownCallError),
    ("submit unknown parent", lambda s: s.submit(50, 1, 6.0, parents=[2, 99]), UnknownCallError),
    (
        "submit_many unknown parent",
        lambda s: s.submit_many(6.0, [50, 51, 52], [1, 1, 4], parents=[None, [99], None]),
        UnknownCallError,
    ),
    # duplicate
    ("submit live id", lambda s: s.submit(2, 1, 6.0), DuplicateCallError),
    ("submit live id other program", lambda s: s.submit(10, 99, 6.0, engine=2), DuplicateCallError),
    ("submit finished id", lambda s: s.submit(1, 1, 6.0), DuplicateCallError),
    (
        "submit_many duplicate in batch",
        lambda s: s.submit_many(6.0, [50, 51, 50], [1, 1, 1]),
        DuplicateCallError,
    ),
    (
        "submit_many duplicate of live",
        lambda s: s.submit_many(6.0, [50, 3, 51], [1, 99, 4]),
        DuplicateCallError,
    ),
    # invalid transition
    ("finish waiting", lambda s: s.finish(3, 6.0), InvalidTransitionError),
    ("finish preempted", lambda s: s.finish(11, 6.0), InvalidTransitionError),
    ("preempt waiting", lambda s: s.preempt(3, 6.0), InvalidTransitionError),
    ("preempt preempted", lambda s: s.preempt(11, 6.0), InvalidTransitionError),
    ("step finishes waiting", lambda s: s.step(0, 6.0, 4, BIG_KV, finished=[3]), InvalidTransitionError),
    ("step finishes preempted", lambda s: s.step(1, 6.0, 4, BIG_KV, finished=[11]), InvalidTransitionError),
    # parents
    ("submit self parent", lambda s: s.submit(50, 1, 6.0, parents=[50]), CyclicParentError),
    (
        "submit_many self parent",
        lambda s: s.submit_many(6.0, [50, 51, 52], [1, 1, 1], parents=[None, [2, 51], None]),
        CyclicParentError,
    ),
    ("submit foreign live parent", lambda s: s.submit(50, 1, 6.0, parents=[10]), ForeignParentError),
    ("submit foreign finished parent", lambda s: s.submit(50, 2, 6.0, parents=[1]), ForeignParentError),
    (
        "submit_many foreign parent in batch",
        lambda s: s.submit_many(6.0, [50, 51], [1, 2], parents=[None, [50]]),
        ForeignParentError,
    ),
    # invalid arguments: ids out of [0, 2**64)
    ("submit negative call id", lambda s: s.submit(-1, 1, 6.0), InvalidArgumentError),
    ("submit huge call id", lambda s: s.submit(2**64, 1, 6.0), InvalidArgumentError),
    ("submit negative program id", lambda s: s.submit(50, -1, 6.0), InvalidArgumentError),
    ("submit huge program id", lambda s: s.submit(50, 2**64, 6.0), InvalidArgumentError),
    ("submit negative thread id", lambda s: s.submit(50, 1, 6.0, thread=-1), InvalidArgumentError),
    ("submit huge thread id", lambda s: s.submit(50, 1, 6.0, thread=2**64), InvalidArgumentError),
    ("submit negative parent", lambda s: s.submit(50, 1, 6.0, parents=[-1]), InvalidArgumentError),
    ("submit huge parent", lambda s: s.submit(50, 1, 6.0, parents=[2**64]), InvalidArgumentError),
    ("submit_many negative call", lambda s: s.submit_many(6.0, [50, -1], [1, 1]), InvalidArgumentError),
    ("submit_many huge program", lambda s: s.submit_many(6.0, [50, 51], [1, 2**64]), InvalidArgumentError),
    (
        "submit_many negative thread",
        lambda s: s.submit_many(6.0, [50, 51], [1, 1], threads=[0, -5]),
        InvalidArgumentError,
    ),
    (
        "submit_many huge parent",
        lambda s: s.submit_many(6.0, [50, 51], [1, 1], parents=[None, [2**64 + 5]]),
        InvalidArgumentError,
    ),
    ("step negative finished id", lambda s: s.step(0, 6.0, 4, BIG_KV, finished=[-1]), InvalidArgumentError),
    (
        "step huge progress id",
        lambda s: s.step(0, 6.0, 4, BIG_KV, progress=[(2**64, 1)]),
        InvalidArgumentError,
    ),
    ("finish negative", lambda s: s.finish(-2, 6.0), InvalidArgumentError),
    ("abort huge", lambda s: s.abort(2**70, 6.0), InvalidArgumentError),
    ("preempt negative", lambda s: s.preempt(-1, 6.0), InvalidArgumentError),
    ("add_tokens negative id", lambda s: s.add_tokens(-1, 1), InvalidArgumentError),
    ("call huge", lambda s: s.call(2**64), InvalidArgumentError),
    ("program negative", lambda s: s.program(-1), InvalidArgumentError),
    ("end_program huge", lambda s: s.end_program(2**64, 6.0), InvalidArgumentError),
    # invalid arguments: non-finite time
    *[
        (f"{name} time {t}", op, InvalidArgumentError)
        for t in (NAN, INF, -INF)
        for name, op in [
            ("submit", lambda s, t=t: s.submit(50, 1, t)),
            ("submit_many", lambda s, t=t: s.submit_many(t, [50], [1])),
            ("submit_many empty", lambda s, t=t: s.submit_many(t, [], [])),
            ("step", lambda s, t=t: s.step(0, t, 4, BIG_KV)),
            ("step with finished", lambda s, t=t: s.step(0, t, 4, BIG_KV, finished=[2])),
            ("finish", lambda s, t=t: s.finish(2, t)),
            ("abort", lambda s, t=t: s.abort(3, t)),
            ("preempt", lambda s, t=t: s.preempt(2, t)),
            ("end_program", lambda s, t=t: s.end_program(1, t)),
            ("collect_garbage", lambda s, t=t: s.collect_garbage(t)),
        ]
    ],
    # invalid arguments: submit_many columns
    ("columns programs short", lambda s: s.submit_many(6.0, [50, 51], [1]), InvalidArgumentError),
    ("columns programs long", lambda s: s.submit_many(6.0, [50], [1, 1]), InvalidArgumentError),
    ("columns threads", lambda s: s.submit_many(6.0, [50, 51], [1, 1], threads=[0]), InvalidArgumentError),
    (
        "columns engines",
        lambda s: s.submit_many(6.0, [50, 51], [1, 1], engines=[0, 0, 0]),
        InvalidArgumentError,
    ),
    (
        "columns prompt_tokens",
        lambda s: s.submit_many(6.0, [50, 51], [1, 1], prompt_tokens=[]),
        InvalidArgumentError,
    ),
    ("columns parents", lambda s: s.submit_many(6.0, [50, 51], [1, 1], parents=[None]), InvalidArgumentError),
    # invalid arguments: step
    (
        "step finishes call of other engine",
        lambda s: s.step(1, 6.0, 4, BIG_KV, finished=[2]),
        InvalidArgumentError,
    ),
    (
        "step progress of other engine",
        lambda s: s.step(0, 6.0, 4, BIG_KV, progress=[(3, 1), (10, 1)]),
        InvalidArgumentError,
    ),
    ("step finished twice", lambda s: s.step(0, 6.0, 4, BIG_KV, finished=[2, 2]), InvalidArgumentError),
    (
        "step unknown engine with progress",
        lambda s: s.step(7, 6.0, 4, BIG_KV, progress=[(2, 1)]),
        InvalidArgumentError,
    ),
]

FAILURE_IDS = [name for name, _, _ in FAILURES]


@pytest.mark.parametrize(("name", "op", "expected"), FAILURES, ids=FAILURE_IDS)
def test_failure_is_typed_and_changes_nothing(name: str, op: Op, expected: type[BaseException]) -> None:
    s = populated()
    before = snapshot(s)
    with pytest.raises(AutellixError) as info:
        op(s)
    assert type(info.value) is expected, f"{name}: {type(info.value).__name__}: {info.value}"
    assert str(info.value)
    assert snapshot(s) == before
    # Hidden state too: the same follow-up gives the same result as on a twin that never failed.
    assert continue_run(s) == continue_run(populated())


def test_failure_table_is_complete() -> None:
    raised = {expected for _, _, expected in FAILURES}
    # Every scheduler-side error class is exercised (ConfigError is covered below and in
    # test_config.py; InternalError has no trigger short of a bug).
    assert raised == {
        UnknownProgramError,
        UnknownCallError,
        DuplicateCallError,
        InvalidTransitionError,
        CyclicParentError,
        ForeignParentError,
        InvalidArgumentError,
    }
    assert len(set(FAILURE_IDS)) == len(FAILURE_IDS)


def test_populated_twins_agree() -> None:
    assert snapshot(populated()) == snapshot(populated())
    assert continue_run(populated()) == continue_run(populated())


def test_continue_run_changes_state() -> None:
    # The follow-up is a meaningful probe: it touches every engine and program of the fixture.
    s = populated()
    before = snapshot(s)
    after = continue_run(s)
    assert after != before
    assert after["now"] == 700.0
    assert after["program 3"] is None  # collected: idle past the TTL
    assert after["program 4"] is None
    assert after["program 99"]["live_calls"] == [51]
    assert after["call 2"] is None  # finished
    assert after["call 3"] is None  # aborted
    assert after["call 50"]["path_start"] == 5.0  # max(2 + 3 s of call 2 so far, 0)
    assert after["engine 0"][0] == (2, 0)
    assert after["engine 1"][0] == (2, 0)


# ----------------------------------------------------------------------------- hierarchy


def test_hierarchy() -> None:
    for cls in (
        UnknownProgramError,
        UnknownCallError,
        DuplicateCallError,
        InvalidTransitionError,
        InvalidParentError,
        CyclicParentError,
        ForeignParentError,
        ConfigError,
        InvalidArgumentError,
        InternalError,
    ):
        assert issubclass(cls, AutellixError), cls
        assert cls.__module__ == "autellix._core"
        assert getattr(autellix, cls.__name__) is cls
        assert getattr(autellix.exceptions, cls.__name__) is cls
    assert issubclass(CyclicParentError, InvalidParentError)
    assert issubclass(ForeignParentError, InvalidParentError)
    assert not issubclass(CyclicParentError, ForeignParentError)
    assert issubclass(AutellixError, Exception)
    assert not issubclass(AutellixError, (TypeError, ValueError, KeyError, LookupError))
    assert autellix.exceptions.__all__ == sorted(autellix.exceptions.__all__)


def test_parent_errors_catchable_as_invalid_parent() -> None:
    s = populated()
    with pytest.raises(InvalidParentError):
        s.submit(50, 1, 6.0, parents=[50])
    with pytest.raises(InvalidParentError):
        s.submit(50, 1, 6.0, parents=[10])


def test_contains_is_false_for_anything_that_is_not_a_live_id() -> None:
    s = populated()
    assert 2 in s
    for key in (-1, 2**64, "2", None, 2.0):
        assert key not in s


def test_forward_parent_in_batch_is_refused() -> None:
    # A parent must be submitted before its child: a later call of the batch is an unknown parent.
    s = populated()
    before = snapshot(s)
    with pytest.raises(UnknownCallError):
        s.submit_many(6.0, [50, 51], [1, 1], parents=[[51], None])
    assert snapshot(s) == before
    assert continue_run(s) == continue_run(populated())


def test_config_error_through_scheduler() -> None:
    with pytest.raises(ConfigError) as info:
        Scheduler(SchedulerConfig("plas", quanta=[1.0]))
    assert isinstance(info.value, AutellixError)


def test_error_messages_name_the_culprit() -> None:
    s = populated()
    with pytest.raises(UnknownCallError, match="unknown call 99"):
        s.call(99)
    with pytest.raises(UnknownProgramError, match="unknown program 99"):
        s.program(99)
    with pytest.raises(DuplicateCallError, match="call 2 already exists"):
        s.submit(2, 1, 6.0)
    with pytest.raises(InvalidTransitionError, match="call 3 is waiting; cannot finish"):
        s.finish(3, 6.0)
    with pytest.raises(ForeignParentError, match="parent 10 of call 50 belongs to program 2, not 1"):
        s.submit(50, 1, 6.0, parents=[10])
    with pytest.raises(InvalidArgumentError, match="time must be finite"):
        s.finish(2, math.nan)
    with pytest.raises(InvalidArgumentError, match="on engine 0, not 1"):
        s.step(1, 6.0, 1, 1, finished=[2])
    with pytest.raises(InvalidArgumentError, match="listed as finished twice"):
        s.step(0, 6.0, 1, 1, finished=[2, 2])
    with pytest.raises(InvalidArgumentError, match="threads has 1 entries but calls has 2"):
        s.submit_many(6.0, [50, 51], [1, 1], threads=[0])
    with pytest.raises(InvalidArgumentError, match=r"expected an int in \[0, 2\*\*64\), got -1"):
        s.call(-1)


# ----------------------------------------------------------------------------- all or nothing


def test_submit_many_is_all_or_nothing() -> None:
    s = populated()
    before = snapshot(s)
    # Good calls on both sides of the bad one, a fresh program and a fresh engine among them.
    with pytest.raises(DuplicateCallError):
        s.submit_many(
            100.0,
            [50, 51, 2, 52],
            [99, 1, 1, 99],
            engines=[2, 0, 0, 2],
            prompt_tokens=[1, 2, 3, 4],
        )
    assert snapshot(s) == before
    assert 50 not in s
    assert 51 not in s
    assert s.num_programs == 4
    with pytest.raises(UnknownProgramError):
        s.program(99)
    assert s.now == 5.0  # the failed batch's time is not taken either
    # The same batch without the bad item goes through.
    s.submit_many(100.0, [50, 51, 52], [99, 1, 99], engines=[2, 0, 2])
    assert len(s) == before["len"] + 3
    assert s.now == 100.0


def test_step_is_all_or_nothing() -> None:
    s = populated()
    before = snapshot(s)
    with pytest.raises(UnknownCallError):
        s.step(0, 6.0, 4, BIG_KV, finished=[2, 99], progress=[(3, 5), (2, 1)])
    assert snapshot(s) == before
    assert s.call(3).generated_tokens == 0  # progress not applied
    assert s.call(2).state == CallState.RUNNING  # not finished
    assert s.call(3).state == CallState.WAITING  # no batch formed
    assert s.now == 5.0
    with pytest.raises(InvalidTransitionError):
        s.step(0, 6.0, 4, BIG_KV, finished=[2, 3], progress=[(3, 5)])
    assert snapshot(s) == before


def test_failed_calls_do_not_advance_time() -> None:
    s = populated()
    for op in (
        lambda: s.finish(3, 50.0),
        lambda: s.preempt(3, 50.0),
        lambda: s.abort(99, 50.0),
        lambda: s.end_program(99, 50.0),
        lambda: s.submit(2, 1, 50.0),
        lambda: s.step(0, 50.0, 1, 1, finished=[99]),
    ):
        with pytest.raises(AutellixError):
            op()
        assert s.now == 5.0


def test_scheduler_usable_after_many_failures() -> None:
    s = populated()
    for _, op, _ in FAILURES:
        with pytest.raises(AutellixError):
            op(s)
    assert continue_run(s) == continue_run(populated())
