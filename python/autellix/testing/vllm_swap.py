"""vLLM's own KV block copies, as ``benches/bench_swap.py`` runs them next to autellix's bulk op.

vLLM 0.33's ``vllm._custom_ops`` has two host<->device block copies, both CUDA only:

* ``swap_blocks(src, dst, block_size_in_bytes, block_mapping)``: one ``cudaMemcpyAsync`` per block
  of one layer tensor; called once per layer tensor it is vLLM 0.6.1's ``CacheEngine.swap_out``;
* ``swap_blocks_batch(src_ptrs, dst_ptrs, sizes)``: one ``cuMemcpyBatchAsync`` of one descriptor
  per (layer, block) page, the copy of vLLM's CPU ``OffloadingConnector``.

The builders below return closures that do one swap (the descriptors are built before, outside a
timed region). ``ops`` is the loaded module (:func:`load_ops`) or, in tests on machines without
CUDA, a stand-in with the same signatures. Importing this module imports torch, not vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from autellix.testing import quiet


def load_ops() -> tuple[Any, str | None]:
    """vLLM's ``_custom_ops`` if its CUDA swap ops load here, else ``(None, why not)``."""
    if not torch.cuda.is_available():
        return None, "needs CUDA"
    try:
        with quiet():
            import vllm._custom_ops as vops

        cache_ops = torch.ops._C_cache_ops
        for name in ("swap_blocks", "swap_blocks_batch"):
            getattr(cache_ops, name)
    except Exception as e:  # ImportError, or its C extension does not load on this machine
        return None, f"vLLM's swap ops are not importable: {type(e).__name__}: {e}"
    return vops, None


def page_pointers(layers: Sequence[torch.Tensor], blocks: torch.Tensor) -> torch.Tensor:
    """Address of every (layer, block) page, layer-major: ``int64 [len(layers) * len(blocks)]``.
    One descriptor per page, as vLLM 0.33's CPU offload worker builds them for
    ``swap_blocks_batch``: a layer's base address + block index x its block stride in bytes."""
    base = torch.tensor([t.data_ptr() for t in layers], dtype=torch.int64)
    stride = torch.tensor([t.stride(0) * t.element_size() for t in layers], dtype=torch.int64)
    return (base[:, None] + blocks[None, :] * stride[:, None]).reshape(-1).contiguous()


def per_block_swap(
    ops: Any,
    src_layers: Sequence[torch.Tensor],
    dst_layers: Sequence[torch.Tensor],
    page_bytes: int,
    mapping: torch.Tensor,
) -> Callable[[], None]:
    """``ops.swap_blocks`` once per layer tensor: block ``mapping[i, 0]`` of each source to block
    ``mapping[i, 1]`` of its destination (``mapping``: ``int64 [n, 2]``)."""

    def swap() -> None:
        for src, dst in zip(src_layers, dst_layers, strict=True):
            ops.swap_blocks(src, dst, page_bytes, mapping)

    return swap


def batch_swap(
    ops: Any,
    src_layers: Sequence[torch.Tensor],
    dst_layers: Sequence[torch.Tensor],
    page_bytes: int,
    mapping: torch.Tensor,
) -> Callable[[], None]:
    """One ``ops.swap_blocks_batch`` call moving the same pages as :func:`per_block_swap`."""
    src_ptrs = page_pointers(src_layers, mapping[:, 0])
    dst_ptrs = page_pointers(dst_layers, mapping[:, 1])
    sizes = torch.full_like(src_ptrs, page_bytes)

    def swap() -> None:
        ops.swap_blocks_batch(src_ptrs, dst_ptrs, sizes)

    return swap


def version(ops: Any) -> str | None:
    """vLLM's version when ``ops`` were loaded, else None."""
    if ops is None:
        return None
    import vllm

    return str(vllm.__version__)
