"""Smoke test of benches/bench_serve_replay.py: a tiny workload replayed through real servers.

Checks the structure of the result only (both policies on every side, every program done, no
errors), never timing outcomes: the machines are shared and the run is far too small for those.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture(scope="module")
def bench(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("bench_serve_replay")


def test_prompt_text_is_counted_as_the_call_s_prompt_tokens(bench: ModuleType) -> None:
    from autellix.server.protocol import ChatCompletionRequest
    from autellix.sim.trace import estimate_tokens

    for tokens in (1, 2, 3, 7, 100, 255, 4096, 32768):
        body = ChatCompletionRequest(
            model="m", messages=[{"role": "user", "content": bench.prompt_text(tokens)}]
        )
        assert estimate_tokens(body.prompt_text()) == tokens


def test_quick_replay_structure(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    argv = ["--quick", "--programs", "4", "--no-progress", "--json", str(out)]
    result: dict[str, Any] = bench.main(argv)
    assert json.loads(out.read_text())["config"]["programs"] == 4
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
    assert isinstance(result["agreement"], bool)
    assert "calibration" not in result and "sim_calibrated" not in result
