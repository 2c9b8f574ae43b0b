"""The ``vllm`` engine (``autellix serve --engine vllm``) on a machine without a GPU.

``vllm serve`` cannot load a model here, so the engine's children are a **stand-in**: the same
process management (start, ``/health`` wait, output relay, process-group stop) runs
``autellix serve --engine sim`` instead, an OpenAI-compatible server. The real ``vllm serve``
with the plug-in runs in ``tests/gpu/test_vllm_serve.py``; what the real vLLM does on this
machine (exit at start, reported) is in ``tests/vllm/test_serve_engine.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from collections.abc import Sequence
from dataclasses import replace

import httpx
import pytest

from autellix.adapters.control import ControlListener, Finish
from autellix.adapters.settings import PluginSettings
from autellix.exceptions import VllmStartError
from autellix.server.config import ServerConfig
from autellix.server.engines.vllm import SCHEDULER_CLS, VllmEngine, VllmLaunch

from .conftest import MODEL, MSG, wait_for

LAUNCH = VllmLaunch(model="tiny-llama", served_name=MODEL, startup_timeout=60)


def stand_in(port: int) -> Sequence[str]:
    """A stand-in for ``vllm serve`` (which needs a GPU): the simulated engine's server."""
    argv = [sys.executable, "-m", "autellix", "serve", "--engine", "sim", "--port", str(port)]
    return [*argv, "--model", MODEL, "--time-scale", "0.01", "--max-running", "1"]


def test_launch_command_runs_the_plugin() -> None:
    launch = VllmLaunch(
        model="m", served_name="name", policy="atlas", program_ttl=60, args=("--enforce-eager",)
    )
    argv = launch.argv(8123)
    assert argv[:5] == [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", "m"]
    options = dict(zip(argv[5:-1:2], argv[6::2], strict=False))
    assert options["--port"] == "8123" and options["--host"] == "127.0.0.1"
    assert options["--served-model-name"] == "name" and options["--scheduler-cls"] == SCHEDULER_CLS
    plugin = json.loads(options["--additional-config"])["autellix"]
    assert plugin == {"policy": "atlas", "program_ttl": 60, "first_boundary": None, "starvation_beta": 8.0}
    # The plug-in reads exactly what the queue in front runs.
    assert PluginSettings.load(plugin, environ={}).scheduler_config() == launch.scheduler_config()
    assert argv[-1] == "--enforce-eager"  # the user's arguments come last: they win


def test_ladder_and_beta_reach_the_plugin() -> None:
    config = ServerConfig(engine="vllm", vllm_model="m", first_boundary=2.0, starvation_beta=None)
    launch = VllmLaunch.from_config(config)
    plugin = json.loads(
        dict(zip(launch.argv(1)[5:-1:2], launch.argv(1)[6::2], strict=False))["--additional-config"]
    )
    settings = PluginSettings.load(plugin["autellix"], environ={})
    assert settings.scheduler_config() == config.scheduler_config() == launch.scheduler_config()
    assert config.scheduler_config().boundaries[0] == 2.0
    assert config.scheduler_config().starvation_beta is None


def test_replicas_get_their_own_gpus() -> None:
    launch = VllmLaunch(model="m", served_name="m", replicas=2, gpus_per_replica=2)
    assert [launch.env(i, {})["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0,1", "2,3"]
    visible = {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert [launch.env(i, visible)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["4,5", "6,7"]
    with pytest.raises(VllmStartError, match="need 4 GPUs"):
        launch.env(1, {"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert "CUDA_VISIBLE_DEVICES" not in VllmLaunch(model="m", served_name="m").env(0, {})


def test_forwards_calls_and_reports_a_dead_child(serve) -> None:
    engine = VllmEngine(LAUNCH, argv=stand_in)
    running = serve(on_engine=engine)
    assert engine.healthy and len(engine.processes) == 1
    client = running.client()
    out = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=3, extra_body={"program_id": "agent-1", "thread_id": "planner"}
    )
    assert out.choices[0].message.content == " tok" * 3
    assert running.program("agent-1")["finished_calls"] == 1
    child = engine.processes[0]
    with httpx.Client(base_url=child.url) as http:  # the call went through the child
        assert 'autellix_calls_total{finish_reason="length"} 1.0' in http.get("/metrics").text
    assert any("Application startup complete" in line for line in child.tail)  # its output, relayed

    # the child dies (vLLM crashed): health says so, calls fail with 502, nothing hangs
    assert child._process is not None
    os.killpg(child._process.pid, signal.SIGKILL)
    wait_for(lambda: not child.alive)
    with running.http() as http:
        r = http.get("/health")
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_down"
        r = http.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 502 and "failed" in r.json()["error"]["message"]


def test_stopping_the_engine_stops_every_child() -> None:
    engine = VllmEngine(replace(LAUNCH, replicas=2), argv=stand_in)

    async def run() -> None:
        await engine.start()
        assert engine.healthy and len({p.url for p in engine.processes}) == 2
        await engine.stop()

    asyncio.run(run())
    for process in engine.processes:
        assert process._process is not None and process._process.returncode is not None
        assert "Application shutdown complete." in "\n".join(process.tail)  # SIGTERM: a clean shutdown
        with pytest.raises(ProcessLookupError):
            os.killpg(process._process.pid, 0)  # nothing of its process group is left


def test_a_child_that_exits_at_start_fails_with_its_output() -> None:
    def crash(port: int) -> Sequence[str]:
        return [sys.executable, "-c", "import sys; print('no GPU here'); sys.exit(7)"]

    engine = VllmEngine(LAUNCH, argv=crash)
    with pytest.raises(VllmStartError, match=r"exited with code 7 before it was ready(.|\n)*no GPU here"):
        asyncio.run(engine.start())
    assert not engine.healthy


def test_a_child_that_never_answers_times_out_and_is_stopped() -> None:
    launch = VllmLaunch(model="m", served_name=MODEL, startup_timeout=1, replicas=2)
    engine = VllmEngine(launch, argv=lambda port: [sys.executable, "-c", "import time; time.sleep(600)"])

    async def start() -> None:
        with pytest.raises(VllmStartError, match="did not answer"):
            await engine.start()

    asyncio.run(start())
    assert all(p._process is not None and p._process.returncode == -signal.SIGTERM for p in engine.processes)


def test_cli_needs_a_model_for_the_vllm_engine(capsys: pytest.CaptureFixture[str]) -> None:
    from autellix.cli import main

    assert main(["serve", "--engine", "vllm"]) == 2
    assert "needs a vLLM model" in capsys.readouterr().err
    assert main(["serve", "--vllm-model", "m"]) == 2  # the sim engine takes none
    assert main(["serve", "--engine", "sim", "--upstream", "http://x"]) == 2


def test_inflight_defaults_per_engine() -> None:
    from autellix.server import ServerConfig

    assert ServerConfig(engine="vllm", vllm_model="m").inflight_limit == 1024  # the plug-in orders them
    assert ServerConfig(engine="openai", upstreams=("http://x",)).inflight_limit == 64
    assert ServerConfig(engine="vllm", vllm_model="m", max_inflight=8).inflight_limit == 8


def test_each_child_gets_a_private_control_socket() -> None:
    engine = VllmEngine(replace(LAUNCH, replicas=2), argv=stand_in)
    assert len(set(engine.controls)) == 2
    for path, process in zip(engine.controls, engine.processes, strict=True):
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700  # its own, private
        # the plug-in setting control, from the child's environment
        assert process.env["AUTELLIX_CONTROL"] == path
        assert PluginSettings.load({}, environ=process.env).control == path
    assert "AUTELLIX_CONTROL" not in LAUNCH.env(0, {"AUTELLIX_CONTROL": "/elsewhere"})
    asyncio.run(engine.stop())
    assert not any(os.path.exists(os.path.dirname(path)) for path in engine.controls)


def test_finishing_a_program_reaches_the_plugin(serve) -> None:
    """``POST /v1/programs/{id}/finish`` sends the plug-in the program's forwarded (tenant-qualified)
    name over the child's control socket. The child is the stand-in server, so a
    :class:`ControlListener` (the plug-in's own reader) stands in for the plug-in's side."""
    engine = VllmEngine(LAUNCH, argv=stand_in)
    plugin = ControlListener(engine.controls[0])
    try:
        running = serve(on_engine=engine, api_keys=("ka",))
        client = running.client()
        for _ in range(2):
            client.chat.completions.create(
                model=MODEL, messages=MSG, max_tokens=2, extra_body={"program_id": "agent-1"}
            )
        client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)  # anonymous
        with running.http() as http:
            assert http.post("/v1/programs/agent-1/finish").status_code == 200
        got: list[Finish] = []

        def arrived() -> bool:
            got.extend(plugin.drain())
            return Finish("key-1:agent-1") in got

        wait_for(arrived)
        # once, and only for that program (the anonymous call's program is a program of its own
        # in the plug-in too, ended with its call)
        assert got.count(Finish("key-1:agent-1")) == 1
    finally:
        plugin.close()
    # the plug-in is gone (a dead child): finishing still works, the hint is only logged
    with running.http() as http:
        client.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=2, extra_body={"program_id": "p2"}
        )
        assert http.post("/v1/programs/p2/finish").status_code == 200
        assert http.get("/health").status_code == 200
