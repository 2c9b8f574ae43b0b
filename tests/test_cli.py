"""The installed ``autellix`` console script and ``python -m autellix``, run for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import autellix
from autellix.cli import main
from autellix.sim import SimConfig, simulate
from autellix.sim.trace import load_trace


def _console_script() -> str:
    # The script pip installed beside this interpreter (the venv's bin/), not whatever is on PATH.
    candidate = Path(sys.executable).parent / "autellix"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("autellix")
    assert found is not None, "the `autellix` console script is not installed"
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_version_attribute() -> None:
    assert isinstance(autellix.__version__, str)
    assert autellix.__version__.count(".") >= 2


def test_console_script_version() -> None:
    proc = _run(_console_script(), "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"autellix {autellix.__version__}"


def test_console_script_help() -> None:
    proc = _run(_console_script(), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: autellix")
    assert "--version" in proc.stdout


def test_console_script_without_command_prints_help() -> None:
    proc = _run(_console_script())
    assert proc.returncode == 2
    assert "usage: autellix" in proc.stderr


def test_python_m_autellix_version() -> None:
    proc = _run(sys.executable, "-m", "autellix", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"autellix {autellix.__version__}"


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from autellix.cli import build_parser, main

    assert build_parser().prog == "autellix"
    assert main([]) == 2
    assert "usage: autellix" in capsys.readouterr().err


def test_demo_reproduces_the_papers_worked_example() -> None:
    proc = _run(_console_script(), "demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "matches the paper" in proc.stdout
    for policy in ("fcfs", "mlfq", "plas"):
        assert policy in proc.stdout


def test_demo_outcomes() -> None:
    from autellix import demo

    for policy, expected in demo.PAPER_WAITING.items():
        assert demo.run(policy).total_waiting == expected
    plas, fcfs = demo.run("plas"), demo.run("fcfs")
    # PLAS finishes the short programs C and D earlier without delaying the makespan.
    assert plas.completion["C"] < fcfs.completion["C"]
    assert plas.completion["D"] < fcfs.completion["D"]
    assert plas.makespan == fcfs.makespan
    # ATLAS reduces to PLAS on single-threaded programs.
    assert demo.run("atlas", quantum=1.0).total_waiting == plas.total_waiting


def test_trace_writes_real_sharegpt_conversations_that_the_bench_replays(tmp_path: Path) -> None:
    out = tmp_path / "sharegpt.jsonl.gz"
    assert main(["trace", str(out), "--limit", "40", "--rate", "2"]) == 0
    programs = load_trace(out)
    assert len(programs) == 40
    assert all(p.calls and all(c.output_tokens >= 1 for c in p.calls) for p in programs)
    arrivals = [p.arrival for p in programs]
    assert arrivals == sorted(arrivals) and arrivals[-1] > 0
    result = simulate(SimConfig(workload=str(out), rate=0, programs=40, scheduler="plas"))
    assert result.completed and result.programs == 40


def test_trace_rejects_bad_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["trace", str(tmp_path / "t.jsonl"), "--limit", "0"])
    assert exc.value.code == 2
    assert "limit must be >= 1" in capsys.readouterr().err


def test_serve_help() -> None:
    proc = _run(_console_script(), "serve", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--host",
        "--port",
        "--policy",
        "--preset",
        "--time-scale",
        "--max-queued",
        "--model",
        "--api-key",
        "--max-concurrent-per-key",
        "--first-boundary",
        "--starvation-beta",
    ):
        assert option in proc.stdout


def test_serve_rejects_bad_options() -> None:
    proc = _run(_console_script(), "serve", "--policy", "lottery")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_serve_api_keys_from_options_and_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    monkeypatch.setenv("AUTELLIX_API_KEYS", " k2, k3 ,,k1")
    assert main(["serve", "--api-key", "k1", "--api-key", "k4", "--max-concurrent-per-key", "2"]) == 0
    config = apps[0].state.server.config
    assert config.api_keys == ("k1", "k4", "k2", "k3")
    assert config.max_concurrent_per_key == 2
    monkeypatch.delenv("AUTELLIX_API_KEYS")
    assert main(["serve"]) == 0
    assert apps[1].state.server.config.api_keys == ()
    assert apps[1].state.server.config.max_concurrent_per_key is None
    assert main(["serve", "--api-key", "a,b"]) == 2
    assert "API keys" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--max-concurrent-per-key", "0"])
    assert exc.value.code == 2


def test_serve_scheduler_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    from autellix import SchedulerConfig

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert main(["serve"]) == 0
    assert apps[0].state.server.config.scheduler_config() == SchedulerConfig()  # the core's defaults
    assert main(["serve", "--first-boundary", "0.2", "--starvation-beta", "3"]) == 0
    core = apps[1].state.server.config.scheduler_config()
    assert (core.boundaries, core.quanta) == SchedulerConfig.ladder(0.2)
    assert (core.boundaries[0], core.starvation_beta) == (0.2, 3.0)
    assert main(["serve", "--starvation-beta", "none"]) == 0
    assert apps[2].state.server.config.scheduler_config().starvation_beta is None
    assert main(["serve", "--first-boundary", "1e308"]) == 2  # the core's ladder overflows
    assert "overflow" in capsys.readouterr().err
    for bad in (["--first-boundary", "0"], ["--first-boundary", "inf"], ["--starvation-beta", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(["serve", *bad])
        assert exc.value.code == 2
        assert "must be a finite number > 0" in capsys.readouterr().err
