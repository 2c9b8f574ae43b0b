"""``autellix bench`` planning: the sweeps, the runs each experiment asks for, autellix's policies."""

from __future__ import annotations

import pytest

from autellix import bench
from autellix.exceptions import ConfigError
from autellix.sim.config import BALANCERS, KV_POLICIES, SCHEDULERS, WORKLOADS


def test_quick_and_full_presets_cover_every_workload() -> None:
    for sweep in (bench.QUICK, bench.FULL):
        assert set(sweep.rates) == set(WORKLOADS)
        assert all(list(r) == sorted(r) and all(x > 0 for x in r) for r in sweep.rates.values())
    assert bench.FULL.programs == 1000
    assert all(len(r) == 6 for r in bench.FULL.rates.values())
    assert all(2 <= len(r) <= 3 for r in bench.QUICK.rates.values())
    for sweep, count in ((bench.QUICK, 3), (bench.FULL, 6)):
        assert set(sweep.kv_rates) == set(bench.DEFAULT_WORKLOADS["kv"]) == set(WORKLOADS)
        assert all(len(r) == count and list(r) == sorted(r) for r in sweep.kv_rates.values())
        assert sweep.rates_for("kv", "bfcl") == sweep.kv_rates["bfcl"]
    assert bench.QUICK.kv_rates["lats"] == (0.05, 0.08, 0.11)
    assert bench.FULL.kv_rates["sharegpt"] == (1.2, 1.6, 2.0, 2.4, 2.8, 3.2)


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


def test_plan_kv_is_schedulers_x_policies_x_rates_on_one_engine() -> None:
    runs = bench.plan(bench.BenchOptions(experiments=("kv",)))
    rates = sum(len(bench.QUICK.kv_rates[w]) for w in WORKLOADS)
    assert len(runs) == len(bench.KV_SCHEDULERS) * len(KV_POLICIES) * rates == len({r.config for r in runs})
    assert bench.KV_SCHEDULERS == ("fcfs", "plas", "atlas")
    assert {(r.config.scheduler, r.config.kv_policy) for r in runs} == {
        (s, k) for s in bench.KV_SCHEDULERS for k in KV_POLICIES
    }
    assert {(r.config.workload, r.config.rate) for r in runs} == {
        (w, rate) for w in WORKLOADS for rate in bench.QUICK.kv_rates[w]
    }
    assert all(r.config.engines == 1 and r.config.host_kv_gib is None for r in runs)
    # The options narrow it; --host-kv-gib reaches every run; the other experiments keep lru.
    options = bench.BenchOptions(
        experiments=("schedulers", "kv"),
        sweep=bench.FULL,
        workloads=("bfcl",),
        schedulers=("plas",),
        kv_policies=("lru", "autellix"),
        host_kv_gib=8.0,
    )
    runs = bench.plan(options)
    kv = [r for r in runs if r.experiment == "kv"]
    assert len(kv) == 2 * len(bench.FULL.kv_rates["bfcl"])
    assert {r.config.kv_policy for r in kv} == {"lru", "autellix"}
    assert {r.config.kv_policy for r in runs if r.experiment == "schedulers"} == {"lru"}
    assert all(r.config.host_kv_gib == 8.0 for r in runs)


def test_autellix_policy() -> None:
    assert [bench.autellix_policy(w) for w in WORKLOADS] == ["plas", "plas", "atlas", "atlas"]
    assert bench.autellix_policy("trace.jsonl") == "atlas"


def test_plan_unknown_experiment_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match="unknown experiment 'nope'; choose one of schedulers, balancers, swap"
    ):
        bench.plan(bench.BenchOptions(experiments=("nope",)))
