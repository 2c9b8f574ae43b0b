"""What the server needs of an engine: :class:`Engine`, the per-call :class:`CallHandle` and the
load snapshot :class:`EngineStats`.

An engine takes calls (:meth:`Engine.submit`), streams their tokens into per-call queues, and
lets the server cancel calls and end programs. Every engine schedules with the real core,
``autellix._core.Scheduler``; the server maps its string program ids to the core's integers.
The engines: :mod:`~autellix.server.engines.sim` (the simulator's engine model in real time),
:mod:`~autellix.server.engines.upstream` (in front of OpenAI-compatible servers) and
:mod:`~autellix.server.engines.vllm` (``vllm serve`` children with the plug-in). A call an
engine refuses raises an :class:`~autellix.exceptions.EngineError`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from autellix._core import ProgramInfo, Scheduler
from autellix.exceptions import AutellixError, InvalidCallError, ProgramNotFoundError, QueueFullError
from autellix.server.protocol import ChatCompletionRequest, CompletionRequest


@dataclass(eq=False)
class CallHandle:
    """One submitted call: its tokens arrive in :attr:`tokens`, ``None`` marks the end."""

    id: int
    program: int
    prompt_tokens: int
    max_tokens: int
    #: finish reason when the call reaches ``max_tokens`` ("length" when the client set a limit)
    limit_reason: str = "length"
    generated: int = 0
    finish_reason: str | None = None
    tokens: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    #: ``time.monotonic()`` at submission and at the first token (``None`` before it)
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    #: set once the server has settled the call (metrics recorded, anonymous program released)
    settled: bool = False
    #: why the call failed (finish reason ``"error"``): an upstream engine's failure
    error: str | None = None
    #: how a failed call is answered: HTTP status (502 upstream failed, 503 no upstream available,
    #: 504 upstream timed out, or an upstream's 4xx passed through), OpenAI error type and code, and
    #: the ``Retry-After`` seconds (429, 503) when known
    error_status: int = 502
    error_type: str = "upstream_error"
    error_code: str | None = "upstream_failed"
    retry_after: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _deliver(self, token: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.generated += 1
        self.tokens.put_nowait(token)

    def _end(self, reason: str) -> None:
        if self.finish_reason is None:
            self.finish_reason = reason
            self.tokens.put_nowait(None)


#: Wall seconds over which the completion rate that sizes a 429's ``Retry-After`` is measured.
RATE_WINDOW_S = 10.0
#: Longest ``Retry-After`` a 429 suggests.
RETRY_AFTER_MAX_S = 60.0


class CompletionRate:
    """Calls ended per wall second over the last :data:`RATE_WINDOW_S`."""

    def __init__(self) -> None:
        self._ends: collections.deque[float] = collections.deque()

    def record(self) -> None:
        self._ends.append(time.monotonic())

    def per_second(self) -> float:
        cutoff = time.monotonic() - RATE_WINDOW_S
        while self._ends and self._ends[0] < cutoff:
            self._ends.popleft()
        return len(self._ends) / RATE_WINDOW_S


def retry_after(excess: int, per_second: float) -> float:
    """Seconds until ``excess`` queued calls have drained at ``per_second`` completions, in
    [1, :data:`RETRY_AFTER_MAX_S`]; with nothing completed lately, one rate window."""
    if per_second <= 0:
        return RATE_WINDOW_S
    return min(RETRY_AFTER_MAX_S, max(1.0, excess / per_second))


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's load, read by ``GET /metrics`` at scrape time."""

    #: waiting calls per priority level of the core's queue (index 0 = highest priority)
    queue_depths: list[int] = field(default_factory=list)
    running: int = 0
    waiting: int = 0
    #: running calls / batch slots, 0..1
    load: float = 0.0
    #: calls the core preempted since start (a call preempted twice counts twice)
    preemptions: int = 0
    #: programs in the core's process table
    live_programs: int = 0
    #: upstreams available to take calls, of how many (``None``: the engine has no upstreams)
    upstreams_up: int | None = None
    upstreams_total: int | None = None
    #: upstreams ejected (outlier detection or a failed health check) since start
    ejections: int = 0


class Engine(ABC):
    """What the server needs of an engine (all methods run on the server's event loop).

    Every engine schedules with one core ``_scheduler`` on its own clock ``_now()``; the
    process-table reads and idle-program expiry that only need those live here.
    """

    #: called with the core ids of programs the core expired (idle past their TTL)
    on_programs_expired: Callable[[list[int]], None] | None = None
    _scheduler: Scheduler
    _last_gc: float = 0.0
    _calls: dict[int, CallHandle]
    _ids: Iterator[int]
    max_queued: int
    #: calls ended lately (each engine records its completions), for Retry-After
    _rate: CompletionRate

    @property
    @abstractmethod
    def waiting(self) -> int:
        """Calls queued in the core, not yet running."""

    @abstractmethod
    def _now(self) -> float:
        """The core's clock, in seconds."""

    @property
    def policy(self) -> str:
        return self._scheduler.policy

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    #: ``submit`` gets the request ``body`` (the prompt and sampling fields), which an engine that
    #: forwards calls uses and the simulated engine ignores
    @abstractmethod
    def submit(
        self,
        program: int,
        prompt_tokens: int,
        max_tokens: int,
        *,
        thread: int = 0,
        parents: Sequence[int] = (),
        limit_reason: str = "length",
        body: ChatCompletionRequest | CompletionRequest | None = None,
    ) -> CallHandle: ...

    @abstractmethod
    def cancel(self, call: CallHandle) -> None: ...

    def program(self, program: int) -> ProgramInfo:
        try:
            return self._scheduler.program(program)
        except AutellixError as exc:
            raise ProgramNotFoundError(str(exc)) from None

    @abstractmethod
    def end_program(self, program: int) -> list[int]: ...

    @property
    def healthy(self) -> bool:
        """Whether the engine can serve calls (``/health`` answers 503 otherwise)."""
        return True

    @property
    def upstreams_available(self) -> tuple[int, int] | None:
        """``(up, total)`` upstreams for ``/health``; ``None`` for an engine without upstreams."""
        return None

    def live(self, call: int) -> bool:
        """Whether the core still holds ``call`` (waiting or running)."""
        return call in self._scheduler

    def stats(self) -> EngineStats:
        """Load figures for ``/metrics`` (an engine without them reports zeros)."""
        return EngineStats()

    def _check_room(self) -> None:
        """Before a new call: refuse it while ``max_queued`` calls already wait (HTTP 429)."""
        if self.waiting >= self.max_queued:
            excess = self.waiting - self.max_queued + 1
            raise QueueFullError(
                f"the server is at capacity: {self.waiting} calls are already waiting",
                retry_after=retry_after(excess, self._rate.per_second()),
            )

    def collect_garbage(self) -> None:
        """Expire idle programs now (at most once per engine second). The server calls it before
        it resolves a new call's program name, so that the name cannot be expired between its
        lookup and the call's submission, and a balancer forgets expired programs before it
        places the call."""
        self._collect_garbage(self._now())

    def _enter(
        self,
        program: int,
        prompt_tokens: int,
        max_tokens: int,
        *,
        thread: int,
        parents: Sequence[int],
        limit_reason: str,
        engine: int = 0,
    ) -> CallHandle:
        """Queue a new call in the core on ``engine`` and keep its handle; the core's refusal
        (unknown or foreign parents, ...) becomes :class:`InvalidCallError`."""
        call = next(self._ids)
        try:
            self._scheduler.submit(
                call,
                program,
                self._now(),
                thread=thread,
                engine=engine,
                parents=list(parents) or None,
                prompt_tokens=prompt_tokens,
            )
        except AutellixError as exc:
            raise InvalidCallError(str(exc)) from None
        handle = CallHandle(call, program, prompt_tokens, max_tokens, limit_reason=limit_reason)
        self._calls[call] = handle
        return handle

    def _collect_garbage(self, now: float) -> None:
        """Expire idle programs at most once per engine second (the step does it while busy)."""
        if now - self._last_gc >= 1.0:
            self._last_gc = now
            self._expired(self._scheduler.collect_garbage(now))

    def _expired(self, programs: list[int]) -> None:
        if programs and self.on_programs_expired is not None:
            self.on_programs_expired(programs)
