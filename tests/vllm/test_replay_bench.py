"""The vLLM replay (``autellix.testing.vllm_replay``) and ``benches/bench_vllm_replay.py`` on tiny
workloads: structure, not timings.

Every program completes under vLLM's stock scheduler and under ``AutellixScheduler`` (kv ``lru``
and kv ``autellix``), every call generates exactly its spec's tokens, prompts share their
program's history (the prefix cache hits, counted per call), and the script writes the JSON the
benchmark documents, for ``--experiment kv`` too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autellix.sim import cost_model
from autellix.sim.workload import generate
from autellix.testing.vllm_replay import Prompts, replay_vllm

ROOT = Path(__file__).resolve().parents[2]


def test_prompts_continue_the_first_parents_context() -> None:
    program = generate("sharegpt", 3, 4.0, 0)[2]
    prompts = Prompts(program, seed=0, token=7)
    built = [prompts.build(c) for c in program.calls]
    for call, ids in zip(program.calls, built, strict=True):
        assert len(ids) == call.prompt_tokens
        if call.parents and call.prefix_tokens:
            parent = program.calls[call.parents[0]]
            context = built[parent.index] + [7] * parent.output_tokens
            assert ids[: call.prefix_tokens] == context[: call.prefix_tokens]
    assert Prompts(program, seed=0, token=7).build(program.calls[0]) == built[0]  # seeded


@pytest.mark.parametrize("policy", ["fcfs", "plas", "atlas"])
def test_replay_completes_every_program(model_config: Any, policy: str) -> None:
    programs = generate("sharegpt", 4, 4.0, 1, tool_wait_scale=0.25)
    programs += generate("bfcl", 2, 4.0, 2, tool_wait_scale=0.25)
    programs = [p.__class__(i, p.arrival, p.calls, p.workload) for i, p in enumerate(programs)]
    done: list[int] = []
    result = replay_vllm(
        programs,
        policy,
        model_config,
        preset=dataclasses.replace(cost_model.preset("llama3.1-8b-a100"), scheduler_cpu=False),
        num_blocks=4096,
        max_num_seqs=2,
        max_num_batched_tokens=2048,
        on_program_done=lambda: done.append(1),
    )
    calls = sum(len(p.calls) for p in programs)
    assert len(result["program_latency_s"]) == len(programs) == len(done)
    assert all(x > 0 for x in result["program_latency_s"])
    assert result["calls_done"] == result["calls"] == calls
    assert result["token_mismatches"] == 0
    assert result["finish_reasons"] == {"length": calls}
    assert result["cached_tokens"] > 0  # later turns hit their history in vLLM's prefix cache


@pytest.mark.parametrize("kv_policy", ["lru", "autellix"])
def test_replay_counts_history_hits_and_frees_every_block(model_config: Any, kv_policy: str) -> None:
    programs = generate("bfcl", 3, 2.0, 3, tool_wait_scale=0.25)
    num_blocks = 1024
    result = replay_vllm(
        programs,
        "plas",
        model_config,
        preset=dataclasses.replace(cost_model.preset("llama3.1-8b-a100"), scheduler_cpu=False),
        num_blocks=num_blocks,
        max_num_seqs=2,
        max_num_batched_tokens=2048,
        settings={"kv_policy": kv_policy},
    )
    assert result["calls_done"] == result["calls"] and result["token_mismatches"] == 0
    history = result["history"]
    reusable = sum(c.prefix_tokens for p in programs for c in p.calls if c.parents)
    assert history["reusable_tokens"] == reusable > 0
    assert 0 < history["hit_tokens"] <= history["attainable_tokens"] <= reusable
    assert history["reprefilled_tokens"] == reusable - history["hit_tokens"]
    assert history["hit_share"] == pytest.approx(history["hit_tokens"] / reusable)
    # the finish hint after each program's last call gives its retained blocks back
    assert result["kv"]["free_blocks_at_end"] == num_blocks - 1
    stats = result["plugin_stats"]
    if kv_policy == "autellix":
        assert stats["kv_retained_contexts"] == 0 and stats["kv_retained_contexts_total"] > 0
    else:
        assert stats == {}


@pytest.mark.usefixtures("model_config")  # sets VLLM_CACHE_ROOT: the script reuses its model inspection
def test_script_writes_the_documented_json(tmp_path: Path) -> None:
    """Every part in one run (the script's start-up, vLLM's import, is most of its time)."""
    programs = generate("sharegpt", 3, 4.0, 0, tool_wait_scale=0.25)  # --quick's workload
    longest = max(c.prompt_tokens + c.output_tokens for p in programs for c in p.calls)
    num_blocks = longest // 16 + 4  # a tight cache: the longest call and little more
    out = tmp_path / "replay.json"
    argv = [sys.executable, "benches/bench_vllm_replay.py", "--quick", "--no-progress", "--json", str(out)]
    argv += ["--programs", "3", "--max-num-seqs", "2"]
    argv += ["--kv-offload", "1", "--offload-num-blocks", str(num_blocks)]
    argv += ["--overhead-running", "8", "--overhead-waiting", "40", "--overhead-steps", "6"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads(out.read_text())
    assert set(data) >= {"config", "workload", "machine", "vllm", "sim", "ratios", "fractions"}
    assert set(data) >= {"agreement", "pass", "offload", "overhead", "wall_s"}
    assert data["workload"]["calls"] == sum(len(p.calls) for p in programs)
    _check_replay(data)
    _check_offload(data, num_blocks)
    _check_overhead(data["overhead"])
    assert "added by AutellixScheduler (plas, kv autellix)" in done.stdout  # the tables were printed


def _check_replay(data: dict[str, Any]) -> None:
    policies = data["config"]["policies"]
    assert policies == ["fcfs", "plas"]
    for side in ("vllm", "sim"):
        for policy in policies:
            r = data[side][policy]
            assert r["programs_done"] == 3
            assert r["calls_done"] == r["calls"] == data["workload"]["calls"]
            assert set(r["per_token_s"]) == {"mean", "p50", "p95", "p99"}
        assert set(data["ratios"][side]["plas"]) == {"mean", "p50", "p99"}
    assert data["vllm"]["plas"]["token_mismatches"] == 0
    assert set(data["fractions"]["plas"]) == {"mean", "p99"}
    for cell in data["fractions"]["plas"].values():
        assert cell["verdict"] in ("PASS", "MISS", "n/a")


def _check_offload(data: dict[str, Any], num_blocks: int) -> None:
    offload = data["offload"]
    assert (offload["policy"], offload["num_blocks"], offload["cpu_gib"]) == ("plas", num_blocks, 1.0)
    assert set(offload["ratio"]) == {"offload", "offload_resume"}
    assert all(set(q) == {"mean", "p50", "p99"} for q in offload["ratio"].values())
    for side in ("recompute", "offload", "offload_resume"):
        r = offload[side]
        assert r["programs_done"] == 3
        assert r["calls_done"] == r["calls"] == data["workload"]["calls"]
        assert r["token_mismatches"] == 0
        kv = r["kv"]
        assert kv["free_blocks_at_end"] == num_blocks - 1  # every block back in the pool
        assert kv["preempted_tokens"] >= 0 and kv["recomputed_tokens"] >= 0
    for side in ("offload", "offload_resume"):
        kv = offload[side]["kv"]
        assert kv["transfers_pending"] is False  # the connector has no job left
        assert kv["stored_blocks"] > 0 and kv["loaded_bytes"] >= 0 and kv["load_s"] >= 0
    assert offload["offload_resume"]["kv"]["prefix_loaded_tokens"] == 0  # only resumes load
    assert "load_s" not in offload["recompute"]["kv"] and offload["recompute"]["kv"]["loaded_tokens"] == 0


def _check_overhead(overhead: dict[str, Any]) -> None:
    assert (overhead["running"], overhead["waiting"], overhead["steps_measured"]) == (8, 40, 6)
    for side in ("stock", "autellix", "autellix_kv"):
        assert overhead[side]["median_us"] > 0
        assert overhead[side]["running_after"] == 8
        assert overhead[side]["preemptions"] == 0
    assert set(overhead["sides"]) == {"autellix", "autellix_kv"}
    for side, added in overhead["sides"].items():
        assert overhead[side]["core_step_median_us"] > 0
        assert set(added) == {
            "added_us",
            "added_fraction",
            "medians_difference_us",
            "core_step_fraction",
            "pass",
        }
    assert {"added_us", "added_fraction", "medians_difference_us", "pass"} <= set(overhead)


def test_kv_experiment_reports_every_side(model_config: Any, tmp_path: Path) -> None:
    """``--experiment kv --quick`` in this process (the session's model config: no second vLLM
    start-up), two programs per workload, with the host-tier sides: structure only, never which
    side is faster."""
    sys.path.insert(0, str(ROOT / "benches"))
    import bench_vllm_replay

    out = tmp_path / "kv.json"
    argv = ["--experiment", "kv", "--quick", "--no-progress", "--json", str(out), "--programs", "2"]
    argv += ["--kv-host", "1", "--overhead-running", "8", "--overhead-waiting", "40", "--overhead-steps", "6"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        bench_vllm_replay.main(argv, model_config)
    data = json.loads(out.read_text())
    assert data["config"]["workloads"] == ["bfcl", "lats", "mixed"]
    assert set(data["kv"]) == {"bfcl", "lats", "mixed"}
    for workload, r in data["kv"].items():
        calls = r["workload"]["calls"]
        for engine in ("vllm", "sim"):
            assert set(r[engine]) == {"stock", "lru", "autellix", "lru_host", "autellix_host"}
            for side in r[engine].values():
                assert side["programs_done"] == 2 and side["calls_done"] == side["calls"] == calls
                figures = [
                    *side["per_token_s"].values(),
                    side["worst_per_token_s"],
                    side["history"]["hit_share"],
                ]
                assert all(math.isfinite(x) and x >= 0 for x in figures), (workload, figures)
                assert side["history"]["reusable_tokens"] == r["workload"]["history_tokens"]
        for side in r["vllm"].values():
            assert side["token_mismatches"] == 0
            assert side["kv"]["free_blocks_at_end"] == r["config"]["num_blocks"] - 1
        assert set(r["ratios"]["vllm"]) == set(r["ratios"]["sim"]) == {"mean", "p50", "p99", "worst"}
        assert all(cell["verdict"] in ("PASS", "MISS", "n/a") for cell in r["fractions"].values())
        assert r["goals"]["p99_vs_stock"] in ("PASS", "MISS") and r["goals"]["all_done"] is True
        assert r["config"]["kv_host_blocks"] == r["config"]["num_blocks"]
        assert set(r["host"]["ratios"]["vllm"]) == {"mean", "p50", "p99", "worst"}
        assert r["host"]["p99_vs_stock"] in ("PASS", "MISS")
        assert "kv_host_blocks" in r["vllm"]["autellix_host"]["plugin_stats"]  # the planner has a host tier
    _check_overhead(data["overhead"])
    assert "kv lru / kv autellix" in printed.getvalue() and "kv autellix)" in printed.getvalue()
    assert "with a host tier of" in printed.getvalue()


def test_gpu_e2e_skips_without_a_model() -> None:
    """``.ci/gpu``'s end-to-end step on a machine without a model: one SKIP line, exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "AUTELLIX_E2E_MODEL"}
    argv = [sys.executable, "benches/gpu_vllm_e2e.py", "--programs", "2"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("gpu_vllm_e2e: SKIP: $AUTELLIX_E2E_MODEL is not set")
