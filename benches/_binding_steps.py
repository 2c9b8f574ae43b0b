"""Engine steps of ``bench_binding.py``: each side (the Rust core, a Python reference) drives its own
copy of a workload through steps, the sides alternating in blocks, decisions compared step by step;
and where the Rust side's step time goes, seen from Python."""

from __future__ import annotations

import gc
import statistics
from dataclasses import dataclass, field
from typing import Any

from _binding_common import (
    BATCH,
    FINISHED_PER_STEP,
    KV_BUDGET,
    LEVEL_SERVICE,
    OP_DT,
    PROMPT,
    NoGC,
    Pair,
    Plan,
    Row,
    Stat,
    pc,
    pctl,
)
from _binding_reference import PyPlas, PyPlasDue, PyPlasQueue

from autellix import DECODE_STEP_SECONDS


@dataclass
class Events:
    steps: int = 0
    demoted: int = 0
    promoted: int = 0
    admitted: int = 0
    preempted: int = 0

    def add(self, demoted: int, promoted: int, admitted: int, preempted: int) -> None:
        self.steps += 1
        self.demoted += demoted
        self.promoted += promoted
        self.admitted += admitted
        self.preempted += preempted

    def per_step(self) -> dict[str, float]:
        s = max(1, self.steps)
        return {
            "demoted": self.demoted / s,
            "promoted": self.promoted / s,
            "admitted": self.admitted / s,
            "preempted": self.preempted / s,
        }


class Driver:
    """One side (the Rust scheduler or the Python one) of a :class:`Pair`, driven through engine
    steps on its own: each step reports 4 finished calls (spread over its latest batch) and one
    token of progress for every running call; afterwards (untimed) each finished call's program
    submits its next call. Both sides start from the same state and draw the same ids, so they
    do the same work as long as their decisions agree (which is counted)."""

    def __init__(self, w: Pair, side: str) -> None:
        self.side = side
        self.sched: Any = w.rs if side == "rs" else w.py
        self.batch = list(w.rs_batch if side == "rs" else w.py_batch)
        self.owner = dict(w.owner)
        self.next_id = w.next_id
        self.now = w.now
        self.ns: list[int] = []
        self.events = Events()
        self.log: list[tuple[list[int], list[int], set[int], int, int]] = []

    def run(self, steps: int, dt: float, timed: bool = True) -> None:
        sched = self.sched
        step = sched.step
        submit = sched.submit
        rust = self.side == "rs"
        with NoGC():
            for _ in range(steps):
                self.now += dt
                now = self.now
                batch = self.batch
                stride = len(batch) // FINISHED_PER_STEP
                finished = [batch[j * stride] for j in range(FINISHED_PER_STEP)]
                progress = [(c, 1) for c in batch]
                if rust:
                    t0 = pc()
                    d = step(0, now, BATCH, KV_BUDGET, finished=finished, progress=progress)
                    running, admitted, preempted = d.running, d.admitted, d.preempted
                    t1 = pc()
                    demoted, promoted = d.demoted, d.promoted
                else:
                    t0 = pc()
                    running, admitted, preempted, _, demoted, promoted = step(
                        now, BATCH, KV_BUDGET, finished, progress
                    )
                    t1 = pc()
                if timed:
                    self.ns.append(t1 - t0)
                    self.events.add(demoted, promoted, len(admitted), len(preempted))
                    self.log.append((running, admitted, set(preempted), demoted, promoted))
                self.batch = running
                self.now += OP_DT
                for c in finished:
                    self.next_id += 1
                    program = self.owner[c]
                    self.owner[self.next_id] = program
                    submit(self.next_id, program, self.now, prompt_tokens=PROMPT)


@dataclass
class StepResult:
    rs_ns: list[int] = field(default_factory=list)
    py_ns: list[int] = field(default_factory=list)
    rs_events: Events = field(default_factory=Events)
    py_events: Events = field(default_factory=Events)
    same: int = 0
    steps: int = 0

    def add(self, rs: Driver, py: Driver) -> None:
        self.rs_ns += rs.ns
        self.py_ns += py.ns
        for mine, theirs in ((self.rs_events, rs.events), (self.py_events, py.events)):
            for a in ("steps", "demoted", "promoted", "admitted", "preempted"):
                setattr(mine, a, getattr(mine, a) + getattr(theirs, a))
        self.same += sum(a == b for a, b in zip(rs.log, py.log, strict=True))
        self.steps += len(rs.log)


def bench_steps(plan: Plan, waiting: int, py_cls: type[PyPlas], churn: bool) -> StepResult:
    """Each side runs its steps in blocks, alternating sides between blocks (so machine noise
    hits both alike while each side's own data stays as warm as it would be on its own)."""
    programs = max(len(LEVEL_SERVICE), waiting // 10)
    out = StepResult()
    episodes = plan.churn_episodes if churn else 1
    steps = plan.churn_steps if churn else plan.steady_steps
    dt = DECODE_STEP_SECONDS if churn else OP_DT
    block = 8 if churn else 25
    for e in range(episodes):
        gc.collect()
        w = Pair(py_cls, programs, waiting + BATCH, BATCH)
        rs, py = Driver(w, "rs"), Driver(w, "py")
        del w
        if not churn:  # a few untimed steps first
            rs.run(3, dt, timed=False)
            py.run(3, dt, timed=False)
        done = 0
        while done < steps:
            k = min(block, steps - done)
            for d in (rs, py) if (done // block + e) % 2 == 0 else (py, rs):
                d.run(k, dt)
            done += k
        out.add(rs, py)
    return out


def step_breakdown(plan: Plan, waiting: int = 10_000) -> dict[str, float]:
    """Where the Rust side's steady-step time goes, seen from Python (medians, µs): the step as
    the bench calls it, without reading the decision's lists, and without token progress (so the
    256-tuple ``progress`` argument is not converted). Variants rotate step by step."""
    w = Pair(PyPlasQueue, max(len(LEVEL_SERVICE), waiting // 10), waiting + BATCH, BATCH)
    rs = w.rs
    modes = ("full", "no_read", "no_progress_no_read")
    times: dict[str, list[int]] = {m: [] for m in modes}
    steps = 30 if plan.quick else 300
    with NoGC():
        for i in range(steps):
            mode = modes[i % len(modes)]
            now = w.tick()
            batch = w.rs_batch
            fin = [batch[j * (BATCH // FINISHED_PER_STEP)] for j in range(FINISHED_PER_STEP)]
            prog = [(c, 1) for c in batch]
            if mode == "full":
                t0 = pc()
                d = rs.step(0, now, BATCH, KV_BUDGET, finished=fin, progress=prog)
                running, _, _ = d.running, d.admitted, d.preempted
                t1 = pc()
            elif mode == "no_read":
                t0 = pc()
                d = rs.step(0, now, BATCH, KV_BUDGET, finished=fin, progress=prog)
                t1 = pc()
                running = d.running
            else:
                t0 = pc()
                d = rs.step(0, now, BATCH, KV_BUDGET, finished=fin)
                t1 = pc()
                running = d.running
            times[mode].append(t1 - t0)
            w.rs_batch = running
            now = w.tick()
            for c in fin:
                new = w.new_id()
                w.owner[new] = w.owner[c]
                rs.submit(new, w.owner[c], now, prompt_tokens=PROMPT)
    med = {m: statistics.median(v) / 1e3 for m, v in times.items()}
    return {
        "waiting": waiting,
        "step_full_us": med["full"],
        "read_running_admitted_preempted_us": med["full"] - med["no_read"],
        "convert_progress_256_us": med["no_read"] - med["no_progress_no_read"],
        "rest_us": med["no_progress_no_read"],
    }


def step_rows(plan: Plan, waiting: int, clever: bool) -> list[Row]:
    rows = []
    impls: list[type[PyPlas]] = [PyPlas, PyPlasDue] if clever else [PyPlas]
    for churn in (False, True):
        for py_cls in impls:
            r = bench_steps(plan, waiting, py_cls, churn)
            name = "step churn (25 ms/step)" if churn else "step steady"
            if py_cls is PyPlasDue:
                name += " vs Python due-heaps"
            goal = waiting == 10_000 and py_cls is PyPlas
            rows.append(
                Row(
                    name,
                    f"{waiting:,}+{BATCH}",
                    Stat(statistics.median(r.py_ns) / 1e3, pctl(r.py_ns, 0.99) / 1e3, len(r.py_ns)),
                    Stat(statistics.median(r.rs_ns) / 1e3, pctl(r.rs_ns, 0.99) / 1e3, len(r.rs_ns)),
                    goal="≥30x" if goal else "",
                    goal_ratio=30.0 if goal else None,
                    python_impl=py_cls.__name__,
                    notes={
                        "events_per_step_autellix": r.rs_events.per_step(),
                        "events_per_step_python": r.py_events.per_step(),
                        "identical_decisions": f"{r.same}/{r.steps}",
                        "per_step": "4 finished, progress for 256 running, batch of 256",
                    },
                )
            )
    return rows
