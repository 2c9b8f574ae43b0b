"""Paper-style figures of ``autellix bench`` results (matplotlib, Agg backend, PNG at 150 dpi).

Every function takes the rows of :func:`autellix.bench.collect_rows` (or
:func:`autellix.bench.read_rows`) and/or the output of :func:`autellix.bench.summarize`, writes
PNG files into a directory and returns their paths. matplotlib is imported inside the functions,
so importing this module (or the CLI) stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autellix.bench.results import FIELD_NAMES, num, ordered, rank
from autellix.sim.config import SCHEDULERS, SWAP_MODES
from autellix.sim.workload import WORKLOADS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150

#: One colour per series, the same in every figure; autellix's policies are the saturated ones.
COLORS: dict[str, str] = {
    "vllm": "#2ca02c",
    "fcfs": "#7f7f7f",
    "mlfq": "#ff7f0e",
    "plas": "#1f77b4",
    "atlas": "#d62728",
    "round-robin": "#7f7f7f",
    "least-loaded": "#ff7f0e",
    "program-aware": "#1f77b4",
    "per-block": "#7f7f7f",
    "bulk": "#1f77b4",
    "recompute": "#ff7f0e",
    "lru": "#7f7f7f",
    "ttl": "#ff7f0e",
    "offload-lru": "#2ca02c",
    "autellix": "#1f77b4",
    "ideal": "#9467bd",
}
MARKERS: dict[str, str] = {
    "vllm": "v",
    "fcfs": "s",
    "mlfq": "^",
    "plas": "o",
    "atlas": "D",
    "round-robin": "s",
    "least-loaded": "^",
    "program-aware": "o",
    "per-block": "s",
    "bulk": "o",
    "recompute": "^",
    "lru": "s",
    "ttl": "^",
    "offload-lru": "v",
    "autellix": "o",
    "ideal": "*",
}
#: Series drawn prominently (thick solid lines, on top).
PROMINENT = frozenset({"plas", "atlas", "program-aware", "bulk", "autellix"})
LABELS: dict[str, str] = {
    "vllm": "vLLM 0.6.1 (FCFS, no prefix cache)",
    "fcfs": "FCFS (vLLM-opt)",
    "mlfq": "MLFQ",
    "plas": "PLAS (autellix)",
    "atlas": "ATLAS (autellix)",
    "program-aware": "program-aware (autellix)",
    "bulk": "bulk (autellix)",
    "lru": "LRU (vLLM prefix cache)",
    "ttl": "TTL (Continuum)",
    "offload-lru": "offload LRU (vLLM CPU offload)",
    "autellix": "KV planner (autellix)",
    "ideal": "ideal (GPU + host, free moves)",
}
_METRIC_LABEL = {"mean": "mean", "p50": "P50", "p95": "P95", "p99": "P99"}


def _new_figure(panels: int, height: float = 3.4, columns: int = 4) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cols = min(panels, columns)
    rows = max(1, math.ceil(panels / cols))
    fig = Figure(figsize=(max(6.4, 3.9 * cols), height * rows + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _series_style(name: str) -> dict[str, Any]:
    prominent = name in PROMINENT
    return {
        "color": COLORS.get(name, "#2ca02c"),
        "marker": MARKERS.get(name, "v"),
        "linewidth": 2.4 if prominent else 1.4,
        "linestyle": "-" if prominent else "--",
        "zorder": 3 if prominent else 2,
        "markersize": 6.5 if prominent else 5.5,
    }


def _line_panel(
    ax: Axes, rows: Sequence[Mapping[str, Any]], series_field: str, names: Sequence[str], key: str
) -> bool:
    """One line per series over rate; hollow markers where not every program completed.
    Returns whether anything positive was drawn."""
    drawn = False
    for name in ordered((r[series_field] for r in rows), names):
        points = sorted(
            ((num(r["rate"]), num(r[key]), bool(r["completed"])) for r in rows if r[series_field] == name),
            key=lambda p: p[0],
        )
        points = [p for p in points if math.isfinite(p[1]) and p[1] > 0]
        if not points:
            continue
        drawn = True
        style = _series_style(str(name))
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax.plot(xs, ys, label=LABELS.get(str(name), str(name)), markerfacecolor=style["color"], **style)
        hollow = [p for p in points if not p[2]]
        if hollow:
            ax.plot(
                [p[0] for p in hollow],
                [p[1] for p in hollow],
                linestyle="none",
                marker=style["marker"],
                markersize=style["markersize"] + 1,
                markerfacecolor="white",
                markeredgecolor=style["color"],
                markeredgewidth=1.6,
                zorder=4,
            )
    return drawn


def _legend(fig: Figure, axes: Sequence[Axes], hollow_note: bool = True) -> None:
    from matplotlib.lines import Line2D

    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if hollow_note:
        handles.append(
            Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black")
        )
        labels.append("not all programs finished")
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize="small")


def _panel_key(row: Mapping[str, Any], panel_fields: Sequence[str]) -> tuple[Any, ...]:
    return tuple(rank(FIELD_NAMES.get(name, ()), row[name]) for name in panel_fields)


def plot_latency(
    rows: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    metric: str = "mean",
    series_field: str = "scheduler",
    panel_fields: Sequence[str] = ("workload",),
    columns: int = 4,
    title: str | None = None,
) -> Path:
    """One subplot per workload (per distinct ``panel_fields``, ``columns`` to a row): x = arrival
    rate (programs/s), y = program latency per token (s/token, log scale), one line per
    ``series_field`` value (scheduler, balancer, swap mode, KV policy)."""
    names = FIELD_NAMES.get(series_field, ())
    panels: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: _panel_key(r, panel_fields)):
        panels.setdefault(tuple(row[f] for f in panel_fields), []).append(row)
    fig, axes = _new_figure(max(1, len(panels)), columns=columns)
    key = f"latency_{metric}"
    for ax, (panel, subset) in zip(axes, panels.items(), strict=False):
        if _line_panel(ax, subset, series_field, names, key):
            ax.set_yscale("log")
        engines = {r.get("engines", 1) for r in subset}
        suffix = f" ({next(iter(engines))} engines)" if len(engines) == 1 and next(iter(engines)) != 1 else ""
        ax.set_title(", ".join(str(p) for p in panel) + suffix)
        ax.set_xlabel("arrival rate (programs/s)")
        ax.set_ylabel(f"{_METRIC_LABEL.get(metric, metric)} latency (s/token)")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title or f"{_METRIC_LABEL.get(metric, metric)} program latency per token vs arrival rate")
    _legend(fig, axes)
    return _save(fig, path)


def plot_throughput_at_target(
    entries: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    series_field: str = "scheduler",
    title: str | None = None,
) -> Path:
    """Grouped bars: per workload, the highest arrival rate (programs/s) each series sustains
    at the latency target (hatched = met the target at every swept rate, a lower bound)."""
    names = FIELD_NAMES.get(series_field, ())
    workloads = ordered((e["workload"] for e in entries), WORKLOADS)
    fig, axes = _new_figure(max(1, len(workloads)), height=3.0)
    for ax, workload in zip(axes, workloads, strict=False):
        subset = [e for e in entries if e["workload"] == workload]
        series = ordered((e[series_field] for e in subset), names)
        for i, name in enumerate(series):
            entry = next(e for e in subset if e[series_field] == name)
            value = num(entry["throughput"])
            ax.bar(
                i,
                value if math.isfinite(value) else 0.0,
                color=COLORS.get(str(name), "#2ca02c"),
                hatch="//" if entry.get("saturated") else None,
                edgecolor="black",
                linewidth=1.2 if name in PROMINENT else 0.5,
                label=LABELS.get(str(name), str(name)),
            )
        ax.set_xticks(range(len(series)), [str(s) for s in series], rotation=20)
        target = num(subset[0]["target"]) if subset else math.nan
        target_text = f"target {target:.3g} s/token" if math.isfinite(target) else "no target"
        ax.set_title(f"{workload}\n{target_text}", fontsize="medium")
        ax.set_ylabel("throughput (programs/s)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title or "Throughput at the latency target (hatched: lower bound)")
    return _save(fig, path)


def plot_swap(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Bars of total swap time (s) per swap mode, grouped by scheduler x rate, one subplot per
    workload; mean latency per mode is written above the bars."""
    workloads = ordered((r["workload"] for r in rows), WORKLOADS)
    fig, axes = _new_figure(max(1, len(workloads)), height=3.4)
    for ax, workload in zip(axes, workloads, strict=False):
        subset = [r for r in rows if r["workload"] == workload]
        groups = sorted(
            {(str(r["scheduler"]), num(r["rate"])) for r in subset},
            key=lambda g: (rank(SCHEDULERS, g[0]), g[1]),
        )
        modes = ordered((r["swap"] for r in subset), SWAP_MODES)
        width = 0.8 / max(1, len(modes))
        for j, mode in enumerate(modes):
            xs: list[float] = []
            ys: list[float] = []
            for i, (scheduler, rate) in enumerate(groups):
                row = next(
                    (
                        r
                        for r in subset
                        if r["scheduler"] == scheduler and num(r["rate"]) == rate and r["swap"] == mode
                    ),
                    None,
                )
                if row is None:
                    continue
                value = num(row["swap_time"])
                xs.append(i + (j - (len(modes) - 1) / 2) * width)
                ys.append(value if math.isfinite(value) else 0.0)
            ax.bar(
                xs,
                ys,
                width=width,
                color=COLORS.get(str(mode), "#2ca02c"),
                edgecolor="black",
                linewidth=0.5,
                label=LABELS.get(str(mode), str(mode)),
            )
        ax.set_xticks(range(len(groups)), [f"{s}\n{r:g}/s" for s, r in groups])
        ax.set_title(str(workload))
        ax.set_xlabel("scheduler, arrival rate (programs/s)")
        ax.set_ylabel("swap time (s)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("KV swap time per swap mode (sum of swap-outs and swap-ins)")
    _legend(fig, axes, hollow_note=False)
    return _save(fig, path)


def plot_all(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], out: Path) -> list[Path]:
    """Every figure for the experiments present in ``rows``; returns the written paths."""
    written: list[Path] = []
    by_experiment: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_experiment.setdefault(str(row["experiment"]), []).append(row)
    if "schedulers" in by_experiment:
        sub = by_experiment["schedulers"]
        written.append(plot_latency(sub, out / "schedulers_latency_mean.png", metric="mean"))
        written.append(plot_latency(sub, out / "schedulers_latency_p99.png", metric="p99"))
        if "schedulers" in summary:
            written.append(
                plot_throughput_at_target(
                    summary["schedulers"]["throughput_at_target"],
                    out / "schedulers_throughput_at_target.png",
                    title="Throughput at the latency target per scheduler (hatched: lower bound)",
                )
            )
    if "balancers" in by_experiment:
        sub = by_experiment["balancers"]
        written.append(
            plot_latency(
                sub,
                out / "balancers_latency_mean.png",
                series_field="balancer",
                panel_fields=("workload", "scheduler"),
                title="Mean program latency per token vs arrival rate, per load balancer",
            )
        )
        if "balancers" in summary:
            written.append(
                plot_throughput_at_target(
                    summary["balancers"]["throughput_at_target"],
                    out / "balancers_throughput_at_target.png",
                    series_field="balancer",
                    title="Throughput at the latency target per load balancer (hatched: lower bound)",
                )
            )
    if "swap" in by_experiment:
        sub = by_experiment["swap"]
        written.append(plot_swap(sub, out / "swap_time.png"))
        written.append(
            plot_latency(
                sub,
                out / "swap_latency_mean.png",
                series_field="swap",
                panel_fields=("workload", "scheduler"),
                title="Mean program latency per token per swap mode",
            )
        )
    if "kv" in by_experiment:
        sub = by_experiment["kv"]
        written.append(
            plot_latency(
                sub,
                out / "kv_latency_mean.png",
                series_field="kv_policy",
                panel_fields=("workload", "scheduler"),
                columns=len({r["scheduler"] for r in sub}),  # a row per workload
                title="Mean program latency per token vs arrival rate, per KV policy",
            )
        )
    return written
