"""Wrong Python types and signatures: a clear built-in or typed exception naming the argument, and
the scheduler unchanged; the bounds of ids."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autellix import InvalidArgumentError, Scheduler

from .conftest import Op, populated, snapshot

# (name, operation, exact exception type, argument named in the exception's note)
WRONG_TYPES: list[tuple[str, Op, type[BaseException], str]] = [
    # Ids accept only ints (and bools, an int subclass): anything else is InvalidArgumentError.
    ("str call id", lambda s: s.submit("50", 1, 6.0), InvalidArgumentError, "call"),  # type: ignore[arg-type]
    ("float call id", lambda s: s.submit(50.0, 1, 6.0), InvalidArgumentError, "call"),  # type: ignore[arg-type]
    ("None program", lambda s: s.submit(50, None, 6.0), InvalidArgumentError, "program"),  # type: ignore[arg-type]
    ("str thread", lambda s: s.submit(50, 1, 6.0, thread="0"), InvalidArgumentError, "thread"),  # type: ignore[arg-type]
    ("str in calls", lambda s: s.submit_many(6.0, [50, "51"], [1, 1]), InvalidArgumentError, "calls"),  # type: ignore[list-item]
    ("str call lookup", lambda s: s.call("2"), InvalidArgumentError, "call"),  # type: ignore[arg-type]
    ("str finish", lambda s: s.finish("2", 6.0), InvalidArgumentError, "call"),  # type: ignore[arg-type]
    # Times are floats.
    ("str now", lambda s: s.submit(50, 1, "6"), TypeError, "now"),  # type: ignore[arg-type]
    ("None now", lambda s: s.step(0, None, 1, 1), TypeError, "now"),  # type: ignore[arg-type]
    # Every other integer argument is range-checked the same way.
    ("str engine", lambda s: s.submit(50, 1, 6.0, engine="0"), InvalidArgumentError, "engine"),  # type: ignore[arg-type]
    ("negative engine", lambda s: s.submit(50, 1, 6.0, engine=-1), InvalidArgumentError, "engine"),
    ("huge engine", lambda s: s.step(2**32, 6.0, 1, 1), InvalidArgumentError, "engine"),
    ("negative engine query", lambda s: s.queue_depths(-1), InvalidArgumentError, "engine"),
    (
        "negative prompt_tokens",
        lambda s: s.submit(50, 1, 6.0, prompt_tokens=-1),
        InvalidArgumentError,
        "prompt_tokens",
    ),
    ("negative max_running", lambda s: s.step(0, 6.0, -1, 1), InvalidArgumentError, "max_running"),
    ("negative kv_tokens", lambda s: s.step(0, 6.0, 1, -1), InvalidArgumentError, "kv_tokens"),
    ("negative tokens", lambda s: s.add_tokens(2, -1), InvalidArgumentError, "tokens"),
    (
        "negative progress tokens",
        lambda s: s.step(0, 6.0, 1, 1, progress=[(2, -1)]),
        InvalidArgumentError,
        "progress",
    ),
    # Containers.
    ("str calls", lambda s: s.submit_many(6.0, "50", "1"), TypeError, "calls"),  # type: ignore[arg-type]
    ("int finished", lambda s: s.step(0, 6.0, 1, 1, finished=2), TypeError, "finished"),  # type: ignore[arg-type]
    ("str parents", lambda s: s.submit(50, 1, 6.0, parents="2"), TypeError, "parents"),  # type: ignore[arg-type]
    ("int parents item", lambda s: s.submit_many(6.0, [50], [1], parents=[2]), TypeError, "parents"),  # type: ignore[list-item]
    ("int progress item", lambda s: s.step(0, 6.0, 1, 1, progress=[2]), TypeError, "progress"),  # type: ignore[list-item]
    ("list progress item", lambda s: s.step(0, 6.0, 1, 1, progress=[[2, 1]]), TypeError, "progress"),  # type: ignore[list-item]
    ("short progress tuple", lambda s: s.step(0, 6.0, 1, 1, progress=[(2,)]), ValueError, "progress"),  # type: ignore[list-item]
]


def _kwarg_errors(s: Scheduler) -> list[Callable[[], object]]:
    return [
        lambda: s.submit(50, 1, 6.0, bogus=1),  # type: ignore[call-arg]
        lambda: s.submit(50, 1, 6.0, 0),  # type: ignore[call-arg]
        lambda: s.submit(50, 1),  # type: ignore[call-arg]
        lambda: s.step(0, 6.0, 1, 1, [2]),  # type: ignore[call-arg]
        lambda: s.submit_many(6.0, [50], [1], [0]),  # type: ignore[call-arg]
        lambda: Scheduler(config="plas"),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(("name", "op", "expected", "argument"), WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_wrong_python_type(name: str, op: Op, expected: type[BaseException], argument: str) -> None:
    s = populated()
    before = snapshot(s)
    with pytest.raises(Exception) as info:
        op(s)
    assert type(info.value) is expected, f"{name}: {type(info.value).__name__}: {info.value}"
    assert str(info.value)
    # PyO3 names the offending argument in a note.
    assert f"while processing '{argument}'" in getattr(info.value, "__notes__", []), info.value
    assert snapshot(s) == before


def test_bad_signatures_raise_type_error() -> None:
    s = populated()
    before = snapshot(s)
    for op in _kwarg_errors(s):
        with pytest.raises(TypeError):
            op()
    assert snapshot(s) == before


def test_bool_is_accepted_as_an_id() -> None:
    # bool is an int subclass; accepted like 1 and 0 (documented here so a change is noticed).
    s = Scheduler()
    s.submit(True, False, 0.0)
    assert 1 in s
    assert s.call(1).program == 0


def test_id_bounds_are_inclusive() -> None:
    s = Scheduler()
    top = 2**64 - 1
    s.submit(top, top, 0.0, thread=top, engine=2**32 - 1)
    c = s.call(top)
    assert (c.id, c.program, c.thread, c.engine) == (top, top, top, 2**32 - 1)
    assert top in s
    assert s.program(top).live_calls == [top]
    s.submit(0, top, 0.0, parents=[top])
    assert s.call(0).program == top
