"""The engine-neutral parts of the plug-ins (no vLLM needed): settings and the program tracker."""

from __future__ import annotations

import pytest

from autellix import CallState, ConfigError, SchedulerConfig
from autellix.adapters.settings import PluginSettings
from autellix.adapters.tracker import CallIdentity, ProgramTracker, call_identity


def test_settings_defaults_env_and_config() -> None:
    assert PluginSettings.load({}, environ={}) == PluginSettings()
    env = {
        "AUTELLIX_POLICY": "ATLAS",
        "AUTELLIX_STARVATION_BETA": "none",
        "AUTELLIX_QUANTA": "1,2,4",
        "AUTELLIX_BOUNDARIES": "5, 10",
    }
    s = PluginSettings.load(None, environ=env)
    assert (s.policy, s.starvation_beta, s.quanta) == ("atlas", None, (1.0, 2.0, 4.0))
    assert s.scheduler_config().levels == 3
    # the engine's config wins over the environment
    config = {"policy": "mlfq", "quanta": [0.5, 1], "boundaries": [3], "program_ttl": 30}
    s = PluginSettings.load(config, environ=env)
    assert (s.policy, s.quanta, s.program_ttl) == ("mlfq", (0.5, 1.0), 30.0)
    assert s.scheduler_config().policy == "mlfq"


def test_settings_defaults_are_the_cores() -> None:
    core = SchedulerConfig()
    assert PluginSettings().scheduler_config() == core
    assert (PluginSettings.first_boundary, PluginSettings.starvation_beta) == (None, core.starvation_beta)


def test_first_boundary_builds_the_ladder() -> None:
    boundaries, quanta = SchedulerConfig.ladder(0.1)
    env = {"AUTELLIX_FIRST_BOUNDARY": "0.1", "AUTELLIX_STARVATION_BETA": "4"}
    for s in (
        PluginSettings.load(None, environ=env),
        PluginSettings.load({"first_boundary": 0.1, "starvation_beta": 4}, environ={}),
    ):
        config = s.scheduler_config()
        assert (config.boundaries[0], config.boundaries, config.quanta) == (0.1, boundaries, quanta)
        assert config.starvation_beta == 4.0
    # the engine's config wins over the environment; null leaves the core's ladder
    s = PluginSettings.load({"first_boundary": None}, environ={"AUTELLIX_FIRST_BOUNDARY": "0.1"})
    assert s.scheduler_config().boundaries == SchedulerConfig().boundaries


@pytest.mark.parametrize(
    ("config", "environ", "match"),
    [
        ({"policy": "sjf"}, {}, "invalid autellix policy 'sjf' from config key 'policy'"),
        ({}, {"AUTELLIX_PROGRAM_TTL": "soon"}, r"from \$AUTELLIX_PROGRAM_TTL"),
        ({"quanta": "1,x"}, {}, "quanta"),
        ({"quantum": 1}, {}, "unknown autellix setting 'quantum'"),
        ({"starvation_beta": -1}, {}, "starvation_beta"),  # refused by the core's own validation
        ({"boundaries": [2, 1]}, {}, "boundaries"),
        ({"first_boundary": 0}, {}, "invalid autellix first_boundary 0 from config key"),
        ({}, {"AUTELLIX_FIRST_BOUNDARY": "nan"}, r"from \$AUTELLIX_FIRST_BOUNDARY"),
        ({"first_boundary": 1e308}, {}, "overflow"),  # refused by the core's ladder
        ({"first_boundary": 0.1, "quanta": [1, 2]}, {}, "first_boundary and quanta"),
        ({"first_boundary": 0.1}, {"AUTELLIX_BOUNDARIES": "1"}, "first_boundary and boundaries"),
    ],
)
def test_bad_settings_are_config_errors(
    config: dict[str, object], environ: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        PluginSettings.load(config, environ=environ)


def test_call_identity_from_metadata() -> None:
    assert call_identity(None) == CallIdentity()
    assert call_identity({}, session_id="chat-1") == CallIdentity("chat-1")
    got = call_identity({"program_id": "p", "thread_id": "t", "parent_ids": "a, b,"}, session_id="s")
    assert got == CallIdentity("p", "t", ("a", "b"))
    assert call_identity({"program_id": "p", "parent_ids": ["a", 3, ""]}).parents == ("a",)
    # malformed ids never fail a request: the call becomes a program of its own
    assert call_identity({"program_id": "bad id!", "thread_id": "t", "parent_ids": ["a"]}) == CallIdentity()
    assert call_identity({"program_id": {"nested": 1}}) == CallIdentity()


def test_tracker_follows_calls_through_the_core() -> None:
    now = [0.0]
    t = ProgramTracker(PluginSettings(policy="atlas"), clock=lambda: now[0])
    root = t.submit("r0", CallIdentity("agent"), prompt_tokens=10, aliases=("chatcmpl-r0",))
    decision = t.step(max_running=4, kv_tokens=10_000)
    assert decision.admitted == [root] and t.is_running("r0")
    now[0] = 1.0
    t.ended("r0", aborted=False)
    child = t.submit("r1", CallIdentity("agent", "left", ("chatcmpl-r0", "unknown")), prompt_tokens=5)
    program = t.core.call(child).program
    assert t.core.program(program).finished_calls == 1
    assert t.core.program(program).threads == 2
    t.step(4, 10_000)
    t.preempted("r1")  # the engine preempted it itself
    assert t.core.call(child).state == CallState.PREEMPTED and not t.is_running("r1")
    t.ended("r1", aborted=True)
    assert len(t) == 0 and t.request_id(child) is None
    t.ended("never-submitted", aborted=False)  # unknown ids are ignored


def test_anonymous_program_ends_with_its_call() -> None:
    t = ProgramTracker(clock=lambda: 0.0)
    a = t.submit("a", CallIdentity(), prompt_tokens=1)
    b = t.submit("b", CallIdentity(), prompt_tokens=1)
    assert t.core.call(a).program != t.core.call(b).program
    assert t.core.num_programs == 2
    t.step(4, 100)
    t.ended("a", aborted=False)
    t.ended("b", aborted=True)
    assert t.core.num_programs == 0 and len(t) == 0


def test_idle_programs_expire_and_their_names_are_reused() -> None:
    now = [0.0]
    t = ProgramTracker(PluginSettings(program_ttl=10.0), clock=lambda: now[0])
    first = t.submit("x", CallIdentity("chat"), prompt_tokens=1)
    program = t.core.call(first).program
    t.step(1, 100)
    t.ended("x", aborted=False)
    now[0] = 100.0
    assert t.step(1, 100).expired_programs == [program]
    assert t.core.num_programs == 0
    again = t.submit("y", CallIdentity("chat", parents=("x",)), prompt_tokens=1)  # x is forgotten
    assert t.core.program(t.core.call(again).program).finished_calls == 0
