""":class:`UpstreamEngine`: autellix in front of one or more OpenAI-compatible servers.

autellix holds the queue. Every call is submitted to the real core (``autellix._core.Scheduler``)
with the engine id of the upstream the balancer chose for it (:func:`autellix.balancer.make_balancer`,
fed each upstream's live call count and the call's estimated prompt tokens). Whenever a call is
submitted or ends, the engine steps the core for that upstream
(``scheduler.step(upstream, now, max_inflight, kv_tokens=large, finished=..., progress=...)``) and
forwards the calls it admits, in the decision's order, while fewer than ``max_inflight`` are in
flight there. A forwarded call is a streaming (``stream: true``) request to the upstream's
``/v1/chat/completions`` or ``/v1/completions`` (with the client's body, less the autellix fields);
its token deltas are relayed into the call's :class:`CallHandle`. With ``upstream_priority`` the
call's queue level (``scheduler.call(id).level``, 0 = most urgent) goes along as vLLM's
``priority`` body field; with ``upstream_identity`` the program and thread ids go along as vLLM's
``vllm_xargs`` (``program_id``, ``thread_id``), which the autellix vLLM plug-in schedules by.
Parent ids are not forwarded: they name autellix's calls, not the upstream's requests.

An upstream call cannot be paused, so **nothing in flight is preempted**: when the core lists a
call in flight in ``preempted`` (a waiting call now ranks above it), the engine steps the core
again at the same time with twice the room, until its batch holds every call in flight again,
and hands the calls that wider step admitted past the free slots back to the core's queue
(``scheduler.preempt``, which keeps their place). So the core runs exactly the calls in flight:
each one's completion is recorded as finished (its service and critical path count, and it stays
a valid parent of later calls), and :attr:`UpstreamEngine.preemptions` counts the core's tries.

**Failures** (:mod:`.upstream_failure`) end the call with finish reason ``"error"`` and the
handle's ``error``, ``error_status``, ``error_type``, ``error_code`` and ``retry_after`` set: the
server answers that status (an upstream's 400/404/413/422/429 passed through, 502 for a 5xx or a
broken stream, 504 for a timeout, 503 ``no_upstream`` when no upstream is available) or, once a
stream has sent tokens, an error event; the core drops the call (neither finished nor a parent).
Cancelling a call cancels its forwarding task, which closes the upstream stream.

**Availability** (:mod:`.upstream_health`, :mod:`.upstream_probe`): failed calls eject an
upstream for a growing time and periodic health checks eject and restore it; the balancer only
chooses among available upstreams (a program pinned to an ejected one is re-placed), calls waiting
in an ejected upstream's queue move to an available one (and so do its calls in flight that have
delivered no token: a stopped upstream would hold them until the first-token timeout), and a call
that never reached its upstream (refused, connect timeout, connection closed before any response
byte) is **retried** on another available one, up to ``retries`` times, unseen by the client: it
leaves the core and is submitted again under the same id on the new upstream. A call that got
response bytes is never retried. With no upstream available a call fails at once with 503 and a
``Retry-After``.

**Timeouts**: ``connect_timeout`` for the TCP connect; ``first_token_timeout`` for the silence
before the first event of the stream (the upstream queues and prefills: long prompts legitimately
take a while); then ``read_timeout`` for the silence between two reads (a decode step is well under
a second, so a long silence means a stopped or wedged upstream).

The core's clock is wall seconds since :meth:`UpstreamEngine.start` (``time.perf_counter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from autellix._core import CallState, Scheduler, SchedulerConfig
from autellix.balancer import make_balancer
from autellix.exceptions import AutellixError, ConfigError, InvalidCallError, ProgramNotFoundError
from autellix.identity import FIELDS, to_xargs
from autellix.server.engines.base import CallHandle, CompletionRate, Engine, EngineStats, retry_after
from autellix.server.engines.upstream_failure import (
    UpstreamFailure,
    from_event,
    from_exception,
    from_status,
)
from autellix.server.engines.upstream_health import UpstreamHealth
from autellix.server.engines.upstream_probe import HealthProbe
from autellix.server.protocol import ChatCompletionRequest, CompletionRequest

_log = logging.getLogger(__name__)

#: KV capacity given to the core: the upstream manages its own memory.
_KV_TOKENS = 1 << 40


class UpstreamEngine(Engine):
    """Calls queued and ordered by the core, forwarded to OpenAI-compatible upstream servers."""

    def __init__(
        self,
        upstreams: Sequence[str],
        scheduler: SchedulerConfig | None = None,
        *,
        max_inflight: int = 64,
        max_queued: int = 1024,
        balancer: str = "program-aware",
        forward_priority: bool = False,
        forward_identity: bool = False,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        first_token_timeout: float = 120.0,
        read_timeout: float = 30.0,
        health_interval: float = 1.0,
        health_timeout: float = 2.0,
        retries: int = 2,
    ) -> None:
        if not upstreams:
            raise ConfigError("the openai engine needs at least one upstream URL")
        if max_inflight < 1 or max_queued < 0:
            raise ConfigError("max_inflight must be >= 1 and max_queued >= 0")
        if min(connect_timeout, first_token_timeout, read_timeout, health_timeout) <= 0:
            raise ConfigError("upstream timeouts must be > 0")
        if health_interval < 0 or retries < 0:
            raise ConfigError("the health check interval and retries must be >= 0")
        self.upstreams = [_base(url) for url in upstreams]
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self._rate = CompletionRate()
        self.forward_priority = forward_priority
        self.forward_identity = forward_identity
        self._balancer = make_balancer(balancer)
        self._scheduler = Scheduler(scheduler or SchedulerConfig())
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._connect_timeout = connect_timeout
        self._first_token_timeout = first_token_timeout
        self._read_timeout = read_timeout
        self.retries = retries
        self._health = UpstreamHealth(len(self.upstreams), check_interval=health_interval)
        self._probe = (
            HealthProbe(
                self.upstreams,
                self._checked,
                interval=health_interval,
                timeout=health_timeout,
                headers=self._headers,
            )
            if health_interval > 0
            else None
        )
        self._client: aiohttp.ClientSession | None = None
        self._calls: dict[int, CallHandle] = {}
        self._engine_of: dict[int, int] = {}
        self._bodies: dict[int, tuple[str, dict[str, Any]]] = {}
        #: each call's thread and explicit parents, to submit it again on another upstream
        self._lineage: dict[int, tuple[int, tuple[int, ...]]] = {}
        #: upstreams a retried call has failed on
        self._tried: dict[int, set[int]] = {}
        #: forwarding tasks of the calls in flight, per upstream
        self._inflight: list[dict[int, asyncio.Task[None]]] = [{} for _ in self.upstreams]
        #: live calls (queued or in flight) per upstream: the balancer's load
        self._live: list[int] = [0] * len(self.upstreams)
        self._finished: list[list[int]] = [[] for _ in self.upstreams]
        self._progress: list[dict[int, int]] = [{} for _ in self.upstreams]
        self._ids = itertools.count(1)
        self._t0 = 0.0
        self._last_gc = 0.0
        #: calls in flight the core preempted (taken back at once: they keep running upstream)
        self.preemptions = 0

    @property
    def inflight(self) -> int:
        return sum(len(tasks) for tasks in self._inflight)

    @property
    def waiting(self) -> int:
        return len(self._calls) - self.inflight

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    async def start(self) -> None:
        if self._client is None:
            self._t0 = time.perf_counter()
            slots = self.max_inflight * len(self.upstreams)
            # aiohttp rather than httpx: its C HTTP parser costs a fraction of httpx's CPU per
            # forwarded call, which is most of what autellix adds in front of an upstream.
            # sock_read covers the wait for the first event; _forward shortens it to read_timeout
            # once the stream flows
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=self._first_token_timeout
            )
            self._client = aiohttp.ClientSession(
                timeout=timeout,
                # idle connections dropped after 4 s, before uvicorn-based upstreams (vLLM, SGLang,
                # autellix) close theirs at 5 s: a call sent as the upstream closes would fail
                connector=aiohttp.TCPConnector(limit=slots, limit_per_host=0, keepalive_timeout=4.0),
                headers=self._headers,
                read_bufsize=1 << 20,  # the longest SSE line accepted
            )
            if self._probe is not None:
                self._probe.start()

    async def stop(self) -> None:
        if self._probe is not None:
            await self._probe.stop()
        tasks = [task for per in self._inflight for task in per.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for per in self._inflight:
            per.clear()
        for handle in list(self._calls.values()):
            handle._end("abort")
        self._calls.clear()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- calls ------------------------------------------------------------------------------

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
        if body is None:
            raise InvalidCallError("the openai engine forwards request bodies; none was given")
        self._check_room()
        available = self._health.mask(self._now())
        # with none available the call is entered (on upstream 0) only to fail at once: 503
        upstream = (
            self._balancer.choose(program, prompt_tokens, self._live, available) if any(available) else 0
        )
        handle = self._enter(
            program,
            prompt_tokens,
            max_tokens,
            thread=thread,
            parents=parents,
            limit_reason=limit_reason,
            engine=upstream,
        )
        call = handle.id
        self._engine_of[call] = upstream
        self._bodies[call] = _forwarded(body, self.forward_identity)
        self._lineage[call] = (thread, tuple(parents))
        self._live[upstream] += 1
        if not any(available):
            self._completed(upstream, call, "error", self._no_upstream())
            return handle
        self._pump(upstream)
        return handle

    def cancel(self, call: CallHandle) -> None:
        if call.id not in self._calls:
            return
        upstream = self._engine_of[call.id]
        self._drop(call.id, "abort")
        with contextlib.suppress(AutellixError):
            self._scheduler.abort(call.id, self._now())
        self._pump(upstream)

    def end_program(self, program: int) -> list[int]:
        try:
            aborted = self._scheduler.end_program(program, self._now())
        except AutellixError as exc:
            raise ProgramNotFoundError(str(exc)) from None
        self._balancer.forget(program)
        touched = {self._engine_of[cid] for cid in aborted if cid in self._engine_of}
        for cid in aborted:
            if cid in self._calls:
                self._drop(cid, "abort")
        for upstream in sorted(touched):
            self._pump(upstream)
        return aborted

    def stats(self) -> EngineStats:
        depths: list[int] = []
        for upstream in range(len(self.upstreams)):
            for level, depth in enumerate(self._scheduler.queue_depths(upstream)):
                if level < len(depths):
                    depths[level] += depth
                else:
                    depths.append(depth)
        return EngineStats(
            queue_depths=depths,
            running=self.inflight,
            waiting=self.waiting,
            load=self.inflight / (self.max_inflight * len(self.upstreams)),
            preemptions=self.preemptions,
            live_programs=self._scheduler.num_programs,
            upstreams_up=self._health.up(self._now()),
            upstreams_total=len(self.upstreams),
            ejections=self._health.ejections,
        )

    @property
    def healthy(self) -> bool:
        return self._health.up(self._now()) > 0

    @property
    def upstreams_available(self) -> tuple[int, int] | None:
        return self._health.up(self._now()), len(self.upstreams)

    # -- dispatch ---------------------------------------------------------------------------

    def _drop(self, call: int, reason: str, failure: UpstreamFailure | None = None) -> None:
        """Forget ``call`` locally (not in the core) and end its handle."""
        handle = self._calls.pop(call)
        upstream = self._engine_of.pop(call)
        self._bodies.pop(call, None)
        self._lineage.pop(call, None)
        self._tried.pop(call, None)
        self._live[upstream] -= 1
        self._progress[upstream].pop(call, None)
        task = self._inflight[upstream].pop(call, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # closes the upstream stream
        if failure is not None:
            handle.error = failure.message
            handle.error_status, handle.error_type = failure.status, failure.type
            handle.error_code, handle.retry_after = failure.code, failure.retry_after
        handle._end(reason)
        self._rate.record()

    def _running_in_core(self, call: int) -> bool:
        try:
            return self._scheduler.call(call).state == CallState.RUNNING
        except AutellixError:
            return False

    def _pump(self, upstream: int) -> None:
        """Step the core for ``upstream`` and forward what it admits, while slots are free."""
        now = self._now()
        finished, self._finished[upstream] = self._finished[upstream], []
        progress = [
            (cid, tokens)
            for cid, tokens in self._progress[upstream].items()
            if tokens and self._running_in_core(cid)
        ]
        self._progress[upstream] = {}
        decision = self._scheduler.step(
            upstream, now, self.max_inflight, _KV_TOKENS, finished=finished, progress=progress
        )
        self._expired(decision.expired_programs)
        tasks = self._inflight[upstream]
        # A call in flight cannot be paused: while the core preempts one, step again (same time)
        # with twice the room until its batch takes every call in flight back. The core then runs
        # exactly the calls in flight, so each one's completion is recorded with finish and it
        # stays a valid parent.
        lost = {cid for cid in decision.preempted if cid in tasks}
        self.preemptions += len(lost)
        order, room = decision.admitted, self.max_inflight
        while lost:
            room *= 2
            decision = self._scheduler.step(upstream, now, room, _KV_TOKENS)
            self._expired(decision.expired_programs)
            lost.difference_update(decision.admitted)
            lost.update(cid for cid in decision.preempted if cid in tasks)
            order = decision.running  # the whole batch, in priority order
        for cid in order:
            if cid in tasks or cid not in self._calls:
                continue
            if len(tasks) >= self.max_inflight:
                # admitted past the free slots by a wider step: back to the queue
                with contextlib.suppress(AutellixError):
                    self._scheduler.preempt(cid, now)
                continue
            level = self._scheduler.call(cid).level
            tasks[cid] = asyncio.get_running_loop().create_task(
                self._forward(upstream, self._calls[cid], level), name=f"autellix-upstream-{cid}"
            )

    def _completed(
        self, upstream: int, call: int, reason: str, failure: UpstreamFailure | None = None
    ) -> None:
        """The upstream call ended (on its own, not cancelled)."""
        if call not in self._calls:
            return
        self._drop(call, reason, failure)
        if failure is None:
            if self._running_in_core(call):  # always, while it is in the core (see _pump)
                self._finished[upstream].append(call)
        else:  # a failed call (running or waiting) is no finished call nor a parent: the core drops it
            with contextlib.suppress(AutellixError):
                self._scheduler.abort(call, self._now())
        self._pump(upstream)

    # -- failures and availability ------------------------------------------------------------

    def _no_upstream(self) -> UpstreamFailure:
        return UpstreamFailure(
            f"no upstream is available: all {len(self.upstreams)} are down or ejected",
            503,
            code="no_upstream",
            retry_after=self._health.retry_after(self._now()),
            counts=False,
        )

    def _failed(self, upstream: int, handle: CallHandle, failure: UpstreamFailure) -> None:
        """The forwarded call failed: count it against the upstream, retry it elsewhere if it
        never reached the upstream, else end it."""
        now = self._now()
        if not failure.counts:
            self._health.succeeded(upstream)  # it answered: alive
        elif self._health.failed(upstream, now):
            self._ejected(upstream)
        if failure.retryable and self._retry(upstream, handle.id, now):
            return
        if failure.status == 429 and failure.retry_after is None:
            failure.retry_after = retry_after(1, self._rate.per_second())
        self._completed(upstream, handle.id, "error", failure)

    def _retry(self, upstream: int, call: int, now: float) -> bool:
        """Move ``call``, which never reached ``upstream``, to another available upstream it has
        not failed on (at most :attr:`retries` times); whether it moved."""
        tried = self._tried.setdefault(call, set())
        tried.add(upstream)
        if len(tried) > self.retries:
            return False
        available = [ok and i not in tried for i, ok in enumerate(self._health.mask(now))]
        if not any(available):
            return False
        handle = self._calls[call]
        dest = self._balancer.choose(handle.program, handle.prompt_tokens, self._live, available)
        if not self._move(call, dest, now):
            return False
        self._pump(upstream)
        self._pump(dest)
        return True

    def _move(self, call: int, dest: int, now: float) -> bool:
        """Take ``call`` (waiting, or in flight but unanswered) off its upstream and queue it on
        ``dest`` under the same id; ``False`` if the core refused it (then it is out of the core)."""
        handle = self._calls[call]
        thread, parents = self._lineage[call]
        try:
            self._scheduler.abort(call, now)
            self._scheduler.submit(
                call,
                handle.program,
                now,
                thread=thread,
                engine=dest,
                parents=list(parents) or None,
                prompt_tokens=handle.prompt_tokens,
            )
        except AutellixError as exc:
            _log.warning("call %s could not move to upstream %s: %s", call, dest, exc)
            return False
        src = self._engine_of[call]
        task = self._inflight[src].pop(call, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._progress[src].pop(call, None)
        self._live[src] -= 1
        self._live[dest] += 1
        self._engine_of[call] = dest
        return True

    def _ejected(self, upstream: int) -> None:
        """``upstream`` is out: the calls waiting in its queue move to available upstreams (or fail
        with 503 when there is none), and so do its calls in flight that have delivered no token
        yet (a stopped upstream would hold them until the first-token timeout; the client has seen
        nothing of them, and the upstream's half-done work is abandoned)."""
        _log.warning("upstream %s (%s) ejected", upstream, self.upstreams[upstream])
        now = self._now()
        tasks = self._inflight[upstream]
        current = asyncio.current_task()
        stranded = [
            cid
            for cid, at in self._engine_of.items()
            if at == upstream
            and (cid not in tasks or (self._calls[cid].first_token_at is None and tasks[cid] is not current))
        ]
        available = self._health.mask(now)
        touched = set()
        for cid in stranded:
            handle = self._calls[cid]
            if any(available):
                dest = self._balancer.choose(handle.program, handle.prompt_tokens, self._live, available)
                if self._move(cid, dest, now):
                    touched.add(dest)
                    continue
            if cid in tasks:
                continue  # in flight: it may still finish, or time out
            self._drop(cid, "error", self._no_upstream())
            with contextlib.suppress(AutellixError):
                self._scheduler.abort(cid, now)
        for dest in sorted(touched):
            self._pump(dest)

    def _checked(self, upstream: int, ok: bool) -> None:
        """A health check's result (:class:`HealthProbe` reports it)."""
        changed = self._health.checked(upstream, ok, self._now())
        if changed is False:
            self._ejected(upstream)
        elif changed is True:
            _log.warning("upstream %s (%s) is back", upstream, self.upstreams[upstream])

    async def _forward(self, upstream: int, handle: CallHandle, level: int) -> None:
        base = self.upstreams[upstream]
        path, body = self._bodies[handle.id]
        body = dict(body, stream=True, stream_options={"include_usage": True})
        if self.forward_priority:
            body["priority"] = level
        reason = "stop"
        answered = False  # response bytes came: the call reached the upstream, no retry
        try:
            assert self._client is not None, "the engine is not started"
            async with self._client.post(base + path, json=body) as response:
                answered = True
                if response.status >= 300:
                    raise from_status(upstream, response.status, await response.read(), response.headers)
                done = first = False
                async for raw in response.content:
                    # Read past [DONE] to the end of the body: a fully read response returns its
                    # connection to the pool; leaving early would close it (a new TCP connect per call).
                    if done or not raw.startswith(b"data:"):
                        continue
                    if not first:
                        first = True
                        self._streaming(response)
                    data = raw[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    reason = self._relay(upstream, handle, json.loads(data)) or reason
        except asyncio.CancelledError:
            raise
        except UpstreamFailure as failure:
            if failure.counts:
                _log.warning("upstream %s (%s) failed: %s", upstream, base, failure)
            self._failed(upstream, handle, failure)
            return
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # The client learns which upstream and how; its address and the library's text
            # (which names host and port) go to the server's log only.
            _log.warning("upstream %s (%s) failed: %s: %s", upstream, base, type(exc).__name__, exc)
            self._failed(upstream, handle, from_exception(upstream, exc, answered))
            return
        self._health.succeeded(upstream)
        self._completed(upstream, handle.id, reason)

    def _streaming(self, response: aiohttp.ClientResponse) -> None:
        """The first event came: from now on the read timeout is the shorter between-reads one."""
        protocol = response.connection.protocol if response.connection is not None else None
        if protocol is not None:
            protocol.read_timeout = self._read_timeout
            protocol._reschedule_timeout()  # the running timer still has the first-token wait

    def _relay(self, upstream: int, handle: CallHandle, chunk: dict[str, Any]) -> str | None:
        """Deliver one streamed chunk's text; its finish reason, if any."""
        if "error" in chunk:
            raise from_event(upstream, chunk["error"])
        reason = None
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                handle._deliver(text)
                counts = self._progress[upstream]
                counts[handle.id] = counts.get(handle.id, 0) + 1
            reason = choice.get("finish_reason") or reason
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            handle.prompt_tokens = int(usage.get("prompt_tokens", handle.prompt_tokens))
            handle.generated = int(usage.get("completion_tokens", handle.generated))
        return reason

    # -- programs ---------------------------------------------------------------------------

    def _expired(self, programs: list[int]) -> None:
        for program in programs:
            self._balancer.forget(program)
        super()._expired(programs)


def _base(url: str) -> str:
    """``http://host:port`` of an upstream given with or without a trailing ``/v1``."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _forwarded(body: ChatCompletionRequest | CompletionRequest, identity: bool) -> tuple[str, dict[str, Any]]:
    """The upstream path and the body to send it: the client's, less the autellix fields (with
    ``identity``, program and thread ids move into ``vllm_xargs``; parents name autellix's calls,
    not the upstream's, and stay here)."""
    path = "/v1/chat/completions" if isinstance(body, ChatCompletionRequest) else "/v1/completions"
    data = body.model_dump(exclude_none=True, exclude=set(FIELDS))
    ids = to_xargs(body.program_id, body.thread_id)
    if identity and ids:
        xargs = data.get("vllm_xargs")
        data["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}), **ids}
    return path, data
