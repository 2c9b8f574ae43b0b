"""``KvPlanner`` through the binding: moves as tuples, counters, and bad input as typed errors that
change nothing. (The planner's invariants are property-tested in Rust: autellix-core/tests.)"""

from __future__ import annotations

import pytest

from autellix import ConfigError, InvalidArgumentError
from autellix._core import KvPlanner


def two_programs() -> KvPlanner:
    """Program 2 came back after 30 s once, program 1 after 0.1 s three times: both idle at about
    30 s, 2 is due much later."""
    kv = KvPlanner(host_blocks=8, prior_gap=1.0)
    kv.insert(20, 2, 0.0, blocks=4)
    assert kv.acquire(20, 30.0) == []  # on the GPU already: nothing to load
    kv.release(20, 30.0)
    kv.insert(10, 1, 29.0, blocks=4)
    for t in (29.1, 29.3, 29.5):
        assert kv.acquire(10, t) == []
        kv.release(10, t + 0.1)
    return kv


def test_the_context_returning_later_is_offloaded_and_loaded_back() -> None:
    kv = two_programs()
    assert kv.expected_gap(2) > kv.expected_gap(1)
    assert kv.reclaim(4, 30.1) == [(20, "offload", "gpu", 4)]
    assert (kv.tier(10), kv.tier(20)) == ("gpu", "host")
    assert (kv.gpu_blocks, kv.host_blocks, kv.host_free, len(kv)) == (4, 4, 4, 2)
    assert kv.acquire(20, 31.0) == [(20, "load", "host", 4)]
    stats = kv.stats()
    assert (stats["offloads"], stats["loads"], stats["drops"]) == (1, 1, 0)


def test_without_a_host_tier_contexts_are_dropped_and_a_program_end_frees_everything() -> None:
    kv = KvPlanner()
    kv.insert(1, 7, 0.0, blocks=3)
    kv.insert(2, 7, 0.0, blocks=2, parent=1)
    assert kv.reclaim(1, 1.0) == [(2, "drop", "gpu", 2)]  # the chain's tail goes first
    assert kv.end_program(7, service=3.0) == [(1, "drop", "gpu", 3)]
    assert len(kv) == 0 and kv.gpu_blocks == 0


def test_admission_defers_new_programs_within_the_bound() -> None:
    # (admission_min_programs 0: here one program fills most of the budget)
    kv = KvPlanner(admission_blocks=10, deferral_beta=2.0, deferral_floor=1.0, admission_min_programs=0.0)
    assert kv.admit(1, 0.0)
    kv.insert(1, 1, 0.0, blocks=8)
    assert not kv.admit(2, 0.5, running_blocks=4)  # 8 + 4 + a typical 8 > 10
    assert kv.admissions(1.0, running_blocks=4) == []
    assert kv.admissions(2.5, running_blocks=4) == [2]  # waited its bound: 2 x max(1 s, 0)
    stats = kv.admission_stats(2.5)
    assert stats["deferred"] == 1 and stats["longest_deferral"] == pytest.approx(2.0)


def test_admission_lets_in_programs_too_large_to_share_the_budget() -> None:
    kv = KvPlanner(admission_blocks=10)  # admission_min_programs 4 by default
    assert kv.admit(1, 0.0)
    kv.insert(1, 1, 0.0, blocks=3)  # 4 typical programs (12) exceed the budget: nobody waits
    assert kv.admit(2, 0.5, running_blocks=4)
    kv.end_program(1)
    kv.end_program(2)
    for program in range(3, 8):  # programs of 2 blocks: room for 5, the budget rule holds again
        assert kv.admit(program, 1.0)
        kv.insert(program, program, 1.0, blocks=2)
    assert not kv.admit(8, 1.0)  # 10 + 2 > 10


@pytest.mark.parametrize(
    "call",
    [
        lambda kv: kv.insert(10, 1, 0.0, blocks=1),  # duplicate context
        lambda kv: kv.insert(11, 1, 0.0, blocks=1, parent=99),  # unknown parent
        lambda kv: kv.insert(12, 2, 0.0, blocks=1, parent=10),  # parent of another program
        lambda kv: kv.insert(13, 1, float("nan"), blocks=1),
        lambda kv: kv.insert(14, 1, 0.0, blocks=-1),
        lambda kv: kv.insert(15, 1, 0.0, blocks=1, service=-1.0),
        lambda kv: kv.acquire(99, 0.0),
        lambda kv: kv.release(10, 1.0),  # no users
        lambda kv: kv.reclaim(-1, 0.0),
        lambda kv: kv.prefetch(float("inf"), 1, 1),
    ],
)
def test_bad_input_is_a_typed_error_that_changes_nothing(call: object) -> None:
    kv = KvPlanner(host_blocks=4)
    kv.insert(10, 1, 0.0, blocks=2)
    before = (len(kv), kv.gpu_blocks, kv.host_blocks, kv.stats())
    with pytest.raises(InvalidArgumentError):
        call(kv)  # type: ignore[operator]
    assert (len(kv), kv.gpu_blocks, kv.host_blocks, kv.stats()) == before


@pytest.mark.parametrize(
    "options",
    [
        {"prior_gap": 0.0},
        {"priority_scale": -1.0},
        {"working_set_window": 0.0},
        {"prefetch_window": -1.0},
        {"admission_min_programs": -1.0},
        {"admission_min_programs": float("nan")},
    ],
)
def test_bad_config_is_a_config_error(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        KvPlanner(**options)  # type: ignore[arg-type]
