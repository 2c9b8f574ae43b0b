"""vLLM's CPU KV offloading under ``AutellixScheduler``: a preempted call comes back by loading its
blocks from the host tier instead of recomputing them (real ``OffloadingConnector`` scheduler
side, the harness's loop as its GPU worker)."""

from __future__ import annotations

from typing import Any

from vllm.v1.request import RequestStatus

from autellix.adapters.vllm import AutellixScheduler
from autellix.testing import vllm_harness as harness

from .conftest import Engine

#: 23 usable blocks of 16 tokens: the new call's prompt (20 blocks) evicts the preempted call's
#: blocks from the GPU prefix cache, so without offloading they are recomputed
NUM_BLOCKS = 24


def _engine(model_config: Any, offload: bool) -> Engine:
    scheduler = harness.make_scheduler(
        AutellixScheduler,
        model_config,
        num_blocks=NUM_BLOCKS,
        max_num_seqs=1,
        additional_config={"autellix": {"policy": "plas"}},
        kv_offload_bytes=(1 << 30) if offload else None,
    )
    e = Engine(scheduler, harness.EngineLoop(scheduler), tick=0.03)
    scheduler.programs.clock = lambda: e.now
    return e


def _preempt_and_resume(e: Engine) -> tuple[int, int, list[harness.KVLoad]]:
    """``old`` runs 30 steps, ``new`` (fewer services: plas runs it first) preempts it; returns
    ``old``'s computed tokens when preempted, when it resumed, and every load."""
    e.add("old", 64, 100, program="old")
    e.step(30)
    before = e.scheduler.requests["old"].num_computed_tokens
    e.add("new", 320, 4, program="new")
    loads: list[harness.KVLoad] = []
    preempted = False
    resumed_with = -1
    steps = 0
    while e.loop.busy():
        e.now += e.tick
        iteration = e.loop.step()
        steps += 1
        assert steps < 10_000, "no progress"
        if iteration is None:
            continue
        e.finished.extend(iteration.finished)
        loads += iteration.loads
        old = e.scheduler.requests.get("old")
        preempted |= old is not None and old.status == RequestStatus.PREEMPTED
        if preempted and resumed_with < 0 and iteration.completed:
            for rid, computed in _started(iteration.scheduled):
                if rid == "old":
                    resumed_with = computed
    assert preempted and before > 0 and resumed_with >= 0
    return before, resumed_with, loads


def _started(scheduled: Any) -> list[tuple[str, int]]:
    """``(request id, tokens already in KV)`` of the requests a batch (re)started."""
    cached = scheduled.scheduled_cached_reqs
    resumed = [
        (rid, n)
        for rid, n in zip(cached.req_ids, cached.num_computed_tokens, strict=True)
        if rid in cached.resumed_req_ids
    ]
    return [(new.req_id, new.num_computed_tokens) for new in scheduled.scheduled_new_reqs] + resumed


def test_preempted_call_resumes_by_loading_from_cpu(model_config: Any) -> None:
    e = _engine(model_config, offload=True)
    before, resumed_with, loads = _preempt_and_resume(e)
    assert e.finished == ["new", "old"]
    assert e.loop.tokens == {"old": 100, "new": 4}  # nothing lost, nothing extra
    old_loads = [load for load in loads if load.request_id == "old"]
    loaded = sum(load.blocks for load in old_loads) * harness.BLOCK_SIZE
    assert loaded > 0  # its KV came back from the CPU tier ...
    assert (
        resumed_with >= loaded and before - resumed_with < harness.BLOCK_SIZE
    )  # ... all but a partial block
    assert all(load.bytes == load.blocks * harness.LLAMA31_8B_KV.bytes_per_block for load in loads)
    assert harness.LLAMA31_8B_KV.bytes_per_block == 2 << 20  # Llama-3.1-8B: 2 MiB per 16 tokens
    assert e.loop.stored_blocks > 0
    assert e.free_blocks == NUM_BLOCKS - 1
    assert not e.scheduler.connector.has_pending_push_work() and not e.scheduler.requests


def test_without_offloading_the_preempted_call_recomputes(model_config: Any) -> None:
    e = _engine(model_config, offload=False)
    before, resumed_with, loads = _preempt_and_resume(e)
    assert e.scheduler.connector is None and not loads and e.loop.stored_blocks == 0
    assert e.loop.tokens == {"old": 100, "new": 4}
    assert resumed_with < before - harness.BLOCK_SIZE  # its blocks were evicted: recomputed
    assert e.free_blocks == NUM_BLOCKS - 1
