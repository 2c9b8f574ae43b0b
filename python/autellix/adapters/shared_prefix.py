"""Prompt prefixes that running requests share in vLLM's KV cache, counted once for the core.

The core sizes a batch by each call's whole context (prompt plus generated tokens), as if no two
calls shared KV. vLLM's prefix cache stores a prefix once for every request that has it, so when
sibling calls of a tree search run together (lats: each expansion extends the same parent context)
the core's count is several times what vLLM holds: the core then leaves slots empty and preempts
running calls for memory vLLM has. The plug-in gives the core back what its count repeats, as the
simulator does for its batch. Measured on lats (benches/RESULTS.md, issue 16): with kv ``lru`` the
plug-in took 21% more engine steps than stock vLLM; this count takes its P99 from 22.4 to 21.2
ms/token (stock: 18.5; the rest is PLAS's order).

A request's *shared tokens* are the leading blocks of its prefix-cache hit that a running request
started before it also references, found when vLLM first schedules it: a block's references are
its running requests plus the plug-in's retention holds (:meth:`RetainedContexts.holds`), and
along a prefix they never increase, so a binary search finds the shared part in O(log n). The
figure stays fixed until the request stops; if the request it shared with ends first, the core's
budget is too large by that prefix for a while, which only lets the core offer vLLM a call that
vLLM's own allocation check then keeps waiting. A request resumed after a preemption counts as
sharing nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: a request vLLM has just started: its id, its blocks (first KV group) and its cached tokens
Started = tuple[str, Sequence[Any], int]


class SharedPrefixes:
    """Per running request, the prompt tokens it shares with other running requests."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._shared: dict[str, int] = {}
        #: tokens the core counts more than once, over every running request
        self.total = 0

    def started(self, requests: Sequence[Started], holds: Callable[[int], int]) -> None:
        """vLLM has just scheduled these requests for the first time, in this order: each with its
        blocks (first KV group, prefix first) and the tokens of its prompt it found cached.
        ``holds`` gives the references the plug-in itself keeps on a block. A request shares the
        blocks of its hit that a request started before it references too (an earlier step's, or
        an earlier one of this step: the first of them counts the prefix, the others share it)."""
        for i, (request_id, blocks, hit_tokens) in enumerate(requests):
            self.stopped(request_id)
            hit = min(len(blocks), hit_tokens // self.block_size)
            later = [other for _, other, _ in requests[i + 1 :]]
            shared = _shared_blocks(blocks, hit, later, holds)
            if shared:
                self._shared[request_id] = shared * self.block_size
                self.total += shared * self.block_size

    def stopped(self, request_id: str) -> None:
        """``request_id`` finished, was aborted or preempted: its blocks are no longer shared."""
        self.total -= self._shared.pop(request_id, 0)

    def __len__(self) -> int:
        return len(self._shared)


def _shared_blocks(
    blocks: Sequence[Any], hit: int, later: list[Sequence[Any]], holds: Callable[[int], int]
) -> int:
    """How many of the first ``hit`` blocks a running request started earlier references too:
    a block's count less the plug-in's holds, this request and those started after it. Along a
    prefix the count never increases, so a binary search finds the boundary."""
    lo, hi = 0, hit
    while lo < hi:
        mid = (lo + hi) // 2
        block = blocks[mid]
        after = sum(1 for other in later if mid < len(other) and other[mid] is block)
        if block.ref_cnt - holds(block.block_id) - after - 1 >= 1:
            lo = mid + 1
        else:
            hi = mid
    return lo
