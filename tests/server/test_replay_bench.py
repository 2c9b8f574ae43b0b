"""Smoke test of ``benches/bench_serve_replay.py``, run as a user runs it: a tiny workload replayed
through real servers and the simulator.

Checks the structure of the result only (both policies on every side, every program and call done,
no errors), never timing outcomes: the machines are shared and the run is far too small for those.
Every call's ``usage`` is checked against its spec by the script (a mismatch is an error), so no
error also means the prompts were counted as the calls' prompt tokens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_quick_replay_structure(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    argv = ["--quick", "--programs", "4", "--no-progress", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "benches/bench_serve_replay.py", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, Any] = json.loads(
        out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}")
    )
    assert result["config"]["programs"] == 4
    policies = result["config"]["policies"]
    assert policies == ["fcfs", "plas"]
    for side in ("server", "sim"):
        assert set(result[side]) == set(policies)
        for policy in policies:
            r = result[side][policy]
            assert r["programs_done"] == 4, (side, policy, r.get("error_messages"))
            assert r["errors"] == 0, (side, policy, r.get("error_messages"))
            assert len(r["program_latency_s"]) == 4
            assert all(x is not None and x > 0 for x in r["program_latency_s"])
            assert set(r["per_token_s"]) == {"mean", "p50", "p95", "p99"}
        assert set(result["ratios"][side]) == {"plas"}
    calls = result["workload"]["calls"]
    assert all(result["server"][p]["calls_ok"] == calls for p in policies)
    assert all(result["sim"][p]["calls_done"] == calls for p in policies)
    assert isinstance(result["agreement"], bool)
    assert "calibration" not in result and "sim_calibrated" not in result

    printed = run.stdout
    assert "4 sharegpt programs at 4/s (seed 0)" in printed
    lines = printed.splitlines()
    assert sum("server replay" in line for line in lines) == 2 + 1  # per policy, then plas's ratios
    assert sum("4/4" in line for line in lines) == 2 * 2  # programs done, per policy and side
    assert "FCFS / policy, per-token latency" in printed
    assert f"on the same side of 1 as the simulator's: {'yes' if result['agreement'] else 'no'}" in printed
    assert "errors, first:" not in printed
