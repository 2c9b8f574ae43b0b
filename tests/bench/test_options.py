"""``autellix bench`` option validation and help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autellix.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workloads", "nope"], "unknown workload 'nope'; choose from sharegpt, bfcl, lats, mixed"),
        (
            ["--schedulers", "plas,srpt"],
            "unknown scheduler 'srpt'; choose from vllm, fcfs, mlfq, plas, atlas",
        ),
        (["--balancers", "random"], "choose from round-robin, least-loaded, program-aware"),
        (["--swap-modes", "zero-copy"], "choose from bulk, per-block, recompute"),
        (
            ["--kv-policies", "lru,fifo"],
            "unknown kv policy 'fifo'; choose from lru, ttl, offload-lru, autellix, ideal",
        ),
        (["--host-kv-gib", "-1"], "host KV size must be a finite number >= 0"),
        (["--host-kv-gib", "inf"], "host KV size must be a finite number >= 0"),
        (["--host-kv-gib", "lots"], "host KV size must be a number"),
        (["--experiment", "nope"], "invalid choice"),
        (["--rates", "0"], "rate must be a finite number > 0"),
        (["--rates", "x"], "rate must be a number"),
        (["--programs", "0"], "programs must be >= 1"),
        (["--jobs", "two"], "jobs must be an integer"),
        (["--engines", "0"], "engines must be >= 1"),
        (["--latency-target", "-1"], "latency target must be a finite number > 0"),
        (["--full", "--quick"], "not allowed with argument"),
    ],
)
def test_bad_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_trace_workload_needs_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--workloads", str(trace), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "give --rates" in capsys.readouterr().err


def test_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--out", str(tmp_path / "file")])
    assert exc.value.code == 2
    assert "not a directory" in capsys.readouterr().err


def test_bench_help_via_python_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "autellix", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: autellix bench")
    for option in (
        "--experiment",
        "--full",
        "--rates",
        "--jobs",
        "--out",
        "--latency-target",
        "--no-plots",
        "--kv-policies",
        "--host-kv-gib",
    ):
        assert option in proc.stdout
    assert "results.csv" in proc.stdout


def test_demo_still_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    assert "matches the paper" in capsys.readouterr().out
