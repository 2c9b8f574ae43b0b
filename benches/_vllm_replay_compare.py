"""``bench_vllm_replay.py``'s comparisons: the vLLM replay against the simulator configured as that
engine, and recompute against CPU KV offload. The replay itself is
:mod:`autellix.testing.vllm_replay`, imported on first use (it imports vLLM)."""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from _replay import BASELINE, ratio, replay_fields, summary

from autellix import SchedulerConfig
from autellix.adapters.settings import PluginSettings
from autellix.sim import cost_model
from autellix.sim.config import SimConfig
from autellix.sim.spec import ProgramSpec
from autellix.testing import quiet

#: fraction of the simulator's improvement the replay must keep
GOAL_FRACTION = 0.70
#: a simulator ratio within this of 1 is no improvement to keep: its fraction is n/a
NO_DIFFERENCE = 0.05
#: the two sides of the replay comparison
SIDES = {"vllm": "vLLM replay", "sim": "simulator"}
#: the sides of the recompute / offload comparison
OFFLOAD_SIDES = {
    "recompute": "recompute",
    "offload": "CPU offload",
    "offload_resume": "CPU offload, resumes only",
}


def testing(name: str) -> ModuleType:
    """``autellix.testing.<name>`` (``vllm_harness``, ``vllm_replay``): they import vLLM, which
    warns on a machine without CUDA."""
    with quiet():
        return importlib.import_module(f"autellix.testing.{name}")


def vllm_model_config(directory: Path, max_model_len: int) -> Any:
    """The harness's tiny-LLaMA ``ModelConfig``, built from inside ``directory`` (vLLM inspects
    the model in a ``python -m`` subprocess that imports from the current directory first)."""
    os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "autellix-vllm-cache"))
    here = Path.cwd()
    os.chdir(directory)
    try:
        harness = testing("vllm_harness")
        with quiet():
            return harness.tiny_model_config(directory / "tiny-llama", max_model_len=max_model_len)
    finally:
        os.chdir(here)


# -- the vLLM side ---------------------------------------------------------------------------------


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
    """``replay_vllm`` of ``programs`` under ``policy`` with the engine ``args`` configure
    (``options`` add to or override them), advancing a progress task ``label`` per program;
    latencies summarised as the simulator's are (``summary``)."""
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
    replay = testing("vllm_replay").replay_vllm
    result = replay(programs, policy, model_config, preset=preset, on_program_done=advance, **engine)
    return {**summary(result.pop("program_latency_s"), programs), **result}


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


# -- the simulator, configured as that engine ------------------------------------------------------


def plugin_settings(policy: str, settings: dict[str, Any] | None = None) -> PluginSettings:
    """The settings ``AutellixScheduler`` runs ``policy`` with (environment included, as the
    plug-in reads it)."""
    return PluginSettings.load({**(settings or {}), "policy": policy})


def sim_config(args: argparse.Namespace, policy: str) -> SimConfig:
    """The simulator's config for ``policy`` on the replay's engine (its core runs the plug-in's
    scheduler config: :func:`plugin_core`)."""
    return SimConfig(**replay_fields(args, policy), max_batch=args.max_num_seqs, prefix_caching=True)


def plugin_core(args: argparse.Namespace, policy: str) -> SchedulerConfig:
    """The core's config ``AutellixScheduler`` runs ``policy`` with (``fcfs``: the core's FCFS)."""
    return plugin_settings(policy, args.settings).scheduler_config()


def fractions(ratios: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
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


def replay_label(policy: str) -> str:
    return "vLLM AsyncScheduler (fcfs)" if policy == BASELINE else f"AutellixScheduler ({policy})"
