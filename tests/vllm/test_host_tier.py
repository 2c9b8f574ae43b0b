"""The KV planner's host tier inside ``AutellixScheduler`` (``kv_policy`` ``autellix`` with vLLM's
CPU offloading connector): offload, prefetch and the host cache's eviction order, on the real
vLLM 0.33 scheduler, block pool and ``OffloadingConnector`` scheduler side, the harness's loop as
the connector's worker."""

from __future__ import annotations

import random
from typing import Any

import pytest
from vllm.v1.kv_offload.base import ReqContext
from vllm.v1.kv_offload.cpu.policies.base import ChunkStatus

from autellix.adapters.kv_host import AutellixCachePolicy
from autellix.adapters.vllm import AutellixScheduler
from autellix.testing import vllm_harness as harness

from .conftest import Engine
from .test_retention import RandomPrograms, _call, _check, _next_prompt, _tokens, _watch

PREFETCH = "autellix-prefetch-"


def _engine(
    model_config: Any, *, num_blocks: int = 64, host_blocks: int = 160, max_num_seqs: int = 3, **settings: Any
) -> Engine:
    scheduler = harness.make_scheduler(
        AutellixScheduler,
        model_config,
        num_blocks=num_blocks,
        max_num_seqs=max_num_seqs,
        additional_config={"autellix": {"policy": "plas", "kv_policy": "autellix", **settings}},
        kv_offload_bytes=host_blocks * harness.LLAMA31_8B_KV.bytes_per_block,
    )
    e = Engine(scheduler, harness.EngineLoop(scheduler), tick=0.03)
    scheduler.programs.clock = lambda: e.now
    return e


def _step(e: Engine, loads: list[harness.KVLoad] | None = None, check: bool = True) -> None:
    """One step; the invariants checked after it, its loads collected."""
    e.now += e.tick
    iteration = e.loop.step()
    if iteration is not None:
        e.finished.extend(iteration.finished)
        if loads is not None:
            loads += iteration.loads
    if check:
        _check(e)
        _no_stray_prefetch(e)


def _steps(e: Engine, loads: list[harness.KVLoad] | None = None, check: bool = True) -> None:
    """Run until idle, step by step."""
    steps = 0
    while e.loop.busy():
        _step(e, loads, check)
        steps += 1
        assert steps < 20_000, "no progress"


def _no_stray_prefetch(e: Engine) -> None:
    """Prefetch requests are the plug-in's own: never in the core, never counted as requests."""
    scheduler = e.scheduler
    for request_id in scheduler._prefetches:
        assert scheduler.programs.call_id(request_id) is None
    in_vllm = sum(1 for r in scheduler.requests if r.startswith(PREFETCH))
    assert in_vllm == len(scheduler._prefetches)
    running, waiting = scheduler.get_request_counts()
    real = [r for r in scheduler.requests.values() if not r.request_id.startswith(PREFETCH)]
    assert running + waiting <= len(real)
    # never ahead of a call in vLLM's waiting scan: a prefetch that does not fit stops nobody
    ready = list(scheduler.waiting._ready)
    first = next((i for i, r in enumerate(ready) if r in scheduler._prefetches), len(ready))
    assert all(r in scheduler._prefetches for r in ready[first:])


def _all_back(e: Engine) -> None:
    assert not e.loop.busy()
    scheduler = e.scheduler
    assert e.free_blocks == scheduler.kv_cache_config.num_blocks - 1
    kv = scheduler.kv
    assert kv is not None and len(kv) == 0 and kv.planner.gpu_blocks == 0 and len(kv.planner) == 0
    assert kv.planner.host_blocks == 0 and not scheduler._prefetches and not scheduler.requests
    assert not scheduler.connector.has_pending_push_work()


def test_host_capacity_and_the_policy_are_configured(model_config: Any) -> None:
    e = _engine(model_config, host_blocks=160)
    scheduler = e.scheduler
    extra = scheduler.vllm_config.kv_transfer_config.kv_connector_extra_config
    assert extra["eviction_policy"] == "AutellixCachePolicy" and extra["offload_prompt_only"] is False
    manager = scheduler.connector.connector_scheduler.manager
    assert isinstance(manager._policy, AutellixCachePolicy)
    kv = scheduler.kv
    assert kv is not None and kv.host is not None and kv.host.policy is manager._policy
    # the connector's CPU capacity in GPU blocks, less room for one GPU's worth of stores
    assert kv.planner.host_free == 160 - 64
    # without the planner (kv_policy lru) the connector is left as configured
    lru = harness.make_scheduler(AutellixScheduler, model_config, num_blocks=64, kv_offload_bytes=1 << 30)
    assert "eviction_policy" not in lru.vllm_config.kv_transfer_config.kv_connector_extra_config
    assert lru.kv is None


def _round_trip(e: Engine) -> tuple[dict[str, int], list[harness.KVLoad]]:
    """An agent's context (7 full blocks) is pushed off the GPU by other programs' calls during
    its 2 s tool wait, while a background program keeps the engine stepping; its next call
    arrives after the wait."""
    hits, _ = _watch(e)
    loads: list[harness.KVLoad] = []
    first = _call(e, "agent-0", _tokens("agent-0", 100), 20, program_id="agent", tool_seconds=2)
    _steps(e, loads)
    assert e.scheduler.kv is None or e.scheduler.kv.planner.gpu_blocks == 7
    e.add("bg-0", 16, 150, program="bg", last_call=1)  # 4.5 s of decoding
    for i in range(8):  # two at a time (with bg), 25 blocks each: 61 of 63 blocks
        e.add(f"load-{i}", 360, 30, program=f"load-{i}", last_call=1)
    while e.now < 3.5:  # past the agent's predicted return (2 s after its call finished)
        _step(e, loads)
    _call(e, "agent-1", _next_prompt(first, 16), 5, program_id="agent", last_call=True)
    _steps(e, loads)
    return hits, loads


def test_offload_and_prefetch_bring_a_context_back_without_losing_a_token(model_config: Any) -> None:
    e = _engine(model_config)
    scheduler = e.scheduler
    issue = scheduler._issue_prefetch
    room: list[tuple[int, int]] = []

    def issued(recipe: Any, chain: list[int]) -> None:
        # issued only where it fits: free blocks (less the watermark) cover the context
        free = e.free_blocks - scheduler.kv_cache_manager.watermark_blocks - len(scheduler.running)
        room.append((free, len(recipe.tokens) // harness.BLOCK_SIZE))
        issue(recipe, chain)

    scheduler._issue_prefetch = issued
    hits, loads = _round_trip(e)
    assert room and all(free >= blocks for free, blocks in room)
    stats = e.scheduler.autellix_stats()
    # offloaded (its GPU references given back: the host had it by write-through) ...
    offloaded = stats["kv_offloaded_blocks_total"]
    assert offloaded >= 7 and offloaded % 7 == 0 and stats["kv_offloads_missing_total"] == 0
    assert stats["kv_reclaimed_blocks_total:offload"] == offloaded
    assert stats.get("kv_reclaimed_blocks_total:drop", 0) == 0
    # ... loaded back before the call came: from the host tier by a prefetch request (and, when
    # the load had not overwritten them yet, straight from the GPU prefix cache) ...
    assert stats["kv_prefetch_loads_total"] >= 1
    assert stats["kv_loaded_blocks_total"] == offloaded  # every offload was loaded back
    prefetched = [load for load in loads if load.request_id.startswith(PREFETCH)]
    assert sum(load.blocks for load in prefetched) == 7 * stats["kv_prefetch_loads_total"]
    assert stats["kv_prefetch_withdrawn_total"] == 0
    # ... and the call hit all of it locally: no load of its own, every token of every call
    assert hits["agent-1"] == 7 * 16
    assert not [load for load in loads if load.request_id == "agent-1"]
    assert stats["kv_retained_hits_total"] == 1 and stats["kv_retained_hit_tokens_total"] == 112
    expected = {"agent-0": 20, "agent-1": 5, "bg-0": 150, **{f"load-{i}": 30 for i in range(8)}}
    assert e.loop.tokens == expected  # the prefetch request never produced a token
    assert not any(rid.startswith(PREFETCH) for rid in hits)  # nor was it ever computed
    _all_back(e)


def test_the_connector_alone_loses_the_context(model_config: Any) -> None:
    # kv_policy lru: the connector's LRU host cache (160 blocks) evicted the context under the
    # other programs' 200 blocks of writes, and vLLM's LRU evicted it from the GPU: re-prefilled
    e = _engine(model_config, kv_policy="lru")
    assert e.scheduler.kv is None
    hits, loads = _round_trip(e)
    assert hits["agent-1"] == 0 and not [load for load in loads if load.request_id == "agent-1"]
    assert e.loop.tokens["agent-1"] == 5 and e.free_blocks == 63


def _chunk(i: int) -> Any:
    return bytes([i]) * 8


def test_the_host_cache_evicts_ended_programs_first() -> None:
    """vLLM's CPU offloading manager with the plug-in's policy: chunks of ended (or dropped)
    contexts go first, then chunks no context holds (LRU), then the host copies of GPU contexts
    (latest due first); chunks of contexts kept on the host never go."""
    from vllm.v1.kv_offload.cpu.manager import CPUOffloadingManager

    manager = CPUOffloadingManager(
        num_chunks=6, cache_policy="AutellixCachePolicy", cache_policy_module_path="autellix.adapters.kv_host"
    )
    policy = manager._policy
    assert isinstance(policy, AutellixCachePolicy)
    context = ReqContext(req_id="writer")

    def store(*ids: int) -> list[Any] | None:
        keys = [_chunk(i) for i in ids]
        out = manager.prepare_store(keys, context)
        if out is None:
            return None
        manager.complete_store(out.keys_to_store, context)
        return sorted(out.evicted_keys)

    assert store(1, 2, 3, 4, 5, 6) == []
    policy.hold(1, [_chunk(1), _chunk(2)], due=10.0, on_host=True)  # offloaded: kept
    policy.hold(2, [_chunk(3)], due=50.0)  # on the GPU, due sooner
    policy.hold(3, [_chunk(4)], due=90.0)  # on the GPU, due later
    policy.hold(4, [_chunk(5)], due=99.0)
    policy.doom(4)  # its program ended
    assert store(7) == [_chunk(5)]  # the ended program's chunk, though newer than chunk 6
    assert store(8) == [_chunk(6)]  # then what no context holds, least recently used first
    assert store(9) == [_chunk(7)]
    assert store(10, 11) == [_chunk(8), _chunk(9)]
    # then the host copies of GPU contexts, the latest due first (chunk 4 before chunk 3)
    assert store(12, 13, 14) == [_chunk(4), _chunk(10), _chunk(11)]
    assert store(15, 16, 17, 18) == [_chunk(3), _chunk(12), _chunk(13), _chunk(14)]
    assert store(19, 20, 21, 22, 23) is None  # only the offloaded context's chunks could make room
    for i in (1, 2):
        assert manager.lookup(_chunk(i), context).name == "HIT"
    assert isinstance(policy.get(_chunk(1)), ChunkStatus)


@pytest.mark.parametrize("seed", [16, 17])
def test_random_workloads_with_the_host_tier_give_every_block_back(model_config: Any, seed: int) -> None:
    rng = random.Random(seed)
    e = _engine(model_config, num_blocks=48, host_blocks=96, max_num_seqs=3)
    e.tick = 0.05
    scheduler = e.scheduler
    workload = RandomPrograms(e, rng, tool_seconds=True)
    for _ in range(500):
        workload.move()
        _step(e)
    _steps(e)
    workload.finish_all()
    _all_back(e)
    stats = scheduler.autellix_stats()
    assert stats["kv_retained_contexts_total"] > 10 and stats["kv_offloaded_blocks_total"] > 0
