"""What the cost model knows of the machine: GPUs (:class:`Hardware`), models (:class:`Model`) and
the serving engine's (vLLM 0.6's) fixed costs.

Every constant names its source; ``docs/cost-model.md`` lists them and explains the model.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    #: Host memory per GPU: the node's RAM divided by its GPUs (bytes); a host KV tier uses a share.
    host_memory: int = 0


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
    host_memory=int(170e9),  # GCP a2-ultragpu-8g (the paper's machine): 1360 GB RAM / 8 GPUs
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
    host_memory=int(234e9),  # GCP a3-highgpu-8g: 1872 GB RAM / 8 GPUs
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
    host_memory=int(369e9),  # GCP a3-ultragpu-8g: 2952 GB RAM / 8 GPUs
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
    host_memory=int(85e9),  # GCP a2-highgpu-8g: 680 GB RAM / 8 GPUs
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

MODELS: dict[str, Model] = {m.name: m for m in (LLAMA31_8B, LLAMA31_70B)}
