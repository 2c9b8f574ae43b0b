"""Step-time cost model of one vLLM engine: hardware + model presets, roofline step time, KV swap time.

The simulator asks three questions of an :class:`EnginePreset`:

* how many KV-cache tokens fit (:attr:`EnginePreset.kv_blocks`, :attr:`EnginePreset.kv_tokens`);
* how long one engine iteration (one forward pass) takes (:meth:`EnginePreset.step_time`);
* how long moving KV blocks between GPU and host takes, per-block (vLLM 0.6.1) or bulk
  (Autellix) (:meth:`EnginePreset.swap_time`, :meth:`EnginePreset.swap_copies`): from datasheet
  figures by default, or from :class:`SwapCosts` measured by ``benches/bench_swap.py`` on the
  preset's GPU (:func:`load_swap_costs`, :meth:`EnginePreset.with_swap_costs`,
  :func:`measured_preset`).

Every constant below names its source; ``docs/cost-model.md`` explains the model, lists the
sources, and compares it with published vLLM measurements (:data:`PUBLISHED_MEASUREMENTS`, which
the tests check so the doc and the code cannot drift apart).
``python -m autellix.sim.cost_model`` prints the tables of that doc.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autellix.exceptions import ConfigError

GiB = 1024**3

# ---------------------------------------------------------------------------------------------
# Software (vLLM) constants. These belong to the serving engine, not to a GPU.
# ---------------------------------------------------------------------------------------------

#: Achievable fraction of peak HBM bandwidth for vLLM's decode kernels (weight GEMVs, paged
#: attention). Calibrated on the two Llama-3-8B batch-1 decode points (A100 and H100, vLLM
#: 0.6.0, Lambda) of PUBLISHED_MEASUREMENTS: solving both for (MBU, overhead) gives 0.666 and
#: 0.16 ms; rounded. The same value is used for every GPU.
MBU = 0.67

#: GPU-side fixed cost of one iteration (kernel launches under CUDA graphs, sampling, the
#: GPU->CPU copy of sampled tokens). Calibrated together with MBU on the same two points (runs
#: with multi-step scheduling, where the scheduler's CPU cost is amortised over 10 iterations).
ITERATION_OVERHEAD_S = 0.20e-3

#: CPU cost of one vLLM 0.6.x scheduler invocation (schedule, prepare inputs, process outputs)
#: that the GPU waits for: a fixed part plus a part per running sequence. vLLM's multi-step RFC
#: (https://github.com/vllm-project/vllm/issues/6854) reports "5-13ms of GPU bubble" per decode
#: step, about 4 ms in its profile. The fixed part is calibrated on the vLLM CI latency benchmark
#: (batch 8, single-step, H200); the per-sequence part (an estimate) puts batches of 128-256 at
#: 4-6.5 ms, the low end of the RFC's range. NOT included in step_time: vLLM pays it once per
#: scheduler call, i.e. once per ``multi_step`` iterations; see EnginePreset.schedule_time.
SCHEDULE_OVERHEAD_S = 1.4e-3
SCHEDULE_OVERHEAD_PER_SEQ_S = 20e-6

#: Memory per GPU that vLLM's profile run keeps out of the KV cache: activation peak of a dummy
#: forward pass at max_num_batched_tokens, CUDA-graph pools, cuBLAS/NCCL workspaces. An estimate
#: (typically 1-3 GiB per GPU for these models); it moves the 8B/A100 capacity by ~8k tokens
#: per GiB.
NON_KV_RESERVE_BYTES = 2 * GiB

#: Fraction of the per-direction NVLink bandwidth a ring all-reduce reaches (NCCL's "bus
#: bandwidth"); an estimate. Only matters for large batches under tensor parallelism.
ALLREDUCE_LINK_EFFICIENCY = 0.75

#: Fixed time of the gather (or scatter) kernel that packs a bulk swap into one contiguous
#: buffer: one extra kernel launch, taken equal to one copy's fixed latency.
GATHER_LAUNCH_S = 5e-6


@dataclass(frozen=True)
class Hardware:
    """One GPU. Bandwidths in bytes/s, capacities in bytes, times in seconds."""

    name: str
    #: Dense BF16 tensor-core peak (no sparsity), from the datasheet.
    peak_flops: float
    #: HBM bandwidth, from the datasheet.
    hbm_bandwidth: float
    #: Device memory CUDA reports as total (what gpu_memory_utilization multiplies).
    hbm_capacity: int
    #: Host<->device copy bandwidth for pinned memory, one direction, measured (nvbandwidth).
    pcie_bandwidth: float
    #: Fixed cost of one cudaMemcpyAsync (submission + DMA setup), measured on small copies.
    memcpy_latency: float
    #: NVLink bandwidth per GPU, one direction, from the datasheet.
    nvlink_bandwidth: float
    #: Time of one small-message all-reduce across the tensor-parallel group.
    allreduce_latency: float
    #: Achievable fraction of peak_flops for vLLM's GEMMs/attention (model FLOP utilisation).
    mfu: float
    #: Achievable fraction of hbm_bandwidth (memory bandwidth utilisation).
    mbu: float = MBU


@dataclass(frozen=True)
class Model:
    """A dense decoder-only transformer (Llama architecture: GQA, SwiGLU MLP, untied LM head)."""

    name: str
    #: Total parameter count (embeddings and LM head included), from the HF checkpoint.
    parameters: int
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    bytes_per_weight: int = 2  # bf16
    bytes_per_kv: int = 2  # bf16 KV cache

    @property
    def layer_parameters(self) -> int:
        """Parameters of the transformer blocks (+ final norm): the ones every token multiplies."""
        h, q, kv = self.hidden_size, self.attention_heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size + 2 * h
        return self.layers * per_layer + h

    @property
    def embedding_parameters(self) -> int:
        """Input embedding table; only the looked-up rows are read, so it costs no FLOPs."""
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_parameters(self) -> int:
        """Output projection (untied in Llama 3.1); applied to each sequence's last token only."""
        return self.vocab_size * self.hidden_size

    @property
    def weight_bytes(self) -> int:
        return self.parameters * self.bytes_per_weight

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers and KV heads."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_kv


# ---------------------------------------------------------------------------------------------
# Hardware. Datasheets:
#   A100: https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
#   H100: https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet
#   H200: https://www.nvidia.com/en-us/data-center/h200/
# ---------------------------------------------------------------------------------------------

#: cudaMemcpyAsync per-call overhead: "approximately 5-7 us" for small chunks (DualPath,
#: arXiv:2602.21548, Sec. 5.2). We take the low end so per-block swaps are not overstated.
MEMCPY_LATENCY_S = 5e-6

#: 80 GB parts: CUDA reports ~79.15 GiB total (PyTorch's "79.15 GiB total capacity").
_CUDA_TOTAL_80GB = int(79.15 * GiB)

A100_SXM4_80GB = Hardware(
    name="A100-SXM4-80GB",
    peak_flops=312e12,  # datasheet: BF16 tensor core 312 TFLOPS (624 with sparsity)
    hbm_bandwidth=2.039e12,  # datasheet: 2,039 GB/s HBM2e
    hbm_capacity=_CUDA_TOTAL_80GB,
    # nvbandwidth host_to_device_memcpy_ce on 8x A100-SXM4-80GB, PCIe 4.0 x16: ~24.8 GB/s/GPU
    # (https://forums.developer.nvidia.com/t/352186, "Asymmetric PCIe bandwidth in bidirectional
    # transfers", unidirectional results).
    pcie_bandwidth=24.8e9,
    memcpy_latency=MEMCPY_LATENCY_S,
    nvlink_bandwidth=300e9,  # datasheet: NVLink 600 GB/s total = 300 GB/s per direction
    # No A100 small-message measurement found; taken ~20% above the H100 value (slower SMs,
    # NVLink 3). Estimate.
    allreduce_latency=10e-6,
    # Calibrated: Llama-3-8B prefill of 1369 tokens in one iteration, vLLM 0.6.0 (Lambda
    # TTFT in PUBLISHED_MEASUREMENTS): 0.492, rounded.
    mfu=0.49,
)

H100_SXM5_80GB = Hardware(
    name="H100-SXM5-80GB",
    peak_flops=989e12,  # datasheet: BF16 tensor core 1,979 TFLOPS with sparsity -> 989 dense
    hbm_bandwidth=3.35e12,  # datasheet: 3.35 TB/s HBM3
    hbm_capacity=_CUDA_TOTAL_80GB,
    # nvbandwidth host_to_device_memcpy_ce example output on a PCIe 5.0 x16 host: 55.63 GB/s
    # (dev.smart-guide.co.kr nvbandwidth tutorial, after NVIDIA's nvbandwidth blog post).
    pcie_bandwidth=55.6e9,
    memcpy_latency=MEMCPY_LATENCY_S,
    nvlink_bandwidth=450e9,  # datasheet: NVLink 900 GB/s total = 450 GB/s per direction
    # vLLM custom all-reduce, TP=4, 4 KiB-32 KiB messages on H100: 8.5-9.2 us
    # (github.com/sgl-project/sglang/pull/2904, table "vllm").
    allreduce_latency=8.5e-6,
    # Calibrated on the same prefill as the A100 (Lambda TTFT): 0.320. Lower than the A100's:
    # the tensor cores grew 3.2x but the measured prefill got only 2.0x faster.
    mfu=0.32,
)

#: H200: the H100 die with HBM3e; used only to compare with vLLM's CI benchmarks (run on H200).
H200_SXM_141GB = Hardware(
    name="H200-SXM-141GB",
    peak_flops=989e12,  # datasheet: same BF16 tensor cores as H100 SXM
    hbm_bandwidth=4.8e12,  # datasheet: 4.8 TB/s HBM3e
    hbm_capacity=141 * 10**9,  # datasheet 141 GB (CUDA-visible total not checked)
    pcie_bandwidth=55.6e9,  # PCIe 5.0 x16, as H100
    memcpy_latency=MEMCPY_LATENCY_S,
    nvlink_bandwidth=450e9,  # datasheet: NVLink 900 GB/s total
    allreduce_latency=8.5e-6,  # as H100
    mfu=0.32,  # as H100 (same compute)
)

#: A100 40 GB: used only for one community measurement (A100 40GB, vLLM 0.23).
A100_SXM4_40GB = Hardware(
    name="A100-SXM4-40GB",
    peak_flops=312e12,  # datasheet
    hbm_bandwidth=1.555e12,  # datasheet: 1,555 GB/s HBM2
    hbm_capacity=40 * GiB,  # datasheet 40 GB (CUDA-visible total not checked)
    pcie_bandwidth=24.8e9,  # PCIe 4.0 x16, as A100 80GB
    memcpy_latency=MEMCPY_LATENCY_S,
    nvlink_bandwidth=300e9,
    allreduce_latency=10e-6,
    mfu=0.49,  # as A100 80GB (same compute)
)

HARDWARE: dict[str, Hardware] = {
    hw.name: hw for hw in (A100_SXM4_80GB, H100_SXM5_80GB, H200_SXM_141GB, A100_SXM4_40GB)
}

# ---------------------------------------------------------------------------------------------
# Models: Llama 3.1 config.json (huggingface.co/meta-llama/Llama-3.1-8B, Llama-3.1-70B). The
# parameter counts are what the architecture below adds up to (tests check it).
# ---------------------------------------------------------------------------------------------

LLAMA31_8B = Model(
    name="Llama-3.1-8B",
    parameters=8_030_261_248,
    layers=32,
    hidden_size=4096,
    attention_heads=32,
    kv_heads=8,
    head_dim=128,
    intermediate_size=14336,
    vocab_size=128256,
)

LLAMA31_70B = Model(
    name="Llama-3.1-70B",
    parameters=70_553_706_496,
    layers=80,
    hidden_size=8192,
    attention_heads=64,
    kv_heads=8,
    head_dim=128,
    intermediate_size=28672,
    vocab_size=128256,
)


# ---------------------------------------------------------------------------------------------
# Measured swap costs (benches/bench_swap.py). Without them swap_time uses the datasheet figures
# above (Hardware.pcie_bandwidth, Hardware.memcpy_latency, GATHER_LAUNCH_S).
# ---------------------------------------------------------------------------------------------

#: Where ``benches/bench_swap.py --json`` puts its figures in a checkout (relative to the root).
SWAP_RESULTS_PATH = Path("benches") / "results" / "swap.json"


@dataclass(frozen=True)
class SwapCosts:
    """Host<->device KV swap costs measured on one GPU by ``benches/bench_swap.py``.

    An :class:`EnginePreset` that carries them (:meth:`EnginePreset.with_swap_costs`) computes
    :meth:`EnginePreset.swap_time` from them instead of the datasheet figures:

    * per-block: ``copies x memcpy_latency + bytes / link_bandwidth``;
    * bulk: ``bulk_latency + bytes / (link_bandwidth x bulk_efficiency)``.

    Fitted by :func:`fit_swap_costs` from the bench's raw timings (both directions averaged).
    """

    #: The GPU measured (``torch.cuda.get_device_name()``), e.g. "NVIDIA H100 80GB HBM3".
    device: str
    #: Host<->device bandwidth of one large contiguous pinned copy, bytes/s, one direction.
    link_bandwidth: float
    #: Fixed cost of one bulk swap (launch, descriptors), seconds.
    bulk_latency: float
    #: Asymptotic bulk swap bandwidth / link_bandwidth (1.0: bulk swaps run at link speed).
    bulk_efficiency: float
    #: Fixed cost of one per-block copy, seconds; None: not measured (Hardware.memcpy_latency).
    memcpy_latency: float | None = None
    #: Which per-block copy gave memcpy_latency ("vllm_per_block": vLLM's C++ cudaMemcpyAsync
    #: loop, as in vLLM 0.6.1; "per_block": a Python ``copy_`` loop, which overstates it).
    per_block_method: str | None = None
    #: Where the figures came from (the JSON file).
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("link_bandwidth", "bulk_efficiency"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"SwapCosts.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.bulk_latency) and self.bulk_latency >= 0):
            raise ConfigError(f"SwapCosts.bulk_latency must be >= 0, got {self.bulk_latency!r}")
        if self.memcpy_latency is not None and not (
            math.isfinite(self.memcpy_latency) and self.memcpy_latency >= 0
        ):
            raise ConfigError(f"SwapCosts.memcpy_latency must be >= 0, got {self.memcpy_latency!r}")

    def matches(self, hardware: Hardware) -> bool:
        """Whether these figures were measured on ``hardware``'s GPU model (A100, H100, H200)."""
        family = hardware.name.split("-")[0].upper()
        return family in self.device.upper().replace("-", " ").split()


def _fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` (one point: the line through the origin)."""
    if len(points) == 1 or len({x for x, _ in points}) == 1:
        x, y = points[-1]
        return 0.0, y / x
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def fit_swap_costs(results: Mapping[str, Any], source: str = "") -> SwapCosts:
    """:class:`SwapCosts` from the JSON of ``benches/bench_swap.py`` (its ``device`` and ``rows``).

    Per direction (``h2d``, ``d2h``), over the swap sizes measured, fits ``seconds = a + b x
    bytes`` by least squares to the ``link`` rows (one contiguous copy: ``link_bandwidth = 1/b``)
    and the ``bulk`` rows (``bulk_latency = max(a, 0)``, ``bulk_efficiency = (1/b) /
    link_bandwidth``), and takes ``memcpy_latency = (seconds - bytes / link_bandwidth) / copies``
    of the largest per-block swap (vLLM's own per-block op when measured, else the Python copy
    loop); the two directions are averaged. ConfigError if the figures were not measured on a
    CUDA device (a CPU smoke run has no host link) or a method is missing.
    """
    device = results.get("device")
    if not isinstance(device, Mapping) or device.get("type") != "cuda":
        kind = device.get("type") if isinstance(device, Mapping) else device
        raise ConfigError(
            f"{source or 'swap results'}: measured on {kind!r}, not a CUDA device: "
            "no host link to calibrate from"
        )
    rows = results.get("rows")
    if not isinstance(rows, list):
        raise ConfigError(f"{source or 'swap results'}: no 'rows' list")

    def points(method: str, direction: str) -> list[tuple[float, float, int]]:
        out = []
        for r in rows:
            if r.get("method") == method and r.get("direction") == direction and r.get("seconds"):
                out.append((float(r["bytes"]), float(r["seconds"]), int(r.get("copies") or 0)))
        return out

    link, bulk_a, bulk_eff, latency = [], [], [], []
    per_block_method = next(
        (m for m in ("vllm_per_block", "per_block") if any(r.get("method") == m for r in rows)), None
    )
    for direction in ("h2d", "d2h"):
        lp, bp = points("link", direction), points("bulk", direction)
        if not lp or not bp:
            raise ConfigError(
                f"{source or 'swap results'}: no {'link' if not lp else 'bulk'} timings for {direction}"
            )
        _, slope = _fit_line([(x, y) for x, y, _ in lp])
        bw = 1.0 / slope if slope > 0 else max(x / y for x, y, _ in lp)
        a, b = _fit_line([(x, y) for x, y, _ in bp])
        bulk_bw = 1.0 / b if b > 0 else max(x / y for x, y, _ in bp)
        link.append(bw)
        bulk_a.append(max(a, 0.0))
        bulk_eff.append(bulk_bw / bw)
        if per_block_method is not None:
            pp = [p for p in points(per_block_method, direction) if p[2] > 0]
            if pp:
                x, y, copies = max(pp)
                latency.append(max(0.0, (y - x / bw) / copies))
    return SwapCosts(
        device=str(device.get("name", "cuda")),
        link_bandwidth=sum(link) / len(link),
        bulk_latency=sum(bulk_a) / len(bulk_a),
        bulk_efficiency=sum(bulk_eff) / len(bulk_eff),
        memcpy_latency=sum(latency) / len(latency) if latency else None,
        per_block_method=per_block_method if latency else None,
        source=source,
    )


def load_swap_costs(path: str | os.PathLike[str]) -> SwapCosts:
    """:func:`fit_swap_costs` of the JSON file ``path`` (``benches/bench_swap.py --json``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read swap results {os.fspath(path)!r}: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{os.fspath(path)}: not a JSON object")
    return fit_swap_costs(data, source=os.fspath(path))


@dataclass(frozen=True)
class EnginePreset:
    """One serving engine: a model on ``tensor_parallel`` identical GPUs.

    Per-iteration cost is a roofline per kernel class, split evenly over the TP ranks:
    linear layers take max(FLOPs / achievable FLOP/s, weight bytes / achievable bandwidth),
    attention takes max(attention FLOPs / achievable FLOP/s, KV bytes read+written / achievable
    bandwidth); the two run one after the other, so their times add. Tensor parallelism adds
    two all-reduces per layer; every iteration adds a fixed overhead.
    """

    name: str
    model: Model
    hardware: Hardware
    tensor_parallel: int
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    #: GPU-side fixed cost of every iteration (see ITERATION_OVERHEAD_S).
    iteration_overhead: float = ITERATION_OVERHEAD_S
    #: Whether a scheduler call costs vLLM 0.6's CPU time (:meth:`schedule_time`); off to model
    #: an engine whose clock is the GPU step alone (the server's simulated engine, a replay).
    scheduler_cpu: bool = True
    #: Measured swap costs (:class:`SwapCosts`); None: :meth:`swap_time` uses the datasheet
    #: figures of ``hardware`` (pcie_bandwidth, memcpy_latency) and GATHER_LAUNCH_S.
    swap_costs: SwapCosts | None = None

    # Per-unit costs precomputed in __post_init__ so step_time is plain float arithmetic.
    _t_prefill_token: float = field(init=False, repr=False, compare=False)
    _t_decode_seq: float = field(init=False, repr=False, compare=False)
    _t_weights: float = field(init=False, repr=False, compare=False)
    _t_attn_pair: float = field(init=False, repr=False, compare=False)
    _t_kv_token: float = field(init=False, repr=False, compare=False)
    _t_comm_fixed: float = field(init=False, repr=False, compare=False)
    _t_comm_token: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tensor_parallel < 1:
            raise ConfigError(f"tensor_parallel must be >= 1, got {self.tensor_parallel}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.block_size < 1:
            raise ConfigError(f"block_size must be >= 1, got {self.block_size}")
        m, hw, tp = self.model, self.hardware, self.tensor_parallel
        flops = hw.peak_flops * hw.mfu * tp  # achievable FLOP/s of the whole engine
        bw = hw.hbm_bandwidth * hw.mbu * tp  # achievable HBM bytes/s of the whole engine
        put = object.__setattr__  # frozen dataclass: set the derived constants once
        # A prefill token multiplies every block weight; a decode token also the LM head.
        put(self, "_t_prefill_token", 2.0 * m.layer_parameters / flops)
        put(self, "_t_decode_seq", 2.0 * (m.layer_parameters + m.lm_head_parameters) / flops)
        # Weights streamed once per iteration (the embedding table is only gathered).
        put(self, "_t_weights", (m.layer_parameters + m.lm_head_parameters) * m.bytes_per_weight / bw)
        # QK^T and PV: 2 FLOPs each per head-dim element, per (query, key) pair, per head, per layer.
        put(self, "_t_attn_pair", 4.0 * m.layers * m.attention_heads * m.head_dim / flops)
        put(self, "_t_kv_token", m.kv_bytes_per_token / bw)
        if tp > 1:
            # Two all-reduces per layer (after attention and after the MLP) of the activations
            # (tokens x hidden bf16): latency + ring traffic 2(tp-1)/tp x bytes over NVLink.
            ring = 2.0 * (tp - 1) / tp / (hw.nvlink_bandwidth * ALLREDUCE_LINK_EFFICIENCY)
            put(self, "_t_comm_fixed", 2.0 * m.layers * hw.allreduce_latency)
            put(self, "_t_comm_token", 2.0 * m.layers * m.hidden_size * 2 * ring)
        else:
            put(self, "_t_comm_fixed", 0.0)
            put(self, "_t_comm_token", 0.0)

    # -- memory -------------------------------------------------------------------------------

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes of one token for the whole engine (all TP ranks together)."""
        return self.model.kv_bytes_per_token

    @property
    def kv_blocks(self) -> int:
        """Paged KV capacity in blocks of ``block_size`` tokens.

        Per GPU: ``gpu_memory_utilization`` x CUDA-visible memory, minus this rank's weight
        shard, minus NON_KV_RESERVE_BYTES (activations, CUDA graphs, workspaces); each rank
        holds ``kv_heads / tp`` heads of every block.
        """
        hw, tp = self.hardware, self.tensor_parallel
        per_gpu = int(self.gpu_memory_utilization * hw.hbm_capacity)
        per_gpu -= -(-self.model.weight_bytes // tp) + NON_KV_RESERVE_BYTES
        block_bytes_per_gpu = self.block_size * self.kv_bytes_per_token // tp
        return max(0, per_gpu // block_bytes_per_gpu)

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * self.block_size

    # -- time ---------------------------------------------------------------------------------

    def step_time(
        self, prefill_tokens: int, prefill_attention: float, decode_seqs: int, decode_context: int
    ) -> float:
        """Seconds for one engine iteration (one forward pass over the whole batch).

        ``prefill_tokens``: new prompt tokens prefilled now (all calls together).
        ``prefill_attention``: sum over prefilled calls of p * (c + p / 2), p = tokens prefilled
        now, c = tokens already in KV (cached prefix): the (query, key) pairs of causal attention.
        ``decode_seqs``: sequences decoding one token; ``decode_context``: their context lengths
        summed. Returns 0.0 when there is nothing to do; non-decreasing in every argument.
        Excludes the scheduler's CPU time (see :meth:`schedule_time`).
        """
        if prefill_tokens <= 0 and decode_seqs <= 0 and prefill_attention <= 0 and decode_context <= 0:
            return 0.0
        linear = max(
            prefill_tokens * self._t_prefill_token + decode_seqs * self._t_decode_seq, self._t_weights
        )
        # Attention reads the decode contexts' KV and writes the new tokens' KV; prefill
        # attention over the cached prefix is counted as compute (FlashAttention tiles it).
        attention = max(
            (prefill_attention + decode_context) * self._t_attn_pair,
            (decode_context + prefill_tokens + decode_seqs) * self._t_kv_token,
        )
        comm = self._t_comm_fixed + (prefill_tokens + decode_seqs) * self._t_comm_token
        return linear + attention + comm + self.iteration_overhead

    def schedule_time(self, running_seqs: int) -> float:
        """CPU seconds of one vLLM scheduler invocation with ``running_seqs`` sequences.

        Not part of :meth:`step_time`: with multi-step scheduling vLLM pays it once per
        ``multi_step`` iterations, so the simulator adds it once per scheduler call.
        """
        if not self.scheduler_cpu:
            return 0.0
        return SCHEDULE_OVERHEAD_S + SCHEDULE_OVERHEAD_PER_SEQ_S * max(0, running_seqs)

    def swap_time(self, blocks: int, bulk: bool) -> float:
        """Seconds to move ``blocks`` KV blocks between GPU and host memory in one direction.

        All TP ranks move their own ``1/tp`` of every block at the same time over their own
        host links, so the time is one rank's. Per-block (vLLM 0.6.1 ``swap_blocks``): one
        cudaMemcpyAsync per block, per layer, per K/V, each of ``block_size x kv_heads/tp x
        head_dim`` elements, each paying the copy's fixed latency plus its bytes over PCIe.
        Bulk (Autellix): one gather kernel packs the blocks into one contiguous buffer (reads and
        writes them in HBM), then one large copy at full PCIe bandwidth.

        With measured :attr:`swap_costs` (:class:`SwapCosts`): per-block, the same copy count at
        the measured per-copy latency plus the bytes at the measured link bandwidth; bulk, the
        measured fixed cost plus the bytes at the measured bulk bandwidth.
        """
        if blocks <= 0:
            return 0.0
        hw = self.hardware
        rank_bytes = blocks * self.block_size * self.kv_bytes_per_token / self.tensor_parallel
        costs = self.swap_costs
        if costs is not None:
            if bulk:
                return costs.bulk_latency + rank_bytes / (costs.link_bandwidth * costs.bulk_efficiency)
            latency = hw.memcpy_latency if costs.memcpy_latency is None else costs.memcpy_latency
            return self.swap_copies(blocks, bulk=False) * latency + rank_bytes / costs.link_bandwidth
        if not bulk:
            copies = self.swap_copies(blocks, bulk=False)
            return copies * hw.memcpy_latency + rank_bytes / hw.pcie_bandwidth
        gather = GATHER_LAUNCH_S + 2.0 * rank_bytes / (hw.hbm_bandwidth * hw.mbu)
        return gather + hw.memcpy_latency + rank_bytes / hw.pcie_bandwidth

    def swap_copies(self, blocks: int, bulk: bool) -> int:
        """Copy operations one TP rank issues for a swap of ``blocks`` blocks (every rank issues
        the same number in parallel). Per-block: ``blocks x layers x 2`` (K and V per layer);
        bulk: 1 (the gather kernel is not a copy)."""
        if blocks <= 0:
            return 0
        return 1 if bulk else blocks * self.model.layers * 2

    def with_swap_costs(self, costs: SwapCosts | None) -> EnginePreset:
        """This preset with measured swap costs (``None``: back to the datasheet figures)."""
        return replace(self, swap_costs=costs)


PRESETS: dict[str, EnginePreset] = {
    p.name: p
    for p in (
        EnginePreset("llama3.1-8b-a100", LLAMA31_8B, A100_SXM4_80GB, tensor_parallel=1),
        EnginePreset("llama3.1-8b-h100", LLAMA31_8B, H100_SXM5_80GB, tensor_parallel=1),
        EnginePreset("llama3.1-70b-4xa100", LLAMA31_70B, A100_SXM4_80GB, tensor_parallel=4),
        EnginePreset("llama3.1-70b-4xh100", LLAMA31_70B, H100_SXM5_80GB, tensor_parallel=4),
    )
}


def preset(name: str) -> EnginePreset:
    """The preset called ``name``; ConfigError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown engine preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def measured_preset(name: str, swap_results: str | os.PathLike[str]) -> EnginePreset:
    """:func:`preset` ``name`` with the swap costs ``benches/bench_swap.py`` measured on its GPU.

    ``swap_results``: the bench's JSON (``autellix bench --swap-results PATH``,
    ``SimConfig.swap_results``); ConfigError if it cannot be read or was measured on another GPU
    model than the preset's. Without it the presets keep the datasheet swap figures.
    """
    base = preset(name)
    costs = load_swap_costs(swap_results)
    if not costs.matches(base.hardware):
        raise ConfigError(
            f"{os.fspath(swap_results)} was measured on {costs.device!r}; preset {name!r} runs on "
            f"{base.hardware.name}"
        )
    return base.with_swap_costs(costs)


# ---------------------------------------------------------------------------------------------
# Published measurements the model is checked against (docs/cost-model.md, tests).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One published vLLM measurement and how to predict it with the model.

    ``kind`` says what was measured:

    * ``"decode"``: seconds per decode iteration at ``batch`` sequences whose contexts total
      ``context`` tokens; ``multi_step`` iterations share one scheduler call.
    * ``"prefill"``: seconds of one iteration prefilling ``prompts`` (token counts) from scratch.
    * ``"latency"``: end-to-end seconds of vLLM's benchmark_latency: ``batch`` prompts of
      ``input_len`` tokens, ``output_len`` tokens each, single-step scheduling.
    * ``"throughput"``: requests/s of an offline run that keeps ``batch`` sequences running:
      mean prompt ``input_len``, mean output ``output_len``, prefills batched up to
      ``max_batched_tokens`` tokens per iteration, decode with ``multi_step``.
    """

    label: str
    url: str
    conditions: str
    engine: EnginePreset
    kind: str
    measured: float
    unit: str
    #: "calibration" (a constant was set from it) or "validation" (held out).
    role: str
    #: Whether docs/cost-model.md claims |error| <= 20% for it (the tests check the claim).
    within_20pct: bool
    batch: int = 0
    context: int = 0
    multi_step: int = 1
    prompts: tuple[int, ...] = ()
    input_len: int = 0
    output_len: int = 0
    max_batched_tokens: int = 0

    def predict(self) -> float:
        e = self.engine
        if self.kind == "decode":
            return (
                e.step_time(0, 0.0, self.batch, self.context) + e.schedule_time(self.batch) / self.multi_step
            )
        if self.kind == "prefill":
            attn = sum(p * p / 2 for p in self.prompts)
            return e.step_time(sum(self.prompts), attn, 0, 0) + e.schedule_time(len(self.prompts))
        if self.kind == "latency":
            b, i = self.batch, self.input_len
            total = e.step_time(b * i, b * i * i / 2, 0, 0) + e.schedule_time(b)
            for k in range(1, self.output_len):
                total += e.step_time(0, 0.0, b, b * (i + k)) + e.schedule_time(b)
            return total
        if self.kind == "throughput":
            b, i, o = self.batch, self.input_len, self.output_len
            per_step = max(1, self.max_batched_tokens // i)  # prompts per prefill iteration
            prefill = e.step_time(per_step * i, per_step * i * i / 2, 0, 0) + e.schedule_time(b)
            # Steady state: b sequences whose contexts are spread over [i, i + o].
            decode = e.step_time(0, 0.0, b, b * (i + o // 2)) + e.schedule_time(b) / self.multi_step
            seconds_per_request = prefill / per_step + (o - 1) * decode / b
            return 1.0 / seconds_per_request
        raise ValueError(f"unknown measurement kind {self.kind!r}")

    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predict() - self.measured) / self.measured


_LAMBDA = "https://github.com/LambdaLabsML/vllm-benchmark/blob/f093afe94aacfb282ac40fef31c94a0010b37e5e/results/prompt_10/"
_LAMBDA_H100 = "https://github.com/LambdaLabsML/vllm-benchmark/blob/a4f9f4371a1ccac781293837fce2bce0cc6d25cc/results/prompt_10/"
_LAMBDA_COND = (
    "vLLM 0.6.0, num-scheduler-steps 10 (tokens stream in 10-token chunks), 10 ShareGPT prompts sent "
    "at once, max_model_len 2048"
)
#: Prompt lengths of the 10 ShareGPT prompts of the Lambda runs (``input_lens`` in the JSON).
_LAMBDA_PROMPTS = (13, 25, 27, 10, 329, 29, 399, 328, 4, 205)
_VLLM_CI = "https://buildkite.com/vllm/performance-benchmark/builds/9515"
_SGLANG = (
    "https://github.com/sgl-project/sglang/blob/120affb9613cc3f5bcd055ec09c7621d3ced0ebc/"
    "benchmark/benchmark_vllm_060/README.md"
)
_MUSGRAVE = "https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on"

#: Engines of the measurements that are not one of PRESETS (same model, other GPU).
_H200_8B = EnginePreset("llama3.1-8b-h200", LLAMA31_8B, H200_SXM_141GB, tensor_parallel=1)
_H200_70B = EnginePreset("llama3.1-70b-4xh200", LLAMA31_70B, H200_SXM_141GB, tensor_parallel=4)
_A100_40_8B = EnginePreset("llama3.1-8b-a100-40gb", LLAMA31_8B, A100_SXM4_40GB, tensor_parallel=1)

PUBLISHED_MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement(
        label="8B A100 decode, batch 1",
        url=_LAMBDA + "1xA100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json",
        conditions=_LAMBDA_COND + "; ITL of the last running request (context 536-770) / 10",
        engine=PRESETS["llama3.1-8b-a100"],
        kind="decode",
        batch=1,
        context=653,
        multi_step=10,
        measured=11.41e-3,
        unit="s/iteration",
        role="calibration",
        within_20pct=True,
    ),
    Measurement(
        label="8B H100 decode, batch 1",
        url=_LAMBDA_H100 + "1xH100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json",
        conditions=_LAMBDA_COND + "; ITL of the last running request (context 458-770) / 10",
        engine=PRESETS["llama3.1-8b-h100"],
        kind="decode",
        batch=1,
        context=614,
        multi_step=10,
        measured=7.06e-3,
        unit="s/iteration",
        role="calibration",
        within_20pct=True,
    ),
    Measurement(
        label="8B A100 prefill, 10 prompts (1369 tokens)",
        url=_LAMBDA + "1xA100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json",
        conditions=_LAMBDA_COND + "; mean TTFT (all 10 prompts prefilled in one iteration)",
        engine=PRESETS["llama3.1-8b-a100"],
        kind="prefill",
        prompts=_LAMBDA_PROMPTS,
        measured=126.9e-3,
        unit="s",
        role="calibration",
        within_20pct=True,
    ),
    Measurement(
        label="8B H100 prefill, 10 prompts (1369 tokens)",
        url=_LAMBDA_H100 + "1xH100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json",
        conditions=_LAMBDA_COND + "; mean TTFT (all 10 prompts prefilled in one iteration)",
        engine=PRESETS["llama3.1-8b-h100"],
        kind="prefill",
        prompts=_LAMBDA_PROMPTS,
        measured=62.4e-3,
        unit="s",
        role="calibration",
        within_20pct=True,
    ),
    Measurement(
        label="8B H200 benchmark_latency, batch 8, 32 in / 128 out",
        url=_VLLM_CI,
        conditions="vLLM CI latency test latency_llama8B_tp1 (benchmark_latency, single-step, dummy "
        "weights), mean end-to-end latency, H200",
        engine=_H200_8B,
        kind="latency",
        batch=8,
        input_len=32,
        output_len=128,
        measured=833.4e-3,
        unit="s",
        role="calibration",
        within_20pct=True,
    ),
    Measurement(
        label="70B 4xA100 decode, batch 2",
        url=_LAMBDA + "4xA100-80GB-SXM/Meta-Llama-3-70B-Instruct_tp4_len2048.json",
        conditions=_LAMBDA_COND + "; TP=4; ITL while exactly 2 requests run (contexts ~270-750 each) / 10",
        engine=PRESETS["llama3.1-70b-4xa100"],
        kind="decode",
        batch=2,
        context=1010,
        multi_step=10,
        measured=28.2e-3,
        unit="s/iteration",
        role="validation",
        within_20pct=True,
    ),
    Measurement(
        label="70B 4xH100 decode, batch 2",
        url=_LAMBDA_H100 + "4xH100-80GB-SXM/Meta-Llama-3-70B-Instruct_tp4_len2048.json",
        conditions=_LAMBDA_COND + "; TP=4; ITL while exactly 2 requests run (contexts ~270-690 each) / 10",
        engine=PRESETS["llama3.1-70b-4xh100"],
        kind="decode",
        batch=2,
        context=948,
        multi_step=10,
        measured=17.4e-3,
        unit="s/iteration",
        role="validation",
        within_20pct=True,
    ),
    Measurement(
        label="70B 4xH100 decode, batch 1",
        url=_LAMBDA_H100 + "4xH100-80GB-SXM/Meta-Llama-3-70B-Instruct_tp4_len2048.json",
        conditions=_LAMBDA_COND + "; TP=4; ITL of the last running request (context 690-770) / 10",
        engine=PRESETS["llama3.1-70b-4xh100"],
        kind="decode",
        batch=1,
        context=730,
        multi_step=10,
        measured=17.05e-3,
        unit="s/iteration",
        role="validation",
        within_20pct=True,
    ),
    Measurement(
        label="70B 4xA100 prefill, 8 prompts (642 tokens)",
        url=_LAMBDA + "4xA100-80GB-SXM/Meta-Llama-3-70B-Instruct_tp4_len2048.json",
        conditions=_LAMBDA_COND + "; TP=4; median TTFT (8 prompts in one iteration; 2 requests failed)",
        engine=PRESETS["llama3.1-70b-4xa100"],
        kind="prefill",
        prompts=(13, 25, 27, 10, 329, 29, 4, 205),
        measured=315.2e-3,
        unit="s",
        role="validation",
        within_20pct=False,
    ),
    Measurement(
        label="70B 4xH100 prefill, 8 prompts (642 tokens)",
        url=_LAMBDA_H100 + "4xH100-80GB-SXM/Meta-Llama-3-70B-Instruct_tp4_len2048.json",
        conditions=_LAMBDA_COND + "; TP=4; median TTFT (8 prompts in one iteration; 2 requests failed)",
        engine=PRESETS["llama3.1-70b-4xh100"],
        kind="prefill",
        prompts=(13, 25, 27, 10, 329, 29, 4, 205),
        measured=140.6e-3,
        unit="s",
        role="validation",
        within_20pct=False,
    ),
    Measurement(
        label="70B 4xH200 benchmark_latency, batch 8, 32 in / 128 out",
        url=_VLLM_CI,
        conditions="vLLM CI latency test latency_llama70B_tp4 (benchmark_latency, single-step, dummy "
        "weights), mean end-to-end latency, 4x H200",
        engine=_H200_70B,
        kind="latency",
        batch=8,
        input_len=32,
        output_len=128,
        measured=2077.5e-3,
        unit="s",
        role="validation",
        within_20pct=True,
    ),
    Measurement(
        label="8B A100 offline throughput, ShareGPT",
        url=_SGLANG,
        conditions="vLLM 0.6.0, num-scheduler-steps 10, max_model_len 4096, 5000 ShareGPT prompts at "
        "once (sglang.bench_serving); 4132 output tok/s -> 194 output tokens/request; 215 prompt "
        "tokens/request assumed (vLLM ShareGPT sampler); 256 running sequences (max_num_seqs default)",
        engine=PRESETS["llama3.1-8b-a100"],
        kind="throughput",
        batch=256,
        input_len=215,
        output_len=194,
        max_batched_tokens=4096,
        multi_step=10,
        measured=21.27,
        unit="requests/s",
        role="validation",
        within_20pct=True,
    ),
    Measurement(
        label="70B 4xH100 offline throughput, ShareGPT",
        url=_SGLANG,
        conditions="as the 8B row, TP=4 on 4x H100; 3701 output tok/s -> 194 output tokens/request",
        engine=PRESETS["llama3.1-70b-4xh100"],
        kind="throughput",
        batch=256,
        input_len=215,
        output_len=194,
        max_batched_tokens=4096,
        multi_step=10,
        measured=19.04,
        unit="requests/s",
        role="validation",
        within_20pct=True,
    ),
    Measurement(
        label="8B A100-40GB decode, batch 1",
        url=_MUSGRAVE,
        conditions="vLLM 0.23 (V1 engine), A100 40GB, 1024 in / 128 out, concurrency 1: about 75 "
        "tok/s per request",
        engine=_A100_40_8B,
        kind="decode",
        batch=1,
        context=1088,
        multi_step=1,
        measured=1.0 / 75.0,
        unit="s/iteration",
        role="validation",
        within_20pct=False,
    ),
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _copies(engine: EnginePreset, blocks: int, bulk: bool) -> str:
    n = engine.swap_copies(blocks, bulk)
    return f"{n:,} cop{'y' if n == 1 else 'ies'}"


def typical_table() -> str:
    """Markdown table of the model's outputs for typical cases, one column per preset."""
    names = list(PRESETS)
    lines = ["| case | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(case: str, values: list[str]) -> None:
        lines.append(f"| {case} | " + " | ".join(values) + " |")

    row("KV capacity (tokens)", [f"{PRESETS[n].kv_tokens:,}" for n in names])
    for b in (1, 32, 128, 256):
        row(
            f"decode step, batch {b}, 512-token contexts",
            [_ms(PRESETS[n].step_time(0, 0.0, b, 512 * b)) for n in names],
        )
    for p in (512, 2048):
        row(
            f"prefill step, one {p}-token prompt",
            [_ms(PRESETS[n].step_time(p, p * p / 2, 0, 0)) for n in names],
        )
    for b in (1, 256):
        row(f"scheduler call, {b} running", [_ms(PRESETS[n].schedule_time(b)) for n in names])
    for blocks in (16, 128, 512):
        for bulk in (False, True):
            kind = "bulk" if bulk else "per-block"
            row(
                f"swap {blocks} blocks, {kind}",
                [
                    f"{_ms(PRESETS[n].swap_time(blocks, bulk))} ({_copies(PRESETS[n], blocks, bulk)})"
                    for n in names
                ],
            )
        row(
            f"swap {blocks} blocks, per-block / bulk",
            [
                f"{PRESETS[n].swap_time(blocks, False) / PRESETS[n].swap_time(blocks, True):.1f}x"
                for n in names
            ],
        )
    return "\n".join(lines)


def validation_table() -> str:
    """Markdown table: published measurement vs the model's prediction."""
    lines = [
        "| published measurement | conditions | measured | predicted | error | role |",
        "|---|---|---|---|---|---|",
    ]
    for m in PUBLISHED_MEASUREMENTS:
        if m.unit == "requests/s":
            measured, predicted = f"{m.measured:.2f} req/s", f"{m.predict():.2f} req/s"
        else:
            measured, predicted = _ms(m.measured), _ms(m.predict())
        lines.append(
            f"| [{m.label}]({m.url}) | {m.conditions} | {measured} | {predicted} | "
            f"{m.error() * 100:+.1f}% | {m.role} |"
        )
    return "\n".join(lines)


def swap_table(presets: Sequence[EnginePreset], blocks: Sequence[int] = (16, 128, 512)) -> str:
    """Markdown table of swap times, datasheet vs measured, for presets with :attr:`swap_costs`."""
    lines = [
        "| preset | measured on | blocks | per-block datasheet | per-block measured | bulk datasheet "
        "| bulk measured | per-block / bulk measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in presets:
        if p.swap_costs is None:
            continue
        sheet = p.with_swap_costs(None)
        for b in blocks:
            lines.append(
                f"| {p.name} | {p.swap_costs.device} | {b} | {_ms(sheet.swap_time(b, False))} | "
                f"{_ms(p.swap_time(b, False))} | {_ms(sheet.swap_time(b, True))} | "
                f"{_ms(p.swap_time(b, True))} | {p.swap_time(b, False) / p.swap_time(b, True):.1f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the typical-case table and the validation table (the tables of docs/cost-model.md);
    with ``--swap-results PATH`` (``benches/bench_swap.py --json``), also the swap times of every
    preset on the measured GPU model, datasheet vs measured."""
    parser = argparse.ArgumentParser(prog="python -m autellix.sim.cost_model", description=main.__doc__)
    parser.add_argument(
        "--swap-results",
        metavar="PATH",
        help=f"JSON of benches/bench_swap.py (e.g. {SWAP_RESULTS_PATH}) to calibrate swap times from",
    )
    args = parser.parse_args(argv)
    sys.stdout.write("## Model outputs for typical cases\n\n" + typical_table() + "\n\n")
    sys.stdout.write("## Validation against published measurements\n\n" + validation_table() + "\n")
    if args.swap_results is not None:
        try:
            costs = load_swap_costs(args.swap_results)
        except ConfigError as e:
            sys.stderr.write(f"error: {e}\n")
            return 2
        matching = [p.with_swap_costs(costs) for p in PRESETS.values() if costs.matches(p.hardware)]
        sys.stdout.write(
            f"\n## Swap times with costs measured on {costs.device}\n\n"
            f"link {costs.link_bandwidth / 1e9:.1f} GB/s, bulk {costs.bulk_efficiency:.0%} of it + "
            f"{costs.bulk_latency * 1e6:.1f} us, per-block copy "
            + (
                f"{costs.memcpy_latency * 1e6:.1f} us ({costs.per_block_method})"
                if costs.memcpy_latency is not None
                else "not measured (datasheet)"
            )
            + "\n\n"
        )
        if matching:
            sys.stdout.write(swap_table(matching) + "\n")
        else:
            sys.stdout.write("(no preset runs on that GPU model)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
