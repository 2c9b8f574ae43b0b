"""``autellix bench`` end to end: plan, simulate, write the files, print the tables."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.bench.plan import BenchOptions, plan
from autellix.bench.results import collect_rows, write_json, write_results
from autellix.bench.runner import run_with_progress
from autellix.bench.summary import LATENCY_TARGET_FACTOR, summarize
from autellix.bench.tables import results_table, summary_tables


@dataclass
class BenchOutcome:
    """What :func:`run_bench` produced."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    simulations: int = 0
    elapsed: float = 0.0


def run_bench(options: BenchOptions, console: Any | None = None) -> BenchOutcome:
    """Plan, simulate, write files and print tables; raises what a simulation raised."""
    from rich.console import Console

    console = console if console is not None else Console()
    runs = plan(options)
    configs = list(dict.fromkeys(run.config for run in runs))
    started = time.perf_counter()
    results = run_with_progress(configs, options.jobs, console)
    elapsed = time.perf_counter() - started

    rows = collect_rows(runs, results)
    summary = summarize(rows, options.latency_target)
    out = options.out
    files = write_results(rows, out)
    meta = {
        "experiments": list(options.experiments),
        "sweep": options.sweep.name,
        "runs": len(rows),
        "simulations": len(configs),
        "jobs": options.jobs,
        "seed": options.seed,
        "latency_target": options.latency_target,
        "latency_target_factor": LATENCY_TARGET_FACTOR,
        "elapsed_seconds": elapsed,
    }
    files.append(write_json(out / "summary.json", {"meta": meta, **summary}))
    if options.plots:
        from autellix.bench import plots

        files += plots.plot_all(rows, summary, out)

    for experiment in options.experiments:
        console.print(results_table(rows, experiment))
    for table in summary_tables(summary):
        console.print(table)
    console.print(f"{len(configs)} simulations in {elapsed:.1f} s with {options.jobs} job(s); wrote:")
    for path in files:
        console.print(f"  {path}")
    return BenchOutcome(rows=rows, summary=summary, files=files, simulations=len(configs), elapsed=elapsed)
