"""One engine's paged KV cache: blocks held by running calls, a prefix cache, and a host tier.

A finished call's blocks become a prefix-cache entry (its whole context). A later call whose
prompt starts with that context *shares* the entry's blocks while it runs (the entry is pinned)
and holds blocks only for the rest of its context, as vLLM's automatic prefix caching does.
An entry made from a call that shared its parent's entry holds only its own blocks and is
usable only while that parent entry still exists (a prefix is a chain of blocks).

Where idle entries go under memory pressure is the *KV policy* (:data:`KV_POLICIES`):

- ``lru``: vLLM's automatic prefix caching: unpinned entries live in free blocks and are evicted
  least recently used first. Like vLLM, which frees a request's blocks tail first, an entry's
  chain is touched leaf to root, so a chain loses its tail before its root.
- ``ttl``: Continuum: after a call, its entry is held (not evictable, not free for the scheduler)
  for a TTL tau* = argmax P(gap <= tau) x B - tau, B the prefill time the entry saves plus the
  recent queueing delay of a call; no host tier.
- ``offload-lru``: vLLM's CPU offloading connector / LMCache: evicted entries go to the host
  tier (least recently used there is dropped), a hit there is loaded back instead of prefilled.
- ``autellix``: the core's :class:`~autellix._core.KvPlanner` decides (keep, offload, drop,
  prefetch) by predicted next use and program priority.
- ``ideal``: the limit: GPU and host memory are one pool, moves are free (``lru`` over it).

Blocks held by calls are never taken back behind the scheduler's back: the engine keeps
enough headroom in the token budget it gives the scheduler that allocation cannot fail.
If it ever does, that is a simulator bug and :class:`KVCacheOverflow` says so.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from autellix.exceptions import ConfigError, InternalError

if TYPE_CHECKING:
    from autellix._core import KvPlanner

KV_POLICIES = ("lru", "ttl", "offload-lru", "autellix", "ideal")
GPU, HOST = "gpu", "host"


class KVCacheOverflow(InternalError):
    """A running call needed a block when none was free: the engine's headroom was wrong."""


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class _Entry:
    __slots__ = ("blocks", "context", "held_until", "idle_since", "parent", "refs", "tier", "tokens")

    def __init__(self, tokens: int, blocks: int, parent: Hashable | None, context: int) -> None:
        self.tokens = tokens
        self.blocks = blocks
        self.parent = parent
        self.refs = 0
        self.tier = GPU
        #: The planner's id of this entry (``autellix``).
        self.context = context
        #: ``ttl``: held until then.
        self.held_until = -math.inf
        #: When its last user finished (trains the TTL's gap distribution).
        self.idle_since = 0.0


class TtlEstimator:
    """Continuum's TTL: tau* = argmax_tau P(gap <= tau) x B - tau over the observed gaps; an
    exponential gap of the observed mean until :data:`EMPIRICAL_AFTER` gaps are seen."""

    EMPIRICAL_AFTER = 100
    KEEP = 512
    PRIOR_GAP = 5.0

    def __init__(self) -> None:
        self._sorted: list[float] = []
        self._recent: list[float] = []
        self._seen = 0
        self._sum = 0.0

    def observe(self, gap: float) -> None:
        self._seen += 1
        self._sum += gap
        if len(self._recent) == self.KEEP:
            old = self._recent.pop(0)
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(gap)
        bisect.insort(self._sorted, gap)

    def ttl(self, benefit: float) -> float:
        """Seconds to hold an entry whose loss costs ``benefit`` seconds."""
        if self._seen < self.EMPIRICAL_AFTER:
            mean = self._sum / self._seen if self._seen else self.PRIOR_GAP
            return mean * math.log(benefit / mean) if benefit > mean > 0 else 0.0
        gaps = self._sorted
        best, best_tau = 0.0, 0.0
        for i, tau in enumerate(gaps):
            value = (i + 1) / len(gaps) * benefit - tau
            if value > best:
                best, best_tau = value, tau
        return best_tau


class KVCache:
    """``capacity`` GPU blocks of ``block_size`` tokens: ``used`` by calls, ``cached`` by prefix
    entries (``pinned`` of them shared by running calls, ``retained`` held by a TTL), the rest
    ``free``; and ``host_capacity`` host blocks, ``host_cached`` of them holding entries."""

    __slots__ = (
        "_entries",
        "_expiry",
        "_host",
        "_ids",
        "_ttl",
        "block_size",
        "cached",
        "capacity",
        "held",
        "host_cached",
        "host_capacity",
        "loaded",
        "now",
        "offloaded",
        "pinned",
        "planner",
        "policy",
        "prefill_seconds",
        "queueing",
        "retained",
        "used",
    )

    def __init__(
        self,
        capacity: int,
        block_size: int = 16,
        *,
        policy: str = "lru",
        host_capacity: int = 0,
        planner: KvPlanner | None = None,
        prefill_seconds: Callable[[int], float] | None = None,
    ) -> None:
        if capacity < 1 or block_size < 1:
            raise ConfigError("capacity and block_size must be >= 1")
        if policy not in KV_POLICIES:
            raise ConfigError(f"unknown kv policy {policy!r}; choose one of {', '.join(KV_POLICIES)}")
        if policy == "autellix" and planner is None:
            raise ConfigError("the autellix kv policy needs a KvPlanner")
        self.policy = policy
        self.capacity = capacity + (host_capacity if policy == "ideal" else 0)
        self.host_capacity = host_capacity if policy in ("offload-lru", "autellix") else 0
        self.block_size = block_size
        self.planner = planner
        self.prefill_seconds = prefill_seconds or (lambda tokens: tokens * 1e-4)
        #: Recent queueing delay of a call (s), kept by the engine: part of what a ``ttl`` hold saves.
        self.queueing = 0.0
        self.used = 0
        self.cached = 0
        self.pinned = 0
        self.retained = 0
        self.host_cached = 0
        #: Blocks moved GPU -> host and host -> GPU since the engine last collected them.
        self.offloaded = 0
        self.loaded = 0
        self.now = 0.0
        #: call -> blocks it holds
        self.held: dict[int, int] = {}
        #: prefix key -> entry on the GPU, least recently used first
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        #: prefix key -> entry on the host, least recently used first
        self._host: OrderedDict[Hashable, _Entry] = OrderedDict()
        #: planner context -> prefix key (``autellix``)
        self._ids: dict[int, Hashable] = {}
        self._ttl = TtlEstimator()
        self._expiry: list[tuple[float, int, Hashable]] = []

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

    def remember(
        self,
        key: Hashable,
        tokens: int,
        call: int,
        parent: Hashable | None = None,
        *,
        program: int = 0,
        thread: int = 0,
    ) -> None:
        """Turn the blocks ``call`` holds into the prefix entry ``key`` for a ``tokens``-token
        context; ``parent`` is the entry the call shared (its blocks hold the rest)."""
        blocks = self.release(call)
        self._drop(key)
        if (blocks == 0 and parent is None) or key in self._entries or key in self._host:
            return  # nothing to keep / an entry a running call still pins
        entry = _Entry(tokens, blocks, parent, call)
        entry.idle_since = self.now
        self._entries[key] = entry
        self.cached += blocks
        if self.planner is not None:
            self._ids[call] = key
            parent_id = self._entries[parent].context if parent is not None else None
            self.planner.insert(call, program, self.now, blocks=blocks, thread=thread, parent=parent_id)
        elif self.policy == "ttl":
            self._hold(key, entry)
        self._touch(key)

    def lookup(self, key: Hashable, prefix_tokens: int) -> int:
        """Tokens of a ``prefix_tokens``-long prefix found under ``key`` (whole blocks only), on
        either tier (:meth:`pin` loads what is on the host)."""
        entry = self._entries.get(key) or self._host.get(key)
        if entry is None:
            return 0
        at = entry
        while at.parent is not None:
            parent = self._entries.get(at.parent) or self._host.get(at.parent)
            if parent is None:
                return 0  # the chain is broken
            at = parent
        self._touch(key)
        return self._hit(entry, prefix_tokens)

    def pinned_hit(self, key: Hashable, prefix_tokens: int) -> int:
        """Tokens of the prefix a call would share from entry ``key`` if running calls pin it
        already (then sharing it costs no block), else 0."""
        entry = self._entries.get(key)
        return 0 if entry is None or entry.refs == 0 else self._hit(entry, prefix_tokens)

    def _hit(self, entry: _Entry, prefix_tokens: int) -> int:
        """Whole-block tokens of a ``prefix_tokens``-long prefix that ``entry`` gives; 0 if the
        prompt uses only part of it (a cut history: pinning the entry would hold blocks the
        scheduler's token count does not cover; rare, > 32k contexts)."""
        size = self.block_size
        if prefix_tokens <= 0 or blocks_for(entry.tokens, size) > blocks_for(prefix_tokens, size):
            return 0
        hit = min(prefix_tokens, entry.tokens)
        return hit - hit % size

    def pin(self, key: Hashable, arrived: float = 0.0) -> None:
        """A running call, which arrived at ``arrived``, shares entry ``key`` (and its chain): load
        what is on the host, and keep them until :meth:`unpin`."""
        entry = self._entries.get(key) or self._host[key]
        if entry.refs == 0 and self.policy == "ttl":
            self._ttl.observe(max(0.0, arrived - entry.idle_since))
        if self.planner is not None:
            for context, _, _, _ in self.planner.acquire(entry.context, arrived):
                self._to_gpu(self._ids[context])
        else:
            at: Hashable | None = key
            while at is not None:
                if at in self._host:
                    self._to_gpu(at)
                at = self._entries[at].parent
        at = key
        while at is not None:
            entry = self._entries[at]
            if entry.refs == 0:
                self.pinned += entry.blocks
                if entry.held_until > self.now:
                    self.retained -= entry.blocks
            entry.refs += 1
            at = entry.parent
        self._make_room(0)  # loads may have taken free blocks
        self._touch(key)

    def unpin(self, key: Hashable) -> None:
        if self.planner is not None:
            self.planner.release(self._entries[key].context, self.now)
        at: Hashable | None = key
        while at is not None:
            entry = self._entries[at]
            entry.refs -= 1
            if entry.refs == 0:
                entry.idle_since = self.now
                self.pinned -= entry.blocks
                if entry.held_until > self.now:
                    self.retained += entry.blocks
            at = entry.parent

    def expire(self, now: float) -> None:
        """Advance to ``now``: TTL holds that ran out end."""
        self.now = now
        while self._expiry and self._expiry[0][0] <= now:
            _, context, key = heapq.heappop(self._expiry)
            entry = self._entries.get(key)
            if entry is None or entry.context != context:
                continue
            if entry.refs == 0 and entry.held_until > -math.inf:
                self.retained -= entry.blocks
            entry.held_until = -math.inf

    def next_expiry(self) -> float | None:
        """When the next TTL hold ends (``ttl``), if any."""
        return self._expiry[0][0] if self._expiry else None

    def prefetch(self, max_blocks: int) -> int:
        """``autellix``: load host entries due soon into free blocks, within ``max_blocks``
        (what the host link moves while the batch runs); returns the blocks loaded."""
        if self.planner is None or max_blocks <= 0:
            return 0
        moved = 0
        for context, _, _, blocks in self.planner.prefetch(self.now, max(0, self.free), max_blocks):
            self._to_gpu(self._ids[context], count=False)
            moved += blocks
        return moved

    def end_program(self, program: int, service: float = 0.0) -> None:
        """``autellix``: the program ended; its entries are freed at once."""
        if self.planner is None:
            return
        for context, _, tier, _ in self.planner.end_program(program, service=service):
            self._forget(context, tier)

    def entries(self) -> int:
        """Prefix entries held, on either tier."""
        return len(self._entries) + len(self._host)

    # ------------------------------------------------------------------------------ internals

    def _hold(self, key: Hashable, entry: _Entry) -> None:
        # Continuum's B: the prefill an eviction costs plus the queueing it adds.
        ttl = self._ttl.ttl(self.prefill_seconds(entry.tokens) + self.queueing)
        if ttl <= 0:
            return
        entry.held_until = self.now + ttl
        self.retained += entry.blocks
        heapq.heappush(self._expiry, (entry.held_until, entry.context, key))

    def _touch(self, key: Hashable) -> None:
        """Most recently used, root last (so a chain is evicted tail first, as vLLM does)."""
        at: Hashable | None = key
        while at is not None and at in self._entries:
            self._entries.move_to_end(at)
            at = self._entries[at].parent

    def _to_gpu(self, key: Hashable, count: bool = True) -> None:
        entry = self._host.pop(key)
        entry.tier = GPU
        self._entries[key] = entry
        self.host_cached -= entry.blocks
        self.cached += entry.blocks
        if count:
            self.loaded += entry.blocks

    def _to_host(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        entry.tier = HOST
        self._host[key] = entry
        self.cached -= entry.blocks
        self.host_cached += entry.blocks
        self.offloaded += entry.blocks

    def _make_room(self, blocks: int) -> None:
        short = blocks - self.free
        if short > 0:
            if self.planner is not None:
                self._apply(self.planner.reclaim(short, self.now))
            else:
                self._evict_lru(short)
        if self.free < blocks:
            raise KVCacheOverflow(
                f"needed {blocks} KV blocks but only {self.free} of {self.capacity} are free "
                f"({self.used} held by running calls, {self.pinned} in shared prefixes, "
                f"{self.retained} held by a TTL)"
            )

    def _evict_lru(self, short: int) -> None:
        victims = []
        for key, entry in self._entries.items():  # least recently used first
            if entry.refs == 0 and entry.held_until <= self.now:
                victims.append(key)
                short -= entry.blocks
                if short <= 0:
                    break
        for key in victims:
            entry = self._entries[key]
            if self.host_capacity and entry.blocks <= self.host_capacity:
                while self.host_cached + entry.blocks > self.host_capacity:
                    oldest = next(iter(self._host))
                    self.host_cached -= self._host.pop(oldest).blocks
                self._to_host(key)
            else:
                self._drop(key)

    def _apply(self, moves: list[tuple[int, str, str, int]]) -> None:
        for context, action, tier, _ in moves:
            key = self._ids[context]
            if action == "offload":
                self._to_host(key)
            elif action == "load":
                self._to_gpu(key)
            else:
                self._forget(context, tier)

    def _forget(self, context: int, tier: str) -> None:
        """Remove the entry of planner context ``context`` from ``tier`` (dropped or ended)."""
        entry = (self._entries if tier == GPU else self._host).pop(self._ids.pop(context))
        if tier == GPU:
            self.cached -= entry.blocks
        else:
            self.host_cached -= entry.blocks

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.refs == 0:
            if self.planner is not None:
                self.planner.remove(entry.context)
            del self._entries[key]
            self._ids.pop(entry.context, None)
            self.cached -= entry.blocks
            if entry.held_until > self.now:
                self.retained -= entry.blocks
