"""Bulk KV-cache block transfer between GPU and pinned host memory (paper §5: swap a program's
KV cache in one operation instead of block by block).

:mod:`autellix.kvswap.ops` holds the ``torch.ops.autellix`` copy ops (C++/CUDA in ``autellix/csrc/``,
compiled on first use) and their pure-torch reference; :mod:`autellix.kvswap.swapper` holds
:class:`KVSwapper`, which swaps a preempted call's blocks to a pinned host pool and back with them,
asynchronously on a side stream. torch is optional for autellix: it is imported only when these
functions run (``import autellix.kvswap`` works without it).
"""

from autellix.exceptions import DuplicateSwapError, SwapPoolFullError, UnknownSwapError
from autellix.kvswap.ops import (
    ops_backend,
    reference_swap_blocks,
    reference_swap_blocks_multi,
    swap_blocks,
    swap_blocks_multi,
)
from autellix.kvswap.swapper import KVSwapper, SwapHandle, SwapStats

__all__ = [
    "DuplicateSwapError",
    "KVSwapper",
    "SwapHandle",
    "SwapPoolFullError",
    "SwapStats",
    "UnknownSwapError",
    "ops_backend",
    "reference_swap_blocks",
    "reference_swap_blocks_multi",
    "swap_blocks",
    "swap_blocks_multi",
]
