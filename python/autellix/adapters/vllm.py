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
  preempts a running request for a waiting one.
* **Accounting.** Each request is a call in the core (:class:`autellix.adapters.tracker.ProgramTracker`):
  steps charge service to the running calls, vLLM's own preemptions, finishes and aborts are
  reported, and calls without a program end their one-call program.

All of this runs in vLLM's EngineCore process; this module imports vLLM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import Request, RequestStatus

import vllm
from autellix._core import __version__
from autellix.adapters.settings import PluginSettings
from autellix.adapters.tracker import ProgramTracker, call_identity

log = logging.getLogger("autellix.adapters.vllm")

SUPPORTED_VLLM = "0.33."


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
        usable = num_blocks - 1 - getattr(self.kv_cache_manager, "watermark_blocks", 0)
        self._kv_tokens = max(0, usable) * self.block_size
        self._decoded = 0
        if not vllm.__version__.startswith(SUPPORTED_VLLM):
            log.warning(
                "autellix %s supports vLLM %sx, found %s", __version__, SUPPORTED_VLLM, vllm.__version__
            )
        log.info(
            "autellix %s scheduler on vLLM %s: policy %s, %d slots, %d KV tokens",
            __version__,
            vllm.__version__,
            self.autellix_settings.policy,
            self.max_num_running_reqs,
            self._kv_tokens,
        )

    # -- requests in and out ------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:  # an existing id is a streaming-input update
            extra = request.sampling_params.extra_args if request.sampling_params is not None else None
            external = getattr(request, "external_req_id", None)
            self.programs.submit(
                request.request_id,
                call_identity(extra, request.session_id),
                request.num_prompt_tokens,
                aliases=(external,) if external and external != request.request_id else (),
            )
        super().add_request(request)

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        aborted = request.status in (RequestStatus.FINISHED_ABORTED, RequestStatus.FINISHED_ERROR)
        self.programs.ended(request.request_id, aborted=aborted)
        return super()._free_request(request, *args, **kwargs)

    def _preempt_request(self, request: Request, timestamp: float, *args: Any, **kwargs: Any) -> None:
        # before vLLM requeues it, so that the queue files it as held, not ready
        self.programs.preempted(request.request_id)
        super()._preempt_request(request, timestamp, *args, **kwargs)

    # -- the step -----------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        decision = self.programs.step(self.max_num_running_reqs, self._kv_tokens, decoded=self._decoded)
        self._decoded = 0
        if decision.preempted:
            self._apply_preemptions(decision.preempted)
        for call in decision.admitted:
            request = self._request(call)
            if request is not None:
                self.waiting.admit(request)
        return super().schedule(*args, **kwargs)

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        if scheduler_output.total_num_scheduled_tokens:
            self._decoded += self.num_sampled_tokens_per_step
        return outputs

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
