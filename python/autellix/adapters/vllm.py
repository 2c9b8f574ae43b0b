"""``AutellixScheduler``: program-aware scheduling inside vLLM 0.33, as a scheduler plug-in.

::

    pip install 'autellix[vllm]'
    vllm serve MODEL --scheduler-cls autellix.adapters.vllm.AutellixScheduler \\
        --additional-config '{"autellix": {"policy": "plas"}}'

Clients name each call's program in ``vllm_xargs`` (``{"program_id": "agent-7", "thread_id":
"critic", "parent_ids": "chatcmpl-..."}``; with the official client: ``extra_body={"vllm_xargs":
{...}}``), or with vLLM's ``session_id``; a call without either is a program of its own. Policy
settings: :mod:`autellix.adapters.settings` (``--additional-config`` or ``AUTELLIX_*`` variables).

How it works. ``AutellixScheduler`` subclasses vLLM's ``AsyncScheduler`` (a ``Scheduler``
subclass would lose async scheduling's output placeholders) and changes three things:

* **Admission order.** Its waiting queue, :class:`ProgramOrderedQueue`, hands vLLM only the
  requests the core has admitted, in the core's order; the others are held back. vLLM's own
  waiting loop then allocates KV for them and stops at the first one that does not fit, as the
  paper's Algorithm 1 does.
* **Preemption.** Before vLLM schedules, the core steps (``max_num_seqs`` slots, the KV cache's
  tokens); a running request the core preempts for a better-queued one is preempted in vLLM
  (recompute; restored from host memory instead when vLLM's KV offloading is on). vLLM alone never
  preempts a running request for a waiting one. The core counts each call's whole context; a
  prompt prefix that running requests share in vLLM's cache is given back to its budget
  (:mod:`autellix.adapters.shared_prefix`), so sibling calls of a tree search are not preempted
  for memory vLLM has.
* **Accounting.** Each request is a call in the core (:class:`autellix.adapters.tracker.ProgramTracker`):
  steps charge service to the running calls, vLLM's own preemptions, finishes and aborts are
  reported, and calls without a program end their one-call program.

With ``kv_policy`` ``autellix`` (:mod:`autellix.adapters.settings`), the core's KV planner also
runs here:

* **Retention** (:class:`autellix.adapters.kv_retention.RetainedContexts`). A finished call of a
  program that will call again keeps its full KV blocks referenced, so vLLM's LRU cannot evict
  them and the next call hits them. The holds are soft: every allocation vLLM makes goes through
  ``kv_cache_manager.allocate_slots``, which this scheduler wraps while it holds any context;
  when it fails, the planner gives back the contexts needed last and the allocation is retried,
  so a hold never makes an allocation fail or a running request be preempted where vLLM alone
  would have found the blocks (nor keeps a queued call from starting when nothing runs).
  A program's contexts go when it ends (``last_call`` hint, :meth:`AutellixScheduler.finish_program`,
  the core's program TTL, or with the call of a program-less request).
* **Host tier** (:mod:`autellix.adapters.kv_host`), with vLLM's CPU offloading connector on: the
  planner offloads to host memory rather than dropping (the connector has written every block
  through already, so an offload gives the GPU references back), and a host context due soon is
  loaded back before its call by a load-only *prefetch request* (never a reclaim for it, at most
  :data:`_MAX_PREFETCHES` in flight, invisible to the core, the request counts and the metrics);
  the connector's host cache evicts by the planner's view
  (:class:`~autellix.adapters.kv_host.AutellixCachePolicy`).
* **Admission** (``kv_admission``, on by default). A new program waits (its requests stay in
  vLLM's waiting queue, invisible to its scan) while the live programs' working sets and the
  running requests exceed the KV cache (and host tier), in arrival order and never longer than
  ``starvation_beta`` x the mean service of ended programs; and only while the cache holds at
  least four typical working sets (with fewer, a deferred program would wait for whole
  programs to end: every program is admitted). A program of one call (no program id, or
  ``last_call`` on its first call) is never deferred: it leaves no context to protect.
* **Metrics.** ``autellix:*`` (:mod:`autellix.adapters.kv_metrics`) and
  :meth:`AutellixScheduler.autellix_stats`.

All of this runs in vLLM's EngineCore process; this module imports vLLM.
"""

from __future__ import annotations

import logging
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.kv_cache_utils import get_block_hash
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec, UniformTypeKVCacheSpecs
from vllm.v1.request import Request, RequestStatus

import vllm
from autellix._core import KvPlanner, __version__
from autellix.adapters.control import ControlListener, listen_path
from autellix.adapters.kv_metrics import KvMetrics, exporter
from autellix.adapters.kv_retention import RetainedContexts
from autellix.adapters.settings import PluginSettings
from autellix.adapters.shared_prefix import SharedPrefixes
from autellix.adapters.tracker import CallHints, ProgramTracker, call_hints, call_identity
from autellix.identity import CallIdentity

log = logging.getLogger("autellix.adapters.vllm")

SUPPORTED_VLLM = "0.33."

#: finishes after which a call's KV is worth keeping for its program's next call
_COMPLETED = (
    RequestStatus.FINISHED_STOPPED,
    RequestStatus.FINISHED_LENGTH_CAPPED,
    RequestStatus.FINISHED_REPETITION,
)
#: KV specs retention supports: full attention, whose hit is a plain prefix of hashed blocks
#: allocated only through ``allocate_slots`` (not Mamba, sliding-window or other layouts)
_FULL_ATTENTION = (FullAttentionSpec, MLAAttentionSpec)
#: seconds between two updates of the ``autellix:*`` metrics (or log lines without them)
_METRICS_EVERY = 1.0
_LOG_EVERY = 60.0
#: host tier: prefetch requests in flight at most, and blocks a step's prefetches may load
_MAX_PREFETCHES = 2
_PREFETCH_BLOCKS = 1024
#: ids of the plug-in's prefetch requests (the frontend's ids are ``cmpl-``/``chatcmpl-`` ...)
_PREFETCH_ID = "autellix-prefetch-"


@dataclass(frozen=True)
class _Recipe:
    """What a load-only request for a context needs: its tokens (every full block of its chain)
    and what its block hashes are salted with."""

    tokens: array[int]
    block_hasher: Any
    lora_request: Any
    cache_salt: str | None


class ProgramOrderedQueue(RequestQueue):
    """vLLM's waiting queue, in the core's order: *ready* requests (admitted by the core, not yet
    started by vLLM) first, in admission order; *held* requests (waiting in the core) are invisible
    to vLLM's scan (``bool(queue)`` is about ready ones only) but count in ``len`` and iteration."""

    def __init__(self, admitted: Callable[[Request], bool]) -> None:
        self._admitted = admitted
        # dicts: O(1) removal by id, insertion order kept; ``ready`` is at most max_num_seqs long
        self._ready: dict[str, Request] = {}
        self._held: dict[str, Request] = {}

    # -- moves made by the scheduler ---------------------------------------------------------

    def admit(self, request: Request) -> None:
        if self._held.pop(request.request_id, None) is not None:
            self._ready[request.request_id] = request

    def hold(self, request: Request) -> None:
        if self._ready.pop(request.request_id, None) is not None:
            self._held[request.request_id] = request

    def last(self, request: Request) -> None:
        """Ready, after every other ready request (the plug-in's prefetch requests)."""
        if self._held.pop(request.request_id, None) is not None:
            self._ready[request.request_id] = request

    # -- RequestQueue -------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        self._held[request.request_id] = request

    def pop_request(self) -> Request:
        request = self.peek_request()
        del self._ready[request.request_id]
        return request

    def peek_request(self) -> Request:
        try:
            return next(iter(self._ready.values()))
        except StopIteration:
            raise IndexError("no admitted request is waiting") from None

    def prepend_request(self, request: Request) -> None:
        if self._admitted(request):
            self._ready = {request.request_id: request, **self._ready}
        else:
            self._held[request.request_id] = request

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:  # like deque.extendleft, which vLLM's callers expect
            self.prepend_request(request)

    def remove_request(self, request: Request) -> None:
        if self._ready.pop(request.request_id, None) is None:
            self._held.pop(request.request_id, None)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self.remove_request(request)

    def __bool__(self) -> bool:
        return bool(self._ready)

    def __len__(self) -> int:
        return len(self._ready) + len(self._held)

    def __iter__(self) -> Iterator[Request]:
        yield from list(self._ready.values())
        yield from list(self._held.values())

    @property
    def ready(self) -> int:
        return len(self._ready)


class AutellixScheduler(AsyncScheduler):
    """vLLM's ``AsyncScheduler`` with admission and preemption decided by the autellix core."""

    running: list[Request]  # vLLM's (typed here: vLLM itself is not analysed by mypy)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("vllm_config", args[0] if args else None)
        extra = getattr(config, "additional_config", None)
        own = extra.get("autellix") if isinstance(extra, dict) else None
        if PluginSettings.load(own if isinstance(own, dict) else None).kv_policy == "autellix":
            from autellix.adapters import kv_host  # imports vLLM's offloading modules

            kv_host.configure(config)  # before vLLM builds the connector
        super().__init__(*args, **kwargs)
        extra = getattr(self.vllm_config, "additional_config", None)
        own = extra.get("autellix") if isinstance(extra, dict) else None
        self.autellix_settings = PluginSettings.load(own)
        self.programs = ProgramTracker(self.autellix_settings)
        self.waiting: ProgramOrderedQueue = ProgramOrderedQueue(
            lambda request: self.programs.is_running(request.request_id)
        )
        num_blocks = self.kv_cache_config.num_blocks
        # the null block never holds KV; the watermark is kept free by vLLM
        usable = max(0, num_blocks - 1 - getattr(self.kv_cache_manager, "watermark_blocks", 0))
        self._kv_tokens = usable * self.block_size
        #: prompt tokens running requests share in vLLM's cache, which the core counts per call
        self._shared = SharedPrefixes(self.block_size)
        self._decoded = 0
        #: the KV planner's contexts (kv_policy autellix), and new programs it has not admitted:
        #: core id -> their requests in arrival order, with what submitting them needs
        self.kv: RetainedContexts | None = None
        self._deferred: dict[int, list[tuple[Request, CallIdentity, CallHints, tuple[str, ...]]]] = {}
        self._deferred_since: dict[int, float] = {}
        self._parked: dict[str, int] = {}
        #: request id -> its ``tool_seconds`` hint, until it finishes
        self._tool_seconds: dict[str, float] = {}
        self._metrics: KvMetrics | None = None
        self._reported = -float("inf")
        #: host tier: prefetch request id -> the request and the contexts it loads (root first)
        self._prefetches: dict[str, tuple[Request, list[int]]] = {}
        self._prefetch_counts = {"requests": 0, "loaded": 0, "cached": 0, "withdrawn": 0}
        #: vLLM's ``allocate_slots`` and the plug-in's wrapper of it (kv_policy autellix)
        self._allocate_slots: tuple[Callable[..., Any], Callable[..., Any]] | None = None
        self.control: ControlListener | None = None
        if self.autellix_settings.control:
            self._listen(self.autellix_settings.control)
        if self.autellix_settings.kv_policy == "autellix":
            self._start_planner(usable)
        if not vllm.__version__.startswith(SUPPORTED_VLLM):
            log.warning(
                "autellix %s supports vLLM %sx, found %s", __version__, SUPPORTED_VLLM, vllm.__version__
            )
        log.info(
            "autellix %s scheduler on vLLM %s: policy %s, kv policy %s, %d slots, %d KV tokens",
            __version__,
            vllm.__version__,
            self.autellix_settings.policy,
            self.autellix_settings.kv_policy if self.kv is not None else "lru",
            self.max_num_running_reqs,
            self._kv_tokens,
        )

    def _start_planner(self, usable: int) -> None:
        manager = self.kv_cache_manager
        why_not = None
        if not getattr(manager, "enable_caching", False):
            why_not = "prefix caching is off (--enable-prefix-caching)"
        else:
            specs = [group.kv_cache_spec for group in self.kv_cache_config.kv_cache_groups]
            odd = [type(spec).__name__ for spec in specs if not _full_attention(spec)]
            if odd or not specs:
                why_not = f"KV cache specs {odd} are not full attention"
        if why_not is not None:
            log.warning("autellix kv_policy autellix is off: %s; vLLM's prefix cache alone is used", why_not)
            return
        beta = self.autellix_settings.starvation_beta
        host = None
        if self.connector is not None:
            from autellix.adapters import kv_host

            host = kv_host.make_host_tier(self)
        host_blocks = 0
        if host is not None:
            from autellix.adapters.kv_host import planner_host_blocks

            host_blocks = planner_host_blocks(self)
        planner = KvPlanner(
            host_blocks=host_blocks,
            # as the simulator: both tiers hold working sets; None admits every program at once
            admission_blocks=usable + host_blocks if self.autellix_settings.kv_admission else None,
            **({} if beta is None else {"deferral_beta": beta}),
        )
        self.kv = RetainedContexts(
            manager.block_pool,
            planner,
            _prefix_key,
            host=host if host_blocks else None,
            lookup=host.cached_block if host is not None else None,
        )
        self.programs.on_program_end = self._program_ended
        allocate = manager.allocate_slots
        retry = self._allocate_failed

        def allocate_slots(
            request: Request,
            num_new_tokens: int,
            num_new_computed_tokens: int = 0,
            new_computed_blocks: Any = None,
            num_lookahead_tokens: int = 0,
            **kwargs: Any,
        ) -> Any:
            # Runs for every running request every step: the normal path is vLLM's own call
            # and one test (vLLM 0.33's leading parameters spelled out: no packing of the
            # running path's keywords); all the plug-in's work is on the failure path.
            blocks = allocate(
                request,
                num_new_tokens,
                num_new_computed_tokens,
                new_computed_blocks,
                num_lookahead_tokens,
                **kwargs,
            )
            if blocks is None:
                args = (num_new_computed_tokens, new_computed_blocks)
                kwargs["num_lookahead_tokens"] = num_lookahead_tokens
                return retry(allocate, request, num_new_tokens, args, kwargs)
            return blocks

        # Installed only while contexts are held (:meth:`schedule`): with none, a failed
        # allocation has nothing to reclaim, and vLLM's own method costs nothing extra.
        self._allocate_slots = (allocate, allocate_slots)
        record = manager.record_prefix_cache_stats

        def record_prefix_cache_stats(request: Request, num_hits: int) -> None:
            if request.request_id not in self._prefetches:  # vLLM's hit rate is about real calls
                record(request, num_hits)

        manager.record_prefix_cache_stats = record_prefix_cache_stats
        config = self.vllm_config
        name = getattr(config.model_config, "served_model_name", None) or config.model_config.model
        rank = getattr(config.parallel_config, "data_parallel_rank", 0)
        self._metrics = exporter({"model_name": str(name), "engine": str(rank)})

    def _listen(self, path: str) -> None:
        rank = int(getattr(self.vllm_config.parallel_config, "data_parallel_rank", 0) or 0)
        try:
            self.control = ControlListener(listen_path(path, rank))
        except OSError as exc:  # the hints are an optimisation: serve without them
            log.warning("autellix control channel %s not opened (%s): programs end by TTL", path, exc)

    def _apply_control(self) -> None:
        assert self.control is not None
        for message in self.control.drain():
            if not self.finish_program(message.program, message.tenant):
                log.debug("autellix control: no live program %r to finish", message.program)

    def shutdown(self, *args: Any, **kwargs: Any) -> Any:
        if self.control is not None:
            self.control.close()
        return super().shutdown(*args, **kwargs)

    # -- requests in and out ------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:  # an existing id is a streaming-input update
            extra = request.sampling_params.extra_args if request.sampling_params is not None else None
            external = getattr(request, "external_req_id", None)
            aliases = (external,) if external and external != request.request_id else ()
            identity = call_identity(extra, request.session_id)
            hints = call_hints(extra)
            program, new = self.programs.resolve(identity)
            # a program of one call (no program id, or last_call on its first) leaves no context
            # behind to protect: admission never defers it
            one_call = identity.program is None or hints.last_call
            if self.kv is not None and (
                program in self._deferred or (new and not one_call and not self._admit(program))
            ):
                self._deferred.setdefault(program, []).append((request, identity, hints, aliases))
                self._deferred_since.setdefault(program, self.programs.now())
                self._parked[request.request_id] = program
            else:
                self._submit(request, identity, hints, aliases, program)
        super().add_request(request)

    def _submit(
        self,
        request: Request,
        identity: CallIdentity,
        hints: CallHints,
        aliases: tuple[str, ...],
        program: int,
    ) -> None:
        self.programs.submit(
            request.request_id, identity, request.num_prompt_tokens, aliases, program=program, hints=hints
        )
        if self.kv is not None:
            if hints.tool_seconds is not None:
                self._tool_seconds[request.request_id] = hints.tool_seconds
            # Arrived: its program's context is in use from now on (while it queues too).
            self._acquire(request)

    def finish_program(self, name: str, tenant: str = "") -> bool:
        """The finish hint (``POST /v1/programs/{id}/finish``): ``tenant``'s program ``name`` makes
        no more calls. It ends now, or when its live requests finish; its retained contexts are
        freed then. ``False`` if no such program is live."""
        return self.programs.finish_program(name, tenant) is not None

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        if self._prefetches.pop(request.request_id, None) is not None:
            return super()._free_request(request, *args, **kwargs)  # the plug-in's own: no call
        aborted = request.status in (RequestStatus.FINISHED_ABORTED, RequestStatus.FINISHED_ERROR)
        self._shared.stopped(request.request_id)
        if self.kv is not None:
            self._kv_finished(request)
        self.programs.ended(request.request_id, aborted=aborted)
        return super()._free_request(request, *args, **kwargs)

    def _preempt_request(self, request: Request, timestamp: float, *args: Any, **kwargs: Any) -> None:
        # before vLLM requeues it, so that the queue files it as held, not ready
        self.programs.preempted(request.request_id)
        self._shared.stopped(request.request_id)
        if self.kv is not None:
            self.kv.release(request.request_id, self.programs.now())
        super()._preempt_request(request, timestamp, *args, **kwargs)

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> Any:
        # vLLM refuses to reset while any block is referenced: the holds go first
        if self.kv is not None:
            self.kv.drop_all(self.programs.now())
        return super().reset_prefix_cache(*args, **kwargs)

    # -- the step -----------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        if self.control is not None:
            self._apply_control()
        if self._deferred:
            self._admit_deferred()
        decision = self.programs.step(
            self.max_num_running_reqs, self._kv_tokens + self._shared.total, decoded=self._decoded
        )
        self._decoded = 0
        if decision.preempted:
            self._apply_preemptions(decision.preempted)
        for call in decision.admitted:
            request = self._request(call)
            if request is not None:
                self.waiting.admit(request)
                if self.kv is not None:  # (re)admitted after a preemption: its context is in use again
                    self._acquire(request)
        if self.kv is not None:
            assert self._allocate_slots is not None
            self.kv_cache_manager.allocate_slots = self._allocate_slots[1 if len(self.kv) else 0]
            if self.kv.host is not None:
                self._prefetch()
        output = super().schedule(*args, **kwargs)
        kv = self.kv
        hits = []
        for new in output.scheduled_new_reqs:
            if new.req_id in self._prefetches:
                continue
            if kv is not None and kv.acquired(new.req_id) is None:  # gave its context up while queued
                request = self.requests.get(new.req_id)
                if request is not None:
                    self._acquire(request)
            if new.num_computed_tokens:
                blocks = self.kv_cache_manager.get_blocks(new.req_id).blocks[0]
                hits.append((new.req_id, blocks, new.num_computed_tokens))
                if kv is not None and kv.acquired(new.req_id) is not None:
                    kv.hit(new.num_computed_tokens)
        if hits:
            self._shared.started(hits, _no_holds if kv is None else kv.holds)
        return output

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        if scheduler_output.total_num_scheduled_tokens:
            self._decoded += self.num_sampled_tokens_per_step
        if self._prefetches:
            self._settle_prefetches()
        if self.kv is not None:
            self._report()
        return outputs

    def get_request_counts(self) -> tuple[int, int]:
        # prefetch requests are the plug-in's: not the engine's work (has_requests, metrics); a
        # load in flight keeps the engine stepping through the connector's pending jobs
        running, waiting = super().get_request_counts()
        return running, waiting - len(self._prefetches)

    def _apply_preemptions(self, calls: list[int]) -> None:
        victims = []
        for call in calls:
            request = self._request(call)
            if request is None:
                continue
            if request.status == RequestStatus.RUNNING:
                victims.append(request)
            else:  # admitted by the core but not started by vLLM yet
                self.waiting.hold(request)
        if not victims:
            return
        gone = {id(r) for r in victims}
        self.running[:] = [r for r in self.running if id(r) not in gone]
        now = time.monotonic()
        for request in victims:
            # Drop the output still in flight for it (async scheduling): otherwise a call whose
            # last token is in flight would finish while preempted, which the core can only count
            # as an abort (and a later call could not name it as a parent). Costs one token's recompute.
            self._preempt_request(request, now, drop_stale_output=True)

    def _request(self, call: int) -> Request | None:
        request_id = self.programs.request_id(call)
        return self.requests.get(request_id) if request_id is not None else None

    # -- the KV planner (kv_policy autellix) --------------------------------------------------

    def _allocate_failed(
        self,
        allocate: Callable[..., Any],
        request: Request,
        num_new_tokens: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """vLLM's ``allocate_slots`` found too few free blocks: retained contexts are given back
        (the planner picks them) and it is tried again. A failed attempt changes nothing in
        vLLM, so retrying is safe, and it re-counts everything (watermark, reserved blocks, hits
        that lost their last reference)."""
        kv = self.kv
        assert kv is not None
        if request.request_id in self._prefetches or not len(kv):  # a prefetch never reclaims
            return None
        if request.status != RequestStatus.RUNNING and request.num_computed_tokens == 0:
            self._acquire(request)  # the context it hits must not be the one given back
        blocks = None
        now = self.programs.now()
        running = request.status == RequestStatus.RUNNING
        manager = self.kv_cache_manager
        lookahead = int(kwargs.get("num_lookahead_tokens", 0) or 0)
        watermark = 0 if running else int(getattr(manager, "watermark_blocks", 0))
        groups = len(self.kv_cache_config.kv_cache_groups)
        # A first guess of the shortfall (hits, chunking and spec tokens change the real one):
        # what the new tokens take, less what is free; then one more context at a time.
        wanted = -(-(num_new_tokens + lookahead) // self.block_size) * groups + watermark
        wanted += int(kwargs.get("reserved_blocks", 0) or 0)
        while blocks is None:
            need = max(1, wanted - int(manager.block_pool.get_num_free_blocks()))
            if not kv.reclaim(need, now):
                # A running request comes before the contexts queued calls wait for: they go
                # too; so does the first queued one when nothing runs (else none ever starts).
                if running and kv.release_queued(self._queued, now):
                    continue
                if not running and not self.running and kv.release_queued(self._queued_other(request), now):
                    continue
                break
            blocks = allocate(request, num_new_tokens, *args, **kwargs)
        return blocks

    def _queued(self, request_id: str) -> bool:
        request = self.requests.get(request_id)
        return request is None or request.status != RequestStatus.RUNNING

    def _queued_other(self, request: Request) -> Callable[[str], bool]:
        return lambda request_id: request_id != request.request_id and self._queued(request_id)

    def _acquire(self, request: Request) -> None:
        kv = self.kv
        if kv is None or kv.acquired(request.request_id) is not None:
            return
        live = self.programs.live_call(request.request_id)
        if live is None:
            return
        context = kv.find(live.program, request.block_hashes)
        if context is not None:
            kv.acquire(request.request_id, context, self.programs.now())

    def _kv_finished(self, request: Request) -> None:
        kv = self.kv
        assert kv is not None
        request_id = request.request_id
        now = self.programs.now()
        kv.release(request_id, now)
        tool_seconds = self._tool_seconds.pop(request_id, None)
        program = self._parked.pop(request_id, None)
        if program is not None:  # aborted before its program was admitted
            self._unpark(program, request_id)
            return
        live = self.programs.live_call(request_id)
        if live is not None and request.status in _COMPLETED and self.programs.keeps_context(request_id):
            blocks = self.kv_cache_manager.get_blocks(request_id).blocks
            payload = self._recipe(request, blocks) if kv.host is not None else None
            kv.retain(live.program, live.thread, blocks, now, gap_prior=tool_seconds, payload=payload)

    # -- the host tier: prefetch requests -----------------------------------------------------

    def _recipe(self, request: Request, blocks: Any) -> _Recipe | None:
        if request.mm_features or not blocks:
            return None  # multimodal hashes cannot be rebuilt from tokens: loaded on arrival
        full = sum(1 for b in blocks[0] if b.block_hash is not None and not b.is_null)
        tokens = array("l", request.all_token_ids[: full * self.block_size])
        return _Recipe(tokens, request._block_hasher, request.lora_request, request.cache_salt)

    def _prefetch(self) -> None:
        """Load host contexts due soon back before their calls arrive, where they fit: the
        free blocks less the watermark and a block of growth per running request."""
        kv = self.kv
        assert kv is not None and kv.host is not None
        if len(self._prefetches) >= _MAX_PREFETCHES:
            return
        if len(self.running) + self.waiting.ready >= self.max_num_running_reqs:
            return  # vLLM's waiting scan would stop before reaching it
        manager = self.kv_cache_manager
        lookahead = -(-int(getattr(self, "num_lookahead_tokens", 0) or 0) // self.block_size)
        free = int(manager.block_pool.get_num_free_blocks()) - int(getattr(manager, "watermark_blocks", 0))
        free -= len(self.running) * (1 + lookahead)
        if free <= 0:
            return
        loaded = kv.prefetch(self.programs.now(), free, _PREFETCH_BLOCKS)
        if not loaded:
            return
        # one request per chain: the deepest context loads its ancestors with it
        ancestors: set[int] = set()
        for context in loaded:
            parent = kv.parent(context)
            while parent is not None:
                ancestors.add(parent)
                parent = kv.parent(parent)
        for context in loaded:
            if context in ancestors:
                continue
            chain = [c for c in reversed(self._chain(context)) if c in loaded or kv.tier(c) == "gpu"]
            if all(kv.rehydrate(c) for c in chain):
                self._prefetch_counts["cached"] += 1  # still in the GPU prefix cache: no copy
                continue
            recipe = kv.payload(context)
            if recipe is None or len(self._prefetches) >= _MAX_PREFETCHES:
                continue  # its call loads it on arrival
            if not kv.host.loadable([k for c in chain for k in kv.host_keys(c)]):
                continue
            self._issue_prefetch(recipe, chain)

    def _chain(self, context: int) -> list[int]:
        assert self.kv is not None
        chain = []
        at: int | None = context
        while at is not None:
            chain.append(at)
            at = self.kv.parent(at)
        return chain

    def _issue_prefetch(self, recipe: _Recipe, chain: list[int]) -> None:
        # One token past the context: every full block of it is then a possible hit (vLLM hits
        # at most all but the last prompt token). It is never computed: vLLM loads it
        # asynchronously, and the plug-in withdraws it when the load is done.
        from vllm.sampling_params import SamplingParams

        request = Request(
            request_id=f"{_PREFETCH_ID}{uuid.uuid4().hex}",
            prompt_token_ids=[*recipe.tokens, 0],
            sampling_params=SamplingParams(max_tokens=1),
            pooling_params=None,
            arrival_time=time.time(),
            lora_request=recipe.lora_request,
            cache_salt=recipe.cache_salt,
            block_hasher=recipe.block_hasher,
        )
        self._prefetches[request.request_id] = (request, chain)
        AsyncScheduler.add_request(self, request)  # not ours: the core never sees it
        self.waiting.last(request)  # after every admitted call: it never stands in a call's way
        self._prefetch_counts["requests"] += 1

    def _settle_prefetches(self) -> None:
        """After a step: prefetch requests whose load is done give their blocks to their
        contexts; those vLLM did not start (no room this step) are withdrawn."""
        kv = self.kv
        assert kv is not None
        for request_id, (request, chain) in list(self._prefetches.items()):
            if request.status == RequestStatus.WAITING_FOR_REMOTE_KVS:
                if request_id not in self.finished_recving_kv_req_ids:
                    continue  # loading
                self.kv_cache_manager.cache_blocks(request, request.num_computed_tokens)
                for context in chain:
                    kv.rehydrate(context)
                self._prefetch_counts["loaded"] += 1
            else:
                self._prefetch_counts["withdrawn"] += 1
            self.finish_requests(request_id, RequestStatus.FINISHED_ABORTED)

    def _program_ended(self, program: int, service: float) -> None:
        if self.kv is not None:
            self.kv.end_program(program, service)

    def _running_blocks(self) -> int:
        """Blocks of running (and preempted-with-KV) requests: used blocks less the held ones,
        which the planner counts in its working sets."""
        assert self.kv is not None
        pool = self.kv_cache_manager.block_pool
        used = int(self.kv_cache_config.num_blocks) - 1 - int(pool.get_num_free_blocks())
        return max(0, used - self.kv.planner.gpu_blocks)

    def _admit(self, program: int) -> bool:
        assert self.kv is not None
        return self.kv.planner.admit(program, self.programs.now(), self._running_blocks())

    def _admit_deferred(self) -> None:
        assert self.kv is not None
        now = self.programs.now()
        for program in self.kv.planner.admissions(now, self._running_blocks()):
            parked = self._deferred.pop(program, [])
            since = self._deferred_since.pop(program, now)
            if self._metrics is not None:
                self._metrics.deferred(now - since)
            for request, identity, hints, aliases in parked:
                self._parked.pop(request.request_id, None)
                self._submit(request, identity, hints, aliases, program)

    def _unpark(self, program: int, request_id: str) -> None:
        parked = self._deferred.get(program, [])
        parked[:] = [p for p in parked if p[0].request_id != request_id]
        if parked:
            return
        # Its every request is gone before it started: it leaves the admission queue.
        self._deferred.pop(program, None)
        self._deferred_since.pop(program, None)
        if self.kv is not None:
            self.kv.end_program(program, 0.0)
        self.programs.drop_program(program)

    def autellix_stats(self) -> dict[str, float]:
        """The KV planner's numbers (empty with kv_policy lru): retained contexts and blocks,
        hits on them, blocks given back by why, deferred programs and requests, admission."""
        if self.kv is None:
            return {}
        stats = self.kv.stats()
        admission = self.kv.planner.admission_stats(self.programs.now())
        stats["deferred_programs"] = len(self._deferred)
        stats["deferred_requests"] = len(self._parked)
        stats["programs_deferred_total"] = admission["deferred"]
        stats["longest_deferral_seconds"] = admission["longest_deferral"]
        stats["deferral_bound_seconds"] = admission["bound"]
        if self.kv.host is not None:
            counts = self._prefetch_counts
            stats["kv_prefetch_requests_total"] = counts["requests"]
            stats["kv_prefetch_loads_total"] = counts["loaded"]
            stats["kv_prefetch_cached_total"] = counts["cached"]
            stats["kv_prefetch_withdrawn_total"] = counts["withdrawn"]
            stats["kv_prefetch_in_flight"] = len(self._prefetches)
        return stats

    def _report(self) -> None:
        now = self.programs.now()
        every = _METRICS_EVERY if self._metrics is not None else _LOG_EVERY
        if now - self._reported < every:
            return
        self._reported = now
        stats = self.autellix_stats()
        if self._metrics is not None:
            self._metrics.update(stats)
        elif stats.get("kv_retained_contexts_total"):
            log.info("autellix kv: %s", ", ".join(f"{k} {v:g}" for k, v in sorted(stats.items())))


def _no_holds(block_id: int) -> int:
    return 0


def _prefix_key(block: Any) -> Any:
    """A block's prefix-cache hash without its KV group (as ``Request.block_hashes`` has it)."""
    key = block.block_hash
    return None if key is None else get_block_hash(key)


def _full_attention(spec: Any) -> bool:
    if isinstance(spec, UniformTypeKVCacheSpecs):
        return bool(spec.kv_cache_specs) and all(map(_full_attention, spec.kv_cache_specs.values()))
    return type(spec) in _FULL_ATTENTION
