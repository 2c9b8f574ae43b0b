"""End-to-end simulations whose outcome is known, plus the engine's KV and swap accounting."""

from __future__ import annotations

import dataclasses

import pytest

from autellix.exceptions import ConfigError
from autellix.sim import CallSpec, ProgramSpec, SimConfig, load_programs, simulate
from autellix.sim.cluster import HORIZON_FACTOR, Cluster, default_horizon, unloaded_duration
from autellix.sim.cost_model import preset

A100 = preset("llama3.1-8b-a100")
#: The same engine with ~55k tokens of KV instead of ~445k, to force preemption.
SMALL_KV = dataclasses.replace(A100, gpu_memory_utilization=0.3)


def chat(pid: int, arrival: float, turns: list[tuple[int, int]], wait: float = 0.0) -> ProgramSpec:
    """A single-threaded program: each turn's prompt is the whole history plus new input."""
    calls, context = [], 0
    for i, (new, out) in enumerate(turns):
        prompt = context + new
        calls.append(CallSpec(i, 0, (i - 1,) if i else (), prompt, out, context, wait if i else 0.0))
        context = prompt + out
    return ProgramSpec(pid, arrival, tuple(calls), "chat")


def one_long_many_short() -> list[ProgramSpec]:
    programs = [chat(0, 0.0, [(200, 2000)])]
    programs += [chat(k, 0.5 + 0.1 * k, [(100, 20), (50, 20)], wait=0.1) for k in range(1, 11)]
    return programs


def finish_times(result_programs: list[ProgramSpec], config: SimConfig) -> dict[int, float]:
    result = simulate(config, result_programs)
    assert result.completed
    return {o.id: o.finish for o in result.outcomes}


def test_plas_finishes_short_programs_first_fcfs_does_not() -> None:
    programs = one_long_many_short()
    base = SimConfig(max_batch=1, quantum=0.5)
    fcfs = finish_times(programs, base.replace(scheduler="fcfs"))
    plas = finish_times(programs, base.replace(scheduler="plas"))
    shorts = range(1, 11)
    assert all(fcfs[k] > fcfs[0] for k in shorts), "FCFS runs the long call to the end first"
    assert all(plas[k] < plas[0] for k in shorts), "PLAS demotes the long call below the short ones"
    assert sum(plas[k] for k in shorts) < sum(fcfs[k] for k in shorts)


def test_mlfq_and_atlas_also_let_short_programs_pass() -> None:
    programs = one_long_many_short()
    for scheduler in ("mlfq", "atlas"):
        done = finish_times(programs, SimConfig(max_batch=1, quantum=0.5, scheduler=scheduler))
        assert all(done[k] < done[0] for k in range(1, 11)), scheduler


def test_every_call_runs_and_latency_is_response_over_tokens() -> None:
    programs = one_long_many_short()
    result = simulate(SimConfig(scheduler="plas"), programs)
    assert result.calls_done == sum(len(p.calls) for p in programs)
    for outcome, program in zip(result.outcomes, programs, strict=True):
        assert outcome.finish > program.arrival
        assert outcome.latency == pytest.approx((outcome.finish - program.arrival) / program.output_tokens)
    # An unloaded call's TTFT is its prefill plus one scheduler call: well under a second.
    assert 0 < result.ttft.p50 < 1.0


@pytest.mark.parametrize("workload", ["sharegpt", "bfcl", "lats", "mixed"])
def test_runs_are_deterministic_per_seed(workload: str) -> None:
    config = SimConfig(workload=workload, programs=12, rate=2.0, scheduler="atlas", seed=3)
    first, second = simulate(config), simulate(config)
    strip = lambda r: {k: v for k, v in r.row().items() if k != "wall_seconds"}  # noqa: E731
    assert strip(first) == strip(second)
    assert first.outcomes == second.outcomes
    other = simulate(config.replace(seed=4))
    assert other.outcomes != first.outcomes


def _pressured(swap: str, scheduler: str = "plas") -> tuple[Cluster, list[ProgramSpec]]:
    config = SimConfig(workload="sharegpt", programs=40, rate=4.0, scheduler=scheduler, swap=swap, seed=1)
    programs = load_programs(config)
    cluster = Cluster(config, programs, SMALL_KV)
    cluster.run(float("inf"))
    return cluster, programs


@pytest.mark.parametrize("swap", ["bulk", "per-block", "recompute"])
def test_kv_is_never_leaked_or_oversubscribed_under_preemption(swap: str) -> None:
    cluster, programs = _pressured(swap, scheduler="mlfq")
    engine = cluster.engines[0]
    assert engine.stats.preemptions > 0, "the small KV must force preemption"
    assert all(p.finish >= 0 for p in cluster.programs)
    # Everything finished: no call holds a block, only prefix-cache entries remain.
    assert engine.kv.used == 0 and engine.kv.held == {} and engine.kv.pinned == 0
    assert 0 <= engine.kv.cached <= engine.kv.capacity
    assert len(cluster.core) == 0
    assert cluster.calls_done == sum(len(p.calls) for p in programs)


def test_bulk_swap_moves_the_same_blocks_in_far_fewer_copies_and_less_time() -> None:
    bulk, _ = _pressured("bulk", scheduler="mlfq")
    per_block, _ = _pressured("per-block", scheduler="mlfq")
    b, p = bulk.engines[0].stats, per_block.engines[0].stats
    assert b.swaps > 0 and p.swaps > 0
    assert p.swap_copies > 10 * b.swap_copies
    assert p.swap_time / p.swaps > 2 * (b.swap_time / b.swaps)


def test_recompute_prefills_again_instead_of_swapping() -> None:
    cluster, _ = _pressured("recompute", scheduler="mlfq")
    stats = cluster.engines[0].stats
    assert stats.swaps == 0 and stats.swap_time == 0
    assert stats.recomputed_tokens > 0


def test_program_aware_balancer_keeps_long_contexts_cached() -> None:
    turns = [(3000, 50)] + [(200, 50)] * 5  # every later prompt is > 2048 tokens
    programs = [chat(k, 0.2 * k, turns, wait=0.5) for k in range(16)]
    cached = {}
    for balancer in ("round-robin", "program-aware"):
        result = simulate(SimConfig(engines=4, balancer=balancer, scheduler="plas"), programs)
        assert result.completed
        cached[balancer] = result.cached_tokens
    assert cached["program-aware"] > 2 * cached["round-robin"]


def test_lats_dags_complete_under_every_scheduler() -> None:
    config = SimConfig(workload="lats", programs=3, rate=1.0)
    programs = load_programs(config)
    assert any(len(c.parents) > 1 for p in programs for c in p.calls)
    for scheduler in ("fcfs", "mlfq", "plas", "atlas"):
        result = simulate(config.replace(scheduler=scheduler), programs)
        assert result.completed, scheduler
        assert result.calls_done == sum(len(p.calls) for p in programs)


def test_horizon_cuts_the_run_short() -> None:
    programs = one_long_many_short()
    result = simulate(SimConfig(horizon=1.0), programs)
    assert not result.completed
    assert result.programs_done < result.programs == len(programs)
    assert sum(o.finish < 0 for o in result.outcomes) == result.programs - result.programs_done


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"scheduler": "sjf"}, "unknown scheduler"),
        ({"balancer": "random"}, "unknown balancer"),
        ({"swap": "disk"}, "unknown swap mode"),
        ({"rate": -1.0}, "rate"),
        ({"programs": 0}, "programs"),
        ({"quantum": 0.0}, "quantum"),
        ({"horizon": -5.0}, "horizon"),
    ],
)
def test_bad_settings_are_config_errors(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SimConfig(**changes)  # type: ignore[arg-type]


def test_unknown_preset_and_oversized_call_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"llama3\.1-8b-a100"):
        simulate(SimConfig(preset="gpt-5"), one_long_many_short())
    huge = [chat(0, 0.0, [(SMALL_KV.kv_tokens + 1, 10)])]
    with pytest.raises(ConfigError, match="needs"):
        simulate(SimConfig(), huge, preset=SMALL_KV)


def test_default_horizon_is_ten_unloaded_durations_after_the_last_arrival() -> None:
    programs = one_long_many_short()
    longest = unloaded_duration(programs[0], A100)
    # 2000 decode steps at batch 1 plus a 200-token prefill, no tool waits
    assert longest == pytest.approx(
        2000 * A100.step_time(0, 0.0, 1, 1024) + A100.step_time(200, 200 * 100, 0, 0)
    )
    assert default_horizon(programs, A100) == pytest.approx(programs[-1].arrival + HORIZON_FACTOR * longest)
    # An unloaded run finishes well inside it.
    result = simulate(SimConfig(), programs)
    assert result.completed and result.makespan < default_horizon(programs, A100)


def test_dag_unloaded_duration_follows_the_longest_chain() -> None:
    calls = (
        CallSpec(0, 0, (), 10, 1),
        CallSpec(1, 0, (0,), 10, 100, 0, 5.0),  # long branch with a tool wait
        CallSpec(2, 1, (0,), 10, 1),
        CallSpec(3, 0, (1, 2), 10, 1),
    )
    program = ProgramSpec(0, 0.0, calls, "dag")
    decode, prefill = A100.step_time(0, 0.0, 1, 1024), A100.step_time(10, 10 * 5, 0, 0)
    assert unloaded_duration(program, A100) == pytest.approx(3 * prefill + 102 * decode + 5.0)


def test_vllm_baseline_is_fcfs_on_a_vllm_061_engine() -> None:
    config = SimConfig(scheduler="vllm", prefix_caching=True, steps_per_schedule=8)
    assert config.scheduler_config().policy == "fcfs"
    assert config.engine_settings() == {"prefix_caching": False, "steps_per_schedule": 1, "kv_policy": "lru"}
    assert SimConfig(scheduler="plas").engine_settings() == {
        "prefix_caching": True,
        "steps_per_schedule": 4,
        "kv_policy": "lru",
    }
    programs = [chat(k, 0.0, [(1000, 20), (50, 20)], wait=0.1) for k in range(3)]
    assert simulate(config, programs).cached_tokens == 0
    assert simulate(SimConfig(scheduler="fcfs"), programs).cached_tokens > 0


def test_scheduler_config_doubles_boundaries_from_the_quantum() -> None:
    core = SimConfig(scheduler="atlas", quantum=2.0, starvation_beta=None).scheduler_config()
    assert core.policy == "atlas"
    assert core.boundaries == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert core.quanta == [2.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert core.starvation_beta is None
