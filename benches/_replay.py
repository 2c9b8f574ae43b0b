"""What the replay benchmarks (``bench_serve_replay.py``, ``bench_vllm_replay.py``) share: the
policies they compare, the paper's per-program metrics, FCFS / policy ratios and strict JSON."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from autellix import SchedulerConfig
from autellix.sim import cost_model
from autellix.sim.cluster import simulate
from autellix.sim.config import SimConfig
from autellix.sim.metrics import Distribution
from autellix.sim.spec import ProgramSpec

#: policies the core knows, and the one every other is compared with
POLICIES = tuple(SchedulerConfig.policies())
BASELINE = "fcfs"


def summary(latency: Sequence[float], programs: Sequence[ProgramSpec]) -> dict[str, Any]:
    """Per-token latency and latency distributions over the finished programs (NaN = unfinished)."""
    done = [(lat, p) for lat, p in zip(latency, programs, strict=True) if not math.isnan(lat)]
    per_token = [lat / max(1, p.output_tokens) for lat, p in done]
    return {
        "programs_done": len(done),
        "per_token_s": asdict(Distribution.of(per_token)),
        "latency_s": asdict(Distribution.of([lat for lat, _ in done])),
        "program_latency_s": [None if math.isnan(x) else x for x in latency],
    }


#: The simulator set up as one real engine: one core step per iteration, preempted KV dropped and
#: recomputed (as the server's simulated engine and vLLM v1 do).
ONE_ENGINE: dict[str, Any] = {"engines": 1, "swap": "recompute", "steps_per_schedule": 1}


def replay_fields(args: Any, policy: str) -> dict[str, Any]:
    """The ``SimConfig`` fields every replay's simulator run shares: :data:`ONE_ENGINE`, the
    workload the replay's ``args`` name (workload, rate, programs, seed, preset), and ``policy``."""
    return {
        **ONE_ENGINE,
        "workload": args.workload,
        "rate": args.rate,
        "programs": args.programs,
        "seed": args.seed,
        "scheduler": policy,
        "preset": args.preset,
    }


def engine_preset(name: str) -> cost_model.EnginePreset:
    """The preset without vLLM 0.6's scheduler CPU time per round: the replays' clocks have none."""
    return dataclasses.replace(cost_model.preset(name), scheduler_cpu=False)


def run_simulator(
    config: SimConfig, programs: Sequence[ProgramSpec], scheduler: SchedulerConfig | None = None
) -> dict[str, Any]:
    """The simulator on ``programs`` (its core run with ``scheduler``, default the config's):
    :func:`summary`, calls, preemptions, cached tokens, makespan."""
    result = simulate(config, programs, preset=engine_preset(config.preset), scheduler=scheduler)
    latency = [o.finish - o.arrival if o.finish >= 0 else math.nan for o in result.outcomes]
    return {
        **summary(latency, programs),
        "calls_done": result.calls_done,
        "calls": sum(len(p.calls) for p in programs),
        "preemptions": result.preemptions,
        "cached_tokens": result.cached_tokens,
        "steps": result.iterations,
        "makespan_s": result.makespan,
        "wall_s": result.wall_seconds,
    }


def ratio(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, float]:
    """``base`` / ``other`` of mean, P50 and P99 per-token latency (> 1: ``other`` is faster)."""
    return {k: base["per_token_s"][k] / other["per_token_s"][k] for k in ("mean", "p50", "p99")}


def policy_ratios(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """FCFS / policy for every policy but FCFS (> 1: the policy beats FCFS)."""
    return {policy: ratio(results[BASELINE], r) for policy, r in results.items() if policy != BASELINE}


def policies_arg(text: str) -> list[str]:
    """``--policies``: distinct known policies, FCFS among them (returned first), at least two."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad or BASELINE not in names or len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of distinct policies from {', '.join(POLICIES)}, with {BASELINE} "
            f"and at least one other, got {text!r}"
        )
    return [BASELINE] + [p for p in names if p != BASELINE]
