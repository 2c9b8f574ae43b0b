"""Program contexts retained in vLLM's prefix cache, as the core's KV planner decides.

When a call of a program that will call again finishes, its full (hashed) KV blocks keep one
extra reference each (``BlockPool.touch``): they stay out of vLLM's free queue, so its LRU
eviction cannot take them, and in its prefix cache, so the program's next call hits them as any
cached prefix. Each such set of blocks is a *context* of :class:`autellix._core.KvPlanner`; a
context that extends another of the same program (the call's prompt hit it) holds only its own
blocks beyond it, and names it as its parent.

Holds are *soft*: whoever needs blocks calls :meth:`RetainedContexts.reclaim`, and the planner
gives back the contexts needed last (:meth:`RetainedContexts.apply` is the one place a planner
move becomes a change in vLLM's block pool). A call that arrives for a held context
:meth:`~RetainedContexts.acquire`\\ s it, so that reclaiming never takes the prefix a queued call is
about to use, and releases it when it finishes or is preempted. A program's contexts are all
freed when it ends.

With a host tier (:class:`HostStore`; for vLLM :mod:`autellix.adapters.kv_host`, over vLLM's
write-through CPU offloading connector) the planner's *offload* gives a context's GPU references
back once the host is checked to have every chunk of it (a drop otherwise), and the context stays
findable; its *load* (a call acquiring it, or :meth:`RetainedContexts.prefetch`) makes it a GPU
context again whose blocks are taken back by hash (:meth:`RetainedContexts.rehydrate`) once they
are in the GPU prefix cache again: loaded by the engine, still cached there, or recomputed by the
call that acquired it.

Engine-neutral: this module knows vLLM only through the block objects it is given (``ref_cnt``,
``block_hash``, ``block_id``, ``is_null``), the pool's ``touch`` / ``free_blocks``, and the
``lookup`` (block hash -> cached block) and host tier it is given.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autellix._core import KvPlanner
from autellix.exceptions import AutellixError

log = logging.getLogger("autellix.adapters.kv_retention")

#: Returns a block's prefix key (its chain hash without the KV group), ``None`` for a block that
#: holds no full, cached prefix.
BlockKey = Callable[[Any], Hashable | None]
#: The block of the engine's prefix cache with this (group-tagged) hash, ``None`` if none is cached.
BlockLookup = Callable[[Any], Any]


class HostStore(Protocol):
    """The host tier as retention sees it."""

    def keys(self, blocks: Sequence[Any]) -> list[Hashable]:
        """The host chunks these GPU blocks are stored as."""

    def stored(self, keys: Sequence[Hashable]) -> bool:
        """Every one of ``keys`` is on the host (or being written there)."""

    def loadable(self, keys: Sequence[Hashable]) -> bool:
        """Every one of ``keys`` is on the host, ready to load now."""

    def hold(self, context: int, keys: Sequence[Hashable], due: float, on_host: bool) -> None:
        """``context`` is made of ``keys``, due at ``due`` and kept on the host (``on_host``) or
        on the GPU (for the host's eviction order)."""

    def doom(self, context: int) -> None:
        """``context`` is gone: its chunks are the first to evict."""


@dataclass
class _Context:
    program: int
    thread: int
    parent: int | None
    #: the blocks it holds a reference on (beyond its parent's), all KV groups; empty once offloaded
    blocks: list[Any]
    #: prefix key of its last block: a later prompt containing it contains the whole chain
    key: Hashable
    #: ids of ``blocks`` (to recognise a call that extends it: its very blocks, not look-alikes)
    ids: frozenset[int]
    #: its blocks in the planner's count (``blocks`` is shorter while it is on the host, or
    #: loaded but not yet taken back)
    size: int = 0
    tier: str = "gpu"
    #: with a host tier: the blocks' hashes (to take them back) and host chunks
    hashes: list[Any] = field(default_factory=list)
    keys: list[Hashable] = field(default_factory=list)
    #: what the engine needs to load it (opaque here)
    payload: Any = None


@dataclass
class RetentionStats:
    """What retention has done so far (counters only grow)."""

    contexts: int = 0
    retained_blocks: int = 0
    #: calls admitted with a prefix hit on a context they acquired, and the tokens of those hits
    hits: int = 0
    hit_tokens: int = 0
    #: blocks given back, by why: the planner dropped (or offloaded) them, or their program ended
    reclaimed_blocks: dict[str, int] = field(default_factory=lambda: {"drop": 0, "offload": 0, "end": 0})
    #: acquisitions of queued calls given up because a running call needed the memory
    forced_releases: int = 0
    #: host tier: blocks offloaded (their GPU references given back, the host holding them),
    #: offloads counted as drops (a chunk was missing on the host), blocks the planner loaded
    #: back, and blocks taken back from the GPU prefix cache after a load
    offloaded_blocks: int = 0
    offloads_missing: int = 0
    loaded_blocks: int = 0
    rehydrated_blocks: int = 0


class RetainedContexts:
    """The planner and the block references it decides about (one engine, one block pool)."""

    def __init__(
        self,
        pool: Any,
        planner: KvPlanner,
        block_key: BlockKey,
        host: HostStore | None = None,
        lookup: BlockLookup | None = None,
    ) -> None:
        self.pool = pool
        self.planner = planner
        self._key = block_key
        self.host = host
        self._lookup = lookup
        self._now = 0.0
        self._contexts: dict[int, _Context] = {}
        #: prefix key of a context's last block -> the context
        self._by_key: dict[Hashable, int] = {}
        #: request id -> the context it shares
        self._acquired: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._counts = RetentionStats()
        #: block id -> references the contexts keep on it (two sibling contexts may share blocks)
        self._holds: Counter[int] = Counter()

    # -- calls ----------------------------------------------------------------------------------

    def find(self, program: int, prefix_keys: Sequence[Hashable]) -> int | None:
        """The deepest context of ``program`` a prompt with these full-block prefix keys starts
        with (keys are chain hashes: one match means the whole chain matches)."""
        for key in reversed(prefix_keys):
            context = self._by_key.get(key)
            if context is not None and self._contexts[context].program == program:
                return context
        return None

    def acquire(self, request_id: str, context: int, now: float) -> None:
        """``request_id`` will use ``context``: the planner must not reclaim it meanwhile (the
        gap from the context going idle to ``now`` trains the planner's prediction)."""
        if request_id in self._acquired or context not in self._contexts:
            return
        self._now = now
        self.apply(self.planner.acquire(context, now))
        self._acquired[request_id] = context

    def acquired(self, request_id: str) -> int | None:
        return self._acquired.get(request_id)

    def release(self, request_id: str, now: float) -> None:
        """``request_id`` stopped using its context (finished, preempted, aborted)."""
        context = self._acquired.pop(request_id, None)
        if context is not None and context in self._contexts:
            # a loaded context's blocks are in the prefix cache now, the call's own among them
            for link in self._chain(context):
                self.rehydrate(link)
            self.planner.release(context, now)

    def hit(self, tokens: int) -> None:
        self._counts.hits += 1
        self._counts.hit_tokens += tokens

    def retain(
        self,
        program: int,
        thread: int,
        groups: Iterable[Sequence[Any]],
        now: float,
        gap_prior: float | None = None,
        payload: Any = None,
    ) -> int | None:
        """A call of ``program`` finished with these blocks (per KV group, in prefix order): keep
        its full blocks as a context; its id, ``None`` if nothing new is worth keeping.
        ``gap_prior``: the client's guess of the seconds until the program's next call (its
        ``tool_seconds`` hint), which the planner's observed gaps override. ``payload``: what
        the engine needs to load the context back (:meth:`payload`)."""
        groups = [list(blocks) for blocks in groups]
        if not groups:
            return None
        full = [b for blocks in groups for b in blocks if not b.is_null and self._key(b) is not None]
        first = [b for b in groups[0] if not b.is_null and self._key(b) is not None]
        if not first:
            return None
        key = self._key(first[-1])
        if key in self._by_key:
            return None  # this prefix is held already (by this program's parent, or another)
        ids = frozenset(b.block_id for b in full)
        parent = None
        for block in reversed(first):
            candidate = self._by_key.get(self._key(block))
            if candidate is not None and self._contexts[candidate].program == program:
                chain = self._chain(candidate)
                # (a parent the planner does not count on the GPU cannot be one: it is extended
                # by holding the whole prefix instead)
                if all(self._contexts[c].ids <= ids and self._contexts[c].tier == "gpu" for c in chain):
                    parent = candidate
                break
        inherited = set().union(*(self._contexts[c].ids for c in self._chain(parent)))
        own = [b for b in full if b.block_id not in inherited]
        if not own:
            return None
        context = next(self._ids)
        try:
            self.planner.insert(
                context, program, now, blocks=len(own), thread=thread, parent=parent, gap_prior=gap_prior
            )
        except AutellixError as exc:  # a planner bug must not fail the engine: keep nothing
            log.error("autellix: context of program %d not retained: %s", program, exc)
            return None
        self.pool.touch(own)
        self._holds.update(b.block_id for b in own)
        record = _Context(
            program, thread, parent, own, key, frozenset(b.block_id for b in own), size=len(own)
        )
        if self.host is not None:
            record.hashes = [b.block_hash for b in own]
            record.keys = self.host.keys(own)
            record.payload = payload
            due = now + self.planner.expected_gap(program, thread)
            self.host.hold(context, record.keys, due, on_host=False)
        self._contexts[context] = record
        self._by_key[key] = context
        self._counts.contexts += 1
        self._counts.retained_blocks += len(own)
        return context

    def _chain(self, context: int | None) -> list[int]:
        """``context`` and the contexts it extends (none for ``None``)."""
        chain = []
        while context is not None:
            chain.append(context)
            context = self._contexts[context].parent
        return chain

    # -- memory ---------------------------------------------------------------------------------

    def reclaim(self, need: int, now: float) -> int:
        """Give back at least ``need`` blocks if that many are held by idle contexts; the blocks
        the planner let go."""
        if need <= 0 or not self._contexts:
            return 0
        self._now = now
        return self.apply(self.planner.reclaim(need, now))

    def prefetch(self, now: float, gpu_free: int, max_blocks: int) -> list[int]:
        """Host contexts due within the planner's prefetch window that fit in ``gpu_free``
        blocks (and ``max_blocks``): the planner counts them on the GPU from now; the engine
        loads them (or their calls do on arrival). The contexts, each chain's root first."""
        if self.host is None or not self._contexts:
            return []
        self._now = now
        moves = self.planner.prefetch(now, max(0, gpu_free), max(0, max_blocks))
        self.apply(moves)
        return [context for context, action, _, _ in moves if action == "load" and context in self._contexts]

    def rehydrate(self, context: int) -> bool:
        """Take back a loaded context's blocks from the engine's prefix cache by hash (loaded,
        still cached, or recomputed by a call): ``True`` if it holds all of them now."""
        record = self._contexts.get(context)
        if record is None or record.tier != "gpu":
            return False
        if len(record.blocks) >= record.size:
            return True
        if self._lookup is None:
            return False
        found = [self._lookup(h) for h in record.hashes]
        blocks = [b for b in found if b is not None]
        held = {b.block_id for b in record.blocks}
        fresh = [b for b in blocks if b.block_id not in held]
        self.pool.touch(fresh)  # before anything is freed: a shared block never drops to 0
        self._holds.update(b.block_id for b in fresh)
        record.blocks = record.blocks + fresh
        record.ids = frozenset(b.block_id for b in record.blocks)
        self._counts.rehydrated_blocks += len(fresh)
        return len(record.blocks) >= record.size

    def payload(self, context: int) -> Any:
        record = self._contexts.get(context)
        return None if record is None else record.payload

    def parent(self, context: int) -> int | None:
        record = self._contexts.get(context)
        return None if record is None else record.parent

    def host_keys(self, context: int) -> list[Hashable]:
        record = self._contexts.get(context)
        return [] if record is None else record.keys

    def tier(self, context: int) -> str | None:
        record = self._contexts.get(context)
        return None if record is None else record.tier

    def release_queued(self, queued: Callable[[str], bool], now: float) -> int:
        """A running call needs memory that only contexts acquired by queued calls hold: those
        calls give them up (they look them up again when vLLM admits them); how many."""
        released = [r for r in self._acquired if queued(r)]
        for request_id in released:
            self.release(request_id, now)
        self._counts.forced_releases += len(released)
        return len(released)

    def apply(self, moves: Sequence[tuple[int, str, str, int]], why: str | None = None) -> int:
        """Carry out the planner's moves (the one place they change the engine's block pool);
        returns the GPU blocks the planner let go. Without a host tier an offload gives the
        blocks back as a drop does."""
        freed = 0
        for context, action, tier, blocks in moves:
            record = self._contexts.get(context)
            if record is None:
                continue
            if action == "load":
                # On the GPU for the planner from now; its blocks are taken back once they are in
                # the prefix cache (prefetched, or loaded by the call that acquired it).
                record.tier = "gpu"
                self._counts.loaded_blocks += blocks
                if self.host is not None:  # its host copy stays, now an ordinary one
                    gap = self.planner.expected_gap(record.program, record.thread)
                    self.host.hold(context, record.keys, self._now + gap, on_host=False)
                continue
            if tier == "gpu":
                freed += blocks
            if action == "offload" and why is None:
                self._offload(context, record)
                continue
            if tier == "gpu":
                self._give_back(record, why or action)
            self._forget(context, record)
        return freed

    def _offload(self, context: int, record: _Context) -> None:
        host = self.host
        on_host = host is not None and bool(record.keys) and host.stored(record.keys)
        self._give_back(record, "offload" if on_host else "drop")
        if on_host:
            assert host is not None
            record.tier = "host"
            self._counts.offloaded_blocks += record.size
            due = self._now + self.planner.expected_gap(record.program, record.thread)
            host.hold(context, record.keys, due, on_host=True)
            return
        # Not (all) on the host: a drop. The planner forgets it if nothing depends on it; else it
        # stays a host context that loads what the host has (the call re-prefills the rest).
        if host is not None:
            self._counts.offloads_missing += 1
        try:
            self.planner.remove(context)
        except AutellixError:
            record.tier = "host"
            return
        self._forget(context, record)

    def _forget(self, context: int, record: _Context) -> None:
        self._contexts.pop(context, None)
        if self._by_key.get(record.key) == context:
            del self._by_key[record.key]
        if self.host is not None:
            self.host.doom(context)

    def end_program(self, program: int, service: float) -> int:
        """The program ended: every context it holds is freed; the blocks given back."""
        return self.apply(self.planner.end_program(program, service=service), why="end")

    def drop_all(self, now: float) -> int:
        """Give every block back (vLLM's prefix cache is about to be reset); the blocks."""
        for request_id in list(self._acquired):
            self.release(request_id, now)
        freed = 0
        self._now = now
        while self.planner.gpu_blocks:
            moves = self.planner.reclaim(self.planner.gpu_blocks, now)
            if not moves:
                break
            freed += self.apply(moves)
        return freed

    def _give_back(self, record: _Context, why: str) -> int:
        blocks, record.blocks = record.blocks, []
        record.ids = frozenset()
        # Tail first, as vLLM frees a request: a chain is evicted from its end; the blocks keep
        # their hashes, so a call arriving before they are reused still hits them.
        self.pool.free_blocks(reversed(blocks))
        self._holds.subtract(b.block_id for b in blocks)
        for block in blocks:
            if self._holds[block.block_id] <= 0:
                del self._holds[block.block_id]
        self._counts.reclaimed_blocks[why] = self._counts.reclaimed_blocks.get(why, 0) + len(blocks)
        return len(blocks)

    # -- state ----------------------------------------------------------------------------------

    @property
    def held_blocks(self) -> int:
        """Blocks held on the GPU now."""
        return sum(len(c.blocks) for c in self._contexts.values())

    def holds(self, block_id: int) -> int:
        """References the contexts keep on this block (0: none)."""
        return self._holds.get(block_id, 0)

    def pending(self) -> list[int]:
        """GPU contexts (for the planner) whose blocks are not all taken back yet."""
        return [i for i, c in self._contexts.items() if c.tier == "gpu" and len(c.blocks) < c.size]

    def __len__(self) -> int:
        """Contexts held (on any tier)."""
        return len(self._contexts)

    def idle(self) -> int:
        """Contexts no call uses, directly or through a context extending them: what a reclaim
        can give back now. O(contexts x depth): for tests and reports."""
        used = {
            c
            for context in self._acquired.values()
            if context in self._contexts
            for c in self._chain(context)
        }
        return len(self._contexts) - len(used)

    def held(self) -> list[Any]:
        """Every block a context holds now (a block shared by two contexts' lists is listed twice)."""
        return [b for c in self._contexts.values() for b in c.blocks]

    def stats(self) -> dict[str, float]:
        counts = self._counts
        out: dict[str, float] = {
            "kv_retained_contexts": len(self._contexts),
            "kv_retained_blocks": self.planner.gpu_blocks,
            "kv_retained_contexts_total": counts.contexts,
            "kv_retained_blocks_total": counts.retained_blocks,
            "kv_retained_hits_total": counts.hits,
            "kv_retained_hit_tokens_total": counts.hit_tokens,
            "kv_forced_releases_total": counts.forced_releases,
            "kv_acquired_contexts": len(self._acquired),
        }
        if self.host is not None:
            out["kv_host_contexts"] = sum(c.tier == "host" for c in self._contexts.values())
            out["kv_host_blocks"] = self.planner.host_blocks
            out["kv_offloaded_blocks_total"] = counts.offloaded_blocks
            out["kv_offloads_missing_total"] = counts.offloads_missing
            out["kv_loaded_blocks_total"] = counts.loaded_blocks
            out["kv_rehydrated_blocks_total"] = counts.rehydrated_blocks
        for why, blocks in counts.reclaimed_blocks.items():
            out[f"kv_reclaimed_blocks_total:{why}"] = blocks
        return out

    def check(self) -> None:
        """Invariants (tests): every held block is referenced and hashed; the planner counts
        exactly the blocks of the GPU contexts, which hold at most those (all of them without a
        host tier); host contexts hold none."""
        for record in self._contexts.values():
            for block in record.blocks:
                assert block.ref_cnt >= 1 and self._key(block) is not None, block
            assert len(record.blocks) <= record.size and (record.tier == "gpu" or not record.blocks)
        on_gpu = sum(c.size for c in self._contexts.values() if c.tier == "gpu")
        assert self.planner.gpu_blocks == on_gpu, (self.planner.gpu_blocks, on_gpu)
        if self.host is None:
            assert on_gpu == self.held_blocks, (on_gpu, self.held_blocks)
        assert len(self.planner) == len(self._contexts)
        assert self._holds == Counter(b.block_id for b in self.held()), "hold counts drifted"
