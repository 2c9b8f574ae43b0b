"""An agent workload replayed through vLLM's real scheduler on the cost model's simulated clock.

Used by ``benches/bench_vllm_replay.py`` and its tests. :func:`replay_vllm` serves the programs of
``autellix.sim.workload.generate`` with vLLM 0.33's scheduler (the stock ``AsyncScheduler`` for
``fcfs``, else ``AutellixScheduler``) driven by :class:`~autellix.testing.vllm_harness.EngineLoop`:

* each batch, when the loop takes its output, advances the clock by the preset's ``step_time``
  of the batch as the simulator's engine counts it (:func:`batch_cost`), plus the copy time of
  the CPU -> GPU loads it carries (:func:`load_seconds`) when vLLM's CPU KV offloading is on;
* a call is issued as its program's DAG allows in simulated time (:class:`CallGraph`): a root at
  its program's arrival (+ its tool wait), any other call its tool wait after its last parent
  finished. Calls due by the clock are added before each step; an idle engine jumps the clock to
  the next due call;
* prompts continue their first parent's context (:class:`Prompts`), so vLLM's prefix cache reuses
  a program's history (how much of it a call found cached: :class:`HistoryHits`); requests carry
  the ``program_id`` / ``thread_id`` / ``parent_ids`` extra args ``vllm serve`` passes the
  plug-in, and ``max_tokens`` = the call's output tokens; when a program's last call finished,
  the plug-in hears the program's finish hint.

Importing this module imports vLLM (through the harness).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from autellix.sim.cost_model import EnginePreset
from autellix.sim.spec import CallSpec, ProgramSpec
from autellix.testing import quiet
from autellix.testing import vllm_harness as harness

#: the policy name that means vLLM's stock scheduler (``AsyncScheduler``, FCFS by its own queue)
STOCK = "fcfs"
#: fresh prompt token ids are drawn from [FIRST_ID, VOCAB) (the tiny model's vocabulary)
FIRST_ID, VOCAB = 8, 1000
#: steps in a row with nothing scheduled after which the clock jumps to the next due call
IDLE_STEPS = 64


def make_vllm_scheduler(
    model_config: Any,
    policy: str,
    *,
    num_blocks: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    settings: dict[str, Any] | None = None,
    kv_offload_bytes: int | None = None,
    kv_spec: harness.KVSpec | None = None,
) -> Any:
    """vLLM's stock ``AsyncScheduler`` for ``fcfs``, else ``AutellixScheduler`` running ``policy``
    (``settings``: the plug-in's other settings); ``kv_offload_bytes``: with vLLM's CPU KV
    offloading (a host tier of that size)."""
    with quiet():
        from vllm.v1.core.sched.async_scheduler import AsyncScheduler

        from autellix.adapters.vllm import AutellixScheduler

    cls = AsyncScheduler if policy == STOCK else AutellixScheduler
    with quiet():
        return harness.make_scheduler(
            cls,
            model_config,
            num_blocks=num_blocks,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            additional_config={"autellix": {**(settings or {}), "policy": policy}},
            kv_offload_bytes=kv_offload_bytes,
            kv_spec=kv_spec,
        )


def kv_spec_of(preset: EnginePreset) -> harness.KVSpec:
    """The harness's ``KVSpec`` of the preset's model (whole engine: every TP rank's heads), so the
    offloading connector's block bytes are the cost model's."""
    import torch

    m = preset.model
    dtype = {2: torch.float16, 4: torch.float32}[m.bytes_per_kv]
    return harness.KVSpec(num_layers=m.layers, num_kv_heads=m.kv_heads, head_size=m.head_dim, dtype=dtype)


def load_seconds(preset: EnginePreset, nbytes: int) -> float:
    """Host -> GPU copy time of ``nbytes`` of KV on the preset's engine: every TP rank copies its
    ``1/tp`` over its own host link at the cost model's pinned-memory bandwidth
    (``Hardware.pcie_bandwidth``, the same link ``EnginePreset.swap_time`` charges)."""
    return nbytes / preset.tensor_parallel / preset.hardware.pcie_bandwidth


def count_calls(obj: Any, name: str, counter: list[int]) -> None:
    """Count the calls of ``obj.name`` in ``counter[0]`` (an instance attribute shadowing the method)."""
    method = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return method(*args, **kwargs)

    setattr(obj, name, counted)


def batch_cost(out: Any, prompt_len: dict[str, int]) -> tuple[int, float, int, int]:
    """``(prefill_tokens, attention_pairs, decode_seqs, decode_context)`` of one ``SchedulerOutput``,
    as the simulator's engine counts them: a request with more than one token scheduled, or still
    inside its prompt (``num_computed_tokens`` before the step < prompt length), prefills ``n``
    tokens on top of ``c`` already in KV (prefix-cache hits and earlier chunks included): ``n``
    prefill tokens and ``n * (c + n / 2)`` attention pairs; every other request decodes one token
    over a context of ``c``."""
    scheduled = out.num_scheduled_tokens
    prefill = decode = context = 0
    attention = 0.0

    def add(rid: str, before: int) -> None:
        nonlocal prefill, decode, context, attention
        n = scheduled[rid]
        if n > 1 or before < prompt_len[rid]:
            prefill += n
            attention += n * (before + n / 2)
        else:
            decode += 1
            context += before

    for new in out.scheduled_new_reqs:
        add(new.req_id, new.num_computed_tokens)
    cached = out.scheduled_cached_reqs
    for rid, before in zip(cached.req_ids, cached.num_computed_tokens, strict=True):
        add(rid, before)
    return prefill, attention, decode, context


def cached_at_start(out: Any) -> int:
    """Tokens already in KV when a ``SchedulerOutput`` (re)started its requests: prefix-cache hits."""
    return sum(before for _, before in started_requests(out))


def started_requests(out: Any) -> Iterator[tuple[str, int]]:
    """``(request id, tokens already in KV)`` of the requests a ``SchedulerOutput`` (re)started."""
    for new in out.scheduled_new_reqs:
        yield new.req_id, new.num_computed_tokens
    cached = out.scheduled_cached_reqs
    for rid, before in zip(cached.req_ids, cached.num_computed_tokens, strict=True):
        if rid in cached.resumed_req_ids:
            yield rid, before


def free_blocks(scheduler: Any) -> int:
    """Free KV blocks, the null block excluded (``num_blocks - 1`` when nothing is held)."""
    return int(scheduler.kv_cache_manager.block_pool.get_num_free_blocks())


def request_id(program: int, call: int) -> str:
    return f"p{program}-c{call}"


class Prompts:
    """Prompt token ids of a program's calls: the first parent's context (its prompt, then its
    output, which the stand-in model fills with ``TOKEN``), cut to ``prefix_tokens``, then the
    call's own new input (random ids seeded by program and call). A call's ids are kept until its
    last child was built."""

    def __init__(self, spec: ProgramSpec, seed: int, token: int) -> None:
        self.spec = spec
        self.seed = seed
        self.token = token
        self._ids: dict[int, list[int]] = {}
        self._children_left = [0] * len(spec.calls)
        for call in spec.calls:
            if call.parents and call.prefix_tokens:
                self._children_left[call.parents[0]] += 1

    def build(self, call: CallSpec) -> list[int]:
        ids: list[int] = []
        if call.parents and call.prefix_tokens:
            first = call.parents[0]
            parent = self._ids[first]
            ids = parent[: call.prefix_tokens]
            if len(ids) < call.prefix_tokens:  # the parent's output
                ids += [self.token] * min(call.prefix_tokens - len(ids), self.spec.calls[first].output_tokens)
            self._children_left[first] -= 1
            if self._children_left[first] == 0:
                del self._ids[first]
        fresh = call.prompt_tokens - len(ids)
        rng = np.random.default_rng([self.seed, self.spec.id, call.index])
        ids += rng.integers(FIRST_ID, VOCAB, size=fresh).tolist()
        if self._children_left[call.index]:
            self._ids[call.index] = ids
        return ids


class CallGraph:
    """The programs' calls in simulated time: which are due when, and which wait on parents."""

    def __init__(self, programs: Sequence[ProgramSpec]) -> None:
        self.specs = {p.id: p for p in programs}
        self._waiting_on = {p.id: [len(c.parents) for c in p.calls] for p in programs}
        self._children: dict[int, list[list[int]]] = {}
        for p in programs:
            kids: list[list[int]] = [[] for _ in p.calls]
            for c in p.calls:
                for parent in c.parents:
                    kids[parent].append(c.index)
            self._children[p.id] = kids
        self._calls_left = {p.id: len(p.calls) for p in programs}
        #: program id -> when its last call finished
        self.finish: dict[int, float] = {}
        self._due: list[tuple[float, int, int, int]] = []  # (time, seq, program, call)
        self._seq = 0
        for p in programs:
            for c in p.calls:
                if not c.parents:
                    self._push(p.arrival + c.tool_wait, p.id, c.index)

    def _push(self, at: float, program: int, call: int) -> None:
        self._seq += 1
        heapq.heappush(self._due, (at, self._seq, program, call))

    def next_due(self) -> float | None:
        """When the next call not yet issued is due (``None``: none is waiting for its time)."""
        return self._due[0][0] if self._due else None

    def pop_due(self, now: float) -> Iterator[tuple[int, int]]:
        """``(program, call)`` of every call due by ``now``, in order."""
        while self._due and self._due[0][0] <= now:
            _, _, pid, index = heapq.heappop(self._due)
            yield pid, index

    def finished(self, program: int, call: int, now: float) -> bool:
        """Record a call's finish at ``now``: its children's tool waits start once their last
        parent is done. True if that was its program's last call."""
        spec = self.specs[program]
        waiting = self._waiting_on[program]
        for child in self._children[program][call]:
            waiting[child] -= 1
            if waiting[child] == 0:
                self._push(now + spec.calls[child].tool_wait, program, child)
        self._calls_left[program] -= 1
        if self._calls_left[program]:
            return False
        self.finish[program] = now
        return True


class HistoryHits:
    """How much of each call's shared history (its spec's ``prefix_tokens``: the first parent's
    context) vLLM's prefix cache held when the call first started: the tokens already in KV at its
    first schedule (``num_computed_tokens`` of ``scheduled_new_reqs``), capped at its history.
    ``attainable`` is the most vLLM can hit: whole blocks only, and never a context's last token
    (a call's last output token is never fed back, so it has no KV) nor a prompt's last."""

    def __init__(self) -> None:
        self.reusable = self.attainable = self.hit = 0
        self._pending: dict[str, int] = {}  # request id -> history tokens, until its first start

    def issued(self, rid: str, call: CallSpec, spec: ProgramSpec, prompt_len: int) -> None:
        if not (call.parents and call.prefix_tokens):
            return
        parent = spec.calls[call.parents[0]]
        reachable = min(call.prefix_tokens, parent.prompt_tokens + parent.output_tokens - 1, prompt_len - 1)
        self.reusable += call.prefix_tokens
        self.attainable += reachable // harness.BLOCK_SIZE * harness.BLOCK_SIZE
        self._pending[rid] = call.prefix_tokens

    def started(self, out: Any) -> None:
        if not self._pending:
            return
        for rid, before in started_requests(out):
            history = self._pending.pop(rid, None)
            if history is not None:
                self.hit += min(before, history)

    def result(self) -> dict[str, Any]:
        return {
            "reusable_tokens": self.reusable,
            "attainable_tokens": self.attainable,
            "hit_tokens": self.hit,
            "reprefilled_tokens": self.reusable - self.hit,
            "hit_share": self.hit / self.reusable if self.reusable else float("nan"),
        }


class KVLedger:
    """A preempted request's KV: the tokens it had computed, then how they came back when it
    resumed (GPU prefix-cache hit, CPU load, recompute); loads for calls never preempted are their
    history found in the CPU tier (a second-level prefix cache)."""

    def __init__(self) -> None:
        self.lost: dict[str, int] = {}
        self.resume = {
            "preempted_tokens": 0,
            "recomputed_tokens": 0,
            "loaded_tokens": 0,
            "gpu_hit_tokens": 0,
            "prefix_loaded_tokens": 0,
        }
        self._loaded_since: dict[str, int] = {}  # tokens loaded for a request not yet (re)started
        self.load_s = 0.0
        self.loaded_bytes = 0

    def preempted(self, request: Any) -> None:
        self.lost[request.request_id] = request.num_computed_tokens
        self.resume["preempted_tokens"] += request.num_computed_tokens

    def batch_done(self, iteration: harness.Iteration, preset: EnginePreset) -> float:
        """Account a completed batch's loads and (re)started requests; the loads' copy seconds."""
        for load in iteration.loads:
            self._loaded_since[load.request_id] = (
                self._loaded_since.get(load.request_id, 0) + load.blocks * harness.BLOCK_SIZE
            )
        if self.lost or self._loaded_since:
            for rid, before in started_requests(iteration.scheduled):
                loaded = min(before, self._loaded_since.pop(rid, 0))
                if rid in self.lost:  # a preempted request resumes with ``before`` tokens in KV
                    self.resume["loaded_tokens"] += loaded
                    self.resume["gpu_hit_tokens"] += before - loaded
                    self.resume["recomputed_tokens"] += max(0, self.lost.pop(rid) - before)
                else:
                    self.resume["prefix_loaded_tokens"] += loaded
        if not iteration.loads:
            return 0.0
        copy = load_seconds(preset, iteration.loaded_bytes)
        self.loaded_bytes += iteration.loaded_bytes
        self.load_s += copy
        return copy


class Replay:
    """One replay of ``programs`` through a vLLM scheduler (see :func:`replay_vllm`)."""

    def __init__(
        self,
        programs: Sequence[ProgramSpec],
        policy: str,
        scheduler: Any,
        *,
        preset: EnginePreset,
        seed: int = 0,
        on_program_done: Callable[[], None] = lambda: None,
        max_steps: int = 5_000_000,
    ) -> None:
        self.programs = programs
        self.policy = policy
        self.scheduler = scheduler
        self.preset = preset
        self.on_program_done = on_program_done
        self.max_steps = max_steps
        self.loop = harness.EngineLoop(scheduler)
        self.now = 0.0  # the simulated clock
        if policy != STOCK:
            scheduler.programs.clock = lambda: self.now
        self.preemptions = [0]
        count_calls(scheduler, "_preempt_request", self.preemptions)
        self.kv = KVLedger()
        self.history = HistoryHits()
        preempt = scheduler._preempt_request

        def preempt_and_record(request: Any, *args: Any, **kwargs: Any) -> Any:
            self.kv.preempted(request)
            return preempt(request, *args, **kwargs)

        scheduler._preempt_request = preempt_and_record
        self.calls = CallGraph(programs)
        self.prompts = {p.id: Prompts(p, seed, harness.TOKEN) for p in programs}
        self.prompt_len: dict[str, int] = {}
        self.expected: dict[str, int] = {}  # request id -> output tokens of its call
        self._owner: dict[str, tuple[int, int]] = {}
        self.steps = self.batches = self._idle_steps = 0
        self.scheduler_seconds = 0.0
        self.cached_tokens = 0

    def run(self) -> None:
        """Step until every program finished."""
        while len(self.calls.finish) < len(self.programs):
            self.admit_due()
            if not self.loop.busy():
                due = self.calls.next_due()
                if due is None:
                    unfinished = len(self.programs) - len(self.calls.finish)
                    raise RuntimeError(f"{self.policy}: idle with {unfinished} programs unfinished")
                self.now = due
                continue
            self.step()

    def admit_due(self) -> None:
        """Add every call due by the clock to the scheduler."""
        for pid, index in self.calls.pop_due(self.now):
            self.submit(pid, index)

    def submit(self, pid: int, index: int) -> None:
        call = self.calls.specs[pid].calls[index]
        rid = request_id(pid, index)
        extra: dict[str, Any] = {"program_id": f"prog-{pid}", "thread_id": f"t{call.thread}"}
        if len(self.calls.specs[pid].calls) == 1:
            extra["last_call"] = True  # a one-call program's client knows (a plain chat request)
        if call.parents:
            extra["parent_ids"] = [request_id(pid, q) for q in call.parents]
        ids = self.prompts[pid].build(call)
        self.prompt_len[rid] = len(ids)
        self.history.issued(rid, call, self.calls.specs[pid], len(ids))
        self.expected[rid] = call.output_tokens
        self._owner[rid] = (pid, index)
        with quiet():
            request = harness.make_request(
                rid, ids, call.output_tokens, extra_args=extra, arrival_time=self.now
            )
        self.scheduler.add_request(request)

    def step(self) -> None:
        """One loop step; a batch whose output it took advances the clock."""
        iteration = self.loop.step()
        self.steps += 1
        if self.steps > self.max_steps:
            raise RuntimeError(f"{self.policy}: no end after {self.max_steps} steps")
        if iteration is None:
            return
        self.scheduler_seconds += iteration.scheduler_seconds
        if iteration.completed:  # else just scheduled, in flight
            self.batch_done(iteration)

    def batch_done(self, iteration: harness.Iteration) -> None:
        """The loop took this batch's output: it ran from the previous batch's end to now."""
        out = iteration.scheduled
        self.cached_tokens += cached_at_start(out)
        self.history.started(out)
        self.now += self.kv.batch_done(iteration, self.preset)
        if out.total_num_scheduled_tokens:
            self.batches += 1
            self._idle_steps = 0
            self.now += self.preset.step_time(*batch_cost(out, self.prompt_len))
        else:
            self._idle_steps += 1
            # requests queued, nothing runs: only a due call can change that
            if self._idle_steps > IDLE_STEPS:
                due = self.calls.next_due()
                if due is None:
                    raise RuntimeError(f"{self.policy}: stalled with {len(self.scheduler.requests)} requests")
                self.now = max(self.now, due)
        for rid in iteration.finished:
            pid, index = self._owner[rid]
            if self.calls.finished(pid, index, self.now):
                self.program_done(pid)

    def program_done(self, pid: int) -> None:
        """Its last call finished: the plug-in hears the finish hint (``POST /v1/programs/{id}/finish``
        of ``autellix serve``), as the simulator's core ends a program with its last call, so its
        retained KV is freed now rather than at ``program_ttl``."""
        finish = getattr(self.scheduler, "finish_program", None)
        if finish is not None:
            finish(f"prog-{pid}")
        self.on_program_done()

    def result(self, wall: float, num_blocks: int, kv_offload_bytes: int | None) -> dict[str, Any]:
        """The counters of a finished replay that ran ``wall`` seconds."""
        finish = self.calls.finish
        loop = self.loop
        mismatches = [r for r, n in self.expected.items() if loop.tokens.get(r, 0) != n]
        reasons: dict[str, int] = {}
        for reason in loop.finish_reasons.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        first = min((p.arrival for p in self.programs), default=0.0)
        kv: dict[str, Any] = {
            "num_blocks": num_blocks,
            "free_blocks_at_end": free_blocks(self.scheduler),
            **self.kv.resume,
        }
        if kv_offload_bytes is not None:
            kv.update(
                offload_bytes=kv_offload_bytes,
                loaded_bytes=self.kv.loaded_bytes,
                load_s=self.kv.load_s,
                stored_blocks=loop.stored_blocks,
                transfers_pending=bool(self.scheduler.connector.has_pending_push_work() or loop.busy()),
            )
        stats = getattr(self.scheduler, "autellix_stats", None)  # the plug-in's KV counters, if any
        plugin = {"plugin_stats": stats()} if callable(stats) else {}
        return {
            "calls_done": len(loop.finish_reasons),
            "calls": sum(len(p.calls) for p in self.programs),
            "token_mismatches": len(mismatches),
            "finish_reasons": reasons,
            "preemptions": self.preemptions[0],
            "cached_tokens": self.cached_tokens,
            "steps": self.steps,
            "batches": self.batches,
            "scheduler_us_per_step": self.scheduler_seconds / max(1, self.steps) * 1e6,
            "makespan_s": max(finish.values(), default=first) - first,
            "wall_s": wall,
            "kv": kv,
            "history": self.history.result(),
            **plugin,
        }


def _look_up_cpu_tier_on_resume_only(scheduler: Any) -> None:
    """Only a request resuming after a preemption looks its blocks up in the CPU tier."""
    lookup = scheduler.connector.get_num_new_matched_tokens

    def lookup_if_preempted(request: Any, *args: Any, **kwargs: Any) -> Any:
        skip = request.skip_reading_prefix_cache  # read by the connector after the GPU lookup
        request.skip_reading_prefix_cache = skip or request.num_preemptions == 0
        try:
            return lookup(request, *args, **kwargs)
        finally:
            request.skip_reading_prefix_cache = skip

    scheduler.connector.get_num_new_matched_tokens = lookup_if_preempted


def replay_vllm(
    programs: Sequence[ProgramSpec],
    policy: str,
    model_config: Any,
    *,
    preset: EnginePreset,
    num_blocks: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    on_program_done: Callable[[], None] = lambda: None,
    max_steps: int = 5_000_000,
    kv_offload_bytes: int | None = None,
    load_preempted_only: bool = False,
) -> dict[str, Any]:
    """Serve ``programs`` with vLLM's scheduler (stock for ``fcfs``, else ``AutellixScheduler``)
    on the simulated clock until every program finished: ``program_latency_s`` (per program,
    simulated seconds from its arrival to its last call's finish) and counters.

    ``kv_offload_bytes``: with vLLM's CPU KV offloading (``OffloadingConnector``, a host tier of
    that many bytes; the harness's loop plays its GPU worker): a preempted request's blocks that
    were stored to the host come back by a CPU -> GPU load instead of a recompute. A batch that
    carries loads takes its ``step_time`` plus their copy time (:func:`load_seconds`): the worker
    submits a batch's loads before its forward pass, and the copy is charged as if the batch
    waited for it (vLLM's async loads overlap other requests' compute on a GPU: an upper bound).
    ``load_preempted_only``: only a request resuming after a preemption looks its blocks up in the
    CPU tier (a new call's history is looked up in the GPU prefix cache only), to tell the two
    uses of the tier apart.
    """
    scheduler = make_vllm_scheduler(
        model_config,
        policy,
        num_blocks=num_blocks,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        settings=settings,
        kv_offload_bytes=kv_offload_bytes,
        kv_spec=kv_spec_of(preset) if kv_offload_bytes is not None else None,
    )
    if load_preempted_only:
        _look_up_cpu_tier_on_resume_only(scheduler)
    replay = Replay(
        programs,
        policy,
        scheduler,
        preset=preset,
        seed=seed,
        on_program_done=on_program_done,
        max_steps=max_steps,
    )
    started = time.perf_counter()
    replay.run()
    wall = time.perf_counter() - started
    if kv_offload_bytes is not None:
        replay.loop.run()  # the last stores to the CPU tier (after every program finished: no clock)
    finish = replay.calls.finish
    latency = [finish[p.id] - p.arrival for p in programs]
    return {"program_latency_s": latency, **replay.result(wall, num_blocks, kv_offload_bytes)}
