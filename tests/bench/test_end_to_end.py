"""``autellix bench`` end to end with the real simulator (tiny sweeps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autellix import bench
from autellix.cli import main
from autellix.sim.config import BALANCERS, KV_POLICIES, SCHEDULERS

from .bench_support import PNG_MAGIC, csv_rows, json_rows, strip_wall


def _real(tmp_path: Path, name: str, *argv: str) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path / name
    assert main(["bench", "--out", str(out), *argv]) == 0
    return out, json_rows(out)


def test_real_schedulers_sweep_is_deterministic_in_and_out_of_process(tmp_path: Path) -> None:
    argv = ["--workloads", "sharegpt", "--programs", "30", "--rates", "1", "4", "--seed", "5"]
    out1, rows1 = _real(tmp_path, "a", *argv, "--jobs", "1")
    out2, rows2 = _real(tmp_path, "b", *argv, "--jobs", "2", "--no-plots")
    assert len(rows1) == 2 * len(SCHEDULERS) == len(csv_rows(out1))
    assert {(r["scheduler"], r["rate"]) for r in rows1} == {(s, r) for s in SCHEDULERS for r in (1.0, 4.0)}
    assert all(r["programs"] == 30 and r["seed"] == 5 and r["engines"] == 1 for r in rows1)
    assert all(0 < r["programs_done"] <= 30 for r in rows1)
    assert strip_wall(rows1) == strip_wall(rows2)
    # CSV too, byte for byte once the wall-clock column is dropped.
    assert strip_wall(csv_rows(out1)) == strip_wall(csv_rows(out2))
    for name in (
        "schedulers_latency_mean.png",
        "schedulers_latency_p99.png",
        "schedulers_throughput_at_target.png",
    ):
        assert (out1 / name).read_bytes()[:8] == PNG_MAGIC
    assert not list(out2.glob("*.png"))
    # The summary, recomputed from results.json.
    summary = json.loads((out1 / "summary.json").read_text())["schedulers"]
    assert summary == json.loads((out2 / "summary.json").read_text())["schedulers"]
    fcfs_done = [r["rate"] for r in rows1 if r["scheduler"] == "fcfs" and r["completed"]]
    for record in summary["comparisons"]:
        by_rate = {
            s: {r["rate"]: r for r in rows1 if r["scheduler"] == s}
            for s in (record["policy"], record["baseline"])
        }
        mine, base = by_rate[record["policy"]], by_rate[record["baseline"]]
        assert record["rate"] == (max(fcfs_done) if fcfs_done else None)
        if record["rate"] is not None:
            ref = record["rate"]
            assert record["mean_ratio"] == pytest.approx(
                base[ref]["latency_mean"] / mine[ref]["latency_mean"]
            )
            assert record["p99_ratio"] == pytest.approx(base[ref]["latency_p99"] / mine[ref]["latency_p99"])
        both = [rate for rate in mine if mine[rate]["completed"] and base[rate]["completed"]]
        if both:
            best = max(base[r]["latency_mean"] / mine[r]["latency_mean"] for r in both)
            assert record["max_mean_ratio"] == pytest.approx(best)
    target = 5.0 * min(r["latency_mean"] for r in rows1 if r["rate"] == 1.0)
    assert all(e["target"] == pytest.approx(target) for e in summary["throughput_at_target"])


def test_real_all_experiments(tmp_path: Path) -> None:
    argv = [
        "--experiment",
        "all",
        "--workloads",
        "sharegpt",
        "--programs",
        "20",
        "--rates",
        "3",
        "--engines",
        "2",
    ]
    out, rows = _real(tmp_path, "all", *argv, "--jobs", "2")
    by_experiment = {e: [r for r in rows if r["experiment"] == e] for e in bench.EXPERIMENTS}
    assert len(by_experiment["schedulers"]) == len(SCHEDULERS)
    assert len(by_experiment["balancers"]) == len(BALANCERS)
    assert all(r["engines"] == 2 and r["scheduler"] == "plas" for r in by_experiment["balancers"])
    assert len(by_experiment["swap"]) == len(bench.SWAP_SCHEDULERS) * len(bench.SWAP_EXPERIMENT_MODES)
    assert len(by_experiment["kv"]) == len(bench.KV_SCHEDULERS) * len(KV_POLICIES)
    assert len(csv_rows(out)) == len(rows)
    summary = json.loads((out / "summary.json").read_text())
    for record in summary["swap"]["runs"]:
        modes = record["modes"]
        expected = (
            modes["per-block"]["swap_time"] / modes["bulk"]["swap_time"]
            if modes["bulk"]["swap_time"]
            else None
        )
        assert record["swap_time_ratio"] == (pytest.approx(expected) if expected is not None else None)
    for png in ("balancers_latency_mean.png", "balancers_throughput_at_target.png", "swap_time.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC


def test_real_kv_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--experiment", "kv", "--workloads", "bfcl", "--programs", "20", "--rates", "0.5"]
    out, rows = _real(tmp_path, "kv", *argv, "--jobs", "2")
    text = capsys.readouterr().out
    assert "autellix bench: kv" in text
    assert "KV policies: throughput at the latency target" in text
    assert len(rows) == len(bench.KV_SCHEDULERS) * len(KV_POLICIES) == len(csv_rows(out))
    assert {(r["scheduler"], r["kv_policy"]) for r in rows} == {
        (s, k) for s in bench.KV_SCHEDULERS for k in KV_POLICIES
    }
    assert all(r["experiment"] == "kv" and 0 <= r["hit_share"] <= 1 for r in rows)
    entries = json.loads((out / "summary.json").read_text())["kv"]["throughput_at_target"]
    assert {(e["scheduler"], e["kv_policy"]) for e in entries} == {
        (r["scheduler"], r["kv_policy"]) for r in rows
    }
    for e in entries:
        assert {
            "throughput",
            "rate",
            "latency_mean",
            "worst_latency",
            "hit_share",
            "longest_deferral",
        } <= set(e)
        assert {"throughput_vs_ideal", "throughput_vs_baseline"} <= set(e)
    assert (out / "kv_latency_mean.png").read_bytes()[:8] == PNG_MAGIC


def test_real_trace_workload(tmp_path: Path) -> None:
    from autellix.sim import trace, workload

    path = tmp_path / "bfcl.jsonl"
    trace.save_trace(workload.generate("bfcl", 12, 1.0, 0), path)
    argv = [
        "--workloads",
        str(path),
        "--rates",
        "0.5",
        "--schedulers",
        "fcfs,atlas",
        "--jobs",
        "1",
        "--no-plots",
    ]
    out, rows = _real(tmp_path, "trace", *argv)
    assert [(r["workload"], r["scheduler"]) for r in rows] == [(str(path), "fcfs"), (str(path), "atlas")]
    assert all(r["programs"] == 12 and r["programs_done"] <= 12 for r in rows)  # the trace has 12
    (record,) = json.loads((out / "summary.json").read_text())["schedulers"]["comparisons"]
    assert (record["policy"], record["baseline"], record["autellix"]) == ("atlas", "fcfs", True)
