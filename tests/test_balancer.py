"""Load balancers (paper §7, Algorithm 2)."""

from __future__ import annotations

import pytest

from autellix.balancer import PROGRAM_AWARE_THRESHOLD, LeastLoaded, ProgramAware, RoundRobin, make_balancer
from autellix.exceptions import ConfigError


def test_round_robin_cycles_whatever_the_load() -> None:
    rr = RoundRobin()
    assert [rr.choose(p, 10, [9, 0, 0]) for p in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_loaded_takes_the_emptiest_engine_lowest_index_on_ties() -> None:
    ll = LeastLoaded()
    assert ll.choose(1, 10_000, [3, 1, 1, 2]) == 1
    assert ll.choose(1, 10, [0, 0]) == 0


def test_program_aware_sends_short_calls_to_least_loaded_and_pins_long_ones() -> None:
    pa = ProgramAware()
    short, long = PROGRAM_AWARE_THRESHOLD, PROGRAM_AWARE_THRESHOLD + 1
    assert pa.choose(7, short, [2, 0, 1]) == 1
    assert pa.choose(7, long, [2, 1, 0]) == 2  # first long call pins program 7 to engine 2
    assert pa.choose(7, long, [0, 0, 9]) == 2  # ...and it stays there under load
    assert pa.choose(7, short, [0, 5, 9]) == 0  # short calls still go anywhere
    assert pa.choose(8, long, [0, 5, 9]) == 0  # another program pins elsewhere
    pa.forget(7)
    assert pa.choose(7, long, [4, 0, 9]) == 1  # re-pinned after the program ended


def test_pinned_engine_that_no_longer_exists_is_replaced() -> None:
    pa = ProgramAware()
    pa.choose(1, 5000, [1, 1, 0])
    assert pa.choose(1, 5000, [3, 0]) == 1


@pytest.mark.parametrize("name", ["round-robin", "least-loaded", "program-aware"])
def test_make_balancer_by_name(name: str) -> None:
    assert make_balancer(name).choose(0, 1, [0, 0]) in (0, 1)


def test_unknown_balancer_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="round-robin, least-loaded, program-aware"):
        make_balancer("random")
