"""``bench_vllm_replay.py``'s overhead measurement: vLLM's scheduler CPU time per step, the stock
``AsyncScheduler`` against ``AutellixScheduler``, stepped alternately in one process."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _vllm_replay_compare import testing

from autellix.sim.config import SimConfig
from autellix.testing import quiet

#: most scheduler CPU time autellix may add per step
GOAL_OVERHEAD = 0.05
#: the autellix side's clock advances this much per step
OVERHEAD_TICK_S = 0.025
#: the autellix side's ladder: first boundary and quantum 32 s (the simulator's until issue 14), which no call
#: outlasts during the measurement at 25 ms per step, so nothing is demoted: a steady step
_LADDER = SimConfig(quantum=32.0).scheduler_config()
OVERHEAD_LADDER = {"quanta": list(_LADDER.quanta), "boundaries": list(_LADDER.boundaries)}


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


def _side(
    model_config: Any,
    autellix: bool,
    *,
    running: int,
    waiting: int,
    prompt: int,
    max_tokens: int,
    num_blocks: int,
    max_num_batched_tokens: int,
) -> dict[str, Any]:
    """One side of the measurement: its scheduler with ``running + waiting`` requests added, its
    loop, its clock and the lists its steps fill."""
    replay, harness = testing("vllm_replay"), testing("vllm_harness")
    scheduler = replay.make_vllm_scheduler(
        model_config,
        "plas" if autellix else replay.STOCK,
        num_blocks=num_blocks,
        max_num_seqs=running,
        max_num_batched_tokens=max(max_num_batched_tokens, running * prompt),
        settings=OVERHEAD_LADDER,
    )
    state = {"now": 0.0, "steps": 0}
    core_time = [0.0]
    if autellix:
        scheduler.programs.clock = lambda s=state: s["now"]
        _time_calls(scheduler.programs, "step", core_time)
    preemptions = [0]
    replay.count_calls(scheduler, "_preempt_request", preemptions)
    with quiet():
        for i in range(running + waiting):
            rid = f"r{i}"
            extra = {"program_id": f"prog-{i}"}
            scheduler.add_request(harness.make_request(rid, prompt, max_tokens, extra_args=extra))
    return {
        "scheduler": scheduler,
        "loop": harness.EngineLoop(scheduler),
        "state": state,
        "core": core_time,
        "preemptions": preemptions,
        "times": [],
        "core_times": [],
    }


def _step(side: dict[str, Any], record: bool) -> None:
    state = side["state"]
    state["now"] += OVERHEAD_TICK_S
    core_before = side["core"][0]
    iteration = side["loop"].step()
    assert iteration is not None
    if record:
        side["times"].append(iteration.scheduler_seconds)
        side["core_times"].append(side["core"][0] - core_before)


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
    harness = testing("vllm_harness")
    max_tokens = warmup + steps + 64  # the running requests never finish while measured
    per_request = -(-(prompt + max_tokens) // harness.BLOCK_SIZE) + 1
    num_blocks = running * per_request + 64  # the waiting requests hold no blocks
    shape = {"running": running, "waiting": waiting, "prompt": prompt, "max_tokens": max_tokens}
    sides = {
        name: _side(
            model_config,
            name == "autellix",
            **shape,
            num_blocks=num_blocks,
            max_num_batched_tokens=max_num_batched_tokens,
        )
        for name in ("stock", "autellix")
    }
    for side in sides.values():
        for _ in range(warmup):
            _step(side, record=False)
    gc.collect()
    gc.freeze()  # as vLLM's EngineCore does after start-up: the requests are long-lived
    try:
        order = list(sides.values())
        for i in range(steps):
            for side in order if i % 2 == 0 else order[::-1]:
                _step(side, record=True)
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
    return _summarise(result, sides)


def _summarise(result: dict[str, Any], sides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``result`` with each side's figures and the verdict added."""
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
