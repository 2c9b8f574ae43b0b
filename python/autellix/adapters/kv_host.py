"""The KV planner's host tier inside vLLM 0.33: vLLM's CPU offloading connector, steered by the planner.

With ``kv_policy`` ``autellix`` and vLLM's ``OffloadingConnector`` configured (``--kv-offloading-size
GiB --kv-offloading-backend native``, or ``--kv-transfer-config`` with ``"kv_connector":
"OffloadingConnector"``), the planner gets a host tier of the connector's CPU capacity
(:func:`host_capacity_blocks`, in GPU blocks) and its moves become:

* **offload**: the connector is *write-through*: every completed block of every request is
  stored to CPU memory as it is computed (``offload_prompt_only=False``, which the plug-in sets
  unless the user chose otherwise: an agent's next call continues the previous call's *output*).
  So an offload is only "give the GPU references back": :class:`HostTier` first checks with the
  connector's manager that every chunk of the context is on the host, and counts the move as a
  drop if one is missing.
* **load / prefetch**: a context due within the planner's prefetch window is brought back by a
  load-only *prefetch request* (``AutellixScheduler``: a request for the context's tokens that
  vLLM admits, loads from the host asynchronously and that is then withdrawn, its blocks kept by
  the context), issued only when it fits in free memory, a few per step; its blocks are taken
  from the GPU prefix cache without any copy when they are still there. A context not prefetched
  is loaded by the connector when its call arrives, as any prefix on the host.
* **host eviction**: :class:`AutellixCachePolicy` (the connector's ``eviction_policy``, set by
  the plug-in unless the user named one) evicts chunks of ended or dropped programs first, then
  chunks no context holds (least recently used first), and the chunks of contexts last, the
  context due latest first.

Why the connector and not :mod:`autellix.kvswap` (``KVSwapper``, the paper's swap op). KVSwapper
copies between the worker's KV tensors and pinned host memory; inside vLLM those tensors live in
the worker processes, and the scheduler-side state (which GPU blocks hold which prefix, which host
slot holds which chunk, when a copy is done) is exactly what a ``KVConnectorBase_V1`` tracks: using
KVSwapper here means writing a second OffloadingConnector (worker side ``register_kv_caches`` /
``start_load_kv`` / ``get_finished``, scheduler side allocating GPU blocks and registering their
hashes in the prefix cache). vLLM's connector already does that with its own copy kernel
(``swap_blocks_batch``, one batched transfer per step, as KVSwapper's bulk copy);
``benches/bench_swap.py`` (results in ``benches/RESULTS.md``) measures KVSwapper against per-block
copies, and the same bench is the place to time ``swap_blocks_batch`` against it on a GPU. What the
connector cannot express, an eviction order by program and a load before the request arrives, is
what this module adds on top.

Limits: the plug-in maps GPU blocks to host chunks one to one, so the host tier needs the
connector's default ``blocks_per_chunk`` of 1 (with a larger chunk it is off: the planner has no
host tier, the connector still works as LRU write-through). Prefetching happens in the engine's
steps: an idle engine loads a context when its call arrives. The planner's host tier is the
connector's capacity less one GPU's worth of blocks, the room write-through needs
(:func:`planner_host_blocks`). Write-through costs PCIe bandwidth for every block computed,
one-call programs included; measuring that cost (and ``swap_blocks_batch`` against KVSwapper)
needs a GPU and is pending.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from vllm.v1.core.kv_cache_utils import get_block_hash, get_group_id
from vllm.v1.kv_offload.base import LookupResult, OffloadKey, ReqContext, make_offload_key
from vllm.v1.kv_offload.cpu.policies.base import CachePolicy, ChunkStatus

log = logging.getLogger("autellix.adapters.kv_host")

#: what the plug-in puts in ``kv_connector_extra_config`` where the user set nothing
POLICY_CONFIG = {
    "eviction_policy": "AutellixCachePolicy",
    "cache_policy_module_path": "autellix.adapters.kv_host",
}
#: the request context of the plug-in's own lookups (the CPU manager ignores it for lookups)
_LOOKUP = ReqContext(req_id="autellix-host-check")
_ON_HOST = (LookupResult.HIT, LookupResult.HIT_PENDING)


class AutellixCachePolicy(CachePolicy):  # type: ignore[misc]  # vLLM is Any to mypy
    """The host tier's eviction order, by the planner's view (:meth:`hold`, :meth:`doom`): chunks
    of ended or dropped contexts first, then chunks no context holds (least recently used
    first), then the host copies of contexts on the GPU (the context due latest first). Chunks
    of contexts the planner keeps *on the host* are never evicted: a store finding no other room
    is skipped (vLLM's behaviour when the host is full of chunks being read). Without a view
    (``kv_policy`` ``lru``, or plain ``vllm serve`` configured with it) it is an LRU policy."""

    def __init__(self, cache_capacity: int) -> None:
        super().__init__(cache_capacity)
        self.chunks: dict[OffloadKey, ChunkStatus] = {}
        #: every chunk, least recently used first (evictable or not)
        self._lru: OrderedDict[OffloadKey, None] = OrderedDict()
        self._evictable: set[OffloadKey] = set()
        #: chunk -> the contexts holding it; context -> its chunks, predicted next use, tier
        self._holders: dict[OffloadKey, set[int]] = {}
        self._keys: dict[int, list[OffloadKey]] = {}
        self._due: dict[int, float] = {}
        self._on_host: set[int] = set()
        #: chunks of ended or dropped contexts: evicted before anything else
        self._doomed: set[OffloadKey] = set()

    # -- the planner's view ----------------------------------------------------------------------

    def hold(self, context: int, keys: Sequence[OffloadKey], due: float, on_host: bool = False) -> None:
        """``context`` (held by the planner, on the host or on the GPU) is made of ``keys``; its
        next use is ``due``."""
        self._due[context] = due
        if on_host:
            self._on_host.add(context)
        else:
            self._on_host.discard(context)
        if context in self._keys:
            return
        self._keys[context] = list(keys)
        for key in keys:
            self._holders.setdefault(key, set()).add(context)
            self._doomed.discard(key)

    def doom(self, context: int) -> None:
        """The planner let ``context`` go (dropped, or its program ended): its chunks go first,
        unless another context holds them too."""
        self._due.pop(context, None)
        self._on_host.discard(context)
        for key in self._keys.pop(context, ()):
            holders = self._holders.get(key)
            if holders is None:
                continue
            holders.discard(context)
            if not holders:
                del self._holders[key]
                if key in self.chunks:
                    self._doomed.add(key)

    def held_contexts(self) -> int:
        return len(self._keys)

    # -- CachePolicy ------------------------------------------------------------------------------

    def get(self, key: OffloadKey) -> ChunkStatus | None:
        return self.chunks.get(key)

    def insert(self, key: OffloadKey, chunk: ChunkStatus, req_context: ReqContext) -> None:
        self.chunks[key] = chunk
        self._lru[key] = None
        self._lru.move_to_end(key)
        self._doomed.discard(key)
        if chunk.ref_cnt == 0:
            self._evictable.add(key)

    def remove(self, key: OffloadKey) -> None:
        del self.chunks[key]
        self._forget(key)

    def touch(self, keys: Iterable[OffloadKey], req_context: ReqContext) -> None:
        # tail first, as vLLM's LRU: a prefix's head is the last to go
        for key in reversed(list(keys)):
            if key in self._lru:
                self._lru.move_to_end(key)

    def evict(self, n: int, protected: set[OffloadKey]) -> list[tuple[OffloadKey, ChunkStatus]] | None:
        if n == 0:
            return []
        chosen: list[OffloadKey] = []
        taken: set[OffloadKey] = set()

        def take(keys: Iterable[OffloadKey]) -> bool:
            for key in keys:
                if len(chosen) == n:
                    return True
                if key in self._evictable and key not in protected and key not in taken:
                    chosen.append(key)
                    taken.add(key)
            return len(chosen) == n

        done = take(list(self._doomed)) or take(k for k in self._lru if k not in self._holders)
        if not done:
            pinned = {key for context in self._on_host for key in self._keys[context]}
            by_due = sorted(
                (c for c in self._keys if c not in self._on_host), key=lambda c: -self._due.get(c, 0.0)
            )
            done = take(key for c in by_due for key in reversed(self._keys[c]) if key not in pinned)
        if not done:
            return None  # atomic: nothing was changed
        out = [(key, self.chunks.pop(key)) for key in chosen]
        for key in chosen:
            self._forget(key)
        return out

    def clear(self) -> None:
        self.chunks.clear()
        self._lru.clear()
        self._evictable.clear()
        self._doomed.clear()

    def mark_evictable(self, key: OffloadKey) -> None:
        self._evictable.add(key)

    def mark_non_evictable(self, key: OffloadKey) -> None:
        self._evictable.discard(key)

    def _forget(self, key: OffloadKey) -> None:
        self._lru.pop(key, None)
        self._evictable.discard(key)
        self._doomed.discard(key)
        # a context's chunk that is gone is simply missing when the context is loaded


def connector_manager(scheduler: Any) -> tuple[Any, Any] | None:
    """The ``OffloadingConnector``'s scheduler side and its manager, if ``scheduler`` has one."""
    connector = getattr(scheduler, "connector", None)
    side = getattr(connector, "connector_scheduler", None)
    manager = getattr(side, "manager", None)
    if side is None or manager is None or not hasattr(side, "config"):
        return None
    return side, manager


def host_capacity_blocks(scheduler: Any) -> int:
    """The connector's CPU capacity in GPU blocks (0 without a usable connector)."""
    found = connector_manager(scheduler)
    if found is None:
        return 0
    side, manager = found
    chunks = int(getattr(manager, "_num_chunks", 0) or 0)
    return chunks * int(side.config.blocks_per_chunk)


def planner_host_blocks(scheduler: Any) -> int:
    """The planner's host tier: the connector's capacity less one GPU's worth of blocks, the
    room write-through needs for the blocks being stored (which the planner's contexts, never
    evicted, would otherwise crowd out)."""
    capacity = host_capacity_blocks(scheduler)
    return max(0, capacity - int(scheduler.kv_cache_config.num_blocks))


class HostTier:
    """What :class:`autellix.adapters.kv_retention.RetainedContexts` needs of the host tier: a
    context's host keys, whether they are all stored, and the eviction policy's view."""

    def __init__(self, manager: Any, policy: AutellixCachePolicy | None, pool: Any) -> None:
        self.manager = manager
        self.policy = policy
        self.pool = pool

    def cached_block(self, block_hash: Any) -> Any:
        """The GPU block vLLM's prefix cache holds for this group-tagged hash, or ``None``."""
        found = self.pool.get_cached_block(get_block_hash(block_hash), [get_group_id(block_hash)])
        return found[0] if found else None

    def keys(self, blocks: Sequence[Any]) -> list[Hashable]:
        """The host chunks of these (hashed) GPU blocks: one each (``blocks_per_chunk`` 1)."""
        return [
            make_offload_key(get_block_hash(block.block_hash), get_group_id(block.block_hash))
            for block in blocks
            if block.block_hash is not None
        ]

    def stored(self, keys: Sequence[Hashable]) -> bool:
        """Every chunk is on the host, or being written there (a GPU block with a pending store
        is fenced by the connector until the store is done)."""
        with self.manager.lock:
            return all(self.manager.lookup(key, _LOOKUP) in _ON_HOST for key in keys)

    def loadable(self, keys: Sequence[Hashable]) -> bool:
        """Every chunk is on the host, ready to load now."""
        with self.manager.lock:
            return all(self.manager.lookup(key, _LOOKUP) == LookupResult.HIT for key in keys)

    def hold(self, context: int, keys: Sequence[Hashable], due: float, on_host: bool) -> None:
        if self.policy is not None:
            self.policy.hold(context, keys, due, on_host)

    def doom(self, context: int) -> None:
        if self.policy is not None:
            self.policy.doom(context)


def make_host_tier(scheduler: Any) -> HostTier | None:
    """The host tier over ``scheduler``'s offloading connector; ``None`` (logged) if it has none
    or one the plug-in cannot map blocks to."""
    found = connector_manager(scheduler)
    if found is None:
        return None
    side, manager = found
    config = side.config
    hashes = {g.hashes_per_chunk for g in config.kv_group_configs}
    if int(config.blocks_per_chunk) != 1 or hashes != {1}:
        log.warning(
            "autellix: the KV planner's host tier needs the offloading connector's blocks_per_chunk 1 "
            "(found %s): the planner drops instead of offloading; the connector still caches on the host",
            config.blocks_per_chunk,
        )
        return None
    if getattr(config, "offload_prompt_only", False):
        log.warning(
            "autellix: offload_prompt_only is on: an agent's next call continues the previous "
            "call's output, which is then never on the host (set it to false)"
        )
    policy = getattr(manager, "_policy", None)
    pool = scheduler.kv_cache_manager.block_pool
    return HostTier(manager, policy if isinstance(policy, AutellixCachePolicy) else None, pool)


def configure(vllm_config: Any) -> None:
    """Before vLLM builds the connector (``kv_policy`` autellix): the offloading connector, if
    configured, gets :class:`AutellixCachePolicy` and ``offload_prompt_only`` false, unless the
    user set them."""
    transfer = getattr(vllm_config, "kv_transfer_config", None)
    if transfer is None or getattr(transfer, "kv_connector", None) != "OffloadingConnector":
        return
    if transfer.kv_connector_extra_config is None:
        transfer.kv_connector_extra_config = {}
    extra = transfer.kv_connector_extra_config
    if "eviction_policy" not in extra:
        extra.update(POLICY_CONFIG)
    extra.setdefault("offload_prompt_only", False)
