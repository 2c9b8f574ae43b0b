"""``autellix bench``: sweeps of the cluster simulator in the shape of the paper's experiments.

Three experiments (paper §7-§10):

``schedulers``
    One engine; every workload x scheduler x arrival rate (the paper's "program latency per
    token vs arrival rate" figures).
``balancers``
    ``engines`` engines; workloads x load balancers x rates, each workload served by
    autellix's scheduler for it (:data:`AUTELLIX_POLICY`); default rates are per engine and
    scaled by the number of engines.
``swap``
    One engine in a preemption-heavy setting (high rates); how preempted KV leaves the GPU:
    vLLM's per-block copies, autellix's bulk copy, or recompute.

A run is one :class:`~autellix.sim.config.SimConfig`; the sweep runs them in a process pool
(:func:`run_configs`), and every :meth:`~autellix.sim.metrics.SimResult.row` lands in
``results.csv`` / ``results.json``, tagged with its experiment. :func:`summarize` derives the
paper's headline numbers from those rows alone (see its docstring for the rules).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.sim.config import BALANCERS, SCHEDULERS, SWAP_MODES, WORKLOADS, SimConfig
from autellix.sim.metrics import SimResult

EXPERIMENTS = ("schedulers", "balancers", "swap")

#: The scheduler autellix runs for each workload (paper §9): PLAS on single-threaded programs,
#: ATLAS on multi-threaded ones. Trace files get ATLAS (it reduces to PLAS on one thread).
AUTELLIX_POLICY: dict[str, str] = {"sharegpt": "plas", "bfcl": "plas", "lats": "atlas", "mixed": "atlas"}
#: The other schedulers, which autellix's policies are compared against.
BASELINE_SCHEDULERS = ("vllm", "fcfs", "mlfq")
#: The program-aware policies.
AUTELLIX_SCHEDULERS = ("plas", "atlas")
#: Autellix's load balancer and the baselines it is compared against.
AUTELLIX_BALANCER = "program-aware"
BASELINE_BALANCERS = ("round-robin", "least-loaded")

#: Default latency target = this x the lowest mean latency seen for a workload at its lowest rate.
LATENCY_TARGET_FACTOR = 5.0

#: Workloads each experiment runs unless ``--workloads`` says otherwise.
DEFAULT_WORKLOADS: dict[str, tuple[str, ...]] = {
    "schedulers": WORKLOADS,
    "balancers": ("sharegpt", "lats"),
    "swap": ("sharegpt",),
}
#: Schedulers of the swap experiment unless ``--schedulers`` says otherwise (the balancers
#: experiment uses :data:`AUTELLIX_POLICY`, the schedulers experiment all of them).
SWAP_SCHEDULERS = ("plas", "mlfq")
SWAP_EXPERIMENT_MODES = ("per-block", "bulk", "recompute")
DEFAULT_ENGINES = 4


@dataclass(frozen=True)
class Sweep:
    """Sizes of a sweep: programs per run and the arrival rates (programs/s) per workload."""

    name: str
    programs: int
    #: Rates of the schedulers experiment.
    rates: Mapping[str, tuple[float, ...]]
    #: Per-engine rates of the balancers experiment (multiplied by the number of engines).
    balancer_rates: Mapping[str, tuple[float, ...]]
    #: Rates of the swap experiment: high enough that the scheduler preempts a lot.
    swap_rates: Mapping[str, tuple[float, ...]]

    def rates_for(self, experiment: str, workload: str) -> tuple[float, ...]:
        table = {"schedulers": self.rates, "balancers": self.balancer_rates, "swap": self.swap_rates}[
            experiment
        ]
        if workload in table:
            return table[workload]
        if experiment == "swap" and workload in self.rates:
            return self.rates[workload][-2:]  # the two highest rates of the scheduler sweep
        if experiment == "balancers" and workload in self.rates:
            return self.rates[workload]
        raise KeyError(workload)


#: ``autellix bench``: every workload x scheduler at three rates, sized to finish in under
#: 2 minutes on 2 cores. Rates: low load, near the FCFS knee, past it (``benches/RESULTS.md``).
QUICK = Sweep(
    name="quick",
    programs=150,
    rates={
        "sharegpt": (0.4, 0.8, 1.2),
        "bfcl": (0.3, 0.5, 0.7),
        "lats": (0.03, 0.05, 0.07),
        "mixed": (0.08, 0.14, 0.2),
    },
    balancer_rates={"sharegpt": (0.4, 0.8), "lats": (0.03, 0.05)},
    swap_rates={"sharegpt": (0.8, 1.2)},
)

#: ``autellix bench --full``: the issue's full sweep, 4 workloads x 5 schedulers x 6 rates x
#: 1000 programs (target: under 10 minutes on 2 cores). Each workload's rates run from light
#: load to just past the point where FCFS's latency takes off on a LLaMA-3.1-8B / A100 engine
#: (sharegpt further: its latency rises gradually, and its long chats let FCFS drain a backlog).
FULL = Sweep(
    name="full",
    programs=1000,
    rates={
        "sharegpt": (0.4, 0.8, 1.2, 1.6, 2.0, 2.4),
        "bfcl": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
        "lats": (0.02, 0.03, 0.04, 0.05, 0.06, 0.07),
        "mixed": (0.05, 0.08, 0.11, 0.14, 0.17, 0.2),
    },
    balancer_rates={"sharegpt": (0.4, 0.6, 0.8, 1.0), "lats": (0.03, 0.04, 0.05, 0.06)},
    swap_rates={"sharegpt": (0.8, 1.0, 1.2)},
)

SWEEPS: dict[str, Sweep] = {s.name: s for s in (QUICK, FULL)}

#: Rough relative cost of one program of each workload (calls per program, paper §8): runs are
#: submitted most expensive first so the process pool finishes together.
_WORKLOAD_COST = {"sharegpt": 7.0, "bfcl": 11.0, "lats": 160.0, "mixed": 59.0}

#: Fields of a row that depend on the wall clock, not on the simulation.
WALL_FIELDS = ("wall_seconds",)


def autellix_policy(workload: str) -> str:
    """The scheduler autellix uses for ``workload`` (a name of :data:`WORKLOADS` or a trace)."""
    return AUTELLIX_POLICY.get(workload, "atlas")


@dataclass(frozen=True)
class BenchOptions:
    """What ``autellix bench`` runs; ``None`` = the experiment's default."""

    experiments: tuple[str, ...] = ("schedulers",)
    sweep: Sweep = QUICK
    workloads: tuple[str, ...] | None = None
    schedulers: tuple[str, ...] | None = None
    balancers: tuple[str, ...] | None = None
    swap_modes: tuple[str, ...] | None = None
    #: Rates used as given for every workload and experiment (not scaled by the engines).
    rates: tuple[float, ...] | None = None
    programs: int | None = None
    seed: int = 0
    #: Cost-model preset; ``None`` = the :class:`SimConfig` default.
    preset: str | None = None
    #: ``benches/bench_swap.py`` JSON calibrating every engine's swap times; ``None``: datasheet.
    swap_results: str | None = None
    engines: int = DEFAULT_ENGINES
    #: Engine prefix caching for every run but ``vllm`` (which never has it).
    prefix_caching: bool = True
    #: First MLFQ boundary in seconds; ``None`` = the :class:`SimConfig` default.
    quantum: float | None = None
    jobs: int = 1
    out: Path = Path("autellix-bench")
    plots: bool = True
    #: Latency target (s/token) for "throughput at a latency target"; ``None`` = automatic.
    latency_target: float | None = None


@dataclass(frozen=True)
class Run:
    """One planned simulation and the experiment it belongs to."""

    experiment: str
    config: SimConfig


def plan(options: BenchOptions) -> list[Run]:
    """Every (experiment, config) the options ask for, in a deterministic order."""
    runs: list[Run] = []
    base: dict[str, Any] = {"seed": options.seed, "prefix_caching": options.prefix_caching}
    if options.preset is not None:
        base["preset"] = options.preset
    if options.swap_results is not None:
        base["swap_results"] = options.swap_results
    if options.quantum is not None:
        base["quantum"] = options.quantum
    programs = options.programs if options.programs is not None else options.sweep.programs
    base["programs"] = programs
    for experiment in options.experiments:
        workloads = options.workloads or DEFAULT_WORKLOADS[experiment]
        for workload in workloads:
            rates = options.rates or options.sweep.rates_for(experiment, workload)
            if experiment == "schedulers":
                for rate in rates:
                    for scheduler in options.schedulers or SCHEDULERS:
                        cfg = SimConfig(workload=workload, rate=rate, scheduler=scheduler, engines=1, **base)
                        runs.append(Run(experiment, cfg))
            elif experiment == "balancers":
                engines = options.engines
                if options.rates is None:
                    rates = tuple(r * engines for r in rates)
                for rate in rates:
                    for scheduler in options.schedulers or (autellix_policy(workload),):
                        for balancer in options.balancers or BALANCERS:
                            cfg = SimConfig(
                                workload=workload,
                                rate=rate,
                                scheduler=scheduler,
                                balancer=balancer,
                                engines=engines,
                                **base,
                            )
                            runs.append(Run(experiment, cfg))
            elif experiment == "swap":
                for rate in rates:
                    for scheduler in options.schedulers or SWAP_SCHEDULERS:
                        for swap in options.swap_modes or SWAP_EXPERIMENT_MODES:
                            cfg = SimConfig(
                                workload=workload,
                                rate=rate,
                                scheduler=scheduler,
                                swap=swap,
                                engines=1,
                                **base,
                            )
                            runs.append(Run(experiment, cfg))
            else:
                raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    return runs


# ---------------------------------------------------------------------------------------------
# Running


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


def result_row(experiment: str, result: SimResult) -> dict[str, Any]:
    """The CSV / JSON row of one run: its experiment, then :meth:`SimResult.row`."""
    return {"experiment": experiment, **result.row()}


def _index(names: Sequence[str], value: Any) -> tuple[int, str]:
    text = "" if value is None else str(value)
    return (names.index(text), "") if text in names else (len(names), text)


def row_sort_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Deterministic order of rows: experiment, workload, rate, scheduler, balancer, swap mode,
    then every other config field (never a wall-clock field)."""
    rest = tuple(
        str(row.get(name))
        for name in SimConfig.field_names()
        if name not in ("workload", "rate", "scheduler", "balancer", "swap")
    )
    return (
        _index(EXPERIMENTS, row["experiment"]),
        _index(WORKLOADS, row["workload"]),
        float(row["rate"]),
        _index(SCHEDULERS, row["scheduler"]),
        _index(BALANCERS, row["balancer"]),
        _index(SWAP_MODES, row["swap"]),
        rest,
    )


def collect_rows(runs: Iterable[Run], results: Mapping[SimConfig, SimResult]) -> list[dict[str, Any]]:
    """One row per planned run, sorted by :func:`row_sort_key`."""
    rows = [result_row(run.experiment, results[run.config]) for run in runs]
    rows.sort(key=row_sort_key)
    return rows


# ---------------------------------------------------------------------------------------------
# Output files


def _json_safe(value: Any) -> Any:
    """NaN / infinity -> ``None`` (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_results(rows: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    """``results.csv`` and ``results.json`` (a list of rows; NaN -> empty cell / ``null``)."""
    out.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in _json_safe(dict(row)).items()})
    json_path = write_json(out / "results.json", list(rows))
    return [csv_path, json_path]


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.json`` written by :func:`write_results` (``null`` -> NaN)."""
    rows: list[dict[str, Any]] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for row in rows:
        for key, value in row.items():
            if value is None and key not in ("horizon",):
                row[key] = math.nan
    return rows


# ---------------------------------------------------------------------------------------------
# Summary


def _num(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ratio(numerator: Any, denominator: Any) -> float | None:
    a, b = _num(numerator), _num(denominator)
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return a / b


def _by(rows: Iterable[Mapping[str, Any]], field_name: str) -> dict[Any, dict[float, Mapping[str, Any]]]:
    """``{value of field_name: {rate: row}}``."""
    out: dict[Any, dict[float, Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(row[field_name], {})[float(row["rate"])] = row
    return out


def _group(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def latency_target_for(rows: Sequence[Mapping[str, Any]], given: float | None = None) -> float | None:
    """The latency target (s/token) of one workload's rows: ``given``, else
    :data:`LATENCY_TARGET_FACTOR` x the lowest mean latency observed at the lowest rate."""
    if given is not None:
        return given
    if not rows:
        return None
    lowest = min(float(r["rate"]) for r in rows)
    values = [_num(r["latency_mean"]) for r in rows if float(r["rate"]) == lowest]
    values = [v for v in values if math.isfinite(v) and v > 0]
    return LATENCY_TARGET_FACTOR * min(values) if values else None


def throughput_at_target(points: Mapping[float, Mapping[str, Any]], target: float) -> tuple[float, bool]:
    """The highest arrival rate (programs/s) whose mean latency meets ``target``.

    Rates are walked upwards; the first one that misses the target (mean latency above it, or
    not every program completed) ends the walk. The answer is interpolated linearly between the
    last rate that met the target and that first miss (at the miss's measured latency); it is
    0 when the lowest rate already misses, and the highest swept rate, flagged ``saturated``
    (a lower bound), when none misses. Returns ``(rate, saturated)``.
    """
    prev_rate, prev_latency = 0.0, math.nan
    for rate in sorted(points):
        row = points[rate]
        latency = _num(row["latency_mean"])
        ok = bool(row["completed"]) and math.isfinite(latency) and latency <= target
        if ok:
            prev_rate, prev_latency = rate, latency
            continue
        if not math.isfinite(prev_latency):
            return 0.0, False
        if math.isfinite(latency) and latency > target and latency > prev_latency:
            return prev_rate + (target - prev_latency) / (latency - prev_latency) * (rate - prev_rate), False
        return prev_rate, False
    return prev_rate, bool(points)


def compare(
    points: Mapping[Any, Mapping[float, Mapping[str, Any]]],
    *,
    policy: Any,
    baseline: Any,
    reference: Any,
) -> dict[str, Any]:
    """Latency ratios ``baseline / policy`` (how many times lower the policy's latency is).

    ``points`` maps each compared value (scheduler or balancer) to ``{rate: row}``. ``rate`` is
    the highest rate where ``reference`` completed every program; ``mean_ratio`` / ``p99_ratio``
    are taken there. ``max_*_ratio`` are the largest ratios over the rates where both the policy
    and the baseline completed (with the rate they occur at).
    """
    pol, base = points.get(policy, {}), points.get(baseline, {})
    done = [rate for rate, row in points.get(reference, {}).items() if row["completed"]]
    ref_rate = max(done) if done else None
    out: dict[str, Any] = {"rate": ref_rate}
    for metric in ("mean", "p99"):
        key = f"latency_{metric}"
        if ref_rate is not None and ref_rate in pol and ref_rate in base:
            out[f"{metric}_ratio"] = _ratio(base[ref_rate][key], pol[ref_rate][key])
        else:
            out[f"{metric}_ratio"] = None
        best: tuple[float, float] | None = None
        for rate in sorted(set(pol) & set(base)):
            if not (pol[rate]["completed"] and base[rate]["completed"]):
                continue
            ratio = _ratio(base[rate][key], pol[rate][key])
            if ratio is not None and (best is None or ratio > best[0]):
                best = (ratio, rate)
        out[f"max_{metric}_ratio"] = best[0] if best else None
        out[f"max_{metric}_ratio_rate"] = best[1] if best else None
    return out


def _throughputs(
    points: Mapping[Any, Mapping[float, Mapping[str, Any]]], target: float | None
) -> dict[Any, tuple[float, bool] | None]:
    return {k: (throughput_at_target(v, target) if target is not None else None) for k, v in points.items()}


def _ordered(values: Iterable[Any], names: Sequence[str]) -> list[Any]:
    return sorted(set(values), key=lambda v: _index(names, v))


def summarize_schedulers(
    rows: Sequence[Mapping[str, Any]], latency_target: float | None = None
) -> dict[str, Any]:
    """Per workload: program-aware policies vs FCFS / MLFQ, and throughput at a latency target."""
    comparisons: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    for (workload,), group in sorted(
        _group(rows, ["workload"]).items(), key=lambda kv: _index(WORKLOADS, kv[0][0])
    ):
        points = _by(group, "scheduler")
        target = latency_target_for(group, latency_target)
        tput = _throughputs(points, target)
        for scheduler in _ordered(points, SCHEDULERS):
            t = tput[scheduler]
            throughput.append(
                {
                    "workload": workload,
                    "scheduler": scheduler,
                    "target": target,
                    "target_given": latency_target is not None,
                    "throughput": t[0] if t else None,
                    "saturated": t[1] if t else None,
                }
            )
        for policy in (p for p in AUTELLIX_SCHEDULERS if p in points):
            for baseline in (b for b in BASELINE_SCHEDULERS if b in points):
                reference = "fcfs" if "fcfs" in points else baseline
                record: dict[str, Any] = {
                    "workload": workload,
                    "policy": policy,
                    "baseline": baseline,
                    "autellix": policy == autellix_policy(workload),
                    "reference": reference,
                }
                record.update(compare(points, policy=policy, baseline=baseline, reference=reference))
                tp, tb = tput[policy], tput[baseline]
                record["throughput_ratio"] = _ratio(tp[0], tb[0]) if tp and tb else None
                comparisons.append(record)
    return {"comparisons": comparisons, "throughput_at_target": throughput}


def summarize_balancers(
    rows: Sequence[Mapping[str, Any]], latency_target: float | None = None
) -> dict[str, Any]:
    """Per workload (and scheduler): program-aware balancing vs round-robin / least-loaded."""
    comparisons: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    groups = _group(rows, ["workload", "scheduler", "engines"])
    for (workload, scheduler, engines), group in sorted(
        groups.items(), key=lambda kv: (_index(WORKLOADS, kv[0][0]), _index(SCHEDULERS, kv[0][1]), kv[0][2])
    ):
        points = _by(group, "balancer")
        target = latency_target_for(group, latency_target)
        tput = _throughputs(points, target)
        common = {"workload": workload, "scheduler": scheduler, "engines": engines}
        for balancer in _ordered(points, BALANCERS):
            t = tput[balancer]
            throughput.append(
                {
                    **common,
                    "balancer": balancer,
                    "target": target,
                    "target_given": latency_target is not None,
                    "throughput": t[0] if t else None,
                    "saturated": t[1] if t else None,
                }
            )
        if AUTELLIX_BALANCER not in points:
            continue
        for baseline in (b for b in BASELINE_BALANCERS if b in points):
            record: dict[str, Any] = {**common, "policy": AUTELLIX_BALANCER, "baseline": baseline}
            record.update(compare(points, policy=AUTELLIX_BALANCER, baseline=baseline, reference=baseline))
            tp, tb = tput[AUTELLIX_BALANCER], tput[baseline]
            record["throughput_ratio"] = _ratio(tp[0], tb[0]) if tp and tb else None
            comparisons.append(record)
    return {"comparisons": comparisons, "throughput_at_target": throughput}


def summarize_swap(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per workload x scheduler x rate: each swap mode's swaps / copies / time / latency, and
    the per-block : bulk ratios of swap time, swap copies and mean latency."""
    records: list[dict[str, Any]] = []
    groups = _group(rows, ["workload", "scheduler", "rate"])
    for (workload, scheduler, rate), group in sorted(
        groups.items(),
        key=lambda kv: (_index(WORKLOADS, kv[0][0]), _index(SCHEDULERS, kv[0][1]), float(kv[0][2])),
    ):
        modes = {row["swap"]: row for row in group}
        record: dict[str, Any] = {
            "workload": workload,
            "scheduler": scheduler,
            "rate": float(rate),
            "modes": {},
        }
        for mode in _ordered(modes, SWAP_MODES):
            row = modes[mode]
            record["modes"][mode] = {
                k: row[k]
                for k in (
                    "completed",
                    "preemptions",
                    "swaps",
                    "swap_copies",
                    "swap_time",
                    "recomputed_tokens",
                    "latency_mean",
                    "latency_p99",
                )
            }
        pb, bulk = modes.get("per-block"), modes.get("bulk")
        for key, column in (
            ("swap_time_ratio", "swap_time"),
            ("swap_copies_ratio", "swap_copies"),
            ("latency_ratio", "latency_mean"),
        ):
            record[key] = _ratio(pb[column], bulk[column]) if pb and bulk else None
        records.append(record)
    return {"runs": records}


def summarize(rows: Sequence[Mapping[str, Any]], latency_target: float | None = None) -> dict[str, Any]:
    """The headline numbers of every experiment present in ``rows`` (rows of :func:`collect_rows`
    or :func:`read_rows`).

    - ``schedulers.comparisons``: for each workload, policy (plas, atlas; ``autellix`` marks the
      one autellix runs) and baseline (fcfs, mlfq): at the highest rate where FCFS still completed
      every program, ``mean_ratio`` = baseline mean latency / policy mean latency and
      ``p99_ratio`` likewise; ``max_mean_ratio`` / ``max_p99_ratio`` = the largest such ratio over
      the rates where both completed; ``throughput_ratio`` = policy / baseline throughput at the
      latency target.
    - ``*.throughput_at_target``: per workload x scheduler (or balancer), the highest rate whose
      mean latency meets the target (see :func:`throughput_at_target`); the target is
      ``latency_target`` or :data:`LATENCY_TARGET_FACTOR` x the lowest mean latency of the
      workload at its lowest rate in that experiment.
    - ``balancers.comparisons``: round-robin and least-loaded vs program-aware, same ratios (the
      reference rate is the highest one where the baseline balancer completed).
    - ``swap.runs``: per-block / bulk swap time, swap copies and mean latency.
    """
    out: dict[str, Any] = {}
    by_experiment = _group(rows, ["experiment"])
    if ("schedulers",) in by_experiment:
        out["schedulers"] = summarize_schedulers(by_experiment[("schedulers",)], latency_target)
    if ("balancers",) in by_experiment:
        out["balancers"] = summarize_balancers(by_experiment[("balancers",)], latency_target)
    if ("swap",) in by_experiment:
        out["swap"] = summarize_swap(by_experiment[("swap",)])
    return out


# ---------------------------------------------------------------------------------------------
# Console output


def _fmt(value: Any, spec: str = ".4g") -> str:
    x = _num(value)
    return "-" if not math.isfinite(x) else format(x, spec)


def _fmt_ratio(value: Any) -> str:
    x = _num(value)
    return "-" if not math.isfinite(x) else f"{x:.2f}x"


def results_table(rows: Sequence[Mapping[str, Any]], experiment: str) -> Any:
    """A rich table of one experiment's rows."""
    from rich.table import Table

    rows = [r for r in rows if r["experiment"] == experiment]
    show_swaps = experiment == "swap" or any(_num(r["swaps"]) > 0 for r in rows)
    columns: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
        ("workload", lambda r: str(r["workload"])),
        ("rate /s", lambda r: _fmt(r["rate"], "g")),
    ]
    if experiment == "balancers":
        columns.append(("engines", lambda r: str(r["engines"])))
    columns.append(("scheduler", lambda r: str(r["scheduler"])))
    if experiment == "balancers":
        columns.append(("balancer", lambda r: str(r["balancer"])))
    if experiment == "swap":
        columns.append(("swap", lambda r: str(r["swap"])))
    columns += [
        ("done", lambda r: f"{r['programs_done']}/{r['programs']}" + ("" if r["completed"] else " ✗")),
        ("mean s/tok", lambda r: _fmt(r["latency_mean"])),
        ("P50", lambda r: _fmt(r["latency_p50"])),
        ("P95", lambda r: _fmt(r["latency_p95"])),
        ("P99", lambda r: _fmt(r["latency_p99"])),
        ("TTFT mean s", lambda r: _fmt(r["ttft_mean"])),
        ("prog/s", lambda r: _fmt(r["throughput"])),
    ]
    if show_swaps:
        columns += [
            ("swaps", lambda r: str(r["swaps"])),
            ("copies", lambda r: str(r["swap_copies"])),
            ("swap s", lambda r: _fmt(r["swap_time"])),
        ]
    table = Table(title=f"autellix bench: {experiment} (latency = response time / generated tokens)")
    for name, _ in columns:
        table.add_column(
            name, justify="left" if name in ("workload", "scheduler", "balancer", "swap") else "right"
        )
    for row in rows:
        style = "bold" if row["scheduler"] == autellix_policy(str(row["workload"])) else None
        table.add_row(*(render(row) for _, render in columns), style=style)
    return table


def summary_tables(summary: Mapping[str, Any]) -> list[Any]:
    """Rich tables of :func:`summarize`'s output."""
    from rich.table import Table

    tables: list[Any] = []
    for experiment in ("schedulers", "balancers"):
        if experiment not in summary:
            continue
        part = summary[experiment]
        title = (
            "Latency ratio baseline / autellix (higher = autellix better)"
            if experiment == "schedulers"
            else "Latency ratio baseline balancer / program-aware (higher = program-aware better)"
        )
        t = Table(title=title)
        for name in (
            "workload",
            "policy",
            "vs",
            "at rate",
            "mean",
            "P99",
            "max mean (rate)",
            "max P99 (rate)",
            "throughput@target",
        ):
            t.add_column(name, justify="left" if name in ("workload", "policy", "vs") else "right")
        for c in part["comparisons"]:
            policy = str(c["policy"]) + (" *" if c.get("autellix") else "")
            t.add_row(
                str(c["workload"]),
                policy,
                str(c["baseline"]),
                _fmt(c["rate"], "g"),
                _fmt_ratio(c["mean_ratio"]),
                _fmt_ratio(c["p99_ratio"]),
                f"{_fmt_ratio(c['max_mean_ratio'])} ({_fmt(c['max_mean_ratio_rate'], 'g')})",
                f"{_fmt_ratio(c['max_p99_ratio'])} ({_fmt(c['max_p99_ratio_rate'], 'g')})",
                _fmt_ratio(c["throughput_ratio"]),
            )
        if experiment == "schedulers":
            t.caption = (
                "* = autellix's policy for the workload; 'at rate' = highest rate where FCFS completed; "
                "max = over rates where both completed; throughput@target = policy / baseline"
            )
        tables.append(t)
        key = "scheduler" if experiment == "schedulers" else "balancer"
        names = SCHEDULERS if experiment == "schedulers" else BALANCERS
        entries = part["throughput_at_target"]
        present = _ordered((e[key] for e in entries), names)
        tt = Table(title=f"Throughput at the latency target (programs/s), {experiment}")
        tt.add_column("workload")
        tt.add_column("target s/tok", justify="right")
        for name in present:
            tt.add_column(str(name), justify="right")
        for (workload, target), group in _group(entries, ["workload", "target"]).items():
            cells = {e[key]: e for e in group}
            tt.add_row(
                str(workload),
                _fmt(target),
                *(
                    (
                        "-"
                        if cells.get(n) is None
                        else _fmt(cells[n]["throughput"]) + ("+" if cells[n]["saturated"] else "")
                    )
                    for n in present
                ),
            )
        tt.caption = "+ = met the target at every swept rate (a lower bound)"
        tables.append(tt)
    if "swap" in summary:
        t = Table(title="Swap modes: per-block / bulk")
        for name in (
            "workload",
            "scheduler",
            "rate",
            "swap time s by mode",
            "swap time ratio",
            "copies ratio",
            "latency ratio",
        ):
            t.add_column(
                name, justify="left" if name in ("workload", "scheduler", "swap time s by mode") else "right"
            )
        for r in summary["swap"]["runs"]:
            by_mode = ", ".join(f"{m} {_fmt(v['swap_time'])}" for m, v in r["modes"].items())
            t.add_row(
                str(r["workload"]),
                str(r["scheduler"]),
                _fmt(r["rate"], "g"),
                by_mode,
                _fmt_ratio(r["swap_time_ratio"]),
                _fmt_ratio(r["swap_copies_ratio"]),
                _fmt_ratio(r["latency_ratio"]),
            )
        tables.append(t)
    return tables


# ---------------------------------------------------------------------------------------------
# The command


@dataclass
class BenchOutcome:
    """What :func:`run_bench` produced."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    simulations: int = 0
    elapsed: float = 0.0


def _describe(config: SimConfig) -> str:
    parts = [config.workload, config.scheduler, f"{config.rate:g}/s"]
    if config.engines > 1:
        parts.append(f"{config.engines}x {config.balancer}")
    if config.swap != "bulk":
        parts.append(config.swap)
    return " ".join(parts)


def run_bench(options: BenchOptions, console: Any | None = None) -> BenchOutcome:
    """Plan, simulate, write files and print tables; raises what a simulation raised."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console if console is not None else Console()
    runs = plan(options)
    configs = list(dict.fromkeys(run.config for run in runs))
    started = time.perf_counter()
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
            progress.update(task, advance=1, description=f"done: {_describe(config)}{mark}")

        results = run_configs(configs, options.jobs, done)
        progress.update(task, description=f"simulated {len(configs)} runs")
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
        from autellix import plots

        files += plots.plot_all(rows, summary, out)

    for experiment in options.experiments:
        console.print(results_table(rows, experiment))
    for table in summary_tables(summary):
        console.print(table)
    console.print(f"{len(configs)} simulations in {elapsed:.1f} s with {options.jobs} job(s); wrote:")
    for path in files:
        console.print(f"  {path}")
    return BenchOutcome(rows=rows, summary=summary, files=files, simulations=len(configs), elapsed=elapsed)


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1
