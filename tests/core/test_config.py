"""``SchedulerConfig`` through the binding: defaults, validation, binning, equality and repr."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autellix
from autellix import DECODE_STEP_SECONDS, AutellixError, ConfigError, Scheduler, SchedulerConfig

# The default ladder: doubling from 0.5 s (measured in the simulator; benches/RESULTS.md).
DEFAULT_BOUNDARIES = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
DEFAULT_QUANTA = [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_decode_step_seconds() -> None:
    assert DECODE_STEP_SECONDS == 0.025
    assert autellix._core.DECODE_STEP_SECONDS == DECODE_STEP_SECONDS


def test_defaults() -> None:
    c = SchedulerConfig()
    assert c.policy == "plas"
    assert c.levels == 7
    assert c.boundaries == DEFAULT_BOUNDARIES
    assert c.quanta == DEFAULT_QUANTA
    assert (c.boundaries, c.quanta) == SchedulerConfig.ladder(0.5)
    assert c.starvation_beta == 8.0
    assert c.service_floor == DECODE_STEP_SECONDS
    assert c.program_ttl == 600.0
    assert isinstance(c.boundaries, list)
    assert isinstance(c.quanta, list)


def test_scheduler_default_config_is_the_default() -> None:
    s = Scheduler()
    assert s.config == SchedulerConfig()
    assert s.policy == "plas"
    assert Scheduler(None).config == SchedulerConfig()


def test_getters_return_copies() -> None:
    c = SchedulerConfig()
    b = c.boundaries
    b.append(99.0)
    q = c.quanta
    q[0] = 123.0
    assert c.boundaries == DEFAULT_BOUNDARIES
    assert c.quanta[0] == DEFAULT_QUANTA[0]


def test_policies() -> None:
    assert SchedulerConfig.policies() == ["fcfs", "mlfq", "plas", "atlas"]
    assert SchedulerConfig().policies() == SchedulerConfig.policies()
    for name in SchedulerConfig.policies():
        c = SchedulerConfig(name)
        assert c.policy == name
        assert Scheduler(c).policy == name
        # Only the policy differs from the defaults.
        assert c.boundaries == SchedulerConfig().boundaries
        assert c.quanta == SchedulerConfig().quanta


@pytest.mark.parametrize(
    ("given_name", "expected"), [("PLAS", "plas"), (" atlas ", "atlas"), ("Fcfs", "fcfs")]
)
def test_policy_name_is_case_and_space_insensitive(given_name: str, expected: str) -> None:
    assert SchedulerConfig(given_name).policy == expected
    assert SchedulerConfig(policy=given_name).policy == expected


def test_custom_values() -> None:
    c = SchedulerConfig(
        "atlas",
        boundaries=[1.0, 2.0],
        quanta=[0.5, 1.0, 2.0],
        starvation_beta=3.0,
        service_floor=0.1,
        program_ttl=0.0,
    )
    assert c.policy == "atlas"
    assert c.boundaries == [1.0, 2.0]
    assert c.quanta == [0.5, 1.0, 2.0]
    assert c.levels == 3
    assert c.starvation_beta == 3.0
    assert c.service_floor == 0.1
    assert c.program_ttl == 0.0  # 0 is allowed: forget idle programs at once


def test_tuples_and_ints_are_accepted() -> None:
    c = SchedulerConfig(boundaries=(1, 2), quanta=(1, 2, 3), program_ttl=5)
    assert c.boundaries == [1.0, 2.0]
    assert c.quanta == [1.0, 2.0, 3.0]
    assert c.program_ttl == 5.0
    assert all(isinstance(x, float) for x in c.boundaries + c.quanta)


def test_single_level() -> None:
    c = SchedulerConfig(boundaries=[], quanta=[1.0])
    assert c.levels == 1
    for v in (0.0, 1.0, 1e300):
        assert c.level_of(v) == 0
    assert Scheduler(c).queue_depths(0) == [0]


def test_max_levels() -> None:
    c = SchedulerConfig(boundaries=[float(i) for i in range(1, 255)], quanta=[1.0] * 255)
    assert c.levels == 255
    assert c.level_of(1e9) == 254
    assert len(Scheduler(c).queue_depths(0)) == 255


def test_none_means_default() -> None:
    # Unlike starvation_beta, None for these means "the documented default".
    c = SchedulerConfig(boundaries=None, quanta=None, service_floor=None, program_ttl=None)
    assert c == SchedulerConfig()


def test_starvation_beta_none_disables() -> None:
    c = SchedulerConfig(starvation_beta=None)
    assert c.starvation_beta is None
    assert c != SchedulerConfig()
    assert "starvation_beta=None" in repr(c)
    assert Scheduler(c).config.starvation_beta is None


def test_level_of_default_binning() -> None:
    c = SchedulerConfig()
    assert c.level_of(0.0) == 0
    assert c.level_of(-1.0) == 0
    assert c.level_of(0.499) == 0
    # Q_i^lo <= value < Q_i^hi: a boundary value belongs to the queue above it.
    for i, b in enumerate(DEFAULT_BOUNDARIES):
        assert c.level_of(b) == i + 1
        assert c.level_of(math.nextafter(b, 0.0)) == i
    assert c.level_of(1e9) == 6
    assert c.level_of(math.inf) == 6


def test_level_of_custom_binning() -> None:
    c = SchedulerConfig(boundaries=[1.0, 10.0], quanta=[1.0, 1.0, 1.0])
    assert [c.level_of(v) for v in (0.0, 0.5, 1.0, 9.99, 10.0, 11.0)] == [0, 0, 1, 1, 2, 2]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-6, max_value=1e6), min_size=0, max_size=8, unique=True),
    st.floats(allow_nan=False),
)
def test_level_of_matches_definition(bounds: list[float], value: float) -> None:
    bounds = sorted(bounds)
    c = SchedulerConfig(boundaries=bounds, quanta=[1.0] * (len(bounds) + 1))
    level = c.level_of(value)
    assert 0 <= level < c.levels
    assert level == sum(1 for b in bounds if b <= value)


def test_equality() -> None:
    assert SchedulerConfig() == SchedulerConfig()
    assert SchedulerConfig() == SchedulerConfig("plas", starvation_beta=8.0)
    assert not (SchedulerConfig() != SchedulerConfig())
    assert SchedulerConfig() != SchedulerConfig("atlas")
    assert SchedulerConfig() != SchedulerConfig(program_ttl=1.0)
    assert SchedulerConfig() != SchedulerConfig(service_floor=1.0)
    assert SchedulerConfig() != SchedulerConfig(boundaries=[1.0], quanta=[1.0, 1.0])
    assert SchedulerConfig() != SchedulerConfig(starvation_beta=7.0)
    # Other types compare unequal rather than raising.
    assert SchedulerConfig() != "plas"
    assert SchedulerConfig() != None  # noqa: E711
    assert (SchedulerConfig() == 1) is False


def test_config_is_unhashable() -> None:
    # Defines __eq__ without __hash__: like a mutable-style value, it cannot be a dict key.
    with pytest.raises(TypeError, match="unhashable"):
        hash(SchedulerConfig())


def test_config_is_frozen() -> None:
    c = SchedulerConfig()
    with pytest.raises(AttributeError):
        c.policy = "fcfs"  # type: ignore[misc]
    assert c.policy == "plas"


def test_repr() -> None:
    r = repr(SchedulerConfig())
    assert r.startswith("SchedulerConfig(")
    for part in (
        'policy="plas"',
        "boundaries=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0]",
        "quanta=[0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]",
        "starvation_beta=8",
        "service_floor=0.025",
        "program_ttl=600",
    ):
        assert part in r


@pytest.mark.parametrize(
    "config",
    [
        SchedulerConfig(),
        SchedulerConfig("fcfs", starvation_beta=None),
        SchedulerConfig("atlas", boundaries=[1e-7, 0.3, 12345.678], quanta=[0.1, 1e-9, 3.0, 1e20]),
    ],
)
def test_repr_round_trips(config: SchedulerConfig) -> None:
    assert eval(repr(config), {"SchedulerConfig": SchedulerConfig}) == config


INVALID: list[tuple[str, dict[str, Any]]] = [
    ("unknown policy", {"policy": "srpt"}),
    ("empty policy", {"policy": ""}),
    ("no queues", {"boundaries": [], "quanta": []}),
    ("too many queues", {"boundaries": [float(i) for i in range(1, 256)], "quanta": [1.0] * 256}),
    ("too few boundaries", {"boundaries": [1.0]}),
    ("too many boundaries", {"boundaries": [0.1 * i for i in range(1, 9)]}),
    ("boundaries without quanta change", {"quanta": [1.0, 2.0]}),
    ("zero quantum", {"quanta": [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]}),
    ("negative quantum", {"quanta": [-1.0] * 7}),
    ("nan quantum", {"quanta": [1.0] * 6 + [math.nan]}),
    ("inf quantum", {"quanta": [math.inf] + [1.0] * 6}),
    ("zero boundary", {"boundaries": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}),
    ("negative boundary", {"boundaries": [-1.0, 1.0, 2.0, 3.0, 4.0, 5.0]}),
    ("nan boundary", {"boundaries": [1.0, 2.0, math.nan, 4.0, 5.0, 6.0]}),
    ("inf boundary", {"boundaries": [1.0, 2.0, 3.0, 4.0, 5.0, math.inf]}),
    ("repeated boundary", {"boundaries": [1.0, 1.0, 2.0, 3.0, 4.0, 5.0]}),
    ("decreasing boundaries", {"boundaries": [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]}),
    ("zero beta", {"starvation_beta": 0.0}),
    ("negative beta", {"starvation_beta": -8.0}),
    ("nan beta", {"starvation_beta": math.nan}),
    ("inf beta", {"starvation_beta": math.inf}),
    ("zero service floor", {"service_floor": 0.0}),
    ("negative service floor", {"service_floor": -0.025}),
    ("nan service floor", {"service_floor": math.nan}),
    ("inf service floor", {"service_floor": math.inf}),
    ("negative ttl", {"program_ttl": -1.0}),
    ("nan ttl", {"program_ttl": math.nan}),
    ("inf ttl", {"program_ttl": math.inf}),
]


@pytest.mark.parametrize(("what", "kwargs"), INVALID, ids=[w for w, _ in INVALID])
def test_invalid_config_raises_config_error(what: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        SchedulerConfig(**kwargs)
    assert isinstance(info.value, AutellixError)
    assert type(info.value) is ConfigError
    assert str(info.value), what


def test_unknown_policy_message_lists_policies() -> None:
    with pytest.raises(ConfigError, match="fcfs, mlfq, plas, atlas"):
        SchedulerConfig("srpt")


def test_config_error_hierarchy() -> None:
    assert issubclass(ConfigError, AutellixError)
    assert issubclass(AutellixError, Exception)
    assert autellix.ConfigError is autellix._core.ConfigError
    assert autellix.exceptions.ConfigError is ConfigError


@pytest.mark.parametrize(
    "kwargs",
    [{"policy": 1}, {"boundaries": "12"}, {"quanta": 1.0}, {"starvation_beta": "8"}, {"program_ttl": "600"}],
    ids=["policy-int", "boundaries-str", "quanta-float", "beta-str", "ttl-str"],
)
def test_wrong_types_raise_type_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        SchedulerConfig(**kwargs)


def test_positional_only_policy() -> None:
    with pytest.raises(TypeError):
        SchedulerConfig("plas", [1.0])  # type: ignore[call-arg]


# ----------------------------------------------------------------------------- the ladder helper


def test_ladder_builds_the_default_config_exactly() -> None:
    default = SchedulerConfig()
    ladder = SchedulerConfig.ladder(0.5, top_quantum=0.5)
    assert ladder == (default.boundaries, default.quanta)  # exact float equality, no approx
    assert isinstance(ladder, tuple)
    assert all(isinstance(part, list) for part in ladder)


def test_ladder_is_the_simulators() -> None:
    # The simulator's ladder for quantum q: boundaries q * 2**i (6 of them), quanta [q, *boundaries].
    boundaries, quanta = SchedulerConfig.ladder(32.0)
    assert boundaries == [32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]
    assert quanta == [32.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]
    for q in (0.025, 0.1, 1.0, 3.0, 32.0):
        expected = [q * 2**i for i in range(6)]
        assert SchedulerConfig.ladder(q) == (expected, [q, *expected])
        assert SchedulerConfig.ladder(q, 7, q) == SchedulerConfig.ladder(first_boundary=q, top_quantum=None)


@settings(max_examples=50, deadline=None)
@given(
    st.floats(min_value=1e-6, max_value=1e6),
    st.integers(min_value=1, max_value=255),
    st.floats(min_value=1e-6, max_value=1e6),
)
def test_ladder_shape_and_validity(first: float, levels: int, top: float) -> None:
    boundaries, quanta = SchedulerConfig.ladder(first, levels, top)
    assert len(boundaries) == levels - 1
    assert len(quanta) == levels
    assert quanta[0] == top
    assert boundaries == [first * 2**i for i in range(levels - 1)]
    assert quanta[1:] == boundaries  # each queue's quantum is its width
    config = SchedulerConfig(boundaries=boundaries, quanta=quanta)
    assert config.levels == levels


def test_ladder_single_level() -> None:
    assert SchedulerConfig.ladder(2.0, 1) == ([], [2.0])
    assert SchedulerConfig.ladder(2.0, 1, 5.0) == ([], [5.0])


LADDER_INVALID: list[tuple[str, tuple[Any, ...]]] = [
    ("zero levels", (1.0, 0)),
    ("negative levels", (1.0, -1)),
    ("too many levels", (1.0, 256)),
    ("huge levels", (1.0, 2**70)),
    ("zero first boundary", (0.0,)),
    ("negative first boundary", (-1.0,)),
    ("nan first boundary", (math.nan,)),
    ("inf first boundary", (math.inf,)),
    ("zero top quantum", (1.0, 7, 0.0)),
    ("negative top quantum", (1.0, 7, -1.0)),
    ("nan top quantum", (1.0, 7, math.nan)),
    ("overflowing ladder", (1e307, 7)),
]


@pytest.mark.parametrize(("what", "args"), LADDER_INVALID, ids=[w for w, _ in LADDER_INVALID])
def test_ladder_rejects_bad_input(what: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.ladder(*args)
    assert type(info.value) is ConfigError
    assert str(info.value).startswith("invalid configuration: "), what


@pytest.mark.parametrize(
    "args",
    [("1.0",), (1.0, "7"), (1.0, 7.0), (1.0, 7, "1")],
    ids=["first-str", "levels-str", "levels-float", "top-str"],
)
def test_ladder_wrong_types_raise_type_error(args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError):
        SchedulerConfig.ladder(*args)
