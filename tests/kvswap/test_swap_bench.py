"""Smoke test of ``benches/bench_swap.py`` on the CPU, run as a user runs it: the script runs every
method it can here, checks each copy, prints its table and writes the JSON the benchmark documents.
Structure, not timings: CPU figures are RAM-to-RAM copies (the real ones need a GPU). vLLM's swap
ops need CUDA: their wiring is checked with stand-ins (``autellix.testing.vllm_swap``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="benches/bench_swap.py needs torch (pip install 'autellix[vllm]')")

from autellix.exceptions import ConfigError
from autellix.sim.cost_model import fit_swap_costs, load_swap_costs

REPO = Path(__file__).resolve().parents[2]


def bench_swap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "benches/bench_swap.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def strict_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}")
    )
    return data


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """``--quick --device cpu``: the JSON it wrote, what it printed, the JSON's path."""
    path = tmp_path_factory.mktemp("bench") / "swap.json"
    run = bench_swap("--quick", "--device", "cpu", "--no-progress", "--json", str(path))
    assert run.returncode == 0, run.stderr
    return strict_json(path), run.stdout, path


def test_quick_run_writes_strict_json(quick: tuple[dict[str, Any], str, Path]) -> None:
    written, _, _ = quick
    assert written["device"]["type"] == "cpu"
    assert written["config"]["sizes"] == [1, 10, 100] and written["config"]["quick"]
    assert (written["config"]["repeats"], written["config"]["max_repeats"]) == (2, 5)
    lay = written["layout"]
    assert lay["page_bytes"] == 16 * 8 * 256 * 2 == 64 * 1024  # Llama-3.1-8B bf16, packed K+V
    assert (lay["model"], lay["layers"]) == ("Llama-3.1-8B (4 of 32 layers)", 4)  # --quick on CPU
    assert lay["block_bytes"] == lay["tensors"] * lay["page_bytes"] and not lay["pinned"]
    assert written["machine"]["ops_backend"] in ("cpu", "reference")


def test_every_cpu_method_ran_and_copied_correctly(quick: tuple[dict[str, Any], str, Path]) -> None:
    data, _, _ = quick
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


def test_goals_are_reported_not_judged_on_cpu(quick: tuple[dict[str, Any], str, Path]) -> None:
    data, _, _ = quick
    goals = {(g["name"], g["direction"]): g for g in data["goals"]}
    assert set(goals) == {(n, d) for n in ("bulk / per-block loop", "bulk / link") for d in ("d2h", "h2d")}
    for g in goals.values():
        assert g["verdict"] == "n/a (cpu)" and g["blocks"] == 100 and g["value"] > 0
    assert goals[("bulk / per-block loop", "d2h")]["goal"] == 5.0
    assert goals[("bulk / link", "h2d")]["goal"] == 0.85
    notes = " ".join(data["notes"])
    assert "vllm_per_block, vllm_batch skipped: needs CUDA" in notes
    assert "not a host link" in notes


def test_the_report_shows_every_method_goal_and_note(quick: tuple[dict[str, Any], str, Path]) -> None:
    data, printed, _ = quick
    assert "KV swap GB/s on" in printed and "4 tensors x 64 KiB pages" in printed
    header = next(line for line in printed.splitlines() if "dir" in line and "blocks" in line)
    labels = ("link", "bulk (autellix)", "KVSwapper", "per-block loop", "bulk / per-block", "bulk / link")
    assert all(label in header for label in labels), header
    for g in data["goals"]:
        assert f"n/a (cpu)  {g['name']}, {g['direction']}, 100 blocks:" in printed
    for note in data["notes"]:
        assert f"note: {note}" in printed
    assert "FAILED" not in printed and "fitted swap costs" not in printed
    assert printed.rstrip().splitlines()[-1].startswith("wall ")


def test_cpu_figures_never_calibrate_the_simulator(quick: tuple[dict[str, Any], str, Path]) -> None:
    data, _, path = quick
    assert data["swap_costs"] is None
    with pytest.raises(ConfigError, match="not a CUDA device"):
        fit_swap_costs(data)
    with pytest.raises(ConfigError, match="not a CUDA device"):
        load_swap_costs(path)


def test_defaults_without_quick(tmp_path: Path) -> None:
    """Every size by default (those above --max-blocks skipped with a note), all 32 layers, 5
    repeats; --methods keeps the benchmark's order."""
    path = tmp_path / "swap.json"
    args = ["--device", "cpu", "--max-blocks", "1", "--methods", "per_block,bulk", "--no-progress"]
    run = bench_swap(*args, "--json", str(path))
    assert run.returncode == 0, run.stderr
    data = strict_json(path)
    assert data["config"]["sizes"] == [1] and not data["config"]["quick"]
    assert data["notes"][:4] == [f"{n} blocks skipped: above --max-blocks 1" for n in (10, 100, 1000, 10_000)]
    assert data["config"]["methods"] == ["bulk", "per_block"]
    assert (data["config"]["repeats"], data["config"]["max_repeats"]) == (5, 50)
    assert (data["layout"]["model"], data["layout"]["layers"]) == ("Llama-3.1-8B", 32)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--sizes", "", "block counts must be >= 1"),
        ("--sizes", "0,1", "block counts must be >= 1"),
        ("--sizes", "a", "comma-separated block counts"),
        ("--methods", "per_block", "with bulk"),  # bulk is what everything is compared with
        ("--methods", "bulk,dma", "with bulk"),
    ],
)
def test_bad_arguments_are_refused(flag: str, value: str, message: str) -> None:
    run = bench_swap(flag, value)
    assert run.returncode == 2 and f"argument {flag}: " in run.stderr and message in run.stderr
    assert run.stdout == ""


def test_vllm_batch_descriptors_address_each_page() -> None:
    """The pointers handed to vLLM's swap_blocks_batch (a CUDA-only path): one per (layer, block)."""
    import torch

    from autellix.testing.vllm_swap import page_pointers

    cache = torch.zeros(3, 10, 4, 8, dtype=torch.bfloat16)
    layers = list(cache.unbind(0))
    blocks = torch.tensor([7, 0, 3])
    ptrs = page_pointers(layers, blocks).tolist()
    assert ptrs == [t[b].data_ptr() for t in layers for b in blocks.tolist()]
    assert ptrs[1] - ptrs[0] == -7 * 4 * 8 * 2


def test_vllm_methods_are_wired_to_the_right_tensors() -> None:
    """vLLM's ops need CUDA; stand-ins with their signatures that copy on the CPU check what the
    bench passes them: 4 layer tensors of 9 blocks of 64 KiB pages, device blocks 8, 1, 4 to host
    blocks 0, 5, 2 and back, by the per-block op and by the batch op's page descriptors."""
    import ctypes

    import torch

    from autellix.kvswap import reference_swap_blocks
    from autellix.testing.vllm_swap import batch_swap, per_block_swap

    page = 64 * 1024
    calls: list[str] = []

    class FakeVllmOps:
        @staticmethod
        def swap_blocks(src: Any, dst: Any, block_size_in_bytes: int, block_mapping: Any) -> None:
            assert block_size_in_bytes == page and block_mapping.dtype == torch.int64
            calls.append("swap_blocks")
            reference_swap_blocks(src, dst, block_mapping)

        @staticmethod
        def swap_blocks_batch(src_ptrs: Any, dst_ptrs: Any, sizes: Any) -> None:
            assert src_ptrs.shape == dst_ptrs.shape == sizes.shape == (4 * 3,)
            calls.append("swap_blocks_batch")
            for s, d, n in zip(src_ptrs.tolist(), dst_ptrs.tolist(), sizes.tolist(), strict=True):
                ctypes.memmove(d, s, n)  # CPU tensors: the descriptors are host addresses

    device = list(torch.randn(4, 9, 8, 16, 256).to(torch.bfloat16).unbind(0))
    saved = [t.clone() for t in device]
    dev_blocks, host_blocks = [8, 1, 4], [0, 5, 2]
    out = torch.tensor(list(zip(dev_blocks, host_blocks, strict=True)), dtype=torch.int64)
    for swap in (per_block_swap, batch_swap):
        host = list(torch.zeros(4, 9, 8, 16, 256, dtype=torch.bfloat16).unbind(0))
        swap(FakeVllmOps, device, host, page, out)()
        for t, u in zip(device, host, strict=True):
            assert torch.equal(u[host_blocks], t[dev_blocks]) and not u[[1, 3, 4, 6, 7, 8]].any()
        for t in device:
            t[dev_blocks] = 0
        swap(FakeVllmOps, host, device, page, out.flip(1))()
        assert all(torch.equal(t, s) for t, s in zip(device, saved, strict=True))
    assert calls == ["swap_blocks"] * 8 + ["swap_blocks_batch"] * 2
