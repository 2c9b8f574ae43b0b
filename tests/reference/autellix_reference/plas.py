"""``PyPlas``: the whole PLAS policy of the Rust core in plain Python, stepping Algorithm 1 of the
paper (every live call checked every step), and the call record the step references share."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from heapq import heapify, heappop, heappush
from operator import itemgetter
from typing import Any

from autellix import SchedulerConfig

INF = math.inf

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
