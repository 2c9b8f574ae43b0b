"""Engines behind the server, and :class:`SimEngine`, the simulator's engine model in real time.

An engine takes calls (:meth:`Engine.submit`), streams their tokens into per-call queues, and
lets the server cancel calls and end programs. Every engine schedules with the real core,
``autellix._core.Scheduler``; the server maps its string program ids to the core's integers.

:class:`SimEngine` runs one asyncio task (on the server's event loop, so no locking) that loops:

1. ``decision = scheduler.step(0, now, max_running, kv_tokens, finished=..., decoded=...)``;
2. waits out one iteration of the batch, ``preset.step_time(...)`` of the simulator's cost model
   (newly admitted calls are prefilled, the rest decode one token), times ``time_scale``;
3. gives every call of the batch one placeholder token; a call that reached its token budget
   finishes and is reported to the core at the next step.

The core's clock is *engine time*: wall seconds since start divided by ``time_scale`` (read from
``time.perf_counter``: uvloop's ``loop.time()`` only ticks in milliseconds), so quanta,
service and waiting times in the process table are in seconds of the simulated GPU whatever the
scale. Preempted calls simply receive no tokens until the core admits them again. The task waits
on an :class:`asyncio.Event` while no call is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from autellix._core import AutellixError, ProgramInfo, Scheduler, SchedulerConfig
from autellix.server.protocol import ChatCompletionRequest, CompletionRequest
from autellix.sim.cost_model import preset as engine_preset

#: The text of every generated token (the simulated engine produces no real text).
PLACEHOLDER_TOKEN = " tok"
#: Wall seconds the simulated engine may fall behind its cost model and still catch up.
_MAX_LAG = 0.05


class EngineError(AutellixError):
    """A call the engine refuses; the server maps each subclass to a 4xx status."""


class QueueFullError(EngineError):
    """``max_queued`` calls are already waiting (HTTP 429)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidCallError(EngineError):
    """The core rejected the call: unknown or foreign parents, oversized context (HTTP 400)."""


class ProgramNotFoundError(EngineError):
    """No such program in the process table (HTTP 404)."""


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

    def live(self, call: int) -> bool:
        """Whether the core still holds ``call`` (waiting or running)."""
        return call in self._scheduler

    def stats(self) -> EngineStats:
        """Load figures for ``/metrics`` (an engine without them reports zeros)."""
        return EngineStats()

    def _check_room(self) -> None:
        """Before a new call: refuse it while ``max_queued`` calls already wait (HTTP 429), and
        expire idle programs (so a balancer forgets them before it places the call)."""
        if self.waiting >= self.max_queued:
            raise QueueFullError(
                f"the server is at capacity: {self.waiting} calls are already waiting", retry_after=1.0
            )
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


class SimEngine(Engine):
    """The simulator's engine model run in real time, scheduled by the real core."""

    def __init__(
        self,
        *,
        policy: str = "plas",
        preset: str = "llama3.1-8b-a100",
        time_scale: float = 1.0,
        max_running: int = 64,
        max_queued: int = 1024,
        program_ttl: float = 600.0,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        if max_running < 1 or max_queued < 0:
            raise ValueError("max_running must be >= 1 and max_queued >= 0")
        self._preset = engine_preset(preset)
        self.time_scale = time_scale
        self.max_running = max_running
        self.max_queued = max_queued
        self.kv_tokens = self._preset.kv_tokens
        # the core counts time in engine seconds; the TTL is given in wall seconds
        self._scheduler = Scheduler(SchedulerConfig(policy, program_ttl=program_ttl / time_scale))
        self._calls: dict[int, CallHandle] = {}
        self._running: set[int] = set()
        self._finished: list[int] = []  # reached max_tokens, reported to the core at the next step
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._last_gc = 0.0
        #: engine iterations run so far
        self.iterations = 0
        #: calls preempted by the core so far
        self.preemptions = 0

    @property
    def waiting(self) -> int:
        return len(self._calls) - len(self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    def _now(self) -> float:
        return (time.perf_counter() - self._t0) / self.time_scale

    async def start(self) -> None:
        if self._task is None:
            self._t0 = time.perf_counter()
            self._task = asyncio.create_task(self._loop(), name="autellix-sim-engine")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for handle in list(self._calls.values()):
            handle._end("abort")
        self._calls.clear()
        self._running.clear()

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
    ) -> CallHandle:
        self._check_room()
        if prompt_tokens + max_tokens > self.kv_tokens:
            raise InvalidCallError(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceed the engine's "
                f"KV capacity of {self.kv_tokens} tokens"
            )
        handle = self._enter(
            program, prompt_tokens, max_tokens, thread=thread, parents=parents, limit_reason=limit_reason
        )
        self._wake.set()
        return handle

    def cancel(self, call: CallHandle) -> None:
        if self._calls.pop(call.id, None) is None:
            return
        self._running.discard(call.id)
        with contextlib.suppress(AutellixError):
            self._scheduler.abort(call.id, self._now())
        call._end("abort")
        self._wake.set()

    def end_program(self, program: int) -> list[int]:
        try:
            aborted = self._scheduler.end_program(program, self._now())
        except AutellixError as exc:
            raise ProgramNotFoundError(str(exc)) from None
        gone = set(aborted)
        self._finished = [cid for cid in self._finished if cid not in gone]
        for cid in aborted:
            handle = self._calls.pop(cid, None)
            self._running.discard(cid)
            if handle is not None:
                handle._end("abort")
        return aborted

    def stats(self) -> EngineStats:
        return EngineStats(
            queue_depths=self._scheduler.queue_depths(0),
            running=self.running,
            waiting=self.waiting,
            load=self.running / self.max_running,
            preemptions=self.preemptions,
            live_programs=self._scheduler.num_programs,
        )

    async def _loop(self) -> None:
        decoded = 0
        #: wall time at which the iteration under way ends. Iterations are paced against it rather
        #: than by sleeping each one's length: event-loop timers have millisecond resolution (asyncio
        #: rounds up, uvloop to the nearest) while an iteration at a small time_scale lasts
        #: microseconds, so a late wake-up is made up by the next iterations (up to _MAX_LAG).
        deadline = time.perf_counter()
        while True:
            if not self._calls and not self._finished:
                self._wake.clear()
                await self._wake.wait()
                deadline = time.perf_counter()
                continue
            decision = self._scheduler.step(
                0, self._now(), self.max_running, self.kv_tokens, finished=self._finished, decoded=decoded
            )
            self._finished, decoded = [], 0
            self.preemptions += len(decision.preempted)
            self._expired(decision.expired_programs)
            running = [cid for cid in decision.running if cid in self._calls]
            self._running = set(running)
            if not running:  # nothing fits now; wait for a submit or a cancel
                self._wake.clear()
                await self._wake.wait()
                deadline = time.perf_counter()
                continue
            admitted = set(decision.admitted)
            prefill = decode_seqs = decode_context = 0
            attention = 0.0
            for cid in running:
                handle = self._calls[cid]
                context = handle.prompt_tokens + handle.generated
                if cid in admitted:  # (re)computed from scratch: no KV kept across preemption
                    prefill += context
                    attention += context * context / 2
                else:
                    decode_seqs += 1
                    decode_context += context
            seconds = self._preset.step_time(prefill, attention, decode_seqs, decode_context)
            deadline = max(deadline, time.perf_counter() - _MAX_LAG) + seconds * self.time_scale
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))  # 0 still lets the handlers run
            self.iterations += 1
            decoded = 1
            for cid in running:
                live = self._calls.get(cid)
                if live is None:  # cancelled during the iteration
                    continue
                live._deliver(PLACEHOLDER_TOKEN)
                if live.generated >= live.max_tokens:
                    self._finished.append(cid)
                    del self._calls[cid]
                    self._running.discard(cid)
                    live._end(live.limit_reason)
