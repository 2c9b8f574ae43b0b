#!/usr/bin/env python3
"""autellix._core (Rust through PyO3) against pure-Python PLAS schedulers, side by side.

Standalone script (not collected by pytest)::

    python benches/bench_binding.py                 # full sizes (about a minute or two on 2 cores)
    python benches/bench_binding.py --quick         # CI smoke run (a few seconds), with cross-checks
    python benches/bench_binding.py --json out.json # also write the results as JSON
    python benches/bench_binding.py --only steps    # one section: trivial, ops or steps

Three Python references, all plain CPython (no extension modules besides ``heapq``/``bisect``):

* ``PyPlasQueue``: the straightforward single-operation PLAS queue (heapq + dict). ``submit``
  bisects the program's attained service over the boundaries and pushes ``(level, seq, call)``;
  ``admit`` pops the best call; ``complete`` adds the call's service to its program. This is
  the "pure Python" of docs/baselines.md, kept as lean as the policy allows.
* ``PyPlas``: the whole policy of the Rust core (PLAS level at arrival, FCFS in a level, running
  before queued in a level, quantum demotion, promotion when ``(W_p + W_c) / (max(floor, T_p) +
  T_c) >= beta``, batch formation stopping at the first call that does not fit, preemption of
  running calls left out). Its step is Algorithm 1 of the paper: every live call is checked
  every step.
* ``PyPlasDue``: a cleverer ``PyPlas`` that keeps heaps of due times (quantum expiries and
  starvation deadlines) as the Rust core does, so its step touches only the calls something
  happens to.

What is measured (seeded workloads; the garbage collector is off inside timed regions, as
``timeit`` does, which only helps the Python side):

* trivial calls through PyO3 (``len(sched)``, ``sched.now``, ``add_tokens``) against the same
  trivial call on a Python object, net of the loop: the cost of the crossing itself;
* single operations at 1k / 10k / 100k live calls over 10k programs whose attained service puts
  them evenly in the 7 default queues: ``submit`` (256 of the live calls running), ``finish`` of
  a running call, and a ``submit + admit + finish`` cycle with nothing running (the admission is
  ``Scheduler.step(max_running=1)`` on the Rust side, a heap pop on the Python side). Both sides
  run the same operations, interleaved chunk by chunk. Median: over chunks of 64 operations of
  chunk time / 64; p99: over operations timed one by one, less the timer's own cost;
* one engine step as one batched call, 256 running calls, over 1k / 10k / 100k waiting calls
  (one program per 10 live calls): token progress for all 256 running calls and 4 finished calls
  reported, due demotions and promotions applied, the batch formed, the decision's lists read;
  the 4 finished calls' programs submit their next calls between steps (untimed). "steady": the
  clock moves 10 ns per step (nothing falls due); "churn": it moves one decode step (25 ms) per
  step, so level-0 calls use up their quantum every step and starving calls are promoted in
  waves (64-step episodes from a fresh state). Each side runs its own copy of the workload in
  blocks of steps, the sides alternating between blocks; the decisions of the two sides are
  compared step by step and the count of identical ones is printed.

In ``--quick`` mode the Python references are first cross-checked against the Rust core on
small random workloads (same batch in the same order, same admissions, preemptions, too-large
skips, demotions and promotions at every step; same admissions in submit/admit/finish cycles).
A disagreement with starvation off exits with status 1; with starvation on it is reported.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from heapq import heapify, heappop, heappush
from operator import itemgetter
from typing import Any

import autellix
from autellix import DECODE_STEP_SECONDS, Scheduler, SchedulerConfig

pc = time.perf_counter_ns

INF = math.inf
# Queue-placement constants shared by both implementations.
KV_BUDGET = 1 << 40  # never binds in the timed workloads
PROMPT = 512
BATCH = 256
# Attained service putting a program in queue 0..6 under the default boundaries
# (2, 4, 8, 16, 32, 64 decode steps of 25 ms), each well inside its bin.
LEVEL_SERVICE = (0.01, 0.075, 0.15, 0.3, 0.6, 1.2, 2.4)
# Clock advance per single operation: nothing falls due while a state is measured.
OP_DT = 1e-8
FINISHED_PER_STEP = 4

# =============================================================================================
# Pure-Python reference
# =============================================================================================

# A call is a list (the fastest mutable record in CPython): these are its fields.
(
    _CID,
    _PROG,
    _LEVEL,
    _SEQ,
    _STATE,
    _SINCE,
    _WACC,
    _SACC,
    _WRESET,
    _SRESET,
    _QLEFT,
    _EXPIRY,
    _TOKENS,
    _SEL,
    _DEADLINE,  # PyPlasDue only
) = range(15)
WAITING, RUNNING, PREEMPTED = 0, 1, 2


def _fma_exact(a: float, b: float, c: float) -> float:
    """``a * b + c`` rounded once, like Rust's ``f64::mul_add`` (``math.fma`` before 3.13)."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


_fma: Callable[[float, float, float], float] = getattr(math, "fma", _fma_exact)
_RUN_ORDER = itemgetter(_LEVEL, _SEQ)


class PyPlasQueue:
    """The straightforward single-operation reference (heapq + dict), as lean as the policy allows:
    :meth:`submit` bins the program's attained service over the boundaries (bisect) and pushes
    ``(level, seq, call)`` on a heap; :meth:`admit` pops the best call and starts it;
    :meth:`complete` adds the call's service to its program. Same order as the Rust core for these
    operations (checked by the cross-check); no quanta, starvation, KV or step (see
    :class:`PyPlas` for those). Entries of aborted calls are skipped when popped."""

    def __init__(self, boundaries: Sequence[float]) -> None:
        self.boundaries = list(boundaries)
        self.service: dict[int, float] = {}  # program -> attained service
        self.calls: dict[int, list[Any]] = {}  # call -> [program, start of service]
        self.heap: list[tuple[int, int, int]] = []
        self.seq = 0
        self.stale = 0

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> PyPlasQueue:
        return cls(config.boundaries)

    def __len__(self) -> int:
        return len(self.calls)

    def submit(self, call: int, program: int, now: float, prompt_tokens: int = 0) -> None:
        level = bisect_right(self.boundaries, self.service.get(program, 0.0))
        self.seq += 1
        self.calls[call] = [program, now]
        heappush(self.heap, (level, self.seq, call))

    def admit(self, now: float) -> int:
        heap = self.heap
        calls = self.calls
        while True:
            call = heappop(heap)[2]
            rec = calls.get(call)
            if rec is not None:
                rec[1] = now
                return call

    def complete(self, call: int, now: float) -> None:
        program, start = self.calls.pop(call)
        self.service[program] = self.service.get(program, 0.0) + (now - start)

    def abort(self, call: int, now: float) -> None:
        """Drops a queued call (bench housekeeping, never timed)."""
        del self.calls[call]
        self.stale += 1
        if self.stale > len(self.calls) + 64:
            self.heap = [e for e in self.heap if e[2] in self.calls]
            heapify(self.heap)
            self.stale = 0


class PyPlas:
    """PLAS with K queues in plain Python: a heap of ``(level, seq, call)`` for queued calls (stale
    entries skipped when popped), dicts for calls, running calls and programs.

    Single operations: :meth:`submit` (level = bisect of the program's attained service over the
    boundaries), :meth:`admit` (pop the best queued call and run it), :meth:`complete` (charge the
    call's service and waiting to its program). :meth:`step` is Algorithm 1: record progress and
    finished calls, check every live call for quantum expiry (running) or starvation (queued),
    then walk the queues in order to form the batch. Service and waiting are kept as accumulators
    plus the start of the current interval, so nothing is charged per call per step.

    Not modelled (never exercised here): DAG / threads / critical paths (ATLAS), multiple
    engines, program garbage collection (the default TTL is 600 s), argument validation beyond
    duplicate ids and finishing a call that is not running.
    """

    def __init__(
        self,
        boundaries: Sequence[float],
        quanta: Sequence[float],
        beta: float | None,
        floor: float,
    ) -> None:
        self.boundaries = list(boundaries)
        self.quanta = list(quanta)
        self.beta = beta
        self.floor = floor
        self.programs: dict[int, list[float]] = {}  # program -> [T_p attained service, W_p waiting]
        self.calls: dict[int, list[Any]] = {}  # live calls
        self.running: dict[int, list[Any]] = {}
        self.heap: list[tuple[int, int, int]] = []  # (level, seq, call) of queued calls
        self.seq = 0
        self.steps = 0

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> PyPlas:
        return cls(config.boundaries, config.quanta, config.starvation_beta, config.service_floor)

    def __len__(self) -> int:
        return len(self.calls)

    @property
    def now_prop(self) -> float:  # the trivial-call comparison for ``Scheduler.now``
        return 0.0

    # ------------------------------------------------------------------------- single operations

    def submit(self, call: int, program: int, now: float, prompt_tokens: int = 0) -> None:
        calls = self.calls
        if call in calls:
            raise KeyError(f"duplicate call {call}")
        prog = self.programs.get(program)
        if prog is None:
            prog = self.programs[program] = [0.0, 0.0]
        level = bisect_right(self.boundaries, prog[0])
        self.seq = seq = self.seq + 1
        calls[call] = [
            call, program, level, seq, WAITING, now, 0.0, 0.0, 0.0, 0.0,
            self.quanta[level], INF, prompt_tokens, 0, INF,
        ]  # fmt: skip
        heappush(self.heap, (level, seq, call))

    def admit(self, now: float) -> int | None:
        """Pops the best queued call and runs it (no preemption: a free slot is assumed)."""
        heap = self.heap
        calls = self.calls
        while heap:
            _, seq, cid = heappop(heap)
            rec = calls.get(cid)
            if rec is not None and rec[_SEQ] == seq and rec[_STATE] != RUNNING:
                rec[_WACC] += now - rec[_SINCE]
                rec[_SINCE] = now
                rec[_STATE] = RUNNING
                rec[_EXPIRY] = now + rec[_QLEFT]
                self.running[cid] = rec
                return cid
        return None

    def complete(self, call: int, now: float) -> None:
        """A running call finished: its service and waiting go to its program."""
        rec = self.calls[call]
        if rec[_STATE] != RUNNING:
            raise ValueError(f"call {call} is not running")
        del self.calls[call]
        del self.running[call]
        prog = self.programs[rec[_PROG]]
        prog[0] += rec[_SACC] + (now - rec[_SINCE])
        prog[1] += rec[_WACC]

    def add_tokens(self, call: int, tokens: int) -> None:
        self.calls[call][_TOKENS] += tokens

    def abort(self, call: int, now: float) -> None:
        """Drops a live call (bench housekeeping, never timed); compacts the heap when stale."""
        rec = self.calls.pop(call)
        prog = self.programs[rec[_PROG]]
        if self.running.pop(call, None) is not None:
            prog[0] += rec[_SACC] + (now - rec[_SINCE])
            prog[1] += rec[_WACC]
        else:
            prog[0] += rec[_SACC]
            prog[1] += rec[_WACC] + (now - rec[_SINCE])
        self._compact()

    def _compact(self) -> None:
        queued = len(self.calls) - len(self.running)
        if len(self.heap) > 2 * queued + 64:
            calls = self.calls
            self.heap = [
                e
                for e in self.heap
                if (r := calls.get(e[2])) is not None and r[_SEQ] == e[1] and r[_STATE] != RUNNING
            ]
            heapify(self.heap)

    # ------------------------------------------------------------------------- engine step

    def step(
        self,
        now: float,
        max_running: int,
        kv_tokens: int,
        finished: Iterable[int] = (),
        progress: Iterable[tuple[int, int]] = (),
    ) -> tuple[list[int], list[int], list[int], list[int], int, int]:
        """(batch, admitted, preempted, too_large, demoted, promoted)."""
        calls = self.calls
        programs = self.programs
        for cid, tokens in progress:
            calls[cid][_TOKENS] += tokens
        complete = self.complete
        for cid in finished:
            complete(cid, now)

        # Algorithm 1, step 2: visit every live call.
        demote = []
        promote = []
        beta = self.beta
        floor = self.floor
        for rec in calls.values():
            # Unpacking the record beats eight indexed reads (~6% of the whole loop).
            cid, pid, level, _, state, since, wacc, sacc, wreset, sreset, _, expiry, _, _, _ = rec
            if state == RUNNING:
                if expiry <= now:
                    demote.append((expiry, cid, rec))
            elif beta is not None and level:
                prog = programs[pid]
                tp = prog[0]
                # The same expression as the core's deadline, so ties break the same way.
                deadline = (since - (wacc - wreset) + beta * (sacc - sreset)) + (
                    beta * (tp if tp > floor else floor) - prog[1]
                )
                if deadline <= now:
                    promote.append((deadline, cid, rec))
        demoted = self._demote(demote, now) if demote else 0
        if promote:
            self._promote(promote, now)
        out = self._form_batch(now, max_running, kv_tokens)
        self._compact()
        return (*out, demoted, len(promote))

    def _demote(self, due: list[tuple[float, int, list[Any]]], now: float) -> int:
        """Demotes running calls whose quantum ran out, earliest expiry first (new FCFS position),
        one queue per quantum used up; returns the number of queues gone down."""
        due.sort(key=itemgetter(0, 1))
        quanta = self.quanta
        bottom = len(quanta) - 1
        demoted = 0
        for expiry, _, rec in due:
            level = start = rec[_LEVEL]
            while expiry <= now and level < bottom:
                level += 1
                expiry += quanta[level]
            if expiry <= now:  # bottom queue: the quantum renews, all elapsed renewals at once
                q = quanta[bottom]
                expiry += _fma(float(math.floor((now - expiry) / q)), q, q)
                if expiry <= now:
                    expiry = now + q
            demoted += level - start
            rec[_LEVEL] = level
            rec[_EXPIRY] = expiry
            self.seq += 1
            rec[_SEQ] = self.seq
            self._on_expiry(rec)
        return demoted

    def _on_expiry(self, rec: list[Any]) -> None:
        pass

    def _promote(self, due: list[tuple[float, int, list[Any]]], now: float) -> None:
        """Moves starving queued calls to the top queue, most overdue first."""
        due.sort(key=itemgetter(0, 1))
        q0 = self.quanta[0]
        heap = self.heap
        for _, cid, rec in due:
            self.seq += 1
            rec[_WACC] += now - rec[_SINCE]
            rec[_SINCE] = now
            rec[_WRESET] = rec[_WACC]
            rec[_SRESET] = rec[_SACC]
            rec[_LEVEL] = 0
            rec[_SEQ] = self.seq
            rec[_QLEFT] = q0
            rec[_DEADLINE] = INF
            heappush(heap, (0, self.seq, cid))

    def _form_batch(
        self, now: float, max_running: int, kv_tokens: int
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        """Walks the queues in order (running before queued within a level, FCFS), stops at the
        first call that does not fit; running calls left out are preempted."""
        self.steps += 1
        stamp = self.steps
        calls = self.calls
        running = self.running
        heap = self.heap
        order = sorted(running.values(), key=_RUN_ORDER)
        nrun = len(order)
        i = 0
        batch: list[int] = []
        admitted: list[list[Any]] = []
        too_large: list[int] = []
        skipped = []
        tokens = 0
        while len(batch) < max_running:
            while heap:  # drop stale heap tops
                _, seq, cid = heap[0]
                rec = calls.get(cid)
                if rec is not None and rec[_SEQ] == seq and rec[_STATE] != RUNNING:
                    break
                heappop(heap)
            if i < nrun and (not heap or order[i][_LEVEL] <= heap[0][0]):
                rec = order[i]
                queued = False
            elif heap:
                rec = calls[heap[0][2]]
                queued = True
            else:
                break
            need = rec[_TOKENS]
            if need > kv_tokens:
                too_large.append(rec[_CID])
                if queued:
                    skipped.append(heappop(heap))
                else:
                    i += 1
                continue
            if tokens + need > kv_tokens:
                break
            tokens += need
            if queued:
                heappop(heap)
                admitted.append(rec)
            else:
                i += 1
            rec[_SEL] = stamp
            batch.append(rec[_CID])
        for e in skipped:
            heappush(heap, e)
        preempted = [cid for cid, rec in running.items() if rec[_SEL] != stamp]
        for cid in preempted:
            rec = running.pop(cid)
            rec[_SACC] += now - rec[_SINCE]
            rec[_SINCE] = now
            rec[_QLEFT] = rec[_EXPIRY] - now
            rec[_EXPIRY] = INF
            rec[_STATE] = PREEMPTED
            heappush(heap, (rec[_LEVEL], rec[_SEQ], cid))
            self._on_enqueue(rec)
        for rec in admitted:
            rec[_WACC] += now - rec[_SINCE]
            rec[_SINCE] = now
            rec[_STATE] = RUNNING
            rec[_EXPIRY] = now + rec[_QLEFT]
            running[rec[_CID]] = rec
            self._on_start(rec)
        return batch, [r[_CID] for r in admitted], preempted, too_large

    def _on_enqueue(self, rec: list[Any]) -> None:
        pass

    def _on_start(self, rec: list[Any]) -> None:
        pass


class PyPlasDue(PyPlas):
    """A cleverer Python: like the Rust core, it keeps heaps of due times (quantum expiries of
    running calls, starvation deadlines of queued calls; stale entries skipped) and each
    program's queued calls (to move their deadlines when the program's W_p / T_p change), so a
    step only touches the calls something happens to. Single operations cost more than
    :class:`PyPlas`'s; only its step is measured."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expiries: list[tuple[float, int]] = []
        self.deadlines: list[tuple[float, int]] = []
        self.queued_of: dict[int, dict[int, list[Any]]] = {}  # program -> its queued calls

    def _refresh(self, rec: list[Any]) -> None:
        beta = self.beta
        if beta is None or not rec[_LEVEL]:
            deadline = INF
        else:
            prog = self.programs[rec[_PROG]]
            tp = prog[0]
            floor = self.floor
            deadline = (rec[_SINCE] - (rec[_WACC] - rec[_WRESET]) + beta * (rec[_SACC] - rec[_SRESET])) + (
                beta * (tp if tp > floor else floor) - prog[1]
            )
        if deadline != rec[_DEADLINE]:
            rec[_DEADLINE] = deadline
            if deadline != INF:
                heappush(self.deadlines, (deadline, rec[_CID]))

    def submit(self, call: int, program: int, now: float, prompt_tokens: int = 0) -> None:
        super().submit(call, program, now, prompt_tokens)
        rec = self.calls[call]
        self.queued_of.setdefault(program, {})[call] = rec
        self._refresh(rec)

    def admit(self, now: float) -> int | None:
        cid = super().admit(now)
        if cid is not None:
            self._on_start(self.calls[cid])
        return cid

    def _on_start(self, rec: list[Any]) -> None:
        del self.queued_of[rec[_PROG]][rec[_CID]]
        rec[_DEADLINE] = INF
        heappush(self.expiries, (rec[_EXPIRY], rec[_CID]))

    def _on_enqueue(self, rec: list[Any]) -> None:
        self.queued_of[rec[_PROG]][rec[_CID]] = rec
        self._refresh(rec)

    def _on_expiry(self, rec: list[Any]) -> None:
        heappush(self.expiries, (rec[_EXPIRY], rec[_CID]))

    def complete(self, call: int, now: float) -> None:
        program = self.calls[call][_PROG]
        super().complete(call, now)
        for rec in self.queued_of[program].values():  # W_p and T_p moved: so did their deadlines
            self._refresh(rec)

    def abort(self, call: int, now: float) -> None:
        rec = self.calls[call]
        self.queued_of[rec[_PROG]].pop(call, None)
        super().abort(call, now)
        for q in self.queued_of[rec[_PROG]].values():
            self._refresh(q)

    def step(
        self,
        now: float,
        max_running: int,
        kv_tokens: int,
        finished: Iterable[int] = (),
        progress: Iterable[tuple[int, int]] = (),
    ) -> tuple[list[int], list[int], list[int], list[int], int, int]:
        calls = self.calls
        for cid, tokens in progress:
            calls[cid][_TOKENS] += tokens
        complete = self.complete
        for cid in finished:
            complete(cid, now)
        demote = []
        expiries = self.expiries
        while expiries and expiries[0][0] <= now:
            due, cid = heappop(expiries)
            rec = calls.get(cid)
            if rec is not None and rec[_STATE] == RUNNING and rec[_EXPIRY] == due:
                rec[_EXPIRY] = INF  # a duplicate entry of the same expiry is now stale
                demote.append((due, cid, rec))
        demoted = self._demote(demote, now) if demote else 0
        promote = []
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            due, cid = heappop(deadlines)
            rec = calls.get(cid)
            if rec is not None and rec[_STATE] != RUNNING and rec[_DEADLINE] == due:
                rec[_DEADLINE] = INF  # likewise
                promote.append((due, cid, rec))
        if promote:
            self._promote(promote, now)
        out = self._form_batch(now, max_running, kv_tokens)
        self._compact()
        if len(expiries) > 2 * len(self.running) + 64:
            self.expiries = [e for e in expiries if (r := calls.get(e[1])) and r[_EXPIRY] == e[0]]
            heapify(self.expiries)
        if len(deadlines) > 2 * (len(calls) - len(self.running)) + 64:
            self.deadlines = [e for e in deadlines if (r := calls.get(e[1])) and r[_DEADLINE] == e[0]]
            heapify(self.deadlines)
        return (*out, demoted, len(promote))


# =============================================================================================
# Measurement helpers
# =============================================================================================


def timer_floor() -> int:
    """Median cost of an empty ``perf_counter_ns`` pair (subtracted from per-op samples)."""
    samples = []
    for _ in range(20_000):
        t0 = pc()
        samples.append(pc() - t0)
    return int(statistics.median(samples))


def pctl(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


@dataclass
class Stat:
    """Per-operation times in microseconds."""

    median_us: float
    p99_us: float
    samples: int

    @staticmethod
    def of(chunk_means_ns: Sequence[float], per_op_ns: Sequence[float], floor_ns: int) -> Stat:
        per_op = [max(0.0, x - floor_ns) for x in per_op_ns]
        return Stat(
            median_us=statistics.median(chunk_means_ns) / 1e3,
            p99_us=pctl(per_op, 0.99) / 1e3 if per_op else pctl(chunk_means_ns, 0.99) / 1e3,
            samples=len(per_op) or len(chunk_means_ns),
        )


@dataclass
class Row:
    operation: str
    live: str
    python: Stat
    autellix: Stat
    goal: str = ""
    goal_ratio: float | None = None  # python / autellix must reach this
    goal_abs_us: float | None = None  # autellix median must stay at or below this
    python_impl: str = "PyPlas"
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.python.median_us / self.autellix.median_us if self.autellix.median_us else INF

    @property
    def met(self) -> bool | None:
        if self.goal_ratio is not None:
            return self.ratio >= self.goal_ratio
        if self.goal_abs_us is not None:
            return self.autellix.median_us <= self.goal_abs_us
        return None


class NoGC:
    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


# =============================================================================================
# States
# =============================================================================================


def config(beta: float | None = 8.0) -> SchedulerConfig:
    return SchedulerConfig("plas", starvation_beta=beta)


class Pair:
    """The Rust scheduler and a Python one in the same state, plus the bench's own bookkeeping
    (which program each call belongs to, the latest batch of each side, the clock)."""

    def __init__(self, py_cls: type[Any], programs: int, live: int, running: int) -> None:
        cfg = config()
        self.rs = Scheduler(cfg)
        self.py = py_cls.from_config(cfg)
        self.programs = programs
        self.running = running
        self.owner: dict[int, int] = {}
        # Warm calls (id = program id): all run from t = 0, each finishes at its level's service.
        ids = list(range(programs))
        self.rs.submit_many(0.0, ids, ids)
        for p in ids:
            self.py.submit(p, p, 0.0)
        self.rs.step(0, 0.0, programs, KV_BUDGET)
        for _ in ids:  # all in queue 0, FCFS: the same calls run on both sides
            self.py.admit(0.0)
        for level, service in enumerate(LEVEL_SERVICE):
            for p in range(level, programs, len(LEVEL_SERVICE)):
                self.rs.finish(p, service)
                self.py.complete(p, service)
        self.now = LEVEL_SERVICE[-1]
        self.next_id = programs
        calls = [self.new_id() for _ in range(live)]
        progs = [i % programs for i in range(live)]
        self.rs.submit_many(self.now, calls, progs, prompt_tokens=[PROMPT] * live)
        for c, p in zip(calls, progs, strict=True):
            self.py.submit(c, p, self.now, prompt_tokens=PROMPT)
            self.owner[c] = p
        self.rs_batch: list[int] = []
        self.py_batch: list[int] = []
        if running:
            self.refill()
            assert self.rs_batch == self.py_batch, "the two sides admitted different calls"
        assert len(self.rs) == len(self.py) == live

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def tick(self, dt: float = OP_DT) -> float:
        self.now += dt
        return self.now

    def refill(self) -> None:
        """Both sides back to ``running`` running calls (outside timed regions): a step on the
        Rust side, a heap pop per free slot on the Python side (the same calls unless a new call
        outranks a running one, which the Rust step then preempts)."""
        now = self.tick()
        self.rs_batch = self.rs.step(0, now, self.running, KV_BUDGET).running
        missing = self.running - len(self.py_batch)
        self.py_batch += [self.py.admit(now) for _ in range(missing)]

    def fresh(self, k: int, rng: random.Random) -> list[tuple[int, int]]:
        items = [(self.new_id(), rng.randrange(self.programs)) for _ in range(k)]
        for c, p in items:
            self.owner[c] = p
        return items


# =============================================================================================
# Single operations
# =============================================================================================


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


@dataclass
class Plan:
    quick: bool
    programs: int
    op_sizes: tuple[int, ...]
    chunks: int
    chunk: int
    step_sizes: tuple[int, ...]
    steady_steps: int
    churn_episodes: int
    churn_steps: int
    trivial_reps: int


FULL = Plan(
    quick=False,
    programs=10_000,
    op_sizes=(1_000, 10_000, 100_000),
    chunks=600,
    chunk=64,
    step_sizes=(1_000, 10_000, 100_000),
    steady_steps=300,
    churn_episodes=4,
    churn_steps=64,
    trivial_reps=40,
)
QUICK = Plan(
    quick=True,
    programs=1_000,
    op_sizes=(1_000, 5_000),
    chunks=40,
    chunk=32,
    step_sizes=(1_000, 5_000),
    steady_steps=20,
    churn_episodes=1,
    churn_steps=24,
    trivial_reps=5,
)


def retain_cap(plan: Plan, live: int) -> int:
    """The Rust core keeps each finished call (as a possible parent) until its program ends, so
    the finish benches rebuild their state (untimed) once they have finished this many calls
    (the core's own criterion bench does the same)."""
    return max(live, plan.programs)


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
    return Row(
        "submit",
        f"{live:,}",
        Stat.of(py_chunks, py_each, floor),
        Stat.of(rs_chunks, rs_each, floor),
        goal="≥5x" if live >= 100_000 else "",
        goal_ratio=5.0 if live >= 100_000 else None,
        python_impl="PyPlasQueue",
    )


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
    return Row(
        "finish",
        f"{live:,}",
        Stat.of(py_chunks, py_each, floor),
        Stat.of(rs_chunks, rs_each, floor),
        goal="≥5x" if live >= 100_000 else "",
        goal_ratio=5.0 if live >= 100_000 else None,
        python_impl="PyPlasQueue",
    )


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
    return Row(
        "submit+admit+finish cycle",
        f"{live:,}",
        Stat.of(py_chunks, py_each, floor),
        Stat.of(rs_chunks, rs_each, floor),
        goal="≥5x" if live >= 100_000 else "",
        goal_ratio=5.0 if live >= 100_000 else None,
        python_impl="PyPlasQueue",
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


# =============================================================================================
# Engine step
# =============================================================================================


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


# =============================================================================================
# Cross-check (keeps the reference honest)
# =============================================================================================


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def crosscheck(py_cls: type[PyPlas], beta: float | None, seed: int) -> tuple[list[str], str]:
    """Random small workload on both: the disagreements (none: identical decisions at every step)
    and a summary of what the workload exercised."""
    rng = random.Random(seed)
    cfg = SchedulerConfig("plas", starvation_beta=beta)
    rs = Scheduler(cfg)
    py = py_cls.from_config(cfg)
    errors: list[str] = []
    now = 0.0
    next_id = 0
    programs = 30
    kv = 40_000
    max_running = 24
    owner: dict[int, int] = {}

    def submit(n: int) -> None:
        nonlocal next_id
        for _ in range(n):
            next_id += 1
            p = rng.randrange(programs)
            tokens = 50_000 if rng.random() < 0.01 else rng.randrange(1, 3_000)
            rs.submit(next_id, p, now, prompt_tokens=tokens)
            py.submit(next_id, p, now, prompt_tokens=tokens)
            owner[next_id] = p

    submit(150)
    running: list[int] = []
    ev = Events()
    too_large = 0
    for i in range(120):
        now += DECODE_STEP_SECONDS * rng.choice((0.3, 1.0, 1.0, 2.0, 3.5))
        if rng.random() < 0.04:  # a stall: running calls sink several queues, some to the bottom
            now += rng.uniform(2.0, 6.0)
        finished = rng.sample(running, min(len(running), rng.randrange(0, 5)))
        progress = [(c, rng.randrange(0, 40)) for c in running]
        d = rs.step(0, now, max_running, kv, finished=finished, progress=progress)
        b, adm, pre, big, dem, pro = py.step(now, max_running, kv, finished, progress)
        got = (b, adm, sorted(pre), big, dem, pro)
        want = (d.running, d.admitted, sorted(d.preempted), d.too_large, d.demoted, d.promoted)
        if got != want:
            names = ("running", "admitted", "preempted", "too_large", "demoted", "promoted")
            diff = [
                f"{n}: autellix {_short(w)} python {_short(g)}"
                for n, w, g in zip(names, want, got, strict=True)
                if w != g
            ]
            errors.append(f"step {i} (beta={beta}): " + "; ".join(diff))
            break
        running = d.running
        ev.add(d.demoted, d.promoted, len(d.admitted), len(d.preempted))
        too_large += len(d.too_large)
        submit(rng.randrange(0, 6))
    summary = (
        f"{ev.steps} steps: {ev.demoted} demotions, {ev.promoted} promotions, {ev.admitted} "
        f"admissions, {ev.preempted} preemptions, {too_large} too-large skips"
    )
    return errors, summary


def crosscheck_cycle(py_cls: type[Any], seed: int, cycles: int = 400) -> tuple[list[str], str]:
    """Single operations: submit, admit the best call, finish it after a random service time, so
    programs climb the levels. The Rust side admits with ``step(max_running=1)`` (starvation off:
    the Python single-operation path has none)."""
    rng = random.Random(seed)
    cfg = SchedulerConfig("plas", starvation_beta=None)
    rs = Scheduler(cfg)
    py = py_cls.from_config(cfg)
    now = 0.0
    next_id = 0
    queued = 0
    levels: set[int] = set()
    for i in range(cycles):
        for _ in range(rng.choice((0, 1, 1, 2))):
            next_id += 1
            program = rng.randrange(20)
            rs.submit(next_id, program, now, prompt_tokens=100)
            py.submit(next_id, program, now, prompt_tokens=100)
            levels.add(rs.call(next_id).level)
            queued += 1
        if not queued:
            continue
        a = rs.step(0, now, 1, KV_BUDGET).admitted
        b = py.admit(now)
        if a != [b]:
            return [f"cycle {i}: autellix admitted {a}, {py_cls.__name__} {b}"], ""
        queued -= 1
        now += rng.random() * 0.2
        rs.finish(b, now)
        py.complete(b, now)
    return [], f"{cycles} cycles, calls entered levels {sorted(levels)}"


# =============================================================================================
# Report
# =============================================================================================


def fmt_us(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:,.1f}"


def render(rows: list[Row], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 132)
    table = Table(
        title="autellix._core vs pure-Python PLAS (median / p99 per operation, µs)",
        caption=(
            f"CPython {meta['python']} · {meta['cpus']} CPUs · autellix {meta['autellix']} · "
            f"timer floor {meta['timer_floor_ns']} ns subtracted from per-op p99"
        ),
    )
    for col, just in (
        ("operation", "left"),
        ("live calls", "right"),
        ("python µs", "right"),
        ("autellix µs", "right"),
        ("ratio", "right"),
        ("goal", "center"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        met = r.met
        goal = r.goal + ("" if met is None else (" [green]✓[/]" if met else " [red]✗[/]"))
        table.add_row(
            r.operation,
            r.live,
            f"{fmt_us(r.python.median_us)} / {fmt_us(r.python.p99_us)}",
            f"{fmt_us(r.autellix.median_us)} / {fmt_us(r.autellix.p99_us)}",
            f"{r.ratio:.1f}x",
            goal,
        )
    console.print(table)
    for r in rows:
        if "identical_decisions" in r.notes:
            a = r.notes["events_per_step_autellix"]
            p = r.notes["events_per_step_python"]
            console.print(
                f"  {r.operation} [{r.live}]: per step autellix "
                f"{a['demoted']:.1f} demoted / {a['promoted']:.1f} promoted / "
                f"{a['admitted']:.1f} admitted / {a['preempted']:.1f} preempted; "
                f"{r.python_impl} {p['demoted']:.1f} / {p['promoted']:.1f} / "
                f"{p['admitted']:.1f} / {p['preempted']:.1f}; "
                f"identical decisions {r.notes['identical_decisions']}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run, < 20 s)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--seed", type=int, default=20240917, help="workload seed (default: %(default)s)")
    ap.add_argument("--no-clever", action="store_true", help="skip the due-heap Python variant of the step")
    ap.add_argument(
        "--only",
        action="append",
        choices=("trivial", "ops", "steps"),
        help="run only these sections (repeatable; default: all)",
    )
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    t_start = time.perf_counter()

    checks: dict[str, list[str]] = {}
    if plan.quick:
        # Hard checks run with starvation off; with it on the step
        # paths agree too (same deadline arithmetic), reported without failing the run.
        runs: list[tuple[str, Callable[[], tuple[list[str], str]], bool]] = []
        for seed in range(args.seed, args.seed + 3):
            for q_cls in (PyPlasQueue, PyPlas):
                check = functools.partial(crosscheck_cycle, q_cls, seed)
                runs.append((f"{q_cls.__name__} single ops, seed {seed}", check, True))
            for s_cls in (PyPlas, PyPlasDue):
                for beta in (None, 2.0):
                    check = functools.partial(crosscheck, s_cls, beta, seed)
                    runs.append((f"{s_cls.__name__} steps, beta={beta}, seed {seed}", check, beta is None))
        failed = []
        for name, run, hard in runs:
            errs, what = run()
            checks[name] = errs
            state = "agree" if not errs else ("DISAGREE" if hard else "differ (informational)")
            print(f"cross-check autellix vs {name}: {state}" + (f" ({what})" if what else ""))
            for e in errs:
                print("   ", e)
            if errs and hard:
                failed.append(name)
        if failed:
            print(f"cross-check failed: {failed}", file=sys.stderr)
            return 1

    floor = timer_floor()
    only = set(args.only or ("trivial", "ops", "steps"))
    rows: list[Row] = []
    if "trivial" in only:
        rows += bench_trivial(plan)
    for n in plan.op_sizes if "ops" in only else ():
        for bench in (bench_submit, bench_finish, bench_cycle):
            gc.collect()
            rows.append(bench(plan, n, floor, args.seed + n))
            print(f"  {rows[-1].operation} @ {n:,}: done ({time.perf_counter() - t_start:.0f} s)")
    for n in plan.step_sizes if "steps" in only else ():
        rows += step_rows(plan, n, clever=not args.no_clever)
        print(f"  steps @ {n:,}: done ({time.perf_counter() - t_start:.0f} s)")

    breakdown = step_breakdown(plan) if "steps" in only else None

    meta = {
        "mode": "quick" if plan.quick else "full",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "autellix": autellix.__version__,
        "seed": args.seed,
        "timer_floor_ns": floor,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "plan": asdict(plan),
    }
    render(rows, meta)
    if breakdown:
        b = breakdown
        print(
            f"autellix steady step at {b['waiting']:,} waiting, seen from Python: "
            f"{b['step_full_us']:.1f} µs = {b['rest_us']:.1f} µs step without progress "
            f"(core work, finished list, GIL release, Decision) + {b['convert_progress_256_us']:.1f} µs "
            f"for progress (256 tuples converted and applied) + "
            f"{b['read_running_admitted_preempted_us']:.1f} µs reading running/admitted/preempted"
        )
    print(f"total {time.perf_counter() - t_start:.1f} s")
    if args.json:
        out = {
            "meta": meta,
            "crosscheck": checks,
            "step_breakdown": breakdown,
            "rows": [
                {
                    "operation": r.operation,
                    "live_calls": r.live,
                    "python_impl": r.python_impl,
                    "python_us": asdict(r.python),
                    "autellix_us": asdict(r.autellix),
                    "ratio": r.ratio,
                    "goal": r.goal,
                    "goal_met": r.met,
                    "notes": r.notes,
                }
                for r in rows
            ],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
