"""``PyPlasDue``: :class:`PyPlas` with heaps of due times, as the Rust core keeps them."""

from __future__ import annotations

from collections.abc import Iterable
from heapq import heapify, heappop, heappush
from typing import Any

from autellix_reference.plas import (
    _CID,
    _DEADLINE,
    _EXPIRY,
    _LEVEL,
    _PROG,
    _SACC,
    _SINCE,
    _SRESET,
    _STATE,
    _TOKENS,
    _WACC,
    _WRESET,
    INF,
    RUNNING,
    PyPlas,
)


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
