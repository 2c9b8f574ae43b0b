"""``autellix bench`` summary maths: throughput at a latency target, the target rule, and the
summary's ratios checked against the rows (fake simulator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autellix import bench
from autellix.cli import main
from autellix.sim.config import SCHEDULERS

from .bench_support import PNG_MAGIC, json_rows


def _points(*latencies: tuple[float, float, bool]) -> dict[float, dict[str, Any]]:
    return {rate: {"latency_mean": lat, "completed": ok} for rate, lat, ok in latencies}


def test_throughput_at_target_interpolates_between_rates() -> None:
    points = _points((1.0, 0.1, True), (2.0, 0.3, True), (3.0, 0.7, True))
    rate, saturated = bench.throughput_at_target(points, 0.5)
    assert rate == pytest.approx(2.5) and not saturated
    assert bench.throughput_at_target(points, 0.3) == (pytest.approx(2.0), False)


def test_throughput_at_target_edges() -> None:
    points = _points((1.0, 0.1, True), (2.0, 0.3, True))
    assert bench.throughput_at_target(points, 1.0) == (2.0, True)  # never missed: lower bound
    assert bench.throughput_at_target(points, 0.05) == (0.0, False)  # lowest rate already misses
    # A run that did not complete misses the target even if its (partial) mean is low.
    points = _points((1.0, 0.1, True), (2.0, 0.2, True), (3.0, 0.05, False), (4.0, 0.1, True))
    assert bench.throughput_at_target(points, 0.5) == (2.0, False)
    # The walk stops at the first miss: a later rate that meets the target does not count.
    points = _points((1.0, 0.1, True), (2.0, 0.9, True), (3.0, 0.2, True))
    assert bench.throughput_at_target(points, 0.5) == (pytest.approx(1.5), False)


def test_latency_target_default_rule() -> None:
    rows = [
        {"rate": 1.0, "latency_mean": 0.04},
        {"rate": 1.0, "latency_mean": 0.02},
        {"rate": 2.0, "latency_mean": 0.01},
    ]
    assert bench.latency_target_for(rows) == pytest.approx(bench.LATENCY_TARGET_FACTOR * 0.02)
    assert bench.latency_target_for(rows, 0.3) == 0.3


def _expected_comparison(
    rows: list[dict[str, Any]], workload: str, policy: str, baseline: str
) -> dict[str, Any]:
    """The summary's comparison record, computed independently from results.json."""
    mine = {r["rate"]: r for r in rows if r["workload"] == workload and r["scheduler"] == policy}
    base = {r["rate"]: r for r in rows if r["workload"] == workload and r["scheduler"] == baseline}
    fcfs = [
        r["rate"] for r in rows if r["workload"] == workload and r["scheduler"] == "fcfs" and r["completed"]
    ]
    ref = max(fcfs)
    both = [rate for rate in mine if mine[rate]["completed"] and base[rate]["completed"]]
    return {
        "rate": ref,
        "mean_ratio": base[ref]["latency_mean"] / mine[ref]["latency_mean"],
        "p99_ratio": base[ref]["latency_p99"] / mine[ref]["latency_p99"],
        "max_mean_ratio": max(base[r]["latency_mean"] / mine[r]["latency_mean"] for r in both),
        "max_p99_ratio": max(base[r]["latency_p99"] / mine[r]["latency_p99"] for r in both),
    }


def test_summary_ratios_match_the_rows(fake_sim: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        "bench",
        "-j",
        "1",
        "--programs",
        "10",
        "--rates",
        "1,2.5",
        "3.5",
        "--no-plots",
        "--out",
        str(out),
    ]
    argv += ["--workloads", "sharegpt", "--latency-target", "0.5"]
    assert main(argv) == 0
    rows = json_rows(out)
    assert len(rows) == 3 * len(SCHEDULERS)
    assert not list(out.glob("*.png"))
    summary = json.loads((out / "summary.json").read_text())["schedulers"]
    records = {(c["policy"], c["baseline"]): c for c in summary["comparisons"]}
    assert set(records) == {(p, b) for p in ("plas", "atlas") for b in ("vllm", "fcfs", "mlfq")}
    assert records["plas", "fcfs"]["autellix"] and not records["atlas", "fcfs"]["autellix"]
    for (policy, baseline), record in records.items():
        expected = _expected_comparison(rows, "sharegpt", policy, baseline)
        assert record["rate"] == expected["rate"] == 1.0  # fcfs misses at 2.5 in the fake
        for key in ("mean_ratio", "p99_ratio", "max_mean_ratio", "max_p99_ratio"):
            assert record[key] == pytest.approx(expected[key]), key
    assert records["plas", "fcfs"]["mean_ratio"] == pytest.approx(4.0)
    assert records["plas", "mlfq"]["max_mean_ratio_rate"] in (1.0, 2.5)
    # Throughput at the explicit target, by hand: walk up until a miss, interpolate.
    tput = {e["scheduler"]: e for e in summary["throughput_at_target"]}
    assert all(e["target"] == 0.5 and e["target_given"] for e in tput.values())
    for scheduler, entry in tput.items():
        pts = sorted(
            (r["rate"], r["latency_mean"], r["completed"]) for r in rows if r["scheduler"] == scheduler
        )
        expected_rate, last = 0.0, None
        for rate, lat, ok in pts:
            if ok and lat <= 0.5:
                expected_rate, last = rate, (rate, lat)
                continue
            if last is not None and lat > 0.5:
                expected_rate = last[0] + (0.5 - last[1]) / (lat - last[1]) * (rate - last[0])
            break
        assert entry["throughput"] == pytest.approx(expected_rate), scheduler
    assert records["plas", "fcfs"]["throughput_ratio"] == pytest.approx(
        tput["plas"]["throughput"] / tput["fcfs"]["throughput"]
    )


def test_all_experiments_with_fake_simulator(fake_sim: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        "bench",
        "--experiment",
        "all",
        "-j",
        "1",
        "--programs",
        "10",
        "--engines",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rows = json_rows(out)
    assert {r["experiment"] for r in rows} == set(bench.EXPERIMENTS)
    assert len(rows) == len(bench.plan(bench.BenchOptions(experiments=bench.EXPERIMENTS, engines=2)))
    summary = json.loads((out / "summary.json").read_text())
    # Balancers: baseline / program-aware mean latency at the highest rate the baseline completed.
    bal = [r for r in rows if r["experiment"] == "balancers"]
    for record in summary["balancers"]["comparisons"]:
        assert record["policy"] == "program-aware"
        pa = {
            r["rate"]: r
            for r in bal
            if r["workload"] == record["workload"] and r["balancer"] == "program-aware"
        }
        base = {
            r["rate"]: r
            for r in bal
            if r["workload"] == record["workload"] and r["balancer"] == record["baseline"]
        }
        ref = max(rate for rate, r in base.items() if r["completed"])
        assert record["rate"] == ref
        assert record["mean_ratio"] == pytest.approx(base[ref]["latency_mean"] / pa[ref]["latency_mean"])
    assert {(c["workload"], c["baseline"]) for c in summary["balancers"]["comparisons"]} == {
        (w, b) for w in ("sharegpt", "lats") for b in ("round-robin", "least-loaded")
    }
    # Swap: per-block / bulk swap time.
    swap_rows = [r for r in rows if r["experiment"] == "swap"]
    for record in summary["swap"]["runs"]:
        by_mode = {
            r["swap"]: r
            for r in swap_rows
            if r["scheduler"] == record["scheduler"]
            and r["rate"] == record["rate"]
            and r["workload"] == record["workload"]
        }
        assert record["swap_time_ratio"] == pytest.approx(
            by_mode["per-block"]["swap_time"] / by_mode["bulk"]["swap_time"]
        )
        assert record["swap_time_ratio"] == pytest.approx(6.0)
        assert set(record["modes"]) == set(bench.SWAP_EXPERIMENT_MODES)
    for name in (
        "schedulers_latency_mean.png",
        "balancers_latency_mean.png",
        "balancers_throughput_at_target.png",
        "swap_time.png",
        "swap_latency_mean.png",
        "kv_latency_mean.png",
    ):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_kv_summary_throughput_ratios_and_reported_rate(
    fake_sim: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["bench", "--experiment", "kv", "-j", "1", "--programs", "10", "--out", str(out)]
    argv += ["--workloads", "bfcl,lats", "--rates", "0.2,0.4", "0.6", "--latency-target", "0.2"]
    argv += ["--kv-policies", "lru", "ideal,autellix", "--host-kv-gib", "0"]
    assert main(argv) == 0
    assert "KV policies: throughput at the latency target" in capsys.readouterr().out
    rows = json_rows(out)
    assert len(rows) == 2 * len(bench.KV_SCHEDULERS) * 3 * 3
    assert {r["kv_policy"] for r in rows} == {"lru", "autellix", "ideal"}
    assert all(r["experiment"] == "kv" and r["host_kv_gib"] == 0.0 and r["engines"] == 1 for r in rows)
    entries = json.loads((out / "summary.json").read_text())["kv"]["throughput_at_target"]
    assert len(entries) == 2 * len(bench.KV_SCHEDULERS) * 3
    by = {(e["workload"], e["scheduler"], e["kv_policy"]): e for e in entries}
    for (workload, scheduler, policy), e in by.items():
        points = {
            r["rate"]: r
            for r in rows
            if (r["workload"], r["scheduler"], r["kv_policy"]) == (workload, scheduler, policy)
        }
        assert e["target"] == 0.2 and e["target_given"]
        assert (e["throughput"], e["saturated"]) == bench.throughput_at_target(points, 0.2)
        if e["rate"] is not None:
            row = points[e["rate"]]
            for key in ("latency_mean", "latency_p99", "worst_latency", "hit_share", "longest_deferral"):
                assert e[key] == row[key], key
    # bfcl (fake capacity 0.7): fcfs + lru meets the target at 0.2 and misses at 0.4
    # (interpolated); fcfs + ideal meets it at 0.4 and misses it at 0.6.
    base, ideal = by["bfcl", "fcfs", "lru"], by["bfcl", "fcfs", "ideal"]
    lat = {
        r["rate"]: r["latency_mean"]
        for r in rows
        if (r["workload"], r["scheduler"], r["kv_policy"]) == ("bfcl", "fcfs", "lru")
    }
    assert base["throughput"] == pytest.approx(0.2 + (0.2 - lat[0.2]) / (lat[0.4] - lat[0.2]) * 0.2)
    assert (base["rate"], base["at_target"]) == (0.2, True)
    assert 0.4 < ideal["throughput"] < 0.6 and (ideal["rate"], ideal["at_target"]) == (0.4, True)
    assert base["throughput_vs_ideal"] == pytest.approx(base["throughput"] / ideal["throughput"])
    assert base["throughput_vs_baseline"] == pytest.approx(1.0)
    plas = by["bfcl", "plas", "lru"]
    assert (plas["throughput"], plas["saturated"], plas["rate"]) == (0.6, True, 0.6)
    assert plas["throughput_vs_ideal"] == pytest.approx(1.0)
    assert plas["throughput_vs_baseline"] == pytest.approx(0.6 / base["throughput"])
    # lats (capacity 0.3): fcfs misses the target at the lowest rate under every policy; its
    # metrics are reported at the highest rate where it completed, and 0 / 0 is no ratio.
    miss = by["lats", "fcfs", "lru"]
    assert (miss["throughput"], miss["rate"], miss["at_target"]) == (0.0, 0.2, False)
    assert miss["throughput_vs_ideal"] is None and miss["throughput_vs_baseline"] is None
    assert (out / "kv_latency_mean.png").read_bytes()[:8] == PNG_MAGIC
