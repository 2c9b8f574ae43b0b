"""The engine-neutral parts of the plug-ins (no vLLM needed): settings, the program tracker and the
control channel."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from autellix import CallState, ConfigError, SchedulerConfig
from autellix.adapters import control
from autellix.adapters.control import ControlListener, Finish
from autellix.adapters.settings import PluginSettings
from autellix.adapters.tracker import CallHints, CallIdentity, ProgramTracker, call_hints, call_identity


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


def test_kv_policy_setting() -> None:
    assert PluginSettings().kv_policy == "lru"  # vLLM's prefix cache alone until measured otherwise
    assert PluginSettings.load(None, environ={"AUTELLIX_KV_POLICY": "Autellix"}).kv_policy == "autellix"
    assert (
        PluginSettings.load({"kv_policy": "lru"}, environ={"AUTELLIX_KV_POLICY": "autellix"}).kv_policy
        == "lru"
    )
    with pytest.raises(ConfigError, match="invalid autellix kv_policy 'belady' from config key 'kv_policy'"):
        PluginSettings.load({"kv_policy": "belady"}, environ={})


def test_kv_admission_setting() -> None:
    assert PluginSettings().kv_admission is True  # measured: bfcl's and mixed's gains need it
    assert PluginSettings.load(None, environ={"AUTELLIX_KV_ADMISSION": "Off"}).kv_admission is False
    assert PluginSettings.load({"kv_admission": "on"}, environ={"AUTELLIX_KV_ADMISSION": "off"}).kv_admission
    assert PluginSettings.load({"kv_admission": False}, environ={}).kv_admission is False
    with pytest.raises(ConfigError, match="invalid autellix kv_admission 'maybe' from config key"):
        PluginSettings.load({"kv_admission": "maybe"}, environ={})


def test_call_hints_from_metadata() -> None:
    assert call_hints(None) == call_hints({"program_id": "p"}) == CallHints()
    for value in (True, 1, "1", "true", " Yes"):
        assert call_hints({"last_call": value}).last_call
    for value in (False, 0, "0", "false", ""):
        assert not call_hints({"last_call": value}).last_call
    assert call_hints({"tool_seconds": "2.5"}).tool_seconds == 2.5
    # a bad hint never fails a request: it is ignored
    assert call_hints({"last_call": "maybe", "tool_seconds": -1}) == CallHints()
    assert call_hints({"tool_seconds": "nan"}).tool_seconds is None


def test_programs_end_by_hint_and_tell_whoever_listens() -> None:
    now = [0.0]
    t = ProgramTracker(PluginSettings(program_ttl=10.0), clock=lambda: now[0])
    ended: list[tuple[int, float]] = []
    t.on_program_end = lambda program, service: ended.append((program, service))
    a = t.submit("a0", CallIdentity("a"), prompt_tokens=1)
    b = t.submit("b0", CallIdentity("b"), prompt_tokens=1, hints=CallHints(last_call=True))
    c = t.submit("c0", CallIdentity("c"), prompt_tokens=1)
    pa, pb, pc = (t.core.call(x).program for x in (a, b, c))
    assert t.keeps_context("a0") and not t.keeps_context("b0")
    t.step(4, 100)
    now[0] = 1.0
    assert t.finish_program("a") == pa and ended == []  # a0 is live: a ends with it
    t.step(4, 100)
    t.ended("a0", aborted=False)
    t.ended("b0", aborted=False)  # a last call
    assert [p for p, _ in ended] == [pa, pb] and ended[0][1] > 0  # the service it attained
    assert t.finish_program("a") is None and t.core.num_programs == 1
    t.ended("c0", aborted=False)
    now[0] = 20.0
    t.step(4, 100)  # c expires
    assert [p for p, _ in ended] == [pa, pb, pc] and t.core.num_programs == 0


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


def test_control_setting() -> None:
    assert PluginSettings.load({}, environ={}).control is None
    assert PluginSettings.load(None, environ={"AUTELLIX_CONTROL": "/run/a.sock"}).control == "/run/a.sock"
    assert PluginSettings.load({"control": "/tmp/b.sock"}, environ={}).control == "/tmp/b.sock"
    with pytest.raises(ConfigError, match="control"):
        PluginSettings.load({"control": 3}, environ={})


def test_control_channel_queues_finish_hints(tmp_path: Path) -> None:
    """The plug-in's reader thread on a real unix socket: complete lines are queued in order for
    the scheduler's next drain, a malformed line is skipped, a message may come in pieces."""
    path = str(tmp_path / "control.sock")
    listener = ControlListener(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and listener.drain() == []
        control.send(path, [{"finish": "key-1:agent"}, {"finish": "b", "tenant": "t"}])
        with socket.socket(socket.AF_UNIX) as sock:  # a slow writer, and junk lines
            sock.connect(path)
            sock.sendall(b'not json\n{"finish": 3}\n[1]\n{"fin')
            time.sleep(0.05)
            sock.sendall(b'ish": "c"}')  # the last line needs no newline
        got: list[Finish] = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            got += listener.drain()
            time.sleep(0.01)
        assert got == [Finish("key-1:agent"), Finish("b", "t"), Finish("c")]
        assert listener.drain() == []
    finally:
        listener.close()
    assert not os.path.exists(path)
    with pytest.raises(OSError):  # nobody listens any more: the sender sees it at once
        control.send(path, [{"finish": "d"}], timeout=0.5)


def test_control_paths_of_data_parallel_engines(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    assert control.listen_path(path, 0) == path and control.listen_path(path, 2) == path + ".2"
    listeners = [ControlListener(control.listen_path(path, rank)) for rank in (0, 1)]
    try:
        assert control.targets(path) == [path, path + ".1"]
    finally:
        for listener in listeners:
            listener.close()
