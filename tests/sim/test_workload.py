"""Synthetic workloads: statistics against the paper's table, Poisson arrivals, determinism and DAG
validity of every generated program."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import pytest

from autellix.exceptions import ConfigError
from autellix.sim import workload
from autellix.sim.spec import CallSpec, ProgramSpec
from autellix.sim.workload import (
    MAX_CONTEXT_TOKENS,
    MAX_OUTPUT_TOKENS,
    TARGETS,
    WORKLOADS,
    arrival_times,
    chain,
    generate,
    measure,
)

SIZES = {"sharegpt": 2000, "bfcl": 2000, "lats": 1000, "mixed": 900}


@pytest.fixture(scope="module")
def generated() -> dict[str, list[ProgramSpec]]:
    return {name: generate(name, n, rate=2.0, seed=11) for name, n in SIZES.items()}


def check_program(p: ProgramSpec) -> None:
    """Every invariant the simulator relies on."""
    assert p.calls, "a program has calls"
    assert math.isfinite(p.arrival) and p.arrival >= 0
    for i, c in enumerate(p.calls):
        assert c.index == i
        assert len(set(c.parents)) == len(c.parents)
        assert all(0 <= parent < i for parent in c.parents), (p.id, i, c.parents)
        assert 1 <= c.prompt_tokens <= MAX_CONTEXT_TOKENS
        assert 1 <= c.output_tokens <= MAX_OUTPUT_TOKENS
        assert 0 <= c.prefix_tokens <= c.prompt_tokens
        if c.parents:
            first = p.calls[c.parents[0]]
            assert c.prefix_tokens <= first.prompt_tokens + first.output_tokens
        else:
            assert c.prefix_tokens == 0
            assert c.tool_wait == 0.0  # a root is issued at the program's arrival
        assert math.isfinite(c.tool_wait) and c.tool_wait >= 0
        assert c.thread >= 0


def test_targets_are_the_papers_table() -> None:
    assert set(TARGETS) == {"sharegpt", "bfcl", "lats"}
    assert TARGETS["sharegpt"] == workload.WorkloadStats(6.66, 80, 255.65, 276.81)
    assert TARGETS["bfcl"] == workload.WorkloadStats(10.75, 70, 735.06, 34.14)
    assert TARGETS["lats"] == workload.WorkloadStats(159.71, None, 467.24, 72.64)
    assert WORKLOADS == ("sharegpt", "bfcl", "lats", "mixed")


@pytest.mark.parametrize("name", ["sharegpt", "bfcl", "lats"])
def test_statistics_match_the_paper(generated: dict[str, list[ProgramSpec]], name: str) -> None:
    got = measure(generated[name])
    want = TARGETS[name]
    assert got.calls_mean == pytest.approx(want.calls_mean, rel=0.10)
    assert got.new_input_mean == pytest.approx(want.new_input_mean, rel=0.10)
    assert got.output_mean == pytest.approx(want.output_mean, rel=0.10)
    assert got.calls_max is not None
    if want.calls_max is not None:
        assert got.calls_max <= want.calls_max
        # long-tailed: the tail reaches well past the mean
        assert got.calls_max >= 3 * want.calls_mean
    assert {p.workload for p in generated[name]} == {name}


@pytest.mark.parametrize("name", list(SIZES))
def test_every_program_is_a_valid_dag(generated: dict[str, list[ProgramSpec]], name: str) -> None:
    programs = generated[name]
    assert [p.id for p in programs] == list(range(len(programs)))
    for p in programs:
        check_program(p)


@pytest.mark.parametrize("name", ["sharegpt", "bfcl"])
def test_single_threaded_programs_carry_their_history(
    generated: dict[str, list[ProgramSpec]], name: str
) -> None:
    for p in generated[name][:300]:
        assert p.threads == 1
        for c in p.calls[1:]:
            prev = p.calls[c.index - 1]
            assert c.parents == (c.index - 1,)
            context = prev.prompt_tokens + prev.output_tokens
            new_input = c.prompt_tokens - c.prefix_tokens
            if context + new_input <= MAX_CONTEXT_TOKENS:
                assert c.prefix_tokens == context
            else:  # history cut to fit
                assert c.prompt_tokens == MAX_CONTEXT_TOKENS


def test_token_draws_are_long_tailed(generated: dict[str, list[ProgramSpec]]) -> None:
    for name in ("sharegpt", "lats"):
        outputs = np.array([c.output_tokens for p in generated[name] for c in p.calls])
        assert np.median(outputs) < outputs.mean()
        assert np.percentile(outputs, 99) > 3 * outputs.mean()


def test_bfcl_first_call_carries_the_tool_signatures(generated: dict[str, list[ProgramSpec]]) -> None:
    programs = generated["bfcl"]
    first = np.mean([p.calls[0].prompt_tokens for p in programs])
    later = np.mean([c.prompt_tokens - c.prefix_tokens for p in programs for c in p.calls[1:]])
    assert first > 10 * later
    assert np.mean([c.output_tokens for p in programs for c in p.calls]) < 50


def test_lats_is_a_real_multi_threaded_dag(generated: dict[str, list[ProgramSpec]]) -> None:
    programs = generated["lats"]
    for p in programs[:200]:
        assert p.threads == workload.LATS_CHILDREN
        roots = [c for c in p.calls if not c.parents]
        assert len(roots) == workload.LATS_CHILDREN  # the first expansion runs 5 threads at once
        assert {c.thread for c in roots} == set(range(workload.LATS_CHILDREN))
        assert len(p.calls) <= workload.LATS_MAX_ITERATIONS * (1 + 10 * workload.LATS_MAX_DEPTH)
    joins = [c for p in programs[:200] for c in p.calls if len(c.parents) >= 2]
    assert joins, "some calls wait for several parallel branches"
    # A rollout step waits on all five value calls of the step before it (plus the call it extends).
    assert max(len(c.parents) for c in joins) == workload.LATS_CHILDREN + 1
    # Branches of one fan-out run on distinct threads and send the same (expanded node's) prompt.
    p = programs[0]
    fanouts: dict[tuple[int, ...], list[CallSpec]] = {}
    for c in p.calls:
        if len(c.parents) != 1:
            fanouts.setdefault(c.parents, []).append(c)
    assert len(fanouts[()]) == workload.LATS_CHILDREN
    for branches in fanouts.values():
        if len(branches) > 1:
            assert len(branches) == workload.LATS_CHILDREN
            assert len({c.prompt_tokens for c in branches}) == 1
            assert len({c.thread for c in branches}) == workload.LATS_CHILDREN
    # Only value calls (after their generate call's environment step) wait on a tool.
    waited = [c for q in programs[:200] for c in q.calls if c.tool_wait > 0]
    assert waited and all(len(c.parents) == 1 for c in waited)
    # Prefix reuse: a non-root call continues its first parent's whole context (no cut needed).
    for c in p.calls:
        if c.parents:
            first = p.calls[c.parents[0]]
            assert c.prefix_tokens == first.prompt_tokens + first.output_tokens


def test_mixed_draws_all_three_evenly(generated: dict[str, list[ProgramSpec]]) -> None:
    programs = generated["mixed"]
    counts = Counter(p.workload for p in programs)
    assert set(counts) == {"sharegpt", "bfcl", "lats"}
    for n in counts.values():
        assert 0.25 < n / len(programs) < 0.42
    threads = {p.workload: p.threads for p in programs}
    assert threads["lats"] == workload.LATS_CHILDREN and threads["sharegpt"] == threads["bfcl"] == 1


@pytest.mark.parametrize("name", list(SIZES))
def test_arrivals_are_poisson(generated: dict[str, list[ProgramSpec]], name: str) -> None:
    arrivals = np.array([p.arrival for p in generated[name]])
    gaps = np.diff(np.concatenate(([0.0], arrivals)))
    assert arrivals[0] > 0  # the first arrival is one exponential gap after t=0
    assert (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1 / 2.0, rel=0.10)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.15)  # exponential: CV 1


def test_arrivals_are_shared_across_workloads_and_exposed() -> None:
    a = [p.arrival for p in generate("sharegpt", 50, 3.0, 5)]
    b = [p.arrival for p in generate("lats", 50, 3.0, 5)]
    assert a == b == arrival_times(50, 3.0, 5)
    assert arrival_times(0, 1.0, 0) == []


def test_infinite_rate_is_an_offline_batch() -> None:
    programs = generate("bfcl", 20, math.inf, 0)
    assert [p.arrival for p in programs] == [0.0] * 20


@pytest.mark.parametrize("name", WORKLOADS)
def test_deterministic_per_seed(name: str) -> None:
    assert generate(name, 40, 1.0, 3) == generate(name, 40, 1.0, 3)
    assert generate(name, 40, 1.0, 3) != generate(name, 40, 1.0, 4)


def test_tool_wait_scale_scales_only_the_waits() -> None:
    base = generate("mixed", 60, 1.0, 9)
    double = generate("mixed", 60, 1.0, 9, tool_wait_scale=2.0)
    none = generate("mixed", 60, 1.0, 9, tool_wait_scale=0)
    assert any(c.tool_wait > 0 for p in base for c in p.calls)
    for p, q, r in zip(base, double, none, strict=True):
        assert [c.prompt_tokens for c in p.calls] == [c.prompt_tokens for c in q.calls]
        assert [2 * c.tool_wait for c in p.calls] == [c.tool_wait for c in q.calls]
        assert all(c.tool_wait == 0 for c in r.calls)


def test_chain_cuts_history_to_the_context_cap() -> None:
    calls = chain([20_000, 20_000, 5], [100, 50, 7], [0.0, 1.5, 2.5])
    assert [c.prompt_tokens for c in calls] == [20_000, MAX_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS]
    assert [c.prefix_tokens for c in calls] == [0, MAX_CONTEXT_TOKENS - 20_000, MAX_CONTEXT_TOKENS - 5]
    assert [c.prompt_tokens - c.prefix_tokens for c in calls] == [20_000, 20_000, 5]
    assert [c.parents for c in calls] == [(), (0,), (1,)]
    assert [c.tool_wait for c in calls] == [0.0, 1.5, 2.5]
    short = chain([10, 3], [4, 2], [9.0, 0.5])
    assert [(c.prompt_tokens, c.prefix_tokens) for c in short] == [(10, 0), (17, 14)]


def test_lats_generation_is_fast() -> None:
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        programs = generate("lats", 1000, 1.0, 0)
        best = min(best, time.perf_counter() - start)
        if best < 2.0:
            break
    assert sum(len(p.calls) for p in programs) > 100_000
    assert best < 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workload": "chatbot"}, "unknown workload 'chatbot'"),
        ({"programs": 0}, "programs must be an integer >= 1"),
        ({"programs": 2.5}, "programs must be an integer >= 1"),
        ({"programs": True}, "programs must be an integer >= 1"),
        ({"rate": 0.0}, "rate must be a number > 0"),
        ({"rate": -1.0}, "rate must be a number > 0"),
        ({"rate": math.nan}, "rate must be a number > 0"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
        ({"tool_wait_scale": -1.0}, "tool_wait_scale"),
        ({"tool_wait_scale": math.inf}, "tool_wait_scale"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"workload": "sharegpt", "programs": 5, "rate": 1.0, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        generate(**args)  # type: ignore[arg-type]


def test_measure_needs_programs() -> None:
    with pytest.raises(ConfigError):
        measure([])
