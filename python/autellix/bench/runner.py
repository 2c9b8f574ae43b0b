"""Running a sweep's simulations: in this process or a ``spawn`` process pool, with progress."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from autellix.sim.config import SimConfig
from autellix.sim.metrics import SimResult

#: Rough relative cost of one program of each workload (calls per program, paper §8): runs are
#: submitted most expensive first so the process pool finishes together.
_WORKLOAD_COST = {"sharegpt": 7.0, "bfcl": 11.0, "lats": 160.0, "mixed": 59.0}


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def run_one(config: SimConfig) -> SimResult:
    """Simulate one config (top-level, so a spawned worker process can unpickle it)."""
    from autellix.sim.cluster import simulate

    return simulate(config)


def _cost(config: SimConfig) -> tuple[float, float]:
    return (_WORKLOAD_COST.get(config.workload, 60.0) * config.programs, config.rate)


def run_configs(
    configs: Sequence[SimConfig],
    jobs: int,
    on_done: Callable[[SimConfig, SimResult], None] | None = None,
) -> dict[SimConfig, SimResult]:
    """Simulate every distinct config, ``jobs`` at a time; ``on_done`` is called as each finishes.

    ``jobs`` = 1 runs in this process (through :func:`run_one`, looked up at call time);
    more use a ``spawn`` process pool, most expensive runs first.
    """
    unique = list(dict.fromkeys(configs))
    results: dict[SimConfig, SimResult] = {}
    if jobs <= 1 or len(unique) <= 1:
        for config in unique:
            result = run_one(config)
            results[config] = result
            if on_done is not None:
                on_done(config, result)
        return results
    ordered = sorted(unique, key=_cost, reverse=True)
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(unique)), mp_context=context) as pool:
        futures = {pool.submit(run_one, config): config for config in ordered}
        try:
            for future in cf.as_completed(futures):
                config = futures[future]
                result = future.result()
                results[config] = result
                if on_done is not None:
                    on_done(config, result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def describe(config: SimConfig) -> str:
    """A short label of a run for progress lines: ``lats atlas 0.05/s 4x program-aware``,
    ``bfcl plas 0.9/s kv autellix``."""
    parts = [config.workload, config.scheduler, f"{config.rate:g}/s"]
    if config.engines > 1:
        parts.append(f"{config.engines}x {config.balancer}")
    if config.swap != SimConfig.swap:  # the default mode goes unsaid
        parts.append(config.swap)
    if config.kv_policy != SimConfig.kv_policy:
        parts.append(f"kv {config.kv_policy}")
    return " ".join(parts)


def run_with_progress(configs: Sequence[SimConfig], jobs: int, console: Any) -> dict[SimConfig, SimResult]:
    """:func:`run_configs` under a rich progress bar on ``console`` naming each finished run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"simulating {len(configs)} runs", total=len(configs))

        def done(config: SimConfig, result: SimResult) -> None:
            mark = "" if result.completed else " (incomplete)"
            progress.update(task, advance=1, description=f"done: {describe(config)}{mark}")

        results = run_configs(configs, jobs, done)
        progress.update(task, description=f"simulated {len(configs)} runs")
    return results
