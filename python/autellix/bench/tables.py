"""The rich tables ``autellix bench`` prints: each experiment's rows and the summary."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autellix.bench.plan import AUTELLIX_KV_POLICY, KV_BASELINE, KV_LIMIT, autellix_policy
from autellix.bench.results import num, ordered
from autellix.bench.summary import group
from autellix.sim.config import BALANCERS, SCHEDULERS

#: Columns of text (left-aligned); numbers are right-aligned.
_TEXT_COLUMNS = frozenset(
    {"workload", "scheduler", "balancer", "swap", "kv policy", "policy", "vs", "swap time s by mode"}
)


def _fmt(value: Any, spec: str = ".4g") -> str:
    x = num(value)
    return "-" if not math.isfinite(x) else format(x, spec)


def _fmt_ratio(value: Any) -> str:
    x = num(value)
    return "-" if not math.isfinite(x) else f"{x:.2f}x"


def _table(title: str, columns: Sequence[str]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="left" if name in _TEXT_COLUMNS else "right")
    return table


def results_table(rows: Sequence[Mapping[str, Any]], experiment: str) -> Any:
    """A rich table of one experiment's rows."""
    rows = [r for r in rows if r["experiment"] == experiment]
    kv = experiment == "kv"  # its KV columns take the place of P50 / P95 and the swap columns
    show_swaps = experiment == "swap" or (not kv and any(num(r["swaps"]) > 0 for r in rows))
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
    if kv:
        columns.append(("kv policy", lambda r: str(r["kv_policy"])))
    columns += [
        ("done", lambda r: f"{r['programs_done']}/{r['programs']}" + ("" if r["completed"] else " ✗")),
        ("mean s/tok", lambda r: _fmt(r["latency_mean"])),
    ]
    if not kv:
        columns += [("P50", lambda r: _fmt(r["latency_p50"])), ("P95", lambda r: _fmt(r["latency_p95"]))]
    columns += [
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
    if kv:
        columns += [
            ("worst s/tok", lambda r: _fmt(r["worst_latency"])),
            ("hit share", lambda r: _fmt(r["hit_share"], ".3f")),
            ("offload GB", lambda r: _fmt(r["offloaded_gb"])),
            ("load GB", lambda r: _fmt(r["loaded_gb"])),
            ("deferred", lambda r: str(r["deferred_programs"])),
            ("max defer s", lambda r: _fmt(r["longest_deferral"], ".3g")),
        ]
    table = _table(
        f"autellix bench: {experiment} (latency = response time / generated tokens)",
        [name for name, _ in columns],
    )
    for row in rows:
        if kv:
            ours = row["kv_policy"] == AUTELLIX_KV_POLICY
        else:
            ours = row["scheduler"] == autellix_policy(str(row["workload"]))
        style = "bold" if ours else None
        table.add_row(*(render(row) for _, render in columns), style=style)
    return table


def _comparison_table(experiment: str, comparisons: Sequence[Mapping[str, Any]]) -> Any:
    title = (
        "Latency ratio baseline / autellix (higher = autellix better)"
        if experiment == "schedulers"
        else "Latency ratio baseline balancer / program-aware (higher = program-aware better)"
    )
    t = _table(
        title,
        (
            "workload",
            "policy",
            "vs",
            "at rate",
            "mean",
            "P99",
            "max mean (rate)",
            "max P99 (rate)",
            "throughput@target",
        ),
    )
    for c in comparisons:
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
    return t


def _throughput_table(experiment: str, entries: Sequence[Mapping[str, Any]]) -> Any:
    key = "scheduler" if experiment == "schedulers" else "balancer"
    names = SCHEDULERS if experiment == "schedulers" else BALANCERS
    present = ordered((e[key] for e in entries), names)
    tt = _table(
        f"Throughput at the latency target (programs/s), {experiment}",
        ("workload", "target s/tok", *(str(name) for name in present)),
    )
    for (workload, target), rows_of in group(entries, ["workload", "target"]).items():
        cells = {e[key]: e for e in rows_of}
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
    return tt


def _swap_table(runs: Sequence[Mapping[str, Any]]) -> Any:
    t = _table(
        "Swap modes: per-block / bulk",
        (
            "workload",
            "scheduler",
            "rate",
            "swap time s by mode",
            "swap time ratio",
            "copies ratio",
            "latency ratio",
        ),
    )
    for r in runs:
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
    return t


def _kv_table(entries: Sequence[Mapping[str, Any]]) -> Any:
    baseline = "+".join(KV_BASELINE)
    t = _table(
        "KV policies: throughput at the latency target, and latency at the highest rate meeting it",
        (
            "workload",
            "scheduler",
            "kv policy",
            "target s/tok",
            "throughput@target",
            "at rate",
            "mean s/tok",
            "P99",
            "worst s/tok",
            "hit share",
            "max defer s",
            f"vs {KV_LIMIT}",
            f"vs {baseline}",
        ),
    )
    for e in entries:
        t.add_row(
            str(e["workload"]),
            str(e["scheduler"]),
            str(e["kv_policy"]),
            _fmt(e["target"]),
            _fmt(e["throughput"]) + ("+" if e["saturated"] else ""),
            _fmt(e["rate"], "g") + ("" if e["at_target"] else " !"),
            _fmt(e["latency_mean"]),
            _fmt(e["latency_p99"]),
            _fmt(e["worst_latency"]),
            _fmt(e["hit_share"], ".3f"),
            _fmt(e["longest_deferral"], ".3g"),
            _fmt_ratio(e["throughput_vs_ideal"]),
            _fmt_ratio(e["throughput_vs_baseline"]),
            style="bold" if e["kv_policy"] == AUTELLIX_KV_POLICY else None,
        )
    t.caption = (
        "throughput@target in programs/s (+ = met the target at every swept rate, a lower bound); "
        "! = no rate met the target: the highest rate where every program completed; "
        f"vs = throughput@target / {KV_LIMIT}'s (same scheduler) / {baseline}'s"
    )
    return t


def summary_tables(summary: Mapping[str, Any]) -> list[Any]:
    """Rich tables of :func:`~autellix.bench.summary.summarize`'s output."""
    tables: list[Any] = []
    for experiment in ("schedulers", "balancers"):
        if experiment in summary:
            part = summary[experiment]
            tables.append(_comparison_table(experiment, part["comparisons"]))
            tables.append(_throughput_table(experiment, part["throughput_at_target"]))
    if "swap" in summary:
        tables.append(_swap_table(summary["swap"]["runs"]))
    if "kv" in summary:
        tables.append(_kv_table(summary["kv"]["throughput_at_target"]))
    return tables
