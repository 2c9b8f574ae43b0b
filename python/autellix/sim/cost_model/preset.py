"""Engine presets (:class:`EnginePreset`, :data:`PRESETS`): a model on tensor-parallel GPUs, its
KV capacity, roofline step time, scheduler CPU time and KV swap time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from autellix.exceptions import ConfigError
from autellix.sim.cost_model.hardware import (
    A100_SXM4_80GB,
    ALLREDUCE_LINK_EFFICIENCY,
    GATHER_LAUNCH_S,
    H100_SXM5_80GB,
    ITERATION_OVERHEAD_S,
    LLAMA31_8B,
    LLAMA31_70B,
    NON_KV_RESERVE_BYTES,
    SCHEDULE_OVERHEAD_PER_SEQ_S,
    SCHEDULE_OVERHEAD_S,
    GiB,
    Hardware,
    Model,
)
from autellix.sim.cost_model.swap import SwapCosts, load_swap_costs

#: Share of the host memory a host KV tier takes by default: the rest stays for the OS, the
#: serving process, pinned staging buffers and page cache [inference].
HOST_KV_SHARE = 0.5


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

    def host_kv_blocks(self, gib: float | None = None) -> int:
        """Blocks of a host KV tier of ``gib`` GiB (default: :data:`HOST_KV_SHARE` of the host
        memory of the engine's GPUs)."""
        size = HOST_KV_SHARE * self.hardware.host_memory * self.tensor_parallel if gib is None else gib * GiB
        return int(size // (self.block_size * self.kv_bytes_per_token))

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
