"""Smoke test of ``benches/bench_swap.py --quick`` on the CPU: the script runs every method it can
here, checks each copy, and writes the JSON the benchmark documents. Structure, not timings: CPU
figures are RAM-to-RAM copies (the real ones need a GPU)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("torch", reason="benches/bench_swap.py needs torch (pip install 'autellix[vllm]')")

from autellix.exceptions import ConfigError
from autellix.sim.cost_model import fit_swap_costs, load_swap_costs


@pytest.fixture(scope="module")
def bench(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("bench_swap")


@pytest.fixture(scope="module")
def result(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    path = tmp_path_factory.mktemp("bench") / "swap.json"
    returned = bench.main(["--quick", "--device", "cpu", "--no-progress", "--json", str(path)])
    return returned, path


def test_quick_run_writes_strict_json(result: tuple[dict[str, Any], Path]) -> None:
    returned, path = result
    written = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert written == json.loads(json.dumps(returned))
    assert written["device"]["type"] == "cpu"
    assert written["config"]["sizes"] == [1, 10, 100] and written["config"]["quick"]
    lay = written["layout"]
    assert lay["page_bytes"] == 16 * 8 * 256 * 2 == 64 * 1024  # Llama-3.1-8B bf16, packed K+V
    assert lay["block_bytes"] == lay["tensors"] * lay["page_bytes"] and not lay["pinned"]
    assert written["machine"]["ops_backend"] in ("cpu", "reference")


def test_every_cpu_method_ran_and_copied_correctly(result: tuple[dict[str, Any], Path]) -> None:
    data, _ = result
    methods = ["link", "bulk", "swapper", "per_block"]
    assert data["config"]["methods"] == methods
    rows = {(r["method"], r["direction"], r["blocks"]): r for r in data["rows"]}
    assert set(rows) == {(m, d, n) for m in methods for d in ("d2h", "h2d") for n in (1, 10, 100)}
    for (method, _, n), r in rows.items():
        assert "error" not in r
        assert r["seconds"] > 0 and r["gbps"] == pytest.approx(r["bytes"] / r["seconds"] / 1e9)
        assert r["bytes"] == n * data["layout"]["block_bytes"]
        assert r["copies"] == (n * data["layout"]["tensors"] if method == "per_block" else 1)
        if method != "link":
            assert r["checked"] is True
    assert data["checks_passed"] is True
    assert set(data["summary"]) == {"d2h", "h2d"}
    assert data["summary"]["h2d"]["bulk"]["largest"] == 100


def test_goals_are_reported_not_judged_on_cpu(result: tuple[dict[str, Any], Path]) -> None:
    data, _ = result
    goals = {(g["name"], g["direction"]): g for g in data["goals"]}
    assert set(goals) == {(n, d) for n in ("bulk / per-block loop", "bulk / link") for d in ("d2h", "h2d")}
    for g in goals.values():
        assert g["verdict"] == "n/a (cpu)" and g["blocks"] == 100 and g["value"] > 0
    assert goals[("bulk / per-block loop", "d2h")]["goal"] == 5.0
    assert goals[("bulk / link", "h2d")]["goal"] == 0.85
    notes = " ".join(data["notes"])
    assert "vllm_per_block, vllm_batch skipped: needs CUDA" in notes
    assert "not a host link" in notes


def test_cpu_figures_never_calibrate_the_simulator(result: tuple[dict[str, Any], Path]) -> None:
    data, path = result
    assert data["swap_costs"] is None
    with pytest.raises(ConfigError, match="not a CUDA device"):
        fit_swap_costs(data)
    with pytest.raises(ConfigError, match="not a CUDA device"):
        load_swap_costs(path)


def test_argument_checks(bench: ModuleType) -> None:
    assert bench._sizes("100,1, 10,10") == [1, 10, 100]
    for bad in ("", "0,1", "a"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._sizes(bad)
    assert bench._methods("per_block,bulk") == ["bulk", "per_block"]
    with pytest.raises(argparse.ArgumentTypeError):
        bench._methods("per_block")  # bulk is what everything is compared with
    with pytest.raises(argparse.ArgumentTypeError):
        bench._methods("bulk,dma")
    args = bench.parse_args(["--quick", "--device", "cpu"])
    assert (args.sizes, args.layers, args.repeats) == ([1, 10, 100], 4, 2)
    args = bench.parse_args(["--device", "cpu"])
    assert (args.sizes, args.layers, args.max_blocks) == ([1, 10, 100, 1000, 10_000], 32, 10_000)


def test_vllm_batch_descriptors_address_each_page(bench: ModuleType) -> None:
    """The pointers handed to vLLM's swap_blocks_batch (a CUDA-only path): one per (layer, block)."""
    import torch

    cache = torch.zeros(3, 10, 4, 8, dtype=torch.bfloat16)
    layers = list(cache.unbind(0))
    blocks = torch.tensor([7, 0, 3])
    ptrs = bench.page_pointers(layers, blocks).tolist()
    assert ptrs == [t[b].data_ptr() for t in layers for b in blocks.tolist()]
    assert ptrs[1] - ptrs[0] == -7 * 4 * 8 * 2


def test_vllm_methods_are_wired_to_the_right_tensors(bench: ModuleType) -> None:
    """vLLM's ops need CUDA; a stand-in with their signatures checks what the bench passes them."""
    import torch

    from autellix.kvswap import reference_swap_blocks

    calls: list[str] = []

    class FakeVllmOps:
        @staticmethod
        def swap_blocks(src: Any, dst: Any, block_size_in_bytes: int, block_mapping: Any) -> None:
            assert block_size_in_bytes == 64 * 1024 and block_mapping.dtype == torch.int64
            calls.append("swap_blocks")
            reference_swap_blocks(src, dst, block_mapping)

        @staticmethod
        def swap_blocks_batch(src_ptrs: Any, dst_ptrs: Any, sizes: Any) -> None:
            assert src_ptrs.shape == dst_ptrs.shape == sizes.shape == (4 * 3,)
            assert set(sizes.tolist()) == {64 * 1024}
            calls.append("swap_blocks_batch")

    args = bench.parse_args(["--quick", "--device", "cpu"])
    layout = bench.Layout(args, 9, torch.device("cpu"))
    dev, host = [8, 1, 4], [0, 5, 2]
    for direction in ("d2h", "h2d"):
        bench._prepare("vllm_per_block", layout, direction, dev, host, FakeVllmOps, None)()
        assert bench._check(layout, direction, "vllm_per_block", dev, host)
        bench._prepare("vllm_batch", layout, direction, dev, host, FakeVllmOps, None)()
    assert calls == ["swap_blocks"] * 4 + ["swap_blocks_batch"] + ["swap_blocks"] * 4 + ["swap_blocks_batch"]
