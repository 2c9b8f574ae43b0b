"""``autellix bench`` output: the rows in results.csv / results.json, summary.json and the PNG
figures (fake simulator)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autellix import bench
from autellix.cli import main
from autellix.sim.config import SimConfig
from autellix.sim.metrics import Distribution, SimResult

from .bench_support import PNG_MAGIC, csv_rows, fake_simulate, json_rows


def test_bench_with_fake_simulator_writes_everything(
    fake_sim: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["bench", "--jobs", "1", "--programs", "10", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "autellix bench: schedulers" in text
    assert "Latency ratio baseline / autellix" in text
    rows = json_rows(out)
    assert len(rows) == len(bench.plan(bench.BenchOptions()))
    assert len(csv_rows(out)) == len(rows)
    assert rows == sorted(rows, key=bench.row_sort_key)
    assert [r["experiment"] for r in rows] == ["schedulers"] * len(rows)
    # CSV and JSON hold the same values.
    for row, line in zip(rows, csv_rows(out), strict=True):
        assert line["workload"] == row["workload"]
        assert float(line["rate"]) == row["rate"]
        assert float(line["latency_mean"]) == pytest.approx(row["latency_mean"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["runs"] == len(rows)
    assert "schedulers" in summary
    for name in (
        "schedulers_latency_mean.png",
        "schedulers_latency_p99.png",
        "schedulers_throughput_at_target.png",
    ):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_nan_metrics_are_null_in_json(tmp_path: Path) -> None:
    result = fake_simulate(SimConfig(programs=4))
    nan = Distribution.of([])
    broken = SimResult(**{**result.__dict__, "latency": nan, "completed": False, "programs_done": 0})
    rows = [bench.result_row("schedulers", broken)]
    bench.write_results(rows, tmp_path)
    (loaded,) = json_rows(tmp_path)
    assert loaded["latency_mean"] is None
    assert math.isnan(bench.read_rows(tmp_path)[0]["latency_mean"])
    summary = bench.summarize(rows)
    assert summary["schedulers"]["throughput_at_target"][0]["throughput"] is None
