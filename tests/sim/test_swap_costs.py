"""The cost model fitted to swap costs measured by benches/bench_swap.py (calibration).

No GPU has run benches/bench_swap.py for these tests: the JSON below is SYNTHETIC, generated from
known costs so that the fit must give them back. It is never written into benches/results/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from autellix.exceptions import ConfigError
from autellix.sim.cost_model import (
    HARDWARE,
    PRESETS,
    SwapCosts,
    fit_swap_costs,
    load_swap_costs,
    main,
    measured_preset,
)

SYNTHETIC_DEVICE = "NVIDIA H100 80GB HBM3"
SYNTHETIC = {"link": 50e9, "bulk_latency": 20e-6, "bulk_efficiency": 0.9, "memcpy_latency": 4e-6}


def synthetic_swap_results(
    per_block: tuple[str, ...] = ("vllm_per_block", "per_block"), device_type: str = "cuda"
) -> dict[str, Any]:
    """What bench_swap.py would write on a GPU whose costs are exactly SYNTHETIC (test data)."""
    c = SYNTHETIC
    page, tensors = 64 * 1024, 32
    rows = []
    for direction in ("d2h", "h2d"):
        for n in (1, 10, 100, 1000):
            nbytes = n * tensors * page
            seconds = {
                "link": 3e-6 + nbytes / c["link"],
                "bulk": c["bulk_latency"] + nbytes / (c["link"] * c["bulk_efficiency"]),
                # the Python loop costs more per copy than vLLM's C++ loop
                "per_block": n * tensors * 2 * c["memcpy_latency"] + nbytes / c["link"],
                "vllm_per_block": n * tensors * c["memcpy_latency"] + nbytes / c["link"],
            }
            for method, s in seconds.items():
                if method in ("link", "bulk") or method in per_block:
                    copies = n * tensors if "per_block" in method else 1
                    rows.append(
                        {
                            "method": method,
                            "direction": direction,
                            "blocks": n,
                            "bytes": nbytes,
                            "copies": copies,
                            "seconds": s,
                            "gbps": nbytes / s / 1e9,
                        }
                    )
    rows.append(
        {
            "method": "vllm_batch",
            "direction": "d2h",
            "blocks": 1,
            "bytes": 1,
            "copies": 1,
            "seconds": None,
            "gbps": None,
            "error": "failed",
        }
    )
    return {"device": {"type": device_type, "name": SYNTHETIC_DEVICE}, "rows": rows, "synthetic": True}


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_fit_recovers_the_synthetic_costs() -> None:
    costs = fit_swap_costs(synthetic_swap_results(), source="synthetic")
    assert costs.device == SYNTHETIC_DEVICE and costs.source == "synthetic"
    assert costs.link_bandwidth == pytest.approx(SYNTHETIC["link"], rel=1e-9)
    assert costs.bulk_latency == pytest.approx(SYNTHETIC["bulk_latency"], rel=1e-6)
    assert costs.bulk_efficiency == pytest.approx(SYNTHETIC["bulk_efficiency"], rel=1e-9)
    # vLLM's C++ per-block op is preferred to the Python loop (which costs 2x per copy here);
    # the link's 3 us fixed cost does not leak into the per-copy latency
    assert costs.per_block_method == "vllm_per_block"
    assert costs.memcpy_latency == pytest.approx(SYNTHETIC["memcpy_latency"], rel=1e-3)


def test_fit_falls_back_to_the_python_loop_or_the_datasheet() -> None:
    loop = fit_swap_costs(synthetic_swap_results(per_block=("per_block",)))
    assert loop.per_block_method == "per_block"
    assert loop.memcpy_latency == pytest.approx(2 * SYNTHETIC["memcpy_latency"], rel=1e-3)
    none = fit_swap_costs(synthetic_swap_results(per_block=()))
    assert none.memcpy_latency is None and none.per_block_method is None
    p = PRESETS["llama3.1-8b-h100"].with_swap_costs(none)
    copies = p.swap_copies(10, bulk=False)
    nbytes = 10 * p.block_size * p.kv_bytes_per_token
    assert p.swap_time(10, bulk=False) == pytest.approx(
        copies * p.hardware.memcpy_latency + nbytes / none.link_bandwidth
    )


def test_fit_refuses_cpu_runs_and_incomplete_results() -> None:
    with pytest.raises(ConfigError, match="not a CUDA device"):
        fit_swap_costs(synthetic_swap_results(device_type="cpu"))
    with pytest.raises(ConfigError, match="not a CUDA device"):
        fit_swap_costs({"rows": []})
    with pytest.raises(ConfigError, match="no 'rows'"):
        fit_swap_costs({"device": {"type": "cuda", "name": "x"}})
    data = synthetic_swap_results()
    data["rows"] = [r for r in data["rows"] if not (r["method"] == "link" and r["direction"] == "h2d")]
    with pytest.raises(ConfigError, match="no link timings for h2d"):
        fit_swap_costs(data)


def test_swap_costs_are_validated() -> None:
    good = {"device": "d", "link_bandwidth": 1e9, "bulk_latency": 0.0, "bulk_efficiency": 0.5}
    SwapCosts(**good)  # type: ignore[arg-type]
    for field, bad in (
        ("link_bandwidth", 0.0),
        ("link_bandwidth", math.inf),
        ("bulk_efficiency", -1.0),
        ("bulk_latency", -1e-6),
        ("memcpy_latency", math.nan),
    ):
        with pytest.raises(ConfigError, match=field):
            SwapCosts(**{**good, field: bad})  # type: ignore[arg-type]


def test_measured_costs_drive_swap_time() -> None:
    costs = fit_swap_costs(synthetic_swap_results())
    sheet = PRESETS["llama3.1-70b-4xh100"]
    p = sheet.with_swap_costs(costs)
    assert p.swap_costs is costs and sheet.swap_costs is None
    assert p.with_swap_costs(None) == sheet
    assert (p.kv_blocks, p.step_time(0, 0.0, 8, 4096)) == (sheet.kv_blocks, sheet.step_time(0, 0.0, 8, 4096))
    for blocks in (1, 16, 512):
        rank_bytes = blocks * p.block_size * p.kv_bytes_per_token / p.tensor_parallel
        assert p.swap_copies(blocks, bulk=True) == sheet.swap_copies(blocks, bulk=True) == 1
        assert p.swap_time(blocks, bulk=True) == pytest.approx(
            costs.bulk_latency + rank_bytes / (costs.link_bandwidth * costs.bulk_efficiency)
        )
        assert p.swap_time(blocks, bulk=False) == pytest.approx(
            p.swap_copies(blocks, bulk=False) * SYNTHETIC["memcpy_latency"]
            + rank_bytes / costs.link_bandwidth,
            rel=1e-3,
        )
        assert p.swap_time(blocks, bulk=True) != sheet.swap_time(blocks, bulk=True)
    assert p.swap_time(0, bulk=True) == p.swap_time(0, bulk=False) == 0.0


def test_costs_apply_to_presets_of_the_measured_gpu_model() -> None:
    costs = fit_swap_costs(synthetic_swap_results())
    assert costs.matches(HARDWARE["H100-SXM5-80GB"]) and not costs.matches(HARDWARE["A100-SXM4-80GB"])
    a100 = SwapCosts("NVIDIA A100-SXM4-80GB", 25e9, 1e-5, 0.9)
    assert a100.matches(HARDWARE["A100-SXM4-80GB"]) and a100.matches(HARDWARE["A100-SXM4-40GB"])
    assert not a100.matches(HARDWARE["H100-SXM5-80GB"])


def test_measured_preset_reads_the_bench_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "synthetic-swap.json", synthetic_swap_results())
    p = measured_preset("llama3.1-8b-h100", path)
    assert p.swap_costs == load_swap_costs(path) and p.swap_costs.source == str(path)
    with pytest.raises(ConfigError, match=r"measured on 'NVIDIA H100 80GB HBM3'; preset 'llama3\.1-8b-a100'"):
        measured_preset("llama3.1-8b-a100", path)
    with pytest.raises(ConfigError, match="cannot read swap results"):
        measured_preset("llama3.1-8b-h100", tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read swap results"):
        load_swap_costs(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not a JSON object"):
        load_swap_costs(write_json(tmp_path / "list.json", [1]))


def test_the_simulator_and_bench_take_measured_swap_costs(tmp_path: Path) -> None:
    """``SimConfig.swap_results`` / ``autellix bench --swap-results``: the engines' swap times come
    from the (synthetic) measured figures; a file of another GPU is refused before anything runs."""
    from autellix.cli import main as cli
    from autellix.sim.cluster import Cluster
    from autellix.sim.config import SimConfig

    path = str(write_json(tmp_path / "synthetic-swap.json", synthetic_swap_results()))
    config = SimConfig(preset="llama3.1-8b-h100", swap_results=path, programs=2)
    assert Cluster(config, []).preset.swap_costs == load_swap_costs(path)
    assert Cluster(SimConfig(preset="llama3.1-8b-h100", programs=2), []).preset.swap_costs is None
    with pytest.raises(SystemExit):  # measured on an H100, the default preset is an A100
        cli(["bench", "--swap-results", path, "--out", str(tmp_path / "out")])


def test_main_prints_measured_swap_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path / "synthetic-swap.json", synthetic_swap_results())
    assert main(["--swap-results", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Swap times with costs measured on NVIDIA H100 80GB HBM3" in out
    assert "link 50.0 GB/s, bulk 90% of it + 20.0 us, per-block copy 4.0 us (vllm_per_block)" in out
    assert "| llama3.1-8b-h100 |" in out and "| llama3.1-70b-4xh100 |" in out
    assert "| llama3.1-8b-a100 |" not in out.split("Swap times")[1]
    write_json(tmp_path / "cpu.json", synthetic_swap_results(device_type="cpu"))
    assert main(["--swap-results", str(tmp_path / "cpu.json")]) == 2
    assert "not a CUDA device" in capsys.readouterr().err
