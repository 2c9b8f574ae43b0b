#!/usr/bin/env python3
"""An agent workload replayed through vLLM's real scheduler: the simulator's benefit, in vLLM?

Standalone script (not collected by pytest; needs ``pip install 'autellix[vllm]'``, no GPU)::

    python benches/bench_vllm_replay.py                  # 80 ShareGPT programs, fcfs + plas, ~1 min
    python benches/bench_vllm_replay.py --quick          # CI smoke run: 24 programs, 6 slots, < 1 min
    python benches/bench_vllm_replay.py --workload mixed --programs 16 --rate 0.5   # fcfs, plas, atlas
    python benches/bench_vllm_replay.py --max-num-seqs 256 --programs 1000 --rate 2.4   # ~5 min
    python benches/bench_vllm_replay.py --json benches/results/vllm_replay.json

Three parts, in one process (vLLM's import and model config take ~15-25 s of it; the default
run takes ~45 s on 2 cores):

**1. Replay.** One workload (``autellix.sim.workload.generate``: programs, Poisson arrivals,
seed) is served by vLLM 0.33's real scheduler and KV cache manager, driven by
``autellix.adapters.vllm_harness``: a ``VllmConfig`` of a tiny LLaMA ``config.json`` (no weights,
no GPU), the real scheduler over ``--num-blocks`` blocks of 16 tokens (default: the preset's KV
capacity, ``EnginePreset.kv_blocks``), and ``EngineLoop``, EngineCore's two-deep batch-queue loop
(``schedule(N+1)`` before ``update_from_output(N)``) whose stand-in model runner samples one token
per request per step. The GPU is replaced by the simulator's cost model on a *simulated clock*:

* each batch, when the loop takes its output, advances the clock by the preset's
  ``step_time(prefill_tokens, attention, decode_seqs, decode_context)`` computed from its
  ``SchedulerOutput`` as the simulator's engine computes it: a request with more than one token
  scheduled, or still inside its prompt (``num_computed_tokens`` before the step < prompt length),
  is prefilling ``n`` tokens on top of ``c`` already in KV (prefix-cache hits and earlier chunks
  included): ``n`` prefill tokens and ``n * (c + n / 2)`` attention pairs; every other request
  decodes one token over a context of ``c``. Batches run back to back, so the scheduler call for
  batch N+1 sees the clock at the end of batch N-1 (the start of batch N), as on a GPU;
* the replay issues each call as the spec's DAG allows in simulated time: a root at its program's
  arrival (+ its tool wait), any other call its tool wait after its last parent finished (the end
  of the batch that produced the parent's last token). Calls due by the clock are added before
  each step; an idle engine jumps the clock to the next due call;
* prompts are token ids shaped like multi-turn chat: a call's prompt is its first parent's context
  (the parent's prompt and its output tokens, cut to the spec's ``prefix_tokens``) followed by the
  call's own new input (random ids seeded by program and call), so vLLM's prefix cache reuses a
  program's history as the simulator's prefix cache does. Every request carries
  ``extra_args={"program_id", "thread_id", "parent_ids"}`` (what ``vllm_xargs`` carries in
  ``vllm serve``) and ``max_tokens`` = the call's output tokens (no EOS: every call generates
  exactly its spec's tokens, which is checked);
* the same trace runs once on vLLM's stock ``AsyncScheduler`` (FCFS: ``--scheduling-policy fcfs``,
  vLLM's default) and once per autellix policy on ``AutellixScheduler`` (``--scheduler-cls
  autellix.adapters.vllm.AutellixScheduler --additional-config '{"autellix": {"policy": ...}}'``,
  the plug-in's default settings otherwise), whose ``programs.clock`` reads the simulated clock;
  same ``num_blocks``, ``max_num_seqs``, ``max_num_batched_tokens`` (8192 by default: the
  simulator prefills a whole prompt per iteration; vLLM's own default on an A100 is 2048),
  chunked prefill and prefix caching on, async scheduling on.

A program's latency is its last call's finish minus its arrival, in simulated seconds, divided by
its output tokens (the paper's metric; mean / P50 / P99 over programs).

**2. Simulator.** ``autellix.sim.cluster.simulate`` on the same programs, configured as that
engine: one engine of the same preset, ``max_batch`` = ``max_num_seqs``, one scheduler call per
iteration (``steps_per_schedule=1``), prefix caching on, ``swap="recompute"`` (vLLM drops a
preempted request's KV and recomputes it), no scheduler CPU time per round (the replay's clock is
the cost model's ``step_time`` only), and the core configured exactly as the plug-in configures it
(``PluginSettings(...).scheduler_config()``: the core's default quanta from 25 ms, beta 8) for
every policy. Reported: per side and policy the latency per token; per side the ratio
FCFS / policy (> 1: the policy beats FCFS); and the *fraction of the simulator's improvement* that
vLLM keeps, ``(vllm_ratio - 1) / (sim_ratio - 1)`` for mean and P99. Goal: the same direction and
>= 70% (PASS / MISS; n/a where the simulator's ratio is within 5% of 1: an unsaturated engine, where
every policy gives the same latency, leaves no improvement to keep).

**3. Overhead.** vLLM's scheduler CPU time per step (``schedule()`` + ``update_from_output()``,
``EngineLoop``'s ``scheduler_seconds``) with 256 running and 10,000 waiting requests
(``--overhead-running`` / ``--overhead-waiting``): ``max_num_seqs`` = the running count, enough
blocks that nothing is preempted, 16-token prompts and long outputs so the batch stays full (no
finishes, no admissions: the steady state). The stock ``AsyncScheduler`` and ``AutellixScheduler``
(plas, one program per request) are built side by side in this process and stepped alternately,
one step each (the side going first alternating), after a warm-up; the figure is the median over
steps (and the median of the paired differences), plus the part spent in the core's step
(``programs.step``). Goal: <= 5% added. On a shared 2-core machine the step-to-step noise is
several percent: compare sides within one run. The
autellix side's clock advances 25 ms per step and its ladder's first quantum is 32 s, so no call
is demoted during the measurement: a steady step, not a preemption storm.

**4. Preempted KV: recompute vs CPU offload** (``--kv-offload GiB``, 16 by default, off with
``--quick`` or 0). vLLM drops a preempted request's KV and recomputes it when the request resumes,
unless its blocks are still in the GPU prefix cache. With vLLM's CPU KV offloading
(``OffloadingConnector``, what ``--kv-offloading-size`` turns on; here with
``offload_prompt_only=False`` so decode blocks are stored too) every filled block is also stored
to a host tier, and a resumed request loads its blocks back instead. The same trace runs three
times under autellix's plas on a tight KV cache, ``--offload-num-blocks`` (2,000 blocks = 32k
tokens by default: at the preset's 27,790 blocks a preempted call's blocks stay in the GPU prefix
cache and almost nothing is recomputed, so the sides would not differ): without the connector;
with it; and with it where only a request resuming after a preemption looks its blocks up in the
CPU tier (a new call looks its history up in the GPU prefix cache only: the part of the
difference that is the preempted requests'; the tier is also a second-level prefix cache for
every new call). The connector is vLLM's real scheduler side; the harness's loop plays its GPU
worker (stores done the next batch, loads reported done in the batch that issued them). A batch's
loads cost ``bytes / tp / pcie_bandwidth`` of the preset's hardware (the host link of the cost
model's ``swap_time``; 24.8 GB/s on an A100), added to that batch's ``step_time``: the copy runs
before the batch's forward pass and nothing overlaps it (sync-load semantics; vLLM's default
async loads overlap other requests' compute on a GPU, so the offload sides are charged an upper
bound). The KV shape is the preset's model (128 KiB per Llama-3.1-8B token). Reported per side:
per-token latency, the tokens preempted requests had in KV and how they came back (GPU prefix
hit, loaded from the CPU tier, recomputed), new calls' history loaded from the CPU tier, and the
total load time.

The default load saturates a small engine, as ``bench_serve_replay.py`` does: 80 ShareGPT
programs at 4 programs/s into 12 slots (``--max-num-seqs``). ShareGPT programs are chains, so at
most one call per live program runs: saturating 256 slots takes ~1000 programs at >= 1.2/s
(benches/RESULTS.md), i.e. ~2M generated tokens per side through vLLM's Python scheduler:
``--max-num-seqs 256 --programs 1000 --rate 2.4 --skip-overhead`` takes ~5 min on 2 cores (vLLM
1.09 mean / 1.44 P99 against the simulator's 1.10 / 1.51 when this was written). The small engine
gives the same kind of queueing, with a larger effect, in well under a minute.

What still differs between the two sides: vLLM chunks prompts longer than the token budget over
several steps and mixes prefill chunks with decodes under one budget (the simulator prefills every
admitted prompt at once); vLLM's KV is allocated in blocks with its own prefix-cache eviction
(LRU over free blocks) and a call's last output token is never cached; stock vLLM schedules FCFS
by its own queue (a preempted request goes back to the queue's front) where the simulator's FCFS
is the core's; the plug-in's core sees vLLM's events (admission, finishes) one batch late under
async scheduling.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import heapq
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from autellix._core import SchedulerConfig
from autellix.adapters.settings import PluginSettings
from autellix.sim import cost_model
from autellix.sim.config import SimConfig
from autellix.sim.spec import CallSpec, ProgramSpec
from autellix.sim.workload import WORKLOADS, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benches/_replay.py, _progress.py
from _progress import progress_bar
from _replay import (
    BASELINE,
    engine_preset,
    finite,
    policies_arg,
    policy_ratios,
    ratio,
    replay_fields,
    run_simulator,
    summary,
)

#: autellix policies the plug-in knows; ``fcfs`` is vLLM's stock scheduler
#: fraction of the simulator's improvement the replay must keep
GOAL_FRACTION = 0.70
#: a simulator ratio within this of 1 is no improvement to keep: its fraction is n/a
NO_DIFFERENCE = 0.05
#: most scheduler CPU time autellix may add per step
GOAL_OVERHEAD = 0.05
#: the autellix side of the overhead measurement: a ladder whose first quantum (32 s, the
#: simulator's ``SimConfig.quantum``) outlasts the measurement at 25 ms per step
OVERHEAD_LADDER = {"quanta": [32.0 * 2**i for i in range(7)], "boundaries": [32.0 * 2**i for i in range(6)]}
OVERHEAD_TICK_S = 0.025
#: fresh prompt token ids are drawn from [FIRST_ID, VOCAB) (the tiny model's vocabulary)
FIRST_ID, VOCAB = 8, 1000


# -- vLLM ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():  # torch and vLLM warn on import on a machine without CUDA
        warnings.simplefilter("ignore")
        yield


def _harness() -> Any:
    with _quiet():
        from autellix.adapters import vllm_harness

    return vllm_harness


def vllm_model_config(directory: Path, max_model_len: int) -> Any:
    """The harness's tiny-LLaMA ``ModelConfig``, built from inside ``directory`` (vLLM inspects
    the model in a ``python -m`` subprocess that imports from the current directory first)."""
    os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "autellix-vllm-cache"))
    here = Path.cwd()
    os.chdir(directory)
    try:
        with _quiet():
            return _harness().tiny_model_config(directory / "tiny-llama", max_model_len=max_model_len)
    finally:
        os.chdir(here)


def make_vllm_scheduler(
    model_config: Any,
    policy: str,
    *,
    num_blocks: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    settings: dict[str, Any] | None = None,
    kv_offload_bytes: int | None = None,
    kv_spec: Any = None,
) -> Any:
    """vLLM's stock ``AsyncScheduler`` for ``fcfs``, else ``AutellixScheduler`` running ``policy``;
    ``kv_offload_bytes``: with vLLM's CPU KV offloading (a host tier of that size)."""
    harness = _harness()
    with _quiet():
        from vllm.v1.core.sched.async_scheduler import AsyncScheduler

        from autellix.adapters.vllm import AutellixScheduler

    cls = AsyncScheduler if policy == BASELINE else AutellixScheduler
    with _quiet():
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


def kv_spec_of(preset: cost_model.EnginePreset) -> Any:
    """The harness's ``KVSpec`` of the preset's model (whole engine: every TP rank's heads), so the
    offloading connector's block bytes are the cost model's."""
    import torch

    m = preset.model
    dtype = {2: torch.float16, 4: torch.float32}[m.bytes_per_kv]
    return _harness().KVSpec(num_layers=m.layers, num_kv_heads=m.kv_heads, head_size=m.head_dim, dtype=dtype)


def load_seconds(preset: cost_model.EnginePreset, nbytes: int) -> float:
    """Host -> GPU copy time of ``nbytes`` of KV on the preset's engine: every TP rank copies its
    ``1/tp`` over its own host link at the cost model's pinned-memory bandwidth
    (``Hardware.pcie_bandwidth``, the same link ``EnginePreset.swap_time`` charges)."""
    return nbytes / preset.tensor_parallel / preset.hardware.pcie_bandwidth


def _count_calls(obj: Any, name: str, counter: list[int]) -> None:
    """Count the calls of ``obj.name`` (an instance attribute shadowing the method)."""
    method = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return method(*args, **kwargs)

    setattr(obj, name, counted)


def _time_calls(obj: Any, name: str, spent: list[float]) -> None:
    """Add the seconds spent in ``obj.name`` to ``spent[0]``."""
    method = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    setattr(obj, name, timed)


def batch_cost(out: Any, prompt_len: dict[str, int]) -> tuple[int, float, int, int]:
    """``(prefill_tokens, attention_pairs, decode_seqs, decode_context)`` of one ``SchedulerOutput``,
    as the simulator's engine counts them (see the module doc)."""
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
    cached = out.scheduled_cached_reqs
    resumed = sum(
        before
        for rid, before in zip(cached.req_ids, cached.num_computed_tokens, strict=True)
        if rid in cached.resumed_req_ids
    )
    return resumed + sum(r.num_computed_tokens for r in out.scheduled_new_reqs)


class Prompts:
    """Prompt token ids of a program's calls: the first parent's context (its prompt, then its
    output, which the stand-in model fills with ``TOKEN``), cut to ``prefix_tokens``, then the
    call's own new input. A call's ids are kept until its last child was built."""

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


def request_id(program: int, call: int) -> str:
    return f"p{program}-c{call}"


def replay_vllm(
    programs: Sequence[ProgramSpec],
    policy: str,
    model_config: Any,
    *,
    preset: cost_model.EnginePreset,
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
    on the simulated clock; per-program latencies and counters.

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
    harness = _harness()
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
    loop = harness.EngineLoop(scheduler)
    now = 0.0
    if policy != BASELINE:
        scheduler.programs.clock = lambda: now
    preemptions = [0]
    _count_calls(scheduler, "_preempt_request", preemptions)
    # a preempted request's KV: tokens it had computed, then how they came back when it resumed
    # (GPU prefix-cache hit, CPU load, recompute); loads for calls never preempted are their
    # history found in the CPU tier (a second-level prefix cache)
    lost: dict[str, int] = {}
    resume = {
        "preempted_tokens": 0,
        "recomputed_tokens": 0,
        "loaded_tokens": 0,
        "gpu_hit_tokens": 0,
        "prefix_loaded_tokens": 0,
    }
    loaded_since: dict[str, int] = {}  # tokens loaded for a request not yet (re)started
    load_s = 0.0
    loaded_bytes = 0
    preempt = scheduler._preempt_request

    def preempt_and_record(request: Any, *args: Any, **kwargs: Any) -> Any:
        lost[request.request_id] = request.num_computed_tokens
        resume["preempted_tokens"] += request.num_computed_tokens
        return preempt(request, *args, **kwargs)

    scheduler._preempt_request = preempt_and_record
    if load_preempted_only:
        lookup = scheduler.connector.get_num_new_matched_tokens

        def lookup_if_preempted(request: Any, *args: Any, **kwargs: Any) -> Any:
            skip = request.skip_reading_prefix_cache  # read by the connector after the GPU lookup
            request.skip_reading_prefix_cache = skip or request.num_preemptions == 0
            try:
                return lookup(request, *args, **kwargs)
            finally:
                request.skip_reading_prefix_cache = skip

        scheduler.connector.get_num_new_matched_tokens = lookup_if_preempted

    prompts = {p.id: Prompts(p, seed, harness.TOKEN) for p in programs}
    specs = {p.id: p for p in programs}
    waiting_on = {p.id: [len(c.parents) for c in p.calls] for p in programs}
    children: dict[int, list[list[int]]] = {}
    for p in programs:
        kids: list[list[int]] = [[] for _ in p.calls]
        for c in p.calls:
            for parent in c.parents:
                kids[parent].append(c.index)
        children[p.id] = kids
    calls_left = {p.id: len(p.calls) for p in programs}
    finish: dict[int, float] = {}
    prompt_len: dict[str, int] = {}
    expected: dict[str, int] = {}
    owner: dict[str, tuple[int, int]] = {}
    due: list[tuple[float, int, int, int]] = []  # (time, seq, program, call)
    seq = 0
    for p in programs:
        for c in p.calls:
            if not c.parents:
                seq += 1
                heapq.heappush(due, (p.arrival + c.tool_wait, seq, p.id, c.index))

    def submit(pid: int, index: int) -> None:
        spec = specs[pid]
        call = spec.calls[index]
        rid = request_id(pid, index)
        extra: dict[str, Any] = {"program_id": f"prog-{pid}", "thread_id": f"t{call.thread}"}
        if call.parents:
            extra["parent_ids"] = [request_id(pid, q) for q in call.parents]
        ids = prompts[pid].build(call)
        prompt_len[rid] = len(ids)
        expected[rid] = call.output_tokens
        owner[rid] = (pid, index)
        with _quiet():
            request = harness.make_request(rid, ids, call.output_tokens, extra_args=extra, arrival_time=now)
        scheduler.add_request(request)

    def finished(rid: str) -> None:
        nonlocal seq
        pid, index = owner[rid]
        spec = specs[pid]
        for child in children[pid][index]:
            waiting_on[pid][child] -= 1
            if waiting_on[pid][child] == 0:
                seq += 1
                heapq.heappush(due, (now + spec.calls[child].tool_wait, seq, pid, child))
        calls_left[pid] -= 1
        if calls_left[pid] == 0:
            finish[pid] = now
            on_program_done()

    started = time.perf_counter()
    steps = executed = idle_steps = 0
    scheduler_seconds = 0.0
    cached_tokens = 0
    while len(finish) < len(programs):
        while due and due[0][0] <= now:
            _, _, pid, index = heapq.heappop(due)
            submit(pid, index)
        if not loop.busy():
            if not due:
                raise RuntimeError(f"{policy}: idle with {len(programs) - len(finish)} programs unfinished")
            now = due[0][0]
            continue
        iteration = loop.step()
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"{policy}: no end after {max_steps} steps")
        if iteration is None:
            continue
        scheduler_seconds += iteration.scheduler_seconds
        out = iteration.scheduled
        if not iteration.completed:  # just scheduled, in flight
            continue
        # the loop took this batch's output: it ran from the previous batch's end to now
        cached_tokens += cached_at_start(out)
        for load in iteration.loads:
            loaded_since[load.request_id] = (
                loaded_since.get(load.request_id, 0) + load.blocks * harness.BLOCK_SIZE
            )
        if lost or loaded_since:
            for rid, before in _started(out):
                loaded = min(before, loaded_since.pop(rid, 0))
                if rid in lost:  # a preempted request resumes with ``before`` tokens in KV
                    resume["loaded_tokens"] += loaded
                    resume["gpu_hit_tokens"] += before - loaded
                    resume["recomputed_tokens"] += max(0, lost.pop(rid) - before)
                else:
                    resume["prefix_loaded_tokens"] += loaded
        if iteration.loads:
            copy = load_seconds(preset, iteration.loaded_bytes)
            loaded_bytes += iteration.loaded_bytes
            load_s += copy
            now += copy
        if out.total_num_scheduled_tokens:
            executed += 1
            idle_steps = 0
            now += preset.step_time(*batch_cost(out, prompt_len))
        else:
            idle_steps += 1
            if idle_steps > 64:  # requests queued, nothing runs: only a due call can change that
                if not due:
                    raise RuntimeError(f"{policy}: stalled with {len(scheduler.requests)} requests")
                now = max(now, due[0][0])
        for rid in iteration.finished:
            finished(rid)
    wall = time.perf_counter() - started
    if kv_offload_bytes is not None:
        loop.run()  # the last stores to the CPU tier (after every program finished: no clock)

    latency = [finish[p.id] - p.arrival for p in programs]
    mismatches = [r for r, n in expected.items() if loop.tokens.get(r, 0) != n]
    reasons: dict[str, int] = {}
    for reason in loop.finish_reasons.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    first = min((p.arrival for p in programs), default=0.0)
    kv: dict[str, Any] = {"num_blocks": num_blocks, "free_blocks_at_end": _free_blocks(scheduler), **resume}
    if kv_offload_bytes is not None:
        kv.update(
            offload_bytes=kv_offload_bytes,
            loaded_bytes=loaded_bytes,
            load_s=load_s,
            stored_blocks=loop.stored_blocks,
            transfers_pending=bool(scheduler.connector.has_pending_push_work() or loop.busy()),
        )
    return {
        **summary(latency, programs),
        "calls_done": len(loop.finish_reasons),
        "calls": sum(len(p.calls) for p in programs),
        "token_mismatches": len(mismatches),
        "finish_reasons": reasons,
        "preemptions": preemptions[0],
        "cached_tokens": cached_tokens,
        "steps": steps,
        "batches": executed,
        "scheduler_us_per_step": scheduler_seconds / max(1, steps) * 1e6,
        "makespan_s": max(finish.values(), default=first) - first,
        "wall_s": wall,
        "kv": kv,
    }


def _started(out: Any) -> Iterator[tuple[str, int]]:
    """``(request id, tokens already in KV)`` of the requests a ``SchedulerOutput`` (re)started."""
    for new in out.scheduled_new_reqs:
        yield new.req_id, new.num_computed_tokens
    cached = out.scheduled_cached_reqs
    for rid, before in zip(cached.req_ids, cached.num_computed_tokens, strict=True):
        if rid in cached.resumed_req_ids:
            yield rid, before


def _free_blocks(scheduler: Any) -> int:
    """Free KV blocks, the null block excluded (``num_blocks - 1`` when nothing is held)."""
    return int(scheduler.kv_cache_manager.block_pool.get_num_free_blocks())


def compare_offload(
    args: argparse.Namespace,
    programs: Sequence[ProgramSpec],
    preset: cost_model.EnginePreset,
    model_config: Any,
    progress: Any,
) -> dict[str, Any]:
    """The same replay under an autellix policy (plas if run) on a tight KV cache
    (``--offload-num-blocks``), once as vLLM runs by default (a preempted request's KV is dropped
    and recomputed, unless the GPU prefix cache still holds it) and once with vLLM's CPU KV
    offloading (``--kv-offload`` GiB: blocks are stored to the host as they fill and a preempted
    request loads them back, charged at the preset's host link bandwidth)."""
    policy = "plas" if "plas" in args.policies else args.policies[1]
    out: dict[str, Any] = {
        "policy": policy,
        "num_blocks": args.offload_num_blocks,
        "cpu_gib": args.kv_offload,
        "host_link_bytes_per_s": preset.hardware.pcie_bandwidth,
        "load_charge": "a batch's CPU -> GPU loads: bytes / tp / pcie_bandwidth, added to its step_time",
    }
    for side, gib in (("recompute", None), ("offload", args.kv_offload), ("offload_resume", args.kv_offload)):
        label = f"AutellixScheduler ({policy}) {OFFLOAD_SIDES[side]}"
        out[side] = replay_with_progress(
            args,
            programs,
            policy,
            model_config,
            preset,
            progress,
            f"replay: {label}, {args.offload_num_blocks} blocks",
            num_blocks=args.offload_num_blocks,
            kv_offload_bytes=None if gib is None else int(gib * (1 << 30)),
            load_preempted_only=side == "offload_resume",
        )
    # recompute / offload: > 1, offload is faster
    out["ratio"] = {side: ratio(out["recompute"], out[side]) for side in ("offload", "offload_resume")}
    return out


def replay_with_progress(
    args: argparse.Namespace,
    programs: Sequence[ProgramSpec],
    policy: str,
    model_config: Any,
    preset: cost_model.EnginePreset,
    progress: Any,
    label: str,
    **options: Any,
) -> dict[str, Any]:
    """:func:`replay_vllm` of ``programs`` under ``policy`` with the engine ``args`` configure
    (``options`` add to or override them), advancing a progress task ``label`` per program."""
    task = progress.add_task(label, total=len(programs))
    engine = {
        "num_blocks": args.num_blocks,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "seed": args.seed,
        "settings": args.settings,
        **options,
    }
    advance = functools.partial(progress.advance, task)
    return replay_vllm(programs, policy, model_config, preset=preset, on_program_done=advance, **engine)


#: the sides of the recompute / offload comparison
OFFLOAD_SIDES = {
    "recompute": "recompute",
    "offload": "CPU offload",
    "offload_resume": "CPU offload, resumes only",
}


# -- the simulator, configured as that engine ------------------------------------------------------


def plugin_settings(policy: str, settings: dict[str, Any] | None = None) -> PluginSettings:
    """The settings ``AutellixScheduler`` runs ``policy`` with (environment included, as the
    plug-in reads it)."""
    return PluginSettings.load({**(settings or {}), "policy": policy})


def sim_config(args: argparse.Namespace, policy: str) -> SimConfig:
    """The simulator's config for ``policy`` on the replay's engine; its core gets the plug-in's
    scheduler config (``fcfs``: the core's FCFS)."""
    core = plugin_settings(policy, args.settings).scheduler_config()

    class EngineLikeSimConfig(SimConfig):
        def scheduler_config(self) -> SchedulerConfig:
            return core

    return EngineLikeSimConfig(
        **replay_fields(args, policy),
        max_batch=args.max_num_seqs,
        prefix_caching=True,
    )


# -- overhead --------------------------------------------------------------------------------------


def measure_overhead(
    model_config: Any,
    *,
    running: int = 256,
    waiting: int = 10_000,
    steps: int = 200,
    warmup: int = 20,
    prompt: int = 16,
    max_num_batched_tokens: int = 8192,
    on_step: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Median scheduler CPU µs per step at ``running`` running / ``waiting`` waiting requests, stock
    ``AsyncScheduler`` against ``AutellixScheduler`` (plas), stepped alternately (one step each,
    the side going first alternating), so that both see the same machine load."""
    harness = _harness()
    max_tokens = warmup + steps + 64  # the running requests never finish while measured
    per_request = -(-(prompt + max_tokens) // harness.BLOCK_SIZE) + 1
    num_blocks = running * per_request + 64  # the waiting requests hold no blocks
    sides: dict[str, dict[str, Any]] = {}
    for side in ("stock", "autellix"):
        policy = BASELINE if side == "stock" else "plas"
        scheduler = make_vllm_scheduler(
            model_config,
            policy,
            num_blocks=num_blocks,
            max_num_seqs=running,
            max_num_batched_tokens=max(max_num_batched_tokens, running * prompt),
            settings=OVERHEAD_LADDER,
        )
        state = {"now": 0.0, "steps": 0}
        core_time = [0.0]
        if side == "autellix":
            scheduler.programs.clock = lambda s=state: s["now"]
            _time_calls(scheduler.programs, "step", core_time)
        preemptions = [0]
        _count_calls(scheduler, "_preempt_request", preemptions)
        with _quiet():
            for i in range(running + waiting):
                rid = f"r{i}"
                extra = {"program_id": f"prog-{i}"}
                scheduler.add_request(harness.make_request(rid, prompt, max_tokens, extra_args=extra))
        sides[side] = {
            "scheduler": scheduler,
            "loop": harness.EngineLoop(scheduler),
            "state": state,
            "core": core_time,
            "preemptions": preemptions,
            "times": [],
            "core_times": [],
        }

    def step(side: dict[str, Any], record: bool) -> None:
        state = side["state"]
        state["now"] += OVERHEAD_TICK_S
        core_before = side["core"][0]
        iteration = side["loop"].step()
        assert iteration is not None
        if record:
            side["times"].append(iteration.scheduler_seconds)
            side["core_times"].append(side["core"][0] - core_before)

    for side in sides.values():
        for _ in range(warmup):
            step(side, record=False)
    gc.collect()
    gc.freeze()  # as vLLM's EngineCore does after start-up: the requests are long-lived
    try:
        order = list(sides.values())
        for i in range(steps):
            for side in order if i % 2 == 0 else order[::-1]:
                step(side, record=True)
                on_step()
    finally:
        gc.unfreeze()
    result: dict[str, Any] = {
        "running": running,
        "waiting": waiting,
        "steps_measured": steps,
        "warmup_steps": warmup,
        "prompt_tokens": prompt,
        "num_blocks": num_blocks,
    }
    for name, side in sides.items():
        scheduler = side["scheduler"]
        times = side["times"]
        result[name] = {
            "median_us": statistics.median(times) * 1e6,
            "mean_us": statistics.fmean(times) * 1e6,
            "p90_us": float(np.percentile(times, 90)) * 1e6,
            "running_after": len(scheduler.running),
            "waiting_after": len(scheduler.waiting),
            "preemptions": side["preemptions"][0],
        }
    core = statistics.median(sides["autellix"]["core_times"]) * 1e6
    result["autellix"]["core_step_median_us"] = core
    stock, ours = result["stock"]["median_us"], result["autellix"]["median_us"]
    result["medians_difference_us"] = ours - stock
    # The verdict's figure: the median over step pairs (each autellix step against the stock step
    # run next to it), which cancels most of this shared machine's drift; the difference of the
    # two medians swings by several percent from run to run.
    pairs = zip(sides["autellix"]["times"], sides["stock"]["times"], strict=True)
    result["added_us"] = statistics.median(a - b for a, b in pairs) * 1e6
    result["added_fraction"] = result["added_us"] / stock
    result["core_step_fraction"] = core / stock
    result["pass"] = result["added_fraction"] <= GOAL_OVERHEAD
    return result


# -- figures ---------------------------------------------------------------------------------------


def _fractions(ratios: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per policy and metric: (vllm_ratio - 1) / (sim_ratio - 1) and PASS / MISS / n/a."""
    out: dict[str, dict[str, Any]] = {}
    for policy, sim in ratios["sim"].items():
        vllm = ratios["vllm"][policy]
        out[policy] = {}
        for k in ("mean", "p99"):
            gain = sim[k] - 1.0
            if not abs(gain) >= NO_DIFFERENCE:  # the simulator itself sees no difference (or NaN)
                out[policy][k] = {"fraction": None, "verdict": "n/a"}
                continue
            fraction = (vllm[k] - 1.0) / gain
            out[policy][k] = {
                "fraction": fraction,
                "verdict": "PASS" if fraction >= GOAL_FRACTION else "MISS",
            }
    return out


SIDES = {"vllm": "vLLM replay", "sim": "simulator"}


def _report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 132))
    cfg = result["config"]
    if "vllm" in result:
        table = Table(
            title=f"{cfg['programs']} {cfg['workload']} programs at {cfg['rate']:g}/s (seed {cfg['seed']}), "
            f"{cfg['preset']}, max_num_seqs {cfg['max_num_seqs']}, {cfg['num_blocks']} blocks, "
            f"max_num_batched_tokens {cfg['max_num_batched_tokens']}: latency per output token, "
            "simulated ms/token",
            title_justify="left",
        )
        for col in (
            "policy",
            "side",
            "mean",
            "P50",
            "P99",
            "done",
            "preempt",
            "cached Mtok",
            "steps",
            "makespan s",
            "wall s",
        ):
            table.add_column(col, justify="left" if col in ("policy", "side") else "right")
        for policy in cfg["policies"]:
            for side, label in SIDES.items():
                r = result[side][policy]
                d = r["per_token_s"]
                name = "fcfs (vLLM stock)" if policy == BASELINE else f"{policy} (autellix)"
                table.add_row(
                    name if side == "vllm" else "",
                    label,
                    f"{d['mean'] * 1e3:.1f}",
                    f"{d['p50'] * 1e3:.1f}",
                    f"{d['p99'] * 1e3:.1f}",
                    f"{r['programs_done']}/{cfg['programs']}",
                    str(r["preemptions"]),
                    f"{r['cached_tokens'] / 1e6:.2f}",
                    str(r["steps"]),
                    f"{r['makespan_s']:.0f}",
                    f"{r['wall_s']:.1f}",
                    end_section=side == "sim",
                )
        console.print(table)
        ratios = Table(
            title=f"{BASELINE.upper()} / policy, per-token latency (> 1: the policy beats "
            f"{BASELINE.upper()}); fraction = (vLLM ratio - 1) / (simulator ratio - 1), "
            f"goal >= {GOAL_FRACTION:.0%}",
            title_justify="left",
        )
        for col in ("policy", "side", "mean", "P50", "P99", "fraction mean", "fraction P99"):
            ratios.add_column(col, justify="left" if col in ("policy", "side") else "right")
        for policy in cfg["policies"][1:]:
            for side, label in SIDES.items():
                q = result["ratios"][side][policy]
                cells = [""] * 2
                if side == "vllm":
                    cells = [_verdict(result["fractions"][policy][k]) for k in ("mean", "p99")]
                ratios.add_row(
                    policy if side == "vllm" else "",
                    label,
                    *(f"{q[k]:.2f}" for k in ("mean", "p50", "p99")),
                    *cells,
                )
        console.print(ratios)
        for policy in cfg["policies"]:
            r = result["vllm"][policy]
            if r["token_mismatches"] or r["calls_done"] != r["calls"]:
                console.print(
                    f"[red]{policy}: {r['calls_done']}/{r['calls']} calls done, "
                    f"{r['token_mismatches']} with the wrong number of tokens[/red]"
                )
    if "offload" in result:
        o = result["offload"]
        table = Table(
            title="preempted KV: recompute (vLLM's default) vs CPU KV offload "
            f"({o['cpu_gib']:g} GiB host tier), "
            f"{o['policy']} (autellix), {o['num_blocks']} blocks; loads charged at "
            f"{o['host_link_bytes_per_s'] / 1e9:.1f} GB/s; per-token latency in simulated ms/token",
            title_justify="left",
        )
        for col in (
            "side",
            "mean",
            "P50",
            "P99",
            "done",
            "preempt",
            "lost",
            "GPU hit",
            "loaded",
            "recomp.",
            "history",
            "load s",
            "makespan s",
        ):
            table.add_column(col, justify="left" if col == "side" else "right", no_wrap=col == "side")
        for side, label in OFFLOAD_SIDES.items():
            r = o[side]
            d, kv = r["per_token_s"], r["kv"]
            table.add_row(
                label,
                f"{d['mean'] * 1e3:.1f}",
                f"{d['p50'] * 1e3:.1f}",
                f"{d['p99'] * 1e3:.1f}",
                f"{r['programs_done']}/{cfg['programs']}",
                str(r["preemptions"]),
                f"{kv['preempted_tokens'] / 1e3:.1f}",
                f"{kv['gpu_hit_tokens'] / 1e3:.1f}",
                f"{kv['loaded_tokens'] / 1e3:.1f}",
                f"{kv['recomputed_tokens'] / 1e3:.1f}",
                f"{kv['prefix_loaded_tokens'] / 1e3:.1f}",
                f"{kv.get('load_s', 0.0):.2f}",
                f"{r['makespan_s']:.0f}",
            )
        console.print(table)
        console.print(
            "lost: thousands of tokens preempted requests had in KV, back as a GPU prefix-cache hit, "
            "loaded from the CPU tier or recomputed; history: thousands of tokens of new calls' prefixes "
            "loaded from the CPU tier"
        )
        for side, q in o["ratio"].items():
            console.print(
                f"recompute / {OFFLOAD_SIDES[side]}, per-token latency (> 1: faster than recompute): "
                f"mean {q['mean']:.2f}, P50 {q['p50']:.2f}, P99 {q['p99']:.2f}"
            )
    if "overhead" in result:
        o = result["overhead"]
        table = Table(
            title="vLLM scheduler CPU time per step (schedule + update_from_output), "
            f"{o['running']} running / {o['waiting']:,} waiting, {o['steps_measured']} steps each, "
            "sides alternating step by step",
            title_justify="left",
        )
        for col in ("scheduler", "median µs", "mean µs", "P90 µs", "of which core step µs", "preempt"):
            table.add_column(col, justify="left" if col == "scheduler" else "right")
        for name, label in (("stock", "AsyncScheduler (stock)"), ("autellix", "AutellixScheduler (plas)")):
            s = o[name]
            table.add_row(
                label,
                f"{s['median_us']:.0f}",
                f"{s['mean_us']:.0f}",
                f"{s['p90_us']:.0f}",
                f"{s['core_step_median_us']:.0f}" if "core_step_median_us" in s else "",
                str(s["preemptions"]),
            )
        console.print(table)
        color = "green" if o["pass"] else "red"
        console.print(
            f"[{color}]added by autellix: {o['added_us']:+.0f} µs per step ({o['added_fraction']:+.1%}, "
            "the median of paired step differences; difference of the medians "
            f"{o['medians_difference_us']:+.0f} µs), of which the core's step "
            f"{o['autellix']['core_step_median_us']:.0f} µs ({o['core_step_fraction']:.1%}); "
            f"goal <= {GOAL_OVERHEAD:.0%}: {'PASS' if o['pass'] else 'MISS'}[/{color}]"
        )


def _verdict(cell: dict[str, Any]) -> str:
    if cell["fraction"] is None:
        return "n/a"
    color = "green" if cell["verdict"] == "PASS" else "red"
    return f"[{color}]{cell['fraction']:.0%} {cell['verdict']}[/{color}]"


# -- main ------------------------------------------------------------------------------------------


DEFAULTS = {  # name: (default, --quick)
    "programs": (80, 24),
    "max_num_seqs": (12, 6),
    "tool_wait_scale": (1.0, 0.25),
    "overhead_steps": (200, 60),
    "kv_offload": (16.0, 0.0),
}
#: KV blocks of the recompute / offload comparison by default: 32k tokens, ~7% of the A100
#: preset's capacity, so that preemption drops KV the GPU prefix cache cannot keep (at the
#: preset's 27,790 blocks a preempted call's blocks stay cached and nearly nothing is recomputed)
OFFLOAD_NUM_BLOCKS = 2000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    d = {k: f"default: {v[0]}; --quick: {v[1]}" for k, v in DEFAULTS.items()}
    p.add_argument("--workload", choices=WORKLOADS, default="sharegpt", help="default: sharegpt")
    p.add_argument("--programs", type=int, default=None, help=f"agent programs ({d['programs']})")
    p.add_argument("--rate", type=float, default=4.0, help="program arrivals per second (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: 0)")
    p.add_argument(
        "--policies",
        type=policies_arg,
        default=None,
        help="comma-separated, with fcfs (default: fcfs,plas; fcfs,plas,atlas for lats and mixed)",
    )
    p.add_argument("--preset", default="llama3.1-8b-a100", help="engine preset (default: llama3.1-8b-a100)")
    p.add_argument("--max-num-seqs", type=int, default=None, help=f"batch slots ({d['max_num_seqs']})")
    p.add_argument(
        "--num-blocks", type=int, default=None, help="KV blocks of 16 tokens (default: the preset's capacity)"
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=8192,
        help="vLLM's token budget per step (default: 8192)",
    )
    p.add_argument(
        "--tool-wait-scale",
        type=float,
        default=None,
        help=f"multiplies the workload's tool / think waits ({d['tool_wait_scale']})",
    )
    p.add_argument(
        "--overhead-steps", type=int, default=None, help=f"measured steps per side ({d['overhead_steps']})"
    )
    p.add_argument("--overhead-running", type=int, default=256, help="running requests (default: 256)")
    p.add_argument("--overhead-waiting", type=int, default=10_000, help="waiting requests (default: 10000)")
    p.add_argument(
        "--kv-offload",
        type=float,
        default=None,
        metavar="GiB",
        help="CPU KV tier of the recompute / offload comparison, 0: no comparison "
        f"(default: {DEFAULTS['kv_offload'][0]:g}; --quick: off)",
    )
    p.add_argument(
        "--offload-num-blocks",
        type=int,
        default=OFFLOAD_NUM_BLOCKS,
        help=f"KV blocks of the recompute / offload comparison (default: {OFFLOAD_NUM_BLOCKS})",
    )
    p.add_argument("--skip-replay", action="store_true", help="only the overhead measurement")
    p.add_argument("--skip-overhead", action="store_true", help="only the replay")
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 24 programs into 6 slots, 60 overhead steps, under a minute",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    for name, (full, small) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    if args.policies is None:
        args.policies = (
            [BASELINE, "plas", "atlas"] if args.workload in ("lats", "mixed") else [BASELINE, "plas"]
        )
    if args.preset not in cost_model.PRESETS:
        p.error(f"unknown preset {args.preset!r}; choose from {', '.join(cost_model.PRESETS)}")
    if args.num_blocks is None:
        args.num_blocks = cost_model.preset(args.preset).kv_blocks
    counts = ("programs", "max_num_seqs", "num_blocks", "max_num_batched_tokens", "overhead_steps")
    if min(getattr(args, n) for n in (*counts, "overhead_running")) < 1 or args.overhead_waiting < 0:
        p.error("counts must be >= 1 (--overhead-waiting >= 0)")
    if not args.rate > 0 or not args.tool_wait_scale >= 0 or args.seed < 0:
        p.error("--rate must be > 0, --tool-wait-scale and --seed >= 0")
    if not args.kv_offload >= 0 or args.offload_num_blocks < 1:
        p.error("--kv-offload must be >= 0 and --offload-num-blocks >= 1")
    if args.max_num_batched_tokens < args.max_num_seqs:
        p.error("--max-num-batched-tokens must be >= --max-num-seqs")
    args.settings = {}  # the plug-in's defaults (plus AUTELLIX_* variables, as the plug-in reads them)
    return args


def run(args: argparse.Namespace, model_config: Any = None) -> dict[str, Any]:
    """Every part the arguments ask for; ``model_config``: a harness ``ModelConfig`` to use (else
    one is made, with ``max_model_len`` covering the workload)."""

    started = time.perf_counter()
    programs = generate(
        args.workload, args.programs, args.rate, args.seed, tool_wait_scale=args.tool_wait_scale
    )
    preset = engine_preset(args.preset)
    longest = max(c.prompt_tokens + c.output_tokens for p in programs for c in p.calls)
    result: dict[str, Any] = {
        "config": {
            "workload": args.workload,
            "programs": args.programs,
            "rate": args.rate,
            "seed": args.seed,
            "policies": args.policies,
            "preset": args.preset,
            "max_num_seqs": args.max_num_seqs,
            "num_blocks": args.num_blocks,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "tool_wait_scale": args.tool_wait_scale,
            "quick": args.quick,
            "kv_offload_gib": args.kv_offload,
            "offload_num_blocks": args.offload_num_blocks,
            "autellix_settings": {p: asdict(plugin_settings(p, args.settings)) for p in args.policies[1:]},
            "sim_config": {
                **{k: v for k, v in sim_config(args, BASELINE).as_dict().items() if k != "scheduler"},
                "scheduler_config": "the plug-in's (PluginSettings.scheduler_config())",
                "schedule_time": 0.0,
            },
        },
        "workload": {
            "calls": sum(len(p.calls) for p in programs),
            "prompt_tokens": sum(c.prompt_tokens for p in programs for c in p.calls),
            "output_tokens": sum(p.output_tokens for p in programs),
            "last_arrival_s": max(p.arrival for p in programs),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "units": "simulated seconds; per_token_s = a program's latency / its output tokens",
    }
    with contextlib.ExitStack() as stack:
        if model_config is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="autellix-vllm-")))
            t = time.perf_counter()
            model_config = vllm_model_config(directory, max_model_len=max(40_960, longest + 16))
            result["config"]["vllm_setup_s"] = time.perf_counter() - t
        with _quiet():
            import vllm

        result["machine"]["vllm"] = vllm.__version__
        progress = stack.enter_context(progress_bar(args.no_progress))
        if not args.skip_replay:
            sim = {policy: run_simulator(sim_config(args, policy), programs) for policy in args.policies}
            replayed: dict[str, dict[str, Any]] = {}
            for policy in args.policies:
                label = (
                    "vLLM AsyncScheduler (fcfs)" if policy == BASELINE else f"AutellixScheduler ({policy})"
                )
                replayed[policy] = replay_with_progress(
                    args, programs, policy, model_config, preset, progress, f"replay: {label}"
                )
            result["vllm"] = replayed
            result["sim"] = sim
            ratios = {side: policy_ratios(result[side]) for side in SIDES}
            result["ratios"] = ratios
            result["fractions"] = _fractions(ratios)
            result["agreement"] = all(
                (ratios["vllm"][p][k] - 1) * (ratios["sim"][p][k] - 1) > 0
                for p in ratios["sim"]
                for k in ("mean", "p99")
            )
            result["pass"] = all(
                cell["verdict"] != "MISS" for cells in result["fractions"].values() for cell in cells.values()
            )
            if args.kv_offload > 0:
                result["offload"] = compare_offload(args, programs, preset, model_config, progress)
        if not args.skip_overhead:
            warmup = 20 if not args.quick else 10
            task = progress.add_task(
                f"overhead: {args.overhead_running} running / {args.overhead_waiting:,} waiting",
                total=2 * args.overhead_steps,
            )
            result["overhead"] = measure_overhead(
                model_config,
                running=args.overhead_running,
                waiting=args.overhead_waiting,
                steps=args.overhead_steps,
                warmup=warmup,
                max_num_batched_tokens=args.max_num_batched_tokens,
                on_step=lambda: progress.advance(task),
            )
    result["wall_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None, model_config: Any = None) -> dict[str, Any]:
    """Run the benchmark, print its tables; returns the result (what ``--json`` writes)."""
    args = parse_args(argv)
    result = run(args, model_config)
    _report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(finite(result), indent=2, allow_nan=False) + "\n")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
