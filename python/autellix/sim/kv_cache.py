"""One engine's paged KV cache: blocks held by running calls, plus an evictable prefix cache.

Blocks held by calls are never taken back behind the scheduler's back: the engine reserves
enough headroom in the token budget it gives the scheduler that allocation cannot fail.
If it ever does, that is a simulator bug and :class:`KVCacheOverflow` says so.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from autellix.exceptions import InternalError


class KVCacheOverflow(InternalError):
    """A running call needed a block when none was free: the engine's headroom was wrong."""


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class KVCache:
    """``capacity`` blocks of ``block_size`` tokens.

    ``used`` blocks belong to calls on the GPU; finished calls' contexts stay as prefix-cache
    entries in the remaining blocks until an allocation needs them (LRU eviction), as with
    vLLM's automatic prefix caching.
    """

    __slots__ = ("_entries", "block_size", "cached", "capacity", "held", "used")

    def __init__(self, capacity: int, block_size: int = 16) -> None:
        if capacity < 1 or block_size < 1:
            raise ValueError("capacity and block_size must be >= 1")
        self.capacity = capacity
        self.block_size = block_size
        self.used = 0
        self.cached = 0
        #: call -> blocks it holds
        self.held: dict[int, int] = {}
        #: prefix key -> (tokens, blocks), least recently used first
        self._entries: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()

    @property
    def free(self) -> int:
        return self.capacity - self.used - self.cached

    def grow(self, call: int, tokens: int) -> int:
        """Make ``call`` hold enough blocks for ``tokens`` tokens; returns the blocks added."""
        need = blocks_for(tokens, self.block_size) - self.held.get(call, 0)
        if need <= 0:
            return 0
        self._make_room(need)
        self.used += need
        self.held[call] = self.held.get(call, 0) + need
        return need

    def release(self, call: int) -> int:
        """Free every block of ``call``; returns how many it held."""
        blocks = self.held.pop(call, 0)
        self.used -= blocks
        return blocks

    def remember(self, key: Hashable, tokens: int) -> None:
        """Keep a finished context of ``tokens`` tokens as a prefix-cache entry (if it fits)."""
        blocks = tokens // self.block_size  # only full blocks are shareable
        old = self._entries.pop(key, None)
        if old is not None:
            self.cached -= old[1]
        if blocks == 0 or blocks > self.capacity - self.used:
            return
        while self.free < blocks:
            self._evict_one()
        self._entries[key] = (tokens, blocks)
        self.cached += blocks

    def lookup(self, key: Hashable, prefix_tokens: int) -> int:
        """Tokens of a ``prefix_tokens``-long prefix found under ``key`` (whole blocks only)."""
        entry = self._entries.get(key)
        if entry is None or prefix_tokens <= 0:
            return 0
        self._entries.move_to_end(key)
        hit = min(prefix_tokens, entry[0])
        return hit - hit % self.block_size

    def _make_room(self, blocks: int) -> None:
        while self.free < blocks and self._entries:
            self._evict_one()
        if self.free < blocks:
            raise KVCacheOverflow(
                f"needed {blocks} KV blocks but only {self.free} of {self.capacity} are free "
                f"({self.used} held by running calls)"
            )

    def _evict_one(self) -> None:
        _, (_, blocks) = self._entries.popitem(last=False)
        self.cached -= blocks
