"""One engine's paged KV cache: blocks held by running calls, plus a prefix cache.

A finished call's blocks become a prefix-cache entry (its whole context). A later call whose
prompt starts with that context *shares* the entry's blocks while it runs (the entry is pinned)
and holds blocks only for the rest of its context, as vLLM's automatic prefix caching does.
An entry made from a call that shared its parent's entry holds only its own blocks and is
usable only while that parent entry still exists (a prefix is a chain of blocks).
Unpinned entries live in free blocks and are evicted least recently used first.

Blocks held by calls are never taken back behind the scheduler's back: the engine keeps
enough headroom in the token budget it gives the scheduler that allocation cannot fail.
If it ever does, that is a simulator bug and :class:`KVCacheOverflow` says so.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from autellix.exceptions import ConfigError, InternalError


class KVCacheOverflow(InternalError):
    """A running call needed a block when none was free: the engine's headroom was wrong."""


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class _Entry:
    __slots__ = ("blocks", "parent", "refs", "tokens")

    def __init__(self, tokens: int, blocks: int, parent: Hashable | None) -> None:
        self.tokens = tokens
        self.blocks = blocks
        self.parent = parent
        self.refs = 0


class KVCache:
    """``capacity`` blocks of ``block_size`` tokens: ``used`` by calls, ``cached`` by prefix
    entries (``pinned`` of them shared by running calls), the rest ``free``."""

    __slots__ = ("_entries", "block_size", "cached", "capacity", "held", "pinned", "used")

    def __init__(self, capacity: int, block_size: int = 16) -> None:
        if capacity < 1 or block_size < 1:
            raise ConfigError("capacity and block_size must be >= 1")
        self.capacity = capacity
        self.block_size = block_size
        self.used = 0
        self.cached = 0
        self.pinned = 0
        #: call -> blocks it holds
        self.held: dict[int, int] = {}
        #: prefix key -> entry, least recently used first
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

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

    def remember(self, key: Hashable, tokens: int, call: int, parent: Hashable | None = None) -> None:
        """Turn the blocks ``call`` holds into the prefix entry ``key`` for a ``tokens``-token
        context; ``parent`` is the entry the call shared (its blocks hold the rest)."""
        blocks = self.release(call)
        self._drop(key)
        if (blocks == 0 and parent is None) or key in self._entries:  # nothing to keep / pinned
            return
        self._entries[key] = _Entry(tokens, blocks, parent)
        self.cached += blocks

    def lookup(self, key: Hashable, prefix_tokens: int) -> int:
        """Tokens of a ``prefix_tokens``-long prefix found under ``key`` (whole blocks only)."""
        entry = self._entries.get(key)
        if entry is None or prefix_tokens <= 0 or not self._chain_intact(entry):
            return 0
        self._entries.move_to_end(key)
        hit = min(prefix_tokens, entry.tokens)
        return hit - hit % self.block_size

    def pin(self, key: Hashable) -> None:
        """A running call shares entry ``key`` (and its chain): keep them until :meth:`unpin`."""
        while key is not None:
            entry = self._entries[key]
            if entry.refs == 0:
                self.pinned += entry.blocks
            entry.refs += 1
            key = entry.parent

    def unpin(self, key: Hashable) -> None:
        while key is not None:
            entry = self._entries[key]
            entry.refs -= 1
            if entry.refs == 0:
                self.pinned -= entry.blocks
            key = entry.parent

    def _chain_intact(self, entry: _Entry) -> bool:
        while entry.parent is not None:
            parent = self._entries.get(entry.parent)
            if parent is None:
                return False
            entry = parent
        return True

    def _make_room(self, blocks: int) -> None:
        short = blocks - self.free
        if short > 0:
            victims = []
            for key, entry in self._entries.items():  # least recently used first
                if entry.refs == 0:
                    victims.append(key)
                    short -= entry.blocks
                    if short <= 0:
                        break
            for key in victims:
                self._drop(key)
        if self.free < blocks:
            raise KVCacheOverflow(
                f"needed {blocks} KV blocks but only {self.free} of {self.capacity} are free "
                f"({self.used} held by running calls, {self.pinned} in shared prefixes)"
            )

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.refs == 0:
            del self._entries[key]
            self.cached -= entry.blocks
