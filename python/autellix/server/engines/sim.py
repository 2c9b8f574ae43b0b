""":class:`SimEngine`: the simulator's engine model run in real time, scheduled by the real core.

:class:`SimEngine` runs one asyncio task (on the server's event loop, so no locking) that loops:

1. ``decision = scheduler.step(0, now, max_running, kv_tokens, finished=..., progress=...)``;
2. plans one iteration under a budget of ``max_batched_tokens`` tokens, as vLLM's chunked prefill
   does: every call of the batch whose prompt is in the KV cache decodes one token; then, in the
   core's priority order, the calls still prefilling (newly admitted, partially prefilled) whose
   prompt fits in what is left are prefilled to the end; what remains goes in chunks to the
   others. So a huge prompt is prefilled alongside short ones, with what they leave, rather than
   holding them back (vLLM's ``long_prefill_token_threshold`` serves the same end);
3. waits out that iteration, ``preset.step_time(...)`` of the simulator's cost model, times
   ``time_scale``. A chunk of ``c`` tokens at offset ``o`` of a prompt attends to everything
   before it, ``c * (o + c / 2)`` (query, key) pairs, so a prompt's chunks add up to the unchunked
   ``P**2 / 2``;
4. gives a placeholder token to every call that decoded or completed its prefill this iteration
   (a call's first token comes only with the iteration that completes its prefill); a call that
   reached its token budget finishes and is reported to the core at the next step, with the
   token counts of the others (``decoded=1`` when every call of the batch got one).

An iteration computes at most ``max_batched_tokens`` tokens, each attending to at most
``kv_tokens`` keys, so it lasts at most :attr:`SimEngine.max_iteration_seconds` engine seconds:
``step_time(B, B * kv_tokens, max_running, kv_tokens)`` (the cost model is non-decreasing in every
argument), 3.3 s for the default preset (llama3.1-8b-a100, B = 2048, 444,640 KV tokens), where a
prompt at the KV capacity prefilled in one iteration would take 380 s. That bound is also how long
a cancel waits: a cancelled call (or one of an ended program) is dropped from the next iteration,
and the share of the budget it had goes to the others; its partial prefill is discarded. An
iteration under way is not cut short, which the bound makes unnecessary.

The core's clock is *engine time*: wall seconds since start divided by ``time_scale`` (read from
``time.perf_counter``: uvloop's ``loop.time()`` only ticks in milliseconds), so quanta,
service and waiting times in the process table are in seconds of the simulated GPU whatever the
scale. Preempted calls receive no tokens until the core admits them again, and lose their KV: a
re-admitted call is prefilled again from its first token (prompt and generated tokens), chunked
like any other. The task waits on an :class:`asyncio.Event` while no call is live.
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
from autellix.sim.cost_model import EnginePreset, GiB
from autellix.sim.cost_model import preset as engine_preset

#: The text of every generated token (the simulated engine produces no real text).
PLACEHOLDER_TOKEN = " tok"
#: Wall seconds the simulated engine may fall behind its cost model and still catch up.
_MAX_LAG = 0.05


def vllm_batched_tokens(preset: EnginePreset) -> int:
    """vLLM V1's default ``max_num_batched_tokens`` for ``vllm serve`` on ``preset``'s GPU:
    8192 on GPUs of 70 GiB or more other than the A100, 2048 on the rest (vLLM
    ``EngineArgs.get_batch_defaults``, ``UsageContext.OPENAI_API_SERVER``; larger budgets cost
    A100s throughput, vLLM PR #17885)."""
    hw = preset.hardware
    return 8192 if hw.hbm_capacity >= 70 * GiB and "a100" not in hw.name.lower() else 2048


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
        max_batched_tokens: int | None = None,
    ) -> None:
        if not time_scale > 0:
            raise ConfigError(f"time_scale must be > 0, got {time_scale}")
        if max_running < 1 or max_queued < 0:
            raise ConfigError("max_running must be >= 1 and max_queued >= 0")
        self._preset = engine_preset(preset)
        if max_batched_tokens is None:
            max_batched_tokens = max(vllm_batched_tokens(self._preset), max_running)
        if max_batched_tokens < max_running:  # every call of a full batch decodes a token
            raise ConfigError(
                f"max_batched_tokens ({max_batched_tokens}) must be >= max_running ({max_running})"
            )
        self.time_scale = time_scale
        self.max_running = max_running
        self.max_queued = max_queued
        #: tokens computed per iteration (decodes first, then prefill chunks)
        self.max_batched_tokens = max_batched_tokens
        self._rate = CompletionRate()
        self.kv_tokens = self._preset.kv_tokens
        self._scheduler = Scheduler(_in_engine_time(scheduler or SchedulerConfig(), time_scale))
        self._calls: dict[int, CallHandle] = {}
        self._running: set[int] = set()
        self._finished: list[int] = []  # reached max_tokens, reported to the core at the next step
        #: tokens in the KV cache per call of the batch (a partially prefilled call has fewer than
        #: its context); rebuilt at every step, so calls that left the batch lose theirs
        self._computed: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._last_gc = 0.0
        #: engine iterations run so far
        self.iterations = 0
        #: calls preempted by the core so far
        self.preemptions = 0
        #: simulated work so far: prompt tokens prefilled, their attention (query, key) pairs, and
        #: engine seconds of all iterations (the cost model's, not the paced wall time)
        self.prefilled_tokens = 0
        self.prefill_attention = 0.0
        self.busy_seconds = 0.0

    @property
    def max_iteration_seconds(self) -> float:
        """Engine seconds one iteration lasts at most (see the module docstring)."""
        b, kv = self.max_batched_tokens, self.kv_tokens
        return self._preset.step_time(b, float(b) * kv, self.max_running, kv)

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
        self._computed.clear()

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
        progress: list[tuple[int, int]] = []  # (call, 1) per token given, when not every call got one
        #: wall time at which the iteration under way ends. Iterations are paced against it rather
        #: than by sleeping each one's length: event-loop timers have millisecond resolution (asyncio
        #: rounds up, uvloop to the nearest) while an iteration at a small time_scale lasts
        #: microseconds, so a late wake-up is made up by the next iterations (up to _MAX_LAG).
        deadline = time.perf_counter()
        while True:
            if not self._calls and not self._finished:
                decoded, progress = 0, []  # the calls they counted are gone
                self._wake.clear()
                await self._wake.wait()
                deadline = time.perf_counter()
                continue
            decision = self._scheduler.step(
                0,
                self._now(),
                self.max_running,
                self.kv_tokens,
                finished=self._finished,
                progress=progress,
                decoded=decoded,
            )
            self._finished, decoded, progress = [], 0, []
            self.preemptions += len(decision.preempted)
            self._expired(decision.expired_programs)
            running = [cid for cid in decision.running if cid in self._calls]
            self._running = set(running)
            # admitted calls start from nothing: no KV is kept across preemption
            admitted = set(decision.admitted)
            self._computed = {cid: 0 if cid in admitted else self._computed.get(cid, 0) for cid in running}
            if not running:  # nothing fits now; wait for a submit or a cancel
                self._wake.clear()
                await self._wake.wait()
                deadline = time.perf_counter()
                continue
            emit, seconds = self._plan(running)
            self.busy_seconds += seconds
            deadline = max(deadline, time.perf_counter() - _MAX_LAG) + seconds * self.time_scale
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))  # 0 still lets the handlers run
            self.iterations += 1
            given: list[int] = []
            for cid in emit:
                live = self._calls.get(cid)
                if live is None:  # cancelled during the iteration
                    continue
                live._deliver(PLACEHOLDER_TOKEN)
                given.append(cid)
                if live.generated >= live.max_tokens:
                    self._finished.append(cid)
                    del self._calls[cid]
                    self._running.discard(cid)
                    live._end(live.limit_reason)
                    self._rate.record()
            # decoded counts a token for every call the core runs (it dropped the cancelled ones)
            if len(emit) == len(running):
                decoded = 1
            else:
                progress = [(cid, 1) for cid in given]

    def _plan(self, running: list[int]) -> tuple[list[int], float]:
        """One iteration of the batch ``running`` (in the core's priority order) under the token
        budget: the calls that get a token at its end, and its engine seconds. Advances
        :attr:`_computed` and the work counters."""
        computed = self._computed
        emit: list[int] = []
        prefilling: list[tuple[int, int]] = []  # (tokens still to prefill, call)
        decode_seqs = decode_context = 0
        for cid in running:
            handle = self._calls[cid]
            context = handle.prompt_tokens + handle.generated
            if context - computed[cid] <= 1:  # in the KV but for the last token: decode it
                decode_seqs += 1
                decode_context += context
                computed[cid] = context
                emit.append(cid)
            else:
                prefilling.append((context - computed[cid], cid))
        # Prompts that complete within what is left go first, in priority order; the rest of the
        # budget goes in chunks to the others. A huge prompt takes what short ones leave instead
        # of holding them back, and calls get their first token as early as the budget allows
        # (splitting it evenly would delay every prompt of a burst, and the core may preempt a
        # call before its prefill is through: its partial prefill is lost).
        left = self.max_batched_tokens - decode_seqs
        chunks: list[tuple[int, int]] = []  # (call, tokens prefilled now)
        rest: list[tuple[int, int]] = []
        for need, cid in prefilling:
            if need <= left:
                left -= need
                chunks.append((cid, need))
                emit.append(cid)  # prefill complete: the first (or, after preemption, next) token
            else:
                rest.append((need, cid))
        for need, cid in rest:
            chunks.append((cid, min(need, left)))
            left -= chunks[-1][1]
        prefill, attention = 0, 0.0
        for cid, chunk in chunks:
            prefill += chunk
            attention += chunk * (computed[cid] + chunk / 2)  # a chunk attends to all before it
            computed[cid] += chunk
        self.prefilled_tokens += prefill
        self.prefill_attention += attention
        return emit, self._preset.step_time(prefill, attention, decode_seqs, decode_context)


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
