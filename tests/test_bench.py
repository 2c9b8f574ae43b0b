"""``autellix bench``: planning, summaries, files, plots and the CLI.

Formatting and summary logic run against ``fake_simulate`` (a deterministic stand-in with
known latencies); the end-to-end tests at the bottom drive the real simulator on tiny sweeps.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autellix import bench
from autellix.cli import main
from autellix.sim.config import BALANCERS, SCHEDULERS, WORKLOADS, SimConfig
from autellix.sim.metrics import Distribution, SimResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------------------------------------
# A fake simulator with known answers

_FAKE_CAPACITY = {"sharegpt": 3.0, "bfcl": 0.7, "lats": 0.3, "mixed": 0.45}
_FAKE_SCHEDULER = {"vllm": 8.0, "fcfs": 4.0, "mlfq": 2.0, "plas": 1.0, "atlas": 1.25}
_FAKE_BALANCER = {"round-robin": 1.6, "least-loaded": 1.3, "program-aware": 1.0}
_FAKE_SWAP_SECONDS = {"per-block": 3.0, "bulk": 0.5, "recompute": 0.0}


def fake_simulate(config: SimConfig) -> SimResult:
    """A deterministic stand-in for ``autellix.sim.cluster.simulate``: latency grows with load
    and depends on the scheduler / balancer; FCFS fails to complete at full load."""
    capacity = _FAKE_CAPACITY.get(config.workload, 1.0) * config.engines
    load = config.rate / capacity
    factor = _FAKE_SCHEDULER[config.scheduler] * (
        _FAKE_BALANCER[config.balancer] if config.engines > 1 else 1.0
    )
    latency = 0.02 * factor * (1.0 + 10.0 * load**2)
    completed = not (config.scheduler in ("fcfs", "mlfq") and load >= 0.99 and config.engines == 1) and not (
        config.scheduler == "fcfs" and load > 0.7
    )
    done = config.programs if completed else config.programs // 2
    swaps = int(100 * load) if config.swap != "recompute" else 0
    return SimResult(
        config=config,
        completed=completed,
        programs=config.programs,
        programs_done=done,
        calls_done=done * 7,
        latency=Distribution(latency, latency * 0.8, latency * 3.0, latency * 5.0 * factor),
        response=Distribution(latency * 300, latency * 250, latency * 900, latency * 1500),
        ttft=Distribution(0.1 * factor, 0.08, 0.3, 0.5),
        throughput=min(config.rate, capacity),
        token_throughput=300.0 * min(config.rate, capacity),
        makespan=config.programs / config.rate,
        preemptions=swaps,
        swaps=swaps,
        swap_copies=swaps * (32 if config.swap == "per-block" else 1),
        swap_time=_FAKE_SWAP_SECONDS[config.swap] * load,
        recomputed_tokens=1000 * swaps if config.swap == "recompute" else 0,
        cached_tokens=0,
        iterations=1000,
        scheduler_steps=250,
        wall_seconds=0.001 * config.programs,
    )


@pytest.fixture
def fake_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(bench, "run_one", fake_simulate)
    yield


def _rows(out: Path) -> list[dict[str, Any]]:
    return list(json.loads((out / "results.json").read_text()))


def _csv(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _strip_wall(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in bench.WALL_FIELDS} for row in rows]


# ---------------------------------------------------------------------------------------------
# Planning


def test_quick_and_full_presets_cover_every_workload() -> None:
    for sweep in (bench.QUICK, bench.FULL):
        assert set(sweep.rates) == set(WORKLOADS)
        assert all(list(r) == sorted(r) and all(x > 0 for x in r) for r in sweep.rates.values())
    assert bench.FULL.programs == 1000
    assert all(len(r) == 6 for r in bench.FULL.rates.values())
    assert all(2 <= len(r) <= 3 for r in bench.QUICK.rates.values())


def test_plan_default_is_every_workload_scheduler_and_rate() -> None:
    runs = bench.plan(bench.BenchOptions())
    assert {r.experiment for r in runs} == {"schedulers"}
    expected = sum(len(bench.QUICK.rates[w]) for w in WORKLOADS) * len(SCHEDULERS)
    assert len(runs) == expected == len({r.config for r in runs})
    assert all(r.config.engines == 1 and r.config.programs == bench.QUICK.programs for r in runs)


def test_plan_balancers_use_autellix_policy_and_scaled_rates() -> None:
    runs = bench.plan(bench.BenchOptions(experiments=("balancers",), engines=3))
    assert {r.config.workload for r in runs} == {"sharegpt", "lats"}
    for run in runs:
        assert run.config.engines == 3
        assert run.config.scheduler == bench.autellix_policy(run.config.workload)
    rates = sorted({r.config.rate for r in runs if r.config.workload == "lats"})
    assert rates == pytest.approx([3 * r for r in bench.QUICK.balancer_rates["lats"]])
    assert {r.config.balancer for r in runs} == set(BALANCERS)
    # Explicit rates are used as given.
    runs = bench.plan(bench.BenchOptions(experiments=("balancers",), engines=3, rates=(1.5,)))
    assert {r.config.rate for r in runs} == {1.5}


def test_plan_swap_and_all() -> None:
    runs = bench.plan(bench.BenchOptions(experiments=("swap",)))
    assert {r.config.swap for r in runs} == set(bench.SWAP_EXPERIMENT_MODES)
    assert {r.config.scheduler for r in runs} == set(bench.SWAP_SCHEDULERS)
    assert {r.config.rate for r in runs} == set(bench.QUICK.swap_rates["sharegpt"])
    everything = bench.plan(bench.BenchOptions(experiments=bench.EXPERIMENTS, programs=7, seed=3))
    assert {r.experiment for r in everything} == set(bench.EXPERIMENTS)
    assert all(r.config.programs == 7 and r.config.seed == 3 for r in everything)


def test_autellix_policy() -> None:
    assert [bench.autellix_policy(w) for w in WORKLOADS] == ["plas", "plas", "atlas", "atlas"]
    assert bench.autellix_policy("trace.jsonl") == "atlas"


# ---------------------------------------------------------------------------------------------
# Throughput at a latency target


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


# ---------------------------------------------------------------------------------------------
# The whole command with the fake simulator


def test_bench_with_fake_simulator_writes_everything(
    fake_sim: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["bench", "--jobs", "1", "--programs", "10", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "autellix bench: schedulers" in text
    assert "Latency ratio baseline / autellix" in text
    rows = _rows(out)
    assert len(rows) == len(bench.plan(bench.BenchOptions()))
    assert len(_csv(out)) == len(rows)
    assert rows == sorted(rows, key=bench.row_sort_key)
    assert [r["experiment"] for r in rows] == ["schedulers"] * len(rows)
    # CSV and JSON hold the same values.
    for row, line in zip(rows, _csv(out), strict=True):
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
    rows = _rows(out)
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
    rows = _rows(out)
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
    ):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_nan_metrics_are_null_in_json(tmp_path: Path) -> None:
    result = fake_simulate(SimConfig(programs=4))
    nan = Distribution.of([])
    broken = SimResult(**{**result.__dict__, "latency": nan, "completed": False, "programs_done": 0})
    rows = [bench.result_row("schedulers", broken)]
    bench.write_results(rows, tmp_path)
    (loaded,) = _rows(tmp_path)
    assert loaded["latency_mean"] is None
    assert math.isnan(bench.read_rows(tmp_path)[0]["latency_mean"])
    summary = bench.summarize(rows)
    assert summary["schedulers"]["throughput_at_target"][0]["throughput"] is None


# ---------------------------------------------------------------------------------------------
# Option validation


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workloads", "nope"], "unknown workload 'nope'; choose from sharegpt, bfcl, lats, mixed"),
        (
            ["--schedulers", "plas,srpt"],
            "unknown scheduler 'srpt'; choose from vllm, fcfs, mlfq, plas, atlas",
        ),
        (["--balancers", "random"], "choose from round-robin, least-loaded, program-aware"),
        (["--swap-modes", "zero-copy"], "choose from bulk, per-block, recompute"),
        (["--experiment", "nope"], "invalid choice"),
        (["--rates", "0"], "rate must be a finite number > 0"),
        (["--rates", "x"], "rate must be a number"),
        (["--programs", "0"], "programs must be >= 1"),
        (["--jobs", "two"], "jobs must be an integer"),
        (["--engines", "0"], "engines must be >= 1"),
        (["--latency-target", "-1"], "latency target must be a finite number > 0"),
        (["--full", "--quick"], "not allowed with argument"),
    ],
)
def test_bad_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_trace_workload_needs_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--workloads", str(trace), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "give --rates" in capsys.readouterr().err


def test_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--out", str(tmp_path / "file")])
    assert exc.value.code == 2
    assert "not a directory" in capsys.readouterr().err


def test_bench_help_via_python_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "autellix", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: autellix bench")
    for option in ("--experiment", "--full", "--rates", "--jobs", "--out", "--latency-target", "--no-plots"):
        assert option in proc.stdout
    assert "results.csv" in proc.stdout


def test_demo_still_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    assert "matches the paper" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# End to end with the real simulator (tiny sweeps)


def _real(tmp_path: Path, name: str, *argv: str) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path / name
    assert main(["bench", "--out", str(out), *argv]) == 0
    return out, _rows(out)


def test_real_schedulers_sweep_is_deterministic_in_and_out_of_process(tmp_path: Path) -> None:
    argv = ["--workloads", "sharegpt", "--programs", "30", "--rates", "1", "4", "--seed", "5"]
    out1, rows1 = _real(tmp_path, "a", *argv, "--jobs", "1")
    out2, rows2 = _real(tmp_path, "b", *argv, "--jobs", "2", "--no-plots")
    assert len(rows1) == 2 * len(SCHEDULERS) == len(_csv(out1))
    assert {(r["scheduler"], r["rate"]) for r in rows1} == {(s, r) for s in SCHEDULERS for r in (1.0, 4.0)}
    assert all(r["programs"] == 30 and r["seed"] == 5 and r["engines"] == 1 for r in rows1)
    assert all(0 < r["programs_done"] <= 30 for r in rows1)
    assert _strip_wall(rows1) == _strip_wall(rows2)
    # CSV too, byte for byte once the wall-clock column is dropped.
    assert _strip_wall(_csv(out1)) == _strip_wall(_csv(out2))
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
    assert len(_csv(out)) == len(rows)
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
