"""The paper's headline numbers, derived from a sweep's rows alone (see :func:`summarize`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from autellix.bench.plan import (
    AUTELLIX_BALANCER,
    AUTELLIX_SCHEDULERS,
    BASELINE_BALANCERS,
    BASELINE_SCHEDULERS,
    KV_BASELINE,
    KV_LIMIT,
    autellix_policy,
)
from autellix.bench.results import num, ordered, rank
from autellix.sim.config import BALANCERS, KV_POLICIES, SCHEDULERS, SWAP_MODES
from autellix.sim.workload import WORKLOADS

#: Default latency target = this x the lowest mean latency seen for a workload at its lowest rate.
LATENCY_TARGET_FACTOR = 5.0

#: What :func:`summarize_swap` keeps of each swap mode's row.
_SWAP_FIELDS = (
    "completed",
    "preemptions",
    "swaps",
    "swap_copies",
    "swap_time",
    "recomputed_tokens",
    "latency_mean",
    "latency_p99",
)
#: What :func:`summarize_kv` keeps of each config's row at the rate it reports.
_KV_FIELDS = ("latency_mean", "latency_p99", "worst_latency", "hit_share", "longest_deferral")


def _ratio(numerator: Any, denominator: Any) -> float | None:
    a, b = num(numerator), num(denominator)
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return a / b


def _by(rows: Iterable[Mapping[str, Any]], field_name: str) -> dict[Any, dict[float, Mapping[str, Any]]]:
    """``{value of field_name: {rate: row}}``."""
    out: dict[Any, dict[float, Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(row[field_name], {})[float(row["rate"])] = row
    return out


def group(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    """Rows by the tuple of their ``keys`` values, in first-seen order."""
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
    values = [num(r["latency_mean"]) for r in rows if float(r["rate"]) == lowest]
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
        latency = num(row["latency_mean"])
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


def _throughput_entries(
    points: Mapping[Any, Mapping[float, Mapping[str, Any]]],
    series: str,
    names: Sequence[str],
    target: float | None,
    target_given: bool,
    common: Mapping[str, Any],
) -> tuple[dict[Any, tuple[float, bool] | None], list[dict[str, Any]]]:
    """Throughput at ``target`` of each ``series`` value (scheduler or balancer) of ``points``:
    ``{value: (rate, saturated) or None}`` and its ``throughput_at_target`` entries."""
    tput = {k: (throughput_at_target(v, target) if target is not None else None) for k, v in points.items()}
    entries: list[dict[str, Any]] = []
    for name in ordered(points, names):
        t = tput[name]
        entries.append(
            {
                **common,
                series: name,
                "target": target,
                "target_given": target_given,
                "throughput": t[0] if t else None,
                "saturated": t[1] if t else None,
            }
        )
    return tput, entries


def _throughput_ratio(
    tput: Mapping[Any, tuple[float, bool] | None], policy: Any, baseline: Any
) -> float | None:
    """Throughput at the target of ``policy`` / ``baseline``; ``None`` if either is missing or 0."""
    tp, tb = tput.get(policy), tput.get(baseline)
    return _ratio(tp[0], tb[0]) if tp and tb else None


def _reported_rate(
    points: Mapping[float, Mapping[str, Any]], tput: tuple[float, bool] | None
) -> tuple[float | None, bool]:
    """The swept rate a config's metrics are reported at: the highest one that met the latency
    target (the last of :func:`throughput_at_target`'s walk), else the highest rate where every
    program completed. Returns ``(rate or None, whether it met the target)``."""
    met = [rate for rate in points if tput is not None and rate <= tput[0]]
    if met:
        return max(met), True
    done = [rate for rate, row in points.items() if row["completed"]]
    return (max(done) if done else None), False


def summarize_schedulers(
    rows: Sequence[Mapping[str, Any]], latency_target: float | None = None
) -> dict[str, Any]:
    """Per workload: program-aware policies vs FCFS / MLFQ, and throughput at a latency target."""
    comparisons: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    for (workload,), rows_of in sorted(
        group(rows, ["workload"]).items(), key=lambda kv: rank(WORKLOADS, kv[0][0])
    ):
        points = _by(rows_of, "scheduler")
        target = latency_target_for(rows_of, latency_target)
        tput, entries = _throughput_entries(
            points, "scheduler", SCHEDULERS, target, latency_target is not None, {"workload": workload}
        )
        throughput += entries
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
                record["throughput_ratio"] = _throughput_ratio(tput, policy, baseline)
                comparisons.append(record)
    return {"comparisons": comparisons, "throughput_at_target": throughput}


def summarize_balancers(
    rows: Sequence[Mapping[str, Any]], latency_target: float | None = None
) -> dict[str, Any]:
    """Per workload (and scheduler): program-aware balancing vs round-robin / least-loaded."""
    comparisons: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    groups = group(rows, ["workload", "scheduler", "engines"])
    for (workload, scheduler, engines), rows_of in sorted(
        groups.items(), key=lambda kv: (rank(WORKLOADS, kv[0][0]), rank(SCHEDULERS, kv[0][1]), kv[0][2])
    ):
        points = _by(rows_of, "balancer")
        target = latency_target_for(rows_of, latency_target)
        common = {"workload": workload, "scheduler": scheduler, "engines": engines}
        tput, entries = _throughput_entries(
            points, "balancer", BALANCERS, target, latency_target is not None, common
        )
        throughput += entries
        if AUTELLIX_BALANCER not in points:
            continue
        for baseline in (b for b in BASELINE_BALANCERS if b in points):
            record: dict[str, Any] = {**common, "policy": AUTELLIX_BALANCER, "baseline": baseline}
            record.update(compare(points, policy=AUTELLIX_BALANCER, baseline=baseline, reference=baseline))
            record["throughput_ratio"] = _throughput_ratio(tput, AUTELLIX_BALANCER, baseline)
            comparisons.append(record)
    return {"comparisons": comparisons, "throughput_at_target": throughput}


def summarize_swap(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per workload x scheduler x rate: each swap mode's swaps / copies / time / latency, and
    the per-block : bulk ratios of swap time, swap copies and mean latency."""
    records: list[dict[str, Any]] = []
    groups = group(rows, ["workload", "scheduler", "rate"])
    for (workload, scheduler, rate), rows_of in sorted(
        groups.items(),
        key=lambda kv: (rank(WORKLOADS, kv[0][0]), rank(SCHEDULERS, kv[0][1]), float(kv[0][2])),
    ):
        modes = {row["swap"]: row for row in rows_of}
        record: dict[str, Any] = {
            "workload": workload,
            "scheduler": scheduler,
            "rate": float(rate),
            "modes": {mode: {k: modes[mode][k] for k in _SWAP_FIELDS} for mode in ordered(modes, SWAP_MODES)},
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


def summarize_kv(rows: Sequence[Mapping[str, Any]], latency_target: float | None = None) -> dict[str, Any]:
    """Per workload x scheduler x KV policy: throughput at the workload's latency target, the
    latencies, hit share and longest deferral at :func:`_reported_rate`, and the throughput
    relative to :data:`KV_LIMIT` under the same scheduler and to :data:`KV_BASELINE`."""
    configs: list[dict[str, Any]] = []
    for (workload,), rows_of in sorted(
        group(rows, ["workload"]).items(), key=lambda kv: rank(WORKLOADS, kv[0][0])
    ):
        target = latency_target_for(rows_of, latency_target)  # one target for every config
        tput: dict[tuple[Any, Any], tuple[float, bool] | None] = {}
        entries: list[dict[str, Any]] = []
        for (scheduler,), rows_s in sorted(
            group(rows_of, ["scheduler"]).items(), key=lambda kv: rank(SCHEDULERS, kv[0][0])
        ):
            points = _by(rows_s, "kv_policy")
            common = {"workload": workload, "scheduler": scheduler}
            tput_s, entries_s = _throughput_entries(
                points, "kv_policy", KV_POLICIES, target, latency_target is not None, common
            )
            for entry in entries_s:
                policy = entry["kv_policy"]
                rate, met = _reported_rate(points[policy], tput_s[policy])
                row = points[policy].get(rate) if rate is not None else None
                entry.update({"rate": rate, "at_target": met})
                entry.update({k: (row[k] if row is not None else None) for k in _KV_FIELDS})
                tput[scheduler, policy] = tput_s[policy]
            entries += entries_s
        for entry in entries:
            config = (entry["scheduler"], entry["kv_policy"])
            entry["throughput_vs_ideal"] = _throughput_ratio(tput, config, (config[0], KV_LIMIT))
            entry["throughput_vs_baseline"] = _throughput_ratio(tput, config, KV_BASELINE)
        configs += entries
    return {"throughput_at_target": configs}


def summarize(rows: Sequence[Mapping[str, Any]], latency_target: float | None = None) -> dict[str, Any]:
    """The headline numbers of every experiment present in ``rows`` (rows of
    :func:`~autellix.bench.results.collect_rows` or :func:`~autellix.bench.results.read_rows`).

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
    - ``kv.throughput_at_target``: per workload x scheduler x KV policy (one target per workload),
      the throughput at the target; at ``rate`` (the highest rate that met the target, else the
      highest one where every program completed; ``at_target`` says which) the mean / P99 / worst
      latency, hit share and longest deferral; ``throughput_vs_ideal`` / ``throughput_vs_baseline``
      = its throughput / the ideal policy's under the same scheduler / fcfs + lru's.
    """
    out: dict[str, Any] = {}
    by_experiment = group(rows, ["experiment"])
    if ("schedulers",) in by_experiment:
        out["schedulers"] = summarize_schedulers(by_experiment[("schedulers",)], latency_target)
    if ("balancers",) in by_experiment:
        out["balancers"] = summarize_balancers(by_experiment[("balancers",)], latency_target)
    if ("swap",) in by_experiment:
        out["swap"] = summarize_swap(by_experiment[("swap",)])
    if ("kv",) in by_experiment:
        out["kv"] = summarize_kv(by_experiment[("kv",)], latency_target)
    return out
