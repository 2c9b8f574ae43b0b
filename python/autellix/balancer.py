"""Load balancers that pick an engine for each LLM call (paper §7, Algorithm 2).

All three see the same input: the call's program, its prompt length, and each engine's load
(the number of its calls in the system, queued or running, the paper's "least used"), and may be
told which engines are ``available`` (the ``openai`` engine's upstreams that are not ejected):
they then choose only among those, and a program pinned to an unavailable engine is re-pinned.
At least one engine must be available.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from autellix.exceptions import ConfigError, InvalidArgumentError

#: Calls with at most this many prompt tokens go to the least-loaded engine: short prompts
#: are mostly shared system prompt, cached on every engine (paper §7).
PROGRAM_AWARE_THRESHOLD = 2048


class Balancer(Protocol):
    def choose(
        self, program: int, prompt_tokens: int, loads: Sequence[int], available: Sequence[bool] | None = None
    ) -> int:
        """The engine index (into ``loads``) for the call, among the ``available`` ones (all
        when ``None``)."""
        ...

    def forget(self, program: int) -> None:
        """The program ended: drop any state kept for it."""
        ...


def _ok(engine: int, available: Sequence[bool] | None) -> bool:
    return available is None or available[engine]


def _least_loaded(loads: Sequence[int], available: Sequence[bool] | None = None) -> int:
    candidates = (
        [e for e in range(len(loads)) if _ok(e, available)] if available is not None else range(len(loads))
    )
    if not candidates:
        raise InvalidArgumentError("no engine is available")
    return min(candidates, key=loads.__getitem__)  # ties -> lowest index


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def choose(
        self, program: int, prompt_tokens: int, loads: Sequence[int], available: Sequence[bool] | None = None
    ) -> int:
        for step in range(len(loads)):  # the next available engine in turn
            engine = (self._next + step) % len(loads)
            if _ok(engine, available):
                self._next = engine + 1
                return engine
        raise InvalidArgumentError("no engine is available")

    def forget(self, program: int) -> None:
        pass


class LeastLoaded:
    def choose(
        self, program: int, prompt_tokens: int, loads: Sequence[int], available: Sequence[bool] | None = None
    ) -> int:
        return _least_loaded(loads, available)

    def forget(self, program: int) -> None:
        pass


class ProgramAware:
    """Short calls to the least-loaded engine; long ones to their program's engine, pinning the
    program to the least-loaded engine on its first long call (its KV prefix stays there) and
    again when its engine is no longer available (the prefix there is lost with it)."""

    def __init__(self, threshold: int = PROGRAM_AWARE_THRESHOLD) -> None:
        self.threshold = threshold
        self._pinned: dict[int, int] = {}

    def choose(
        self, program: int, prompt_tokens: int, loads: Sequence[int], available: Sequence[bool] | None = None
    ) -> int:
        if prompt_tokens <= self.threshold:
            return _least_loaded(loads, available)
        engine = self._pinned.get(program)
        if engine is None or engine >= len(loads) or not _ok(engine, available):
            engine = self._pinned[program] = _least_loaded(loads, available)
        return engine

    def forget(self, program: int) -> None:
        self._pinned.pop(program, None)


#: every balancer by name, the baselines first
_KINDS: dict[str, type[RoundRobin] | type[LeastLoaded] | type[ProgramAware]] = {
    "round-robin": RoundRobin,
    "least-loaded": LeastLoaded,
    "program-aware": ProgramAware,
}
BALANCERS = tuple(_KINDS)


def make_balancer(name: str) -> Balancer:
    """A new balancer of one of :data:`BALANCERS`."""
    if name not in _KINDS:
        raise ConfigError(f"unknown balancer {name!r}; choose one of {', '.join(BALANCERS)}")
    return _KINDS[name]()
