"""The rows of a sweep (one per run) and the files they land in: ``results.csv`` / ``results.json``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autellix.bench.plan import EXPERIMENTS, Run
from autellix.sim.config import BALANCERS, KV_POLICIES, SCHEDULERS, SWAP_MODES, SimConfig
from autellix.sim.metrics import SimResult
from autellix.sim.workload import WORKLOADS

#: The registry order of each named field of a row (panels, series and bars follow it).
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "workload": WORKLOADS,
    "scheduler": SCHEDULERS,
    "balancer": BALANCERS,
    "swap": SWAP_MODES,
    "kv_policy": KV_POLICIES,
}


def num(value: Any) -> float:
    """``value`` as a float; NaN when it is ``None`` or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def rank(names: Sequence[str], value: Any) -> tuple[int, str]:
    """Sort key of a name: its position in ``names``; unknown names (trace paths) after, by text."""
    text = "" if value is None else str(value)
    return (names.index(text), "") if text in names else (len(names), text)


def ordered(values: Iterable[Any], names: Sequence[str]) -> list[Any]:
    """The distinct ``values`` in :func:`rank` order."""
    return sorted(set(values), key=lambda v: rank(names, v))


#: Fields of a row that depend on the wall clock, not on the simulation.
WALL_FIELDS = ("wall_seconds",)
#: Fields :func:`row_sort_key` orders by name (the rest of the config follows as text).
_NAMED_FIELDS = ("workload", "rate", "scheduler", "balancer", "swap", "kv_policy")


def result_row(experiment: str, result: SimResult) -> dict[str, Any]:
    """The CSV / JSON row of one run: its experiment, then :meth:`SimResult.row`."""
    return {"experiment": experiment, **result.row()}


def row_sort_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Deterministic order of rows: experiment, workload, rate, scheduler, balancer, swap mode,
    KV policy, then every other config field (never a wall-clock field)."""
    rest = tuple(str(row.get(name)) for name in SimConfig.field_names() if name not in _NAMED_FIELDS)
    return (
        rank(EXPERIMENTS, row["experiment"]),
        rank(WORKLOADS, row["workload"]),
        float(row["rate"]),
        rank(SCHEDULERS, row["scheduler"]),
        rank(BALANCERS, row["balancer"]),
        rank(SWAP_MODES, row["swap"]),
        rank(KV_POLICIES, row.get("kv_policy")),
        rest,
    )


def collect_rows(runs: Iterable[Run], results: Mapping[SimConfig, SimResult]) -> list[dict[str, Any]]:
    """One row per planned run, sorted by :func:`row_sort_key`."""
    rows = [result_row(run.experiment, results[run.config]) for run in runs]
    rows.sort(key=row_sort_key)
    return rows


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
    """``data`` as strict, indented JSON (NaN / infinity -> ``null``); returns ``path``."""
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
