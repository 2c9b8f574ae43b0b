"""The pure-Python reference schedulers decide exactly as the Rust core does, on the small random
workloads (and seeds) ``benches/bench_binding.py --quick`` also checks: identical batches,
admissions, preemptions, too-large skips, demotions and promotions at every step, with starvation
off and on (beta = 2: thousands of promotions), and identical admissions in submit / admit / finish
cycles. Each check also asserts its workload exercised what it claims to, so it is never vacuous."""

from __future__ import annotations

import pytest
from autellix_reference import PyPlas, PyPlasDue, PyPlasQueue, crosscheck, crosscheck_cycle

from autellix import SchedulerConfig

SEEDS = (20240917, 20240918, 20240919)  # bench_binding.py's default --seed and the next two


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("py_cls", [PyPlasQueue, PyPlas], ids=lambda c: c.__name__)
def test_single_operations_agree(py_cls: type[PyPlasQueue | PyPlas], seed: int) -> None:
    check = crosscheck_cycle(py_cls, seed)
    assert check.errors == [], check.errors
    # Programs climbed the whole ladder: every queue's placement was compared.
    assert check.counts["levels"] == SchedulerConfig().levels


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [None, 2.0], ids=["starvation-off", "beta-2"])
@pytest.mark.parametrize("py_cls", [PyPlas, PyPlasDue], ids=lambda c: c.__name__)
def test_steps_agree(py_cls: type[PyPlas], beta: float | None, seed: int) -> None:
    check = crosscheck(py_cls, beta, seed)
    assert check.errors == [], check.errors
    counts = check.counts
    assert counts["steps"] == 120
    for event in ("demoted", "admitted", "preempted", "too_large"):
        assert counts[event] > 0, f"the workload never {event.replace('_', ' ')}: {check.summary}"
    assert (counts["promoted"] > 0) == (beta is not None), check.summary
