"""``bench_vllm_replay.py --experiment kv``: KV placement across tool waits inside vLLM.

Per workload, one trace on a KV cache under pressure (the contexts of the programs waiting on a
tool do not all fit next to the running calls), served three ways by vLLM 0.33's real scheduler
(:data:`KV_SIDES`): the stock ``AsyncScheduler`` with its prefix cache, ``AutellixScheduler`` with
``kv_policy`` ``lru`` (ordering only; vLLM's prefix cache as is) and with ``kv_policy``
``autellix`` (the core's ``KvPlanner`` holds finished calls' contexts softly and admits programs),
and the simulator configured as that engine with the same three (its ``kv_policy`` ``lru`` and
``autellix``; no host tier). With ``--kv-host X`` two more sides (:data:`HOST_SIDES`) add a
host tier of X times the KV blocks: vLLM's CPU offloading connector (kv ``lru``: its stock
write-through LRU; kv ``autellix``: the planner offloads, prefetches and orders the host cache)
against the simulator with the same ``host_kv_gib`` (``offload-lru`` and ``autellix``). The
replay itself is :mod:`autellix.testing.vllm_replay` (imported on first use: it imports vLLM).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from _replay import BASELINE, ONE_ENGINE, summary
from _vllm_replay_compare import NO_DIFFERENCE, fractions, plugin_settings, replay_with_progress

from autellix.sim import cost_model
from autellix.sim.cluster import simulate
from autellix.sim.config import SimConfig
from autellix.sim.spec import ProgramSpec
from autellix.sim.workload import generate

#: side -> (the plug-in's kv_policy; None: vLLM's stock AsyncScheduler, FCFS), label
KV_SIDES: dict[str, tuple[str | None, str]] = {
    "stock": (None, "stock vLLM (fcfs)"),
    "lru": ("lru", "plug-in, kv lru"),
    "autellix": ("autellix", "plug-in, kv autellix"),
}
#: with ``--kv-host``: the same two plug-in sides with a host tier
HOST_SIDES: dict[str, tuple[str | None, str]] = {
    "lru_host": ("lru", "plug-in, kv lru + host"),
    "autellix_host": ("autellix", "plug-in, kv autellix + host"),
}
#: the workloads of the experiment, in order
KV_WORKLOADS = ("bfcl", "lats", "mixed")


@dataclasses.dataclass(frozen=True)
class KvPoint:
    """The load of one workload: programs, arrivals per second, tool waits x, KV blocks, slots."""

    programs: int
    rate: float
    tool_wait_scale: float
    num_blocks: int
    max_num_seqs: int


#: Per workload, full run and ``--quick`` (structure only: too small to be under pressure). The full
#: points: where the simulator (kv lru against autellix, no host tier, the same engine) shows a
#: difference *and* the replay's stock prefix cache is under pressure (hit share well below 1; the
#: simulator's LRU thrashes at more blocks than vLLM's does): a sweep of programs x rate x blocks x
#: slots with ``simulate`` (a second each), then replays of the candidates (benches/RESULTS.md,
#: "KV placement inside vLLM (issue 16)", lists them). On lats no point shows a simulator gain
#: above 7% without a host tier; 800 blocks is where both engines are under pressure.
KV_POINTS: dict[str, tuple[KvPoint, KvPoint]] = {
    "bfcl": (KvPoint(40, 0.5, 1.0, 5000, 16), KvPoint(6, 0.5, 0.25, 2000, 4)),
    "lats": (KvPoint(10, 0.1, 4.0, 800, 16), KvPoint(1, 0.1, 0.25, 1200, 4)),
    "mixed": (KvPoint(24, 0.8, 2.0, 4000, 16), KvPoint(3, 0.5, 0.25, 1500, 4)),
}


def kv_args(args: argparse.Namespace, workload: str) -> argparse.Namespace:
    """``args`` for one workload: its :data:`KV_POINTS` entry where a flag left a field unset."""
    point = KV_POINTS[workload][1 if args.quick else 0]
    out = argparse.Namespace(**vars(args))
    out.workload = workload
    for name, value in dataclasses.asdict(point).items():
        if getattr(out, name) is None:
            setattr(out, name, value)
    out.policies = [BASELINE, args.kv_scheduler]
    out.kv_host_blocks = round(getattr(args, "kv_host", 0.0) * out.num_blocks)
    return out


@dataclasses.dataclass(frozen=True)
class _SizedPreset(cost_model.EnginePreset):
    """A preset whose GPU holds ``blocks`` KV blocks (the replay's ``num_blocks``)."""

    blocks: int = 1

    @property
    def kv_blocks(self) -> int:
        return self.blocks


def sized_preset(preset: cost_model.EnginePreset, blocks: int) -> cost_model.EnginePreset:
    """``preset`` with ``blocks`` KV blocks, its step and swap times unchanged."""
    fields = {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset) if f.init}
    return _SizedPreset(**fields, blocks=blocks)


def sides(args: argparse.Namespace) -> dict[str, tuple[str | None, str]]:
    """The sides of a run: :data:`KV_SIDES`, and :data:`HOST_SIDES` with a host tier."""
    return {**KV_SIDES, **(HOST_SIDES if getattr(args, "kv_host_blocks", 0) else {})}


def host_bytes(args: argparse.Namespace, side: str, preset: cost_model.EnginePreset) -> int | None:
    """The host side's ``kv_offload_bytes``: the connector keeps a GPU's worth of blocks for
    write-through (``kv_host.planner_host_blocks``), so the tier is ``num_blocks`` more than the
    planner's host blocks; ``None`` for a side without one."""
    if side not in HOST_SIDES:
        return None
    return (args.num_blocks + args.kv_host_blocks) * preset.block_size * preset.kv_bytes_per_token


def sim_kv_config(args: argparse.Namespace, side: str, preset: cost_model.EnginePreset) -> SimConfig:
    """The simulator's config of one side: the replay's engine, ``kv_policy`` ``lru`` for the
    stock and lru sides, ``autellix``; a host tier of ``--kv-host-blocks`` on the host sides
    (``offload-lru`` for kv lru's)."""
    kv = sides(args)[side][0]
    kv_policy = kv or "lru"
    host = 0.0
    if side in HOST_SIDES:  # half a block over: the simulator rounds its blocks down
        host = (args.kv_host_blocks + 0.5) * preset.block_size * preset.kv_bytes_per_token / (1 << 30)
        if kv == "lru":  # the simulator's model of vLLM's CPU offloading (write-through LRU)
            kv_policy = "offload-lru"
    return SimConfig(
        **ONE_ENGINE,
        workload=args.workload,
        rate=args.rate,
        programs=args.programs,
        seed=args.seed,
        tool_wait_scale=args.tool_wait_scale,
        scheduler=BASELINE if kv is None else args.kv_scheduler,
        preset=args.preset,
        max_batch=args.max_num_seqs,
        prefix_caching=True,
        kv_policy=kv_policy,
        host_kv_gib=host,
    )


def run_sim_side(
    args: argparse.Namespace, side: str, programs: Sequence[ProgramSpec], preset: cost_model.EnginePreset
) -> dict[str, Any]:
    """The simulator on one side: its core runs the plug-in's scheduler config."""
    config = sim_kv_config(args, side, preset)
    core = plugin_settings(config.scheduler, args.settings).scheduler_config()
    r = simulate(config, programs, preset=sized_preset(preset, args.num_blocks), scheduler=core)
    latency = [o.finish - o.arrival if o.finish >= 0 else math.nan for o in r.outcomes]
    return {
        **summary(latency, programs),
        "worst_per_token_s": r.worst_latency,
        "calls_done": r.calls_done,
        "calls": sum(len(p.calls) for p in programs),
        "preemptions": r.preemptions,
        "cached_tokens": r.cached_tokens,
        "history": {
            "reusable_tokens": r.reusable_tokens,
            "reprefilled_tokens": r.reprefilled_tokens,
            "hit_tokens": r.reusable_tokens - r.reprefilled_tokens,
            "hit_share": r.hit_share,
        },
        "deferred_programs": r.deferred_programs,
        "longest_deferral_s": r.longest_deferral,
        "steps": r.iterations,
        "makespan_s": r.makespan,
        "wall_s": r.wall_seconds,
    }


def run_vllm_side(
    args: argparse.Namespace,
    side: str,
    programs: Sequence[ProgramSpec],
    model_config: Any,
    preset: cost_model.EnginePreset,
    progress: Any,
) -> dict[str, Any]:
    """The replay on one side (``kv_policy`` given explicitly to the plug-in)."""
    kv, label = sides(args)[side]
    policy = BASELINE if kv is None else args.kv_scheduler
    settings = {**args.settings, **({} if kv is None else {"kv_policy": kv})}
    r = replay_with_progress(
        args,
        programs,
        policy,
        model_config,
        preset,
        progress,
        f"{args.workload}: {label}",
        settings=settings,
        kv_offload_bytes=host_bytes(args, side, preset),
    )
    per_token = [
        lat / max(1, p.output_tokens) for lat, p in zip(r["program_latency_s"], programs, strict=True)
    ]
    r["worst_per_token_s"] = max((x for x in per_token if not math.isnan(x)), default=math.nan)
    return r


def compare_kv(
    args: argparse.Namespace, model_config: Any, preset: cost_model.EnginePreset, progress: Any
) -> dict[str, Any]:
    """One workload (``args`` from :func:`kv_args`): every side replayed and simulated, the
    lru / autellix ratios of both, the fraction kept, and the goals."""
    programs = generate(
        args.workload, args.programs, args.rate, args.seed, tool_wait_scale=args.tool_wait_scale
    )
    result: dict[str, Any] = {
        "config": {
            **{
                k: getattr(args, k)
                for k in ("programs", "rate", "tool_wait_scale", "num_blocks", "max_num_seqs")
            },
            "policy": args.kv_scheduler,
            "kv_tokens": args.num_blocks * preset.block_size,
            "preset_kv_blocks": preset.kv_blocks,
        },
        "workload": {
            "calls": sum(len(p.calls) for p in programs),
            "prompt_tokens": sum(c.prompt_tokens for p in programs for c in p.calls),
            "history_tokens": sum(c.prefix_tokens for p in programs for c in p.calls if c.parents),
            "output_tokens": sum(p.output_tokens for p in programs),
            "last_arrival_s": max(p.arrival for p in programs),
        },
        "sim": {side: run_sim_side(args, side, programs, preset) for side in sides(args)},
        "vllm": {
            side: run_vllm_side(args, side, programs, model_config, preset, progress) for side in sides(args)
        },
    }
    if getattr(args, "kv_host_blocks", 0):
        result["config"]["kv_host_blocks"] = args.kv_host_blocks
        result["host"] = host_summary(result)
    result["ratios"] = {side: kv_ratio(result[side]) for side in ("vllm", "sim")}
    result["fractions"] = fractions({k: {"autellix": v} for k, v in result["ratios"].items()})["autellix"]
    for k, cell in result["fractions"].items():
        if result["ratios"]["sim"][k] < 1:  # the simulator's planner loses here: no gain to keep
            cell["verdict"] = "n/a"
    result["goals"] = goals(result)
    return result


def host_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The host sides: kv lru / kv autellix (both with the host tier) per engine, and the host
    planner's P99 against stock vLLM's."""
    ratios = {e: kv_ratio(result[e], "lru_host", "autellix_host") for e in ("vllm", "sim")}
    vllm = result["vllm"]
    over = vllm["autellix_host"]["per_token_s"]["p99"] / vllm["stock"]["per_token_s"]["p99"]
    return {"ratios": ratios, "p99_over_stock": over, "p99_vs_stock": "PASS" if over <= 1 else "MISS"}


def kv_ratio(sides: dict[str, Any], lru: str = "lru", autellix: str = "autellix") -> dict[str, float]:
    """kv lru / kv autellix of mean, P50, P99 and worst per-token latency (> 1: the planner is
    faster); ``lru`` / ``autellix``: the sides compared."""
    lru, ours = sides[lru], sides[autellix]
    out = {k: lru["per_token_s"][k] / ours["per_token_s"][k] for k in ("mean", "p50", "p99")}
    out["worst"] = lru["worst_per_token_s"] / ours["worst_per_token_s"]
    return out


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals on one workload: the planner keeps >= 70% of the simulator's improvement
    (mean and P99; n/a where the simulator sees no gain) and its P99 is no worse than stock vLLM's."""
    vllm = result["vllm"]
    p99, stock_p99 = vllm["autellix"]["per_token_s"]["p99"], vllm["stock"]["per_token_s"]["p99"]
    out: dict[str, Any] = {f"kept_{k}": cell["verdict"] for k, cell in result["fractions"].items()}
    out["p99_vs_stock"] = "PASS" if p99 <= stock_p99 else "MISS"
    out["p99_over_stock"] = p99 / stock_p99
    out["sim_difference"] = any(abs(result["ratios"]["sim"][k] - 1) >= NO_DIFFERENCE for k in ("mean", "p99"))
    verdicts = [v for k, v in out.items() if k.startswith("kept_") or k == "p99_vs_stock"]
    out["pass"] = "MISS" not in verdicts
    programs = result["config"]["programs"]
    out["all_done"] = all(
        r["programs_done"] == programs for side in ("vllm", "sim") for r in result[side].values()
    )
    return out
