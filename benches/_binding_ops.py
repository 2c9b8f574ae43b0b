"""Single operations of ``bench_binding.py``: trivial calls through PyO3 (the crossing itself) and
``submit`` / ``finish`` / ``submit + admit + finish`` against :class:`PyPlasQueue`, the two sides
interleaved chunk by chunk."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

from _binding_common import (
    BATCH,
    KV_BUDGET,
    OP_DT,
    PROMPT,
    NoGC,
    Pair,
    Plan,
    Row,
    Stat,
    pc,
    pctl,
    retain_cap,
)
from _binding_reference import PyPlas, PyPlasQueue

from autellix import Scheduler


def _submit_chunk(submit: Callable[..., None], items: list[tuple[int, int]], now: float) -> int:
    t0 = pc()
    for cid, pid in items:
        now += OP_DT
        submit(cid, pid, now, prompt_tokens=PROMPT)
    return pc() - t0


def _submit_each(
    submit: Callable[..., None], items: list[tuple[int, int]], now: float, out: list[int]
) -> None:
    for cid, pid in items:
        now += OP_DT
        t0 = pc()
        submit(cid, pid, now, prompt_tokens=PROMPT)
        out.append(pc() - t0)


def _finish_chunk(finish: Callable[[int, float], None], ids: list[int], now: float) -> int:
    t0 = pc()
    for cid in ids:
        now += OP_DT
        finish(cid, now)
    return pc() - t0


def _finish_each(finish: Callable[[int, float], None], ids: list[int], now: float, out: list[int]) -> None:
    for cid in ids:
        now += OP_DT
        t0 = pc()
        finish(cid, now)
        out.append(pc() - t0)


def _cycle_rs_chunk(rs: Scheduler, items: list[tuple[int, int]], now: float) -> int:
    submit, step, finish = rs.submit, rs.step, rs.finish
    t0 = pc()
    for cid, pid in items:
        now += OP_DT
        submit(cid, pid, now, prompt_tokens=PROMPT)
        finish(step(0, now, 1, KV_BUDGET).admitted[0], now)
    return pc() - t0


def _cycle_rs_each(rs: Scheduler, items: list[tuple[int, int]], now: float, out: list[int]) -> None:
    submit, step, finish = rs.submit, rs.step, rs.finish
    for cid, pid in items:
        now += OP_DT
        t0 = pc()
        submit(cid, pid, now, prompt_tokens=PROMPT)
        finish(step(0, now, 1, KV_BUDGET).admitted[0], now)
        out.append(pc() - t0)


def _cycle_py_chunk(py: PyPlasQueue, items: list[tuple[int, int]], now: float) -> int:
    submit, admit, complete = py.submit, py.admit, py.complete
    t0 = pc()
    for cid, pid in items:
        now += OP_DT
        submit(cid, pid, now, prompt_tokens=PROMPT)
        complete(admit(now), now)
    return pc() - t0


def _cycle_py_each(py: PyPlasQueue, items: list[tuple[int, int]], now: float, out: list[int]) -> None:
    submit, admit, complete = py.submit, py.admit, py.complete
    for cid, pid in items:
        now += OP_DT
        t0 = pc()
        submit(cid, pid, now, prompt_tokens=PROMPT)
        complete(admit(now), now)
        out.append(pc() - t0)


def _op_row(
    name: str,
    live: int,
    floor: int,
    py: tuple[list[float], list[int]],
    rs: tuple[list[float], list[int]],
    notes: dict[str, str] | None = None,
) -> Row:
    """The table row of a single-operation bench against ``PyPlasQueue`` (goal: 5x at 100k live)."""
    big = live >= 100_000
    return Row(
        name,
        f"{live:,}",
        Stat.of(*py, floor),
        Stat.of(*rs, floor),
        goal="≥5x" if big else "",
        goal_ratio=5.0 if big else None,
        python_impl="PyPlasQueue",
        notes=notes or {},
    )


def bench_submit(plan: Plan, live: int, floor: int, seed: int) -> Row:
    rng = random.Random(seed)
    w = Pair(PyPlasQueue, plan.programs, live, BATCH)
    rs_chunks: list[float] = []
    py_chunks: list[float] = []
    rs_each: list[int] = []
    py_each: list[int] = []
    for c in range(plan.chunks):
        for per_op in (False, True):
            items = w.fresh(plan.chunk, rng)
            now = w.now
            with NoGC():
                sides = [("rs", w.rs.submit), ("py", w.py.submit)]
                for name, fn in sides if c % 2 == 0 else sides[::-1]:
                    if per_op:
                        _submit_each(fn, items, now, rs_each if name == "rs" else py_each)
                    else:
                        ns = _submit_chunk(fn, items, now)
                        (rs_chunks if name == "rs" else py_chunks).append(ns / len(items))
            w.now = now + OP_DT * len(items)
            for cid, _ in items:  # back to `live` calls (untimed)
                now = w.tick()
                w.rs.abort(cid, now)
                w.py.abort(cid, now)
            w.refill()
    return _op_row("submit", live, floor, (py_chunks, py_each), (rs_chunks, rs_each))


def bench_finish(plan: Plan, live: int, floor: int, seed: int) -> Row:
    del seed  # the finished calls' own programs resubmit: nothing random
    w = Pair(PyPlasQueue, plan.programs, live, BATCH)
    rs_chunks: list[float] = []
    py_chunks: list[float] = []
    rs_each: list[int] = []
    py_each: list[int] = []
    k = min(plan.chunk, BATCH)
    retained = 0
    for c in range(plan.chunks):
        for per_op in (False, True):
            rs_ids = w.rs_batch[:k]
            py_ids = w.py_batch[:k]
            now = w.now
            with NoGC():
                sides = [("rs", w.rs.finish, rs_ids), ("py", w.py.complete, py_ids)]
                for name, fn, ids in sides if c % 2 == 0 else sides[::-1]:
                    if per_op:
                        _finish_each(fn, ids, now, rs_each if name == "rs" else py_each)
                    else:
                        ns = _finish_chunk(fn, ids, now)
                        (rs_chunks if name == "rs" else py_chunks).append(ns / len(ids))
            w.now = now + OP_DT * k
            w.py_batch = w.py_batch[k:]
            # Each finished call's program submits its next call; refill the batch (untimed).
            for cid in rs_ids:
                new = w.new_id()
                now = w.tick()
                w.owner[new] = w.owner[cid]
                w.rs.submit(new, w.owner[cid], now, prompt_tokens=PROMPT)
                w.py.submit(new, w.owner[cid], now, prompt_tokens=PROMPT)
            w.refill()
            retained += k
            if retained > retain_cap(plan, live):
                w, retained = Pair(PyPlasQueue, plan.programs, live, BATCH), 0
    return _op_row("finish", live, floor, (py_chunks, py_each), (rs_chunks, rs_each))


def bench_cycle(plan: Plan, live: int, floor: int, seed: int) -> Row:
    rng = random.Random(seed)
    w = Pair(PyPlasQueue, plan.programs, live, 0)
    retained = 0
    rs_chunks: list[float] = []
    py_chunks: list[float] = []
    rs_each: list[int] = []
    py_each: list[int] = []
    for c in range(plan.chunks):
        for per_op in (False, True):
            items = w.fresh(plan.chunk, rng)
            now = w.now
            with NoGC():
                order = ("rs", "py") if c % 2 == 0 else ("py", "rs")
                for name in order:
                    if name == "rs":
                        if per_op:
                            _cycle_rs_each(w.rs, items, now, rs_each)
                        else:
                            rs_chunks.append(_cycle_rs_chunk(w.rs, items, now) / len(items))
                    elif per_op:
                        _cycle_py_each(w.py, items, now, py_each)
                    else:
                        py_chunks.append(_cycle_py_chunk(w.py, items, now) / len(items))
            w.now = now + OP_DT * len(items)
            assert len(w.rs) == len(w.py) == live
            retained += len(items)
            if retained > retain_cap(plan, live):
                w, retained = Pair(PyPlasQueue, plan.programs, live, 0), 0
    return _op_row(
        "submit+admit+finish cycle",
        live,
        floor,
        (py_chunks, py_each),
        (rs_chunks, rs_each),
        notes={"autellix_admit": "Scheduler.step(engine, now, max_running=1, ...).admitted[0]"},
    )


def _loop_ns(fn: Callable[[], object], n: int) -> float:
    t0 = pc()
    for _ in range(n):
        fn()
    return (pc() - t0) / n


def bench_trivial(plan: Plan) -> list[Row]:
    """The crossing: trivial calls through PyO3 against the same trivial call in Python."""
    w = Pair(PyPlas, min(plan.programs, 1_000), 1_000, 16)
    rs, py = w.rs, w.py
    cid = w.rs_batch[0]
    n = 10_000
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("len(sched)", lambda: len(rs), lambda: len(py)),
        ("sched.now (getter)", lambda: rs.now, lambda: py.now_prop),
        ("add_tokens(call, 0)", lambda: rs.add_tokens(cid, 0), lambda: py.add_tokens(cid, 0)),
    ]

    def empty() -> None:
        return None

    rows = []
    for name, rs_fn, py_fn in cases:
        rs_t: list[float] = []
        py_t: list[float] = []
        base: list[float] = []
        with NoGC():
            for _ in range(plan.trivial_reps):
                base.append(_loop_ns(empty, n))
                rs_t.append(_loop_ns(rs_fn, n))
                py_t.append(_loop_ns(py_fn, n))
        b = statistics.median(base)
        rs_net = [max(0.0, x - b) for x in rs_t]
        py_net = [max(0.0, x - b) for x in py_t]
        rows.append(
            Row(
                f"trivial call: {name}",
                "1,000",
                Stat(statistics.median(py_net) / 1e3, pctl(py_net, 0.99) / 1e3, len(py_net)),
                Stat(statistics.median(rs_net) / 1e3, pctl(rs_net, 0.99) / 1e3, len(rs_net)),
                goal="≤0.3 µs",
                goal_abs_us=0.3,
                python_impl="Python method / property",
                notes={
                    "measured": f"loops of {n:,} calls through a lambda; the empty lambda loop "
                    f"({b:.1f} ns) is subtracted; p99 is over loops, not single calls",
                },
            )
        )
    return rows
