"""``PyPlasQueue``: the straightforward single-operation PLAS queue (heapq + dict), the "pure
Python" of docs/baselines.md."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from heapq import heapify, heappop, heappush
from typing import Any

from autellix import SchedulerConfig


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
