"""Helpers of the ``autellix bench`` tests: a fake simulator with known answers and readers of
the files a bench writes (tests import them relatively, ``from .bench_support import ...``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from autellix import bench
from autellix.sim.config import SimConfig
from autellix.sim.metrics import Distribution, SimResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_FAKE_CAPACITY = {"sharegpt": 3.0, "bfcl": 0.7, "lats": 0.3, "mixed": 0.45}
_FAKE_SCHEDULER = {"vllm": 8.0, "fcfs": 4.0, "mlfq": 2.0, "plas": 1.0, "atlas": 1.25}
_FAKE_BALANCER = {"round-robin": 1.6, "least-loaded": 1.3, "program-aware": 1.0}
_FAKE_SWAP_SECONDS = {"per-block": 3.0, "bulk": 0.5, "recompute": 0.0}
_FAKE_KV = {"lru": 1.0, "ttl": 0.9, "offload-lru": 0.8, "autellix": 0.6, "ideal": 0.5}


def fake_simulate(config: SimConfig) -> SimResult:
    """A deterministic stand-in for ``autellix.sim.cluster.simulate``: latency grows with load
    and depends on the scheduler / balancer / KV policy; FCFS fails to complete at full load."""
    capacity = _FAKE_CAPACITY.get(config.workload, 1.0) * config.engines
    load = config.rate / capacity
    factor = (
        _FAKE_SCHEDULER[config.scheduler]
        * (_FAKE_BALANCER[config.balancer] if config.engines > 1 else 1.0)
        * _FAKE_KV[config.kv_policy]
    )
    latency = 0.02 * factor * (1.0 + 10.0 * load**2)
    completed = not (config.scheduler in ("fcfs", "mlfq") and load >= 0.99 and config.engines == 1) and not (
        config.scheduler == "fcfs" and load > 0.7
    )
    done = config.programs if completed else config.programs // 2
    swaps = int(100 * load) if config.swap != "recompute" else 0
    return SimResult(
        config=config,
        completed=completed,
        programs=config.programs,
        programs_done=done,
        calls_done=done * 7,
        latency=Distribution(latency, latency * 0.8, latency * 3.0, latency * 5.0 * factor),
        response=Distribution(latency * 300, latency * 250, latency * 900, latency * 1500),
        ttft=Distribution(0.1 * factor, 0.08, 0.3, 0.5),
        throughput=min(config.rate, capacity),
        token_throughput=300.0 * min(config.rate, capacity),
        makespan=config.programs / config.rate,
        preemptions=swaps,
        swaps=swaps,
        swap_copies=swaps * (32 if config.swap == "per-block" else 1),
        swap_time=_FAKE_SWAP_SECONDS[config.swap] * load,
        recomputed_tokens=1000 * swaps if config.swap == "recompute" else 0,
        cached_tokens=0,
        reusable_tokens=1000,
        reprefilled_tokens=round(1000 * (_FAKE_KV[config.kv_policy] - 0.5)),
        hit_share=1.5 - _FAKE_KV[config.kv_policy],
        offloaded_gb=0.0 if config.kv_policy in ("lru", "ttl") else 2.0 * load,
        loaded_gb=0.0 if config.kv_policy in ("lru", "ttl") else 1.0 * load,
        prefetched_gb=0.5 * load if config.kv_policy == "autellix" else 0.0,
        deferred_programs=int(10 * load) if config.kv_policy == "autellix" else 0,
        longest_deferral=2.0 * load if config.kv_policy == "autellix" else 0.0,
        worst_latency=latency * 8.0,
        worst_response=latency * 3000,
        iterations=1000,
        scheduler_steps=250,
        wall_seconds=0.001 * config.programs,
    )


def json_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.json``, as written."""
    return list(json.loads((out / "results.json").read_text()))


def csv_rows(out: Path) -> list[dict[str, str]]:
    """The rows of ``out/results.csv``, as text."""
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def strip_wall(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without their wall-clock fields."""
    return [{k: v for k, v in row.items() if k not in bench.WALL_FIELDS} for row in rows]
