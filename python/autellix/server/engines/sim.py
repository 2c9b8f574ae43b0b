""":class:`SimEngine`: the simulator's engine model run in real time, scheduled by the real core.

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
from collections.abc import Sequence

from autellix._core import Scheduler, SchedulerConfig
from autellix.exceptions import AutellixError, ConfigError, InvalidCallError, ProgramNotFoundError
from autellix.server.engines.base import CallHandle, CompletionRate, Engine, EngineStats
from autellix.server.protocol import ChatCompletionRequest, CompletionRequest
from autellix.sim.cost_model import preset as engine_preset

#: The text of every generated token (the simulated engine produces no real text).
PLACEHOLDER_TOKEN = " tok"
#: Wall seconds the simulated engine may fall behind its cost model and still catch up.
_MAX_LAG = 0.05


class SimEngine(Engine):
    """The simulator's engine model run in real time, scheduled by the real core."""

    def __init__(
        self,
        scheduler: SchedulerConfig | None = None,
        *,
        preset: str = "llama3.1-8b-a100",
        time_scale: float = 1.0,
        max_running: int = 64,
        max_queued: int = 1024,
    ) -> None:
        if not time_scale > 0:
            raise ConfigError(f"time_scale must be > 0, got {time_scale}")
        if max_running < 1 or max_queued < 0:
            raise ConfigError("max_running must be >= 1 and max_queued >= 0")
        self._preset = engine_preset(preset)
        self.time_scale = time_scale
        self.max_running = max_running
        self.max_queued = max_queued
        self._rate = CompletionRate()
        self.kv_tokens = self._preset.kv_tokens
        self._scheduler = Scheduler(_in_engine_time(scheduler or SchedulerConfig(), time_scale))
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
                    self._rate.record()


def _in_engine_time(config: SchedulerConfig, time_scale: float) -> SchedulerConfig:
    """``config`` for a core whose clock is engine time: quanta and boundaries are engine seconds
    already, the program TTL is given in wall seconds."""
    return SchedulerConfig(
        config.policy,
        boundaries=config.boundaries,
        quanta=config.quanta,
        starvation_beta=config.starvation_beta,
        service_floor=config.service_floor,
        program_ttl=config.program_ttl / time_scale,
    )
