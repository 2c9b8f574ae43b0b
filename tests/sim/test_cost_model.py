"""The step-time cost model: presets, KV capacity, roofline step time, swap time, published data."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.exceptions import ConfigError
from autellix.sim.cost_model import (
    HARDWARE,
    LLAMA31_8B,
    LLAMA31_70B,
    NON_KV_RESERVE_BYTES,
    PRESETS,
    PUBLISHED_MEASUREMENTS,
    EnginePreset,
    Measurement,
    load_published_measurements,
    main,
    parse_measurements,
    preset,
    typical_table,
    validation_table,
)

NAMES = ("llama3.1-8b-a100", "llama3.1-8b-h100", "llama3.1-70b-4xa100", "llama3.1-70b-4xh100")
ALL = [PRESETS[n] for n in NAMES]


def test_preset_keys_and_lookup() -> None:
    assert tuple(PRESETS) == NAMES
    for name in NAMES:
        assert preset(name) is PRESETS[name]
        assert preset(name).name == name
    assert [p.tensor_parallel for p in ALL] == [1, 1, 4, 4]
    assert [p.hardware.name for p in ALL] == ["A100-SXM4-80GB", "H100-SXM5-80GB"] * 2


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        preset("nope")
    for name in NAMES:
        assert name in str(err.value)


def test_bad_engine_settings_are_config_errors() -> None:
    hw = HARDWARE["A100-SXM4-80GB"]
    with pytest.raises(ConfigError):
        EnginePreset("x", LLAMA31_8B, hw, tensor_parallel=0)
    with pytest.raises(ConfigError):
        EnginePreset("x", LLAMA31_8B, hw, tensor_parallel=1, gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError):
        EnginePreset("x", LLAMA31_8B, hw, tensor_parallel=1, block_size=0)


# ------------------------------------------------------------------------------- architecture


def test_parameter_counts_match_the_architecture() -> None:
    # The stated (HF) counts are what the layer shapes add up to: blocks + embedding + LM head.
    for m, approx in ((LLAMA31_8B, 8.03e9), (LLAMA31_70B, 70.6e9)):
        assert m.layer_parameters + m.embedding_parameters + m.lm_head_parameters == m.parameters
        assert m.parameters == pytest.approx(approx, rel=0.005)


def test_kv_bytes_per_token() -> None:
    # layers x (K and V) x kv_heads x head_dim x 2 bytes.
    assert LLAMA31_8B.kv_bytes_per_token == 32 * 2 * 8 * 128 * 2 == 128 * 1024
    assert LLAMA31_70B.kv_bytes_per_token == 80 * 2 * 8 * 128 * 2 == 320 * 1024
    for p in ALL:
        assert p.kv_bytes_per_token == p.model.kv_bytes_per_token


# ---------------------------------------------------------------------------------- capacity


@pytest.mark.parametrize("p", ALL, ids=NAMES)
def test_kv_capacity_is_positive_and_consistent(p: EnginePreset) -> None:
    assert p.kv_blocks > 0
    assert p.kv_tokens == p.kv_blocks * p.block_size
    # Weights + KV + reserve fit in the utilised memory of every GPU.
    per_gpu = p.model.weight_bytes / p.tensor_parallel + NON_KV_RESERVE_BYTES
    per_gpu += p.kv_blocks * p.block_size * p.kv_bytes_per_token / p.tensor_parallel
    assert per_gpu <= p.gpu_memory_utilization * p.hardware.hbm_capacity
    # ... and one more block would not.
    assert per_gpu + p.block_size * p.kv_bytes_per_token / p.tensor_parallel > (
        p.gpu_memory_utilization * p.hardware.hbm_capacity
    )


def test_kv_capacity_values() -> None:
    # 8B on one 80 GB GPU at 0.9: (0.9 x 79.15 GiB - 16.06 GB weights - 2 GiB) / 128 KiB.
    assert 400_000 <= PRESETS["llama3.1-8b-a100"].kv_tokens <= 460_000
    assert PRESETS["llama3.1-8b-h100"].kv_tokens == PRESETS["llama3.1-8b-a100"].kv_tokens
    # 70B over four 80 GB GPUs: ~35 GB of weights per GPU, 80 KiB of KV per token per GPU.
    assert 400_000 <= PRESETS["llama3.1-70b-4xa100"].kv_tokens <= 520_000
    # Less memory utilisation, fewer blocks; smaller blocks, about the same tokens.
    base = PRESETS["llama3.1-8b-a100"]
    lower = EnginePreset("x", base.model, base.hardware, 1, gpu_memory_utilization=0.5)
    assert lower.kv_blocks < base.kv_blocks
    small = EnginePreset("x", base.model, base.hardware, 1, block_size=8)
    assert abs(small.kv_tokens - base.kv_tokens) < 16


def test_model_that_does_not_fit_has_no_kv_blocks() -> None:
    p = EnginePreset("x", LLAMA31_70B, HARDWARE["A100-SXM4-80GB"], tensor_parallel=1)
    assert p.kv_blocks == 0 and p.kv_tokens == 0


# -------------------------------------------------------------------------------- step time


@pytest.mark.parametrize("p", ALL, ids=NAMES)
def test_no_work_costs_nothing(p: EnginePreset) -> None:
    assert p.step_time(0, 0.0, 0, 0) == 0.0
    assert p.step_time(0, 0.0, 1, 1) > 0.0


args = st.tuples(
    st.integers(0, 20_000), st.floats(0, 5e7, allow_nan=False), st.integers(0, 512), st.integers(0, 500_000)
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), args, st.integers(0, 3), st.integers(1, 5000))
def test_step_time_is_monotone_in_every_argument(
    p: EnginePreset, a: tuple[int, float, int, int], which: int, more: int
) -> None:
    bigger = list(a)
    bigger[which] += more
    assert p.step_time(*bigger) >= p.step_time(*a) >= 0.0  # type: ignore[arg-type]


@pytest.mark.parametrize("p", ALL, ids=NAMES)
def test_small_batch_decode_is_memory_bound(p: EnginePreset) -> None:
    # Batch 1: weights streamed once (embedding table excluded) at the achievable bandwidth,
    # plus the fixed overheads; the FLOPs would take a fraction of that.
    m, hw, tp = p.model, p.hardware, p.tensor_parallel
    weights = (m.parameters - m.embedding_parameters) * m.bytes_per_weight
    memory = weights / (tp * hw.hbm_bandwidth * hw.mbu)
    t = p.step_time(0, 0.0, 1, 512)
    assert memory < t < 1.15 * memory + p.iteration_overhead + 2 * m.layers * hw.allreduce_latency
    compute = 2 * m.parameters / (tp * hw.peak_flops * hw.mfu)
    assert compute < 0.05 * t
    # Up to a few dozen sequences decode in about the time of one.
    assert p.step_time(0, 0.0, 16, 16 * 512) < 1.25 * t


@pytest.mark.parametrize("p", ALL, ids=NAMES)
def test_large_prefill_is_compute_bound(p: EnginePreset) -> None:
    m, hw, tp = p.model, p.hardware, p.tensor_parallel
    n = 8192
    t = p.step_time(n, n * n / 2, 0, 0)
    gemm = 2 * m.layer_parameters * n / (tp * hw.peak_flops * hw.mfu)
    attention = 4 * m.layers * m.attention_heads * m.head_dim * (n * n / 2) / (tp * hw.peak_flops * hw.mfu)
    # FLOPs take most of the step; the rest is TP all-reduce traffic (~10% at TP=4) and overhead.
    assert 0.85 * t < gemm + attention < t
    # Linear in tokens once compute-bound (up to the quadratic attention term).
    assert p.step_time(2 * n, 2 * n * n / 2, 0, 0) == pytest.approx(2 * t, rel=0.1)


def test_h100_is_faster_than_a100() -> None:
    cases = [(0, 0.0, 1, 512), (0, 0.0, 64, 64 * 1000), (0, 0.0, 256, 256 * 512), (2048, 2048.0**2 / 2, 0, 0)]
    for a100, h100 in (
        ("llama3.1-8b-a100", "llama3.1-8b-h100"),
        ("llama3.1-70b-4xa100", "llama3.1-70b-4xh100"),
    ):
        for c in cases:
            fast, slow = PRESETS[h100].step_time(*c), PRESETS[a100].step_time(*c)
            assert fast < slow
            assert 1.3 < slow / fast < 3.2  # between the bandwidth and the peak-FLOPs ratios


def test_70b_tp4_step_times_are_sane() -> None:
    for name, lo, hi in (("llama3.1-70b-4xa100", 0.020, 0.040), ("llama3.1-70b-4xh100", 0.012, 0.025)):
        p = PRESETS[name]
        t = p.step_time(0, 0.0, 1, 1000)
        assert lo < t < hi  # ~35 GB of weights per GPU at 2-3.35 TB/s, plus 160 all-reduces
        assert 2.0 < p.step_time(0, 0.0, 1, 1000) / PRESETS["llama3.1-8b-" + name[-4:]].step_time(
            0, 0.0, 1, 1000
        )
        assert 0.15 < p.step_time(2048, 2048.0**2 / 2, 0, 0) < 1.0  # 2k-token prefill


def test_tensor_parallel_adds_all_reduce_cost() -> None:
    hw = HARDWARE["H100-SXM5-80GB"]
    tp4 = EnginePreset("x", LLAMA31_70B, hw, tensor_parallel=4)
    tp8 = EnginePreset("x", LLAMA31_70B, hw, tensor_parallel=8)
    # Twice the GPUs halve the weight traffic but not the 160 all-reduce latencies.
    t4, t8 = tp4.step_time(0, 0.0, 1, 1000), tp8.step_time(0, 0.0, 1, 1000)
    assert t8 < t4 < 2 * t8
    assert t4 - tp4.iteration_overhead > 160 * hw.allreduce_latency


def test_schedule_time_grows_with_running_sequences() -> None:
    p = PRESETS["llama3.1-8b-a100"]
    assert 0 < p.schedule_time(0) < p.schedule_time(1) < p.schedule_time(256) < 0.02


# --------------------------------------------------------------------------------------- swap


@pytest.mark.parametrize("p", ALL, ids=NAMES)
def test_swap_copy_counts(p: EnginePreset) -> None:
    assert p.swap_copies(0, bulk=False) == p.swap_copies(0, bulk=True) == 0
    assert p.swap_time(0, bulk=False) == p.swap_time(0, bulk=True) == 0.0
    for blocks in (1, 16, 500):
        assert p.swap_copies(blocks, bulk=False) == blocks * p.model.layers * 2  # per block, layer, K/V
        assert p.swap_copies(blocks, bulk=True) == 1


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL), st.integers(1, 100_000))
def test_bulk_swap_beats_per_block(p: EnginePreset, blocks: int) -> None:
    assert 0.0 < p.swap_time(blocks, bulk=True) < p.swap_time(blocks, bulk=False)


@pytest.mark.parametrize("p", ALL, ids=NAMES)
@pytest.mark.parametrize("bulk", [False, True])
def test_swap_time_is_about_linear_in_blocks(p: EnginePreset, bulk: bool) -> None:
    t100, t200, t400 = (p.swap_time(b, bulk) for b in (100, 200, 400))
    assert t100 < t200 < t400
    assert t400 - t200 == pytest.approx(2 * (t200 - t100), rel=1e-6)  # affine in blocks
    assert t200 / t100 == pytest.approx(2.0, rel=0.05)  # fixed part is small


def test_bulk_swap_moves_the_bytes_at_full_pcie_bandwidth() -> None:
    p = PRESETS["llama3.1-8b-a100"]
    blocks = 512
    pcie = blocks * p.block_size * p.kv_bytes_per_token / p.hardware.pcie_bandwidth
    assert pcie < p.swap_time(blocks, bulk=True) < 1.1 * pcie
    # Per-block is dominated by the per-copy latency: 64 copies of 32 KiB per block.
    per_copy = p.hardware.memcpy_latency + 16 * 8 * 128 * 2 / p.hardware.pcie_bandwidth
    assert p.swap_time(blocks, bulk=False) == pytest.approx(blocks * 64 * per_copy)
    # The paper reports 3-7x less swap time for the 8B model on A100 (section 6).
    assert 3.0 < p.swap_time(blocks, bulk=False) / p.swap_time(blocks, bulk=True) < 7.0


# ------------------------------------------------------------------------ published measurements


def test_enough_documented_measurements() -> None:
    assert len(PUBLISHED_MEASUREMENTS) >= 6
    assert len({m.label for m in PUBLISHED_MEASUREMENTS}) == len(PUBLISHED_MEASUREMENTS)
    for m in PUBLISHED_MEASUREMENTS:
        assert m.url.startswith("https://")
        assert m.role in ("calibration", "validation")
        assert m.measured > 0
    assert sum(m.role == "validation" for m in PUBLISHED_MEASUREMENTS) >= 6


@pytest.mark.parametrize("m", PUBLISHED_MEASUREMENTS, ids=lambda m: m.label)
def test_published_measurement_matches_its_documented_error(m: Measurement) -> None:
    err = abs(m.error())
    if m.within_20pct:
        assert err <= 0.20, f"{m.label}: {m.error():+.1%}"
    else:
        # The doc explains this point as outside 20%; if a model change fixes it, update the doc.
        assert err > 0.20, f"{m.label}: {m.error():+.1%} is now within 20%"
    if m.role == "calibration":
        assert err <= 0.03  # calibration points are reproduced by construction


def test_published_measurements_load_from_the_package_data() -> None:
    data = resources.files("autellix.sim.cost_model") / "data" / "published_measurements.json"
    rows = json.loads(data.read_text(encoding="utf-8"))["measurements"]
    assert [r["label"] for r in rows] == [m.label for m in PUBLISHED_MEASUREMENTS]
    assert load_published_measurements() == PUBLISHED_MEASUREMENTS
    by_label = {m.label: m for m in PUBLISHED_MEASUREMENTS}
    # The figures round-trip exactly (the tables of docs/cost-model.md depend on every bit).
    first = by_label["8B A100 decode, batch 1"]
    assert (first.measured, first.batch, first.context, first.multi_step) == (11.41e-3, 1, 653, 10)
    assert first.engine is PRESETS["llama3.1-8b-a100"] and first.role == "calibration"
    prefill = by_label["8B H100 prefill, 10 prompts (1369 tokens)"]
    assert prefill.prompts == (13, 25, 27, 10, 329, 29, 399, 328, 4, 205) and prefill.measured == 62.4e-3
    latency = by_label["70B 4xH200 benchmark_latency, batch 8, 32 in / 128 out"]
    assert latency.measured == 2077.5e-3
    assert latency.engine == EnginePreset("llama3.1-70b-4xh200", LLAMA31_70B, HARDWARE["H200-SXM-141GB"], 4)
    tput = by_label["8B A100 offline throughput, ShareGPT"]
    assert (tput.measured, tput.max_batched_tokens, tput.unit) == (21.27, 4096, "requests/s")
    assert by_label["8B A100-40GB decode, batch 1"].measured == 1.0 / 75.0
    assert by_label["8B A100-40GB decode, batch 1"].engine.hardware is HARDWARE["A100-SXM4-40GB"]
    assert isinstance(by_label["70B 4xA100 decode, batch 2"].measured, float)


def test_bad_measurement_data_is_a_config_error() -> None:
    good = {
        "label": "x",
        "engine": "llama3.1-8b-a100",
        "kind": "decode",
        "batch": 1,
        "context": 10,
        "measured": 1,
        "unit": "s/iteration",
        "role": "validation",
        "within_20pct": True,
        "url": "https://example.com",
        "conditions": "",
    }
    (m,) = parse_measurements({"measurements": [good]})
    assert m.measured == 1.0 and isinstance(m.measured, float)
    extra = {"engines": {"e": {"model": "Llama-3.1-8B", "hardware": "H200-SXM-141GB", "tensor_parallel": 1}}}
    (m,) = parse_measurements({**extra, "measurements": [{**good, "engine": "e"}]})
    assert m.engine == EnginePreset("e", LLAMA31_8B, HARDWARE["H200-SXM-141GB"], 1)
    for bad, match in (
        ({"kind": "nope"}, "kind must be one of"),
        ({"engine": "nope"}, "unknown engine 'nope'"),
        ({"batch": 1.5}, "batch must be int"),
        ({"within_20pct": 1}, "within_20pct must be bool"),
        ({"measured": True}, "measured must be float"),
        ({"prompts": [1, "2"]}, r"prompts must be tuple\[int, \.\.\.\]"),
        ({"typo": 1}, r"unknown fields \['typo'\]"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse_measurements({"measurements": [{**good, **bad}]}, source="test")
    with pytest.raises(ConfigError, match=r"missing fields \['measured'\]"):
        parse_measurements({"measurements": [{k: v for k, v in good.items() if k != "measured"}]})
    with pytest.raises(ConfigError, match="no 'measurements' list"):
        parse_measurements({})
    with pytest.raises(ConfigError, match="engine 'e'"):
        parse_measurements({"engines": {"e": {"model": "Llama-3.1-8B"}}, "measurements": []})
    with pytest.raises(ConfigError, match="unknown measurement kind"):
        Measurement(**{**good, "engine": PRESETS["llama3.1-8b-a100"], "kind": "nope"}).predict()  # type: ignore[arg-type]


def test_doc_matches_the_generated_tables() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "cost-model.md"
    text = doc.read_text(encoding="utf-8")
    assert typical_table() in text
    assert validation_table() in text


def test_main_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "per-block / bulk" in out
    assert "8B A100 decode, batch 1" in out


def test_python_m_prints_the_tables() -> None:
    """The package's ``__main__``; nothing on stderr (a module run with -m warned when the package
    ``autellix.sim`` had imported it first)."""
    run = subprocess.run(
        [sys.executable, "-m", "autellix.sim.cost_model"], capture_output=True, text=True, check=True
    )
    assert typical_table() in run.stdout and validation_table() in run.stdout
    assert run.stderr == ""
