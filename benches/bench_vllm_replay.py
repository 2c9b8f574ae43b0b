#!/usr/bin/env python3
"""An agent workload replayed through vLLM's real scheduler: the simulator's benefit, in vLLM?

Standalone script (not collected by pytest; needs ``pip install 'autellix[vllm]'``, no GPU)::

    python benches/bench_vllm_replay.py                  # 80 ShareGPT programs, fcfs + plas, ~1 min
    python benches/bench_vllm_replay.py --quick          # CI smoke run: 24 programs, 6 slots, < 1 min
    python benches/bench_vllm_replay.py --workload mixed --programs 16 --rate 0.5   # fcfs, plas, atlas
    python benches/bench_vllm_replay.py --max-num-seqs 256 --programs 1000 --rate 2.4   # ~5 min
    python benches/bench_vllm_replay.py --json benches/results/vllm_replay.json
    python benches/bench_vllm_replay.py --experiment kv  # KV placement: bfcl, lats, mixed, ~1 min
    python benches/bench_vllm_replay.py --experiment kv --workload bfcl --num-blocks 5500

Three parts, in one process (vLLM's import and model config take ~15-25 s of it; the default
run takes ~45 s on 2 cores):

**1. Replay.** One workload (``autellix.sim.workload.generate``: programs, Poisson arrivals,
seed) is served by vLLM 0.33's real scheduler and KV cache manager, driven by
``autellix.testing.vllm_replay`` over ``autellix.testing.vllm_harness``: a ``VllmConfig`` of a
tiny LLaMA ``config.json`` (no weights, no GPU), the real scheduler over ``--num-blocks`` blocks
of 16 tokens (default: the preset's KV capacity, ``EnginePreset.kv_blocks``), and ``EngineLoop``,
EngineCore's two-deep batch-queue loop (``schedule(N+1)`` before ``update_from_output(N)``) whose
stand-in model runner samples one token per request per step. The GPU is replaced by the
simulator's cost model on a *simulated clock*:

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
(``PluginSettings(...).scheduler_config()``: the core's default ladder from 0.5 s, beta 8) for
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
(plas, one program per request; once with ``kv_policy`` ``lru``, once with ``autellix``) are built
side by side in this process and stepped in turn, one step each (the side going first rotating),
after a warm-up; the figure is the median over
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

**KV placement across tool waits** (``--experiment kv``; ``benches/_vllm_replay_kv.py``). Per
workload (bfcl, lats and mixed, or ``--workload``), one trace on a KV cache under pressure (the
contexts of programs waiting on a tool do not all fit next to the running calls; the load of each,
programs / rate / tool-wait scale / ``num_blocks`` / ``max_num_seqs``, is ``KV_POINTS``, each
overridable by its flag) is replayed three ways: vLLM's stock ``AsyncScheduler`` (FCFS, prefix
caching), ``AutellixScheduler`` (``--kv-scheduler``, plas by default) with ``kv_policy`` ``lru``
(vLLM's prefix cache as is) and with ``kv_policy`` ``autellix`` (the core's ``KvPlanner`` holds
finished calls' contexts softly and admits programs). When a program's last call finishes the
replay sends the plug-in the program's finish hint (``finish_program``, what ``autellix serve``'s
``POST /v1/programs/{id}/finish`` is for), as the simulator ends a program with its last call.
The simulator runs the same three on the same programs and engine (``kv_policy`` ``lru`` /
``autellix``, no host tier: the plug-in has none yet; the engine's KV capacity = ``num_blocks``).
Reported per side and engine: mean / P99 / worst per-token latency, programs done, preemptions,
*re-prefilled tokens* (the history a call shares with its first parent, ``prefix_tokens``, minus
the part vLLM found in its prefix cache when the call first started: ``num_computed_tokens`` of
``scheduled_new_reqs``) and the *hit share* (history hits / history tokens; vLLM's block
granularity caps it a little below 1: ``history.attainable_tokens``), programs deferred by
admission. Then kv lru / kv autellix per engine, the fraction kept ``(vllm_ratio - 1) /
(sim_ratio - 1)`` for mean and P99 (goal >= 70%; n/a where the simulator sees no gain), and P99
of kv autellix against stock vLLM's (goal: no worse). Part 3 follows; parts 1, 2 and 4 do not run.

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
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from autellix.sim import cost_model
from autellix.sim.spec import ProgramSpec
from autellix.sim.workload import WORKLOADS, generate
from autellix.testing import quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benches/_replay.py, _vllm_replay_*.py
from _output import write_json
from _progress import progress_bar
from _replay import BASELINE, POLICIES, engine_preset, policies_arg, policy_ratios, run_simulator
from _vllm_replay_compare import (
    SIDES,
    compare_offload,
    fractions,
    plugin_core,
    plugin_settings,
    replay_label,
    replay_with_progress,
    sim_config,
    vllm_model_config,
)
from _vllm_replay_kv import KV_SIDES, KV_WORKLOADS, compare_kv, kv_args
from _vllm_replay_overhead import measure_overhead
from _vllm_replay_report import report

DEFAULTS = {  # name: (default, --quick)
    "programs": (80, 24),
    "max_num_seqs": (12, 6),
    "tool_wait_scale": (1.0, 0.25),
    "overhead_steps": (200, 60),
    "kv_offload": (16.0, 0.0),
}
#: what one run compares: scheduling policies (parts 1-4) or KV placement across tool waits
EXPERIMENTS = ("policies", "kv")
#: KV blocks of the recompute / offload comparison by default: 32k tokens, ~7% of the A100
#: preset's capacity, so that preemption drops KV the GPU prefix cache cannot keep (at the
#: preset's 27,790 blocks a preempted call's blocks stay cached and nearly nothing is recomputed)
OFFLOAD_NUM_BLOCKS = 2000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    d = {k: f"default: {v[0]}; --quick: {v[1]}" for k, v in DEFAULTS.items()}
    kv = "--experiment kv: per workload, _vllm_replay_kv.KV_POINTS"
    p.add_argument(
        "--experiment",
        choices=EXPERIMENTS,
        default="policies",
        help="policies: parts 1-4 (scheduling policies); kv: KV placement across tool waits, stock vLLM "
        "against the plug-in with kv lru and kv autellix, then part 3 (default: policies)",
    )
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        default=None,
        help=f"default: sharegpt; --experiment kv: {', '.join(KV_WORKLOADS)} in turn",
    )
    p.add_argument("--programs", type=int, default=None, help=f"agent programs ({d['programs']}; {kv})")
    p.add_argument("--rate", type=float, default=None, help=f"program arrivals per second (default: 4; {kv})")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: 0)")
    p.add_argument(
        "--policies",
        type=policies_arg,
        default=None,
        help="comma-separated, with fcfs (default: fcfs,plas; fcfs,plas,atlas for lats and mixed)",
    )
    p.add_argument("--preset", default="llama3.1-8b-a100", help="engine preset (default: llama3.1-8b-a100)")
    p.add_argument("--max-num-seqs", type=int, default=None, help=f"batch slots ({d['max_num_seqs']}; {kv})")
    p.add_argument(
        "--num-blocks",
        type=int,
        default=None,
        help=f"KV blocks of 16 tokens (default: the preset's capacity; {kv})",
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
        help=f"multiplies the workload's tool / think waits ({d['tool_wait_scale']}; {kv})",
    )
    p.add_argument(
        "--kv-scheduler",
        choices=POLICIES,
        default="plas",
        help="--experiment kv: the policy of the AutellixScheduler sides and the simulator (default: plas)",
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
    p.add_argument(
        "--kv-host",
        type=float,
        default=0.0,
        metavar="X",
        help="--experiment kv: also the plug-in sides with vLLM's CPU offloading connector and a host "
        "tier of X times the workload's KV blocks, and the simulator with the same host_kv_gib "
        "(default: 0, none)",
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
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, with the defaults ``--quick`` and the preset decide filled in, checked."""
    p = _parser()
    args = p.parse_args(argv)
    args.settings = {}  # the plug-in's defaults (plus AUTELLIX_* variables, as the plug-in reads them)
    if args.experiment == "kv":
        return _parse_kv(p, args)
    if args.workload is None:
        args.workload = "sharegpt"
    if args.rate is None:
        args.rate = 4.0
    for name, (full, small) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    if args.policies is None:
        args.policies = (
            [BASELINE, "plas", "atlas"] if args.workload in ("lats", "mixed") else [BASELINE, "plas"]
        )
    _check_preset(p, args)
    if args.num_blocks is None:
        args.num_blocks = cost_model.preset(args.preset).kv_blocks
    _check(p, args)
    return args


def _parse_kv(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """``--experiment kv``: the workloads, each with its load (``kv_args``) checked; no offload part."""
    if args.workload is not None and args.workload not in KV_WORKLOADS:
        p.error(f"--experiment kv runs {', '.join(KV_WORKLOADS)} (workloads with tool waits)")
    if args.policies is not None:
        p.error("--experiment kv takes --kv-scheduler, not --policies")
    args.workloads = [args.workload] if args.workload else list(KV_WORKLOADS)
    args.overhead_steps = args.overhead_steps or DEFAULTS["overhead_steps"][args.quick]
    args.kv_offload = 0.0
    if not 0 <= args.kv_host < float("inf"):
        p.error("--kv-host must be a finite number >= 0")
    _check_preset(p, args)
    for workload in args.workloads:
        _check(p, kv_args(args, workload))
    return args


def _check_preset(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.preset not in cost_model.PRESETS:
        p.error(f"unknown preset {args.preset!r}; choose from {', '.join(cost_model.PRESETS)}")


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Counts, rates and sizes of one run."""
    counts = ("programs", "max_num_seqs", "num_blocks", "max_num_batched_tokens", "overhead_steps")
    if min(getattr(args, n) for n in (*counts, "overhead_running")) < 1 or args.overhead_waiting < 0:
        p.error("counts must be >= 1 (--overhead-waiting >= 0)")
    if not args.rate > 0 or not args.tool_wait_scale >= 0 or args.seed < 0:
        p.error("--rate must be > 0, --tool-wait-scale and --seed >= 0")
    if not args.kv_offload >= 0 or args.offload_num_blocks < 1:
        p.error("--kv-offload must be >= 0 and --offload-num-blocks >= 1")
    if args.max_num_batched_tokens < args.max_num_seqs:
        p.error("--max-num-batched-tokens must be >= --max-num-seqs")


def run(args: argparse.Namespace, model_config: Any = None) -> dict[str, Any]:
    """Every part the arguments ask for; ``model_config``: a harness ``ModelConfig`` to use (else
    one is made, with ``max_model_len`` covering the workload)."""
    started = time.perf_counter()
    if args.experiment == "kv":
        runs = [kv_args(args, w) for w in args.workloads]
        result = _kv_header(args, runs)
    else:
        runs = [args]
        programs = generate(
            args.workload, args.programs, args.rate, args.seed, tool_wait_scale=args.tool_wait_scale
        )
        result = _header(args, programs)
    with contextlib.ExitStack() as stack:
        if model_config is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="autellix-vllm-")))
            longest = max(_longest_call(a) for a in runs)
            t = time.perf_counter()
            model_config = vllm_model_config(directory, max_model_len=max(40_960, longest + 16))
            result["config"]["vllm_setup_s"] = time.perf_counter() - t
        with quiet():
            import vllm

        result["machine"]["vllm"] = vllm.__version__
        progress = stack.enter_context(progress_bar(args.no_progress))
        if args.experiment == "kv" and not args.skip_replay:
            preset = engine_preset(args.preset)
            result["kv"] = {a.workload: compare_kv(a, model_config, preset, progress) for a in runs}
            result["pass"] = all(r["goals"]["pass"] for r in result["kv"].values())
        elif not args.skip_replay:
            result.update(_compare(args, programs, model_config, progress))
        if not args.skip_overhead:
            result["overhead"] = _overhead(args, model_config, progress)
    result["wall_s"] = time.perf_counter() - started
    return result


def _longest_call(args: argparse.Namespace) -> int:
    """Prompt plus output tokens of the longest call of the workload ``args`` name."""
    programs = generate(
        args.workload, args.programs, args.rate, args.seed, tool_wait_scale=args.tool_wait_scale
    )
    return max(c.prompt_tokens + c.output_tokens for p in programs for c in p.calls)


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def _kv_header(args: argparse.Namespace, runs: Sequence[argparse.Namespace]) -> dict[str, Any]:
    """The description of a ``--experiment kv`` run (each workload's load is in its own entry)."""
    settings = {side: {**args.settings, "kv_policy": kv} for side, (kv, _) in KV_SIDES.items() if kv}
    return {
        "config": {
            "experiment": "kv",
            "workloads": [a.workload for a in runs],
            "seed": args.seed,
            "policy": args.kv_scheduler,
            "preset": args.preset,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "quick": args.quick,
            "sides": {side: label for side, (_, label) in KV_SIDES.items()},
            "autellix_settings": {
                side: asdict(plugin_settings(args.kv_scheduler, s)) for side, s in settings.items()
            },
            "sim_config": "SimConfig(kv_policy lru | autellix, host_kv_gib 0; host sides: offload-lru | "
            "autellix with host_kv_gib = the host blocks; engines 1, swap recompute, "
            "steps_per_schedule 1, prefix caching, max_batch = max_num_seqs), the engine's KV blocks = "
            "num_blocks, the plug-in's scheduler config, no scheduler CPU time",
            "program_end": "the finish hint (finish_program) as a program's last call ends",
        },
        "machine": _machine(),
        "units": "simulated seconds; per_token_s = a program's latency / its output tokens",
    }


def _header(args: argparse.Namespace, programs: Sequence[ProgramSpec]) -> dict[str, Any]:
    """The result's description of the run: its settings, the workload and the machine."""
    return {
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
        "machine": _machine(),
        "units": "simulated seconds; per_token_s = a program's latency / its output tokens",
    }


def _compare(
    args: argparse.Namespace, programs: Sequence[ProgramSpec], model_config: Any, progress: Any
) -> dict[str, Any]:
    """Parts 1, 2 and 4: the replay per policy, the simulator per policy, their ratios and
    fractions, and the recompute / offload comparison."""
    preset = engine_preset(args.preset)
    sim = {p: run_simulator(sim_config(args, p), programs, plugin_core(args, p)) for p in args.policies}
    replayed = {
        policy: replay_with_progress(
            args, programs, policy, model_config, preset, progress, f"replay: {replay_label(policy)}"
        )
        for policy in args.policies
    }
    result: dict[str, Any] = {"vllm": replayed, "sim": sim}
    ratios = {side: policy_ratios(result[side]) for side in SIDES}
    result["ratios"] = ratios
    result["fractions"] = fractions(ratios)
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
    return result


def _overhead(args: argparse.Namespace, model_config: Any, progress: Any) -> dict[str, Any]:
    """Part 3: the scheduler CPU time per step, stock against autellix."""
    task = progress.add_task(
        f"overhead: {args.overhead_running} running / {args.overhead_waiting:,} waiting",
        total=2 * args.overhead_steps,
    )
    return measure_overhead(
        model_config,
        running=args.overhead_running,
        waiting=args.overhead_waiting,
        steps=args.overhead_steps,
        warmup=20 if not args.quick else 10,
        max_num_batched_tokens=args.max_num_batched_tokens,
        on_step=lambda: progress.advance(task),
    )


def main(argv: list[str] | None = None, model_config: Any = None) -> dict[str, Any]:
    """Run the benchmark, print its tables; returns the result (what ``--json`` writes)."""
    args = parse_args(argv)
    result = run(args, model_config)
    report(result)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
