"""Bulk KV swapping between an engine's device KV cache and a pinned host pool.

:class:`KVSwapper` moves a preempted call's KV blocks to host memory and back in bulk: one
:func:`~autellix.kvswap.ops.swap_blocks_multi` call per swap (one kernel launch or one batched
copy for every layer and block), never one copy per block. On CUDA the copy runs on the
swapper's own side stream, after the work already queued on the engine's current stream (so it
copies what that work wrote), and returns at once with a :class:`SwapHandle`; the engine calls
:meth:`SwapHandle.wait` only where it must (before it overwrites the device blocks it swapped
out, before it reads the blocks it swapped in), which makes its *current stream* wait on the
copy's event, not the host::

    swapper = KVSwapper(kv_caches, host_blocks=4096)     # kv_caches: per layer [num_blocks, ...]
    out = swapper.swap_out(call_id, [7, 3, 12])          # returns at once
    ...                                                   # compute goes on on the current stream
    out.wait()                                            # before blocks 7, 3, 12 are reused
    back = swapper.swap_in(call_id, [40, 41, 42])         # any free device blocks, same count
    back.wait()                                           # before attention reads them

On CPU (device cache on the CPU, or no CUDA) every copy is synchronous and every handle is ready
when it is returned.

**Host memory.** The pool mirrors each layer of the device cache with ``host_blocks`` blocks of the
same trailing shape, dtype and element order (an HND view gets an HND pool): one tensor
``[layers, host_blocks, ...]`` (per-layer views) when all layers agree, one tensor per layer
otherwise. It is pinned (page-locked) when CUDA is available, so device<->host copies are
asynchronous DMA; plain CPU memory otherwise. A free list hands out host blocks; nothing else in
the process may write to the pool.

**Ordering.** Every copy the swapper issues goes through its one side stream, so they run in the
order they were issued. That is why :meth:`KVSwapper.swap_in` and :meth:`KVSwapper.discard` may
return host blocks to the free list at once: a later swap-out that reuses them is queued behind
the copy that reads them. It is also why a swap-in may follow its swap-out before that finished.

**Errors.** Every check happens before anything is allocated or copied: a full pool raises
:class:`SwapPoolFullError`, an unknown key :class:`UnknownSwapError`, a key already swapped out
:class:`DuplicateSwapError`, device blocks out of range, repeated, not integers or (on swap-in)
not as many as were swapped out :class:`~autellix.exceptions.InvalidBlockMappingError`; all are
:class:`~autellix.exceptions.KVSwapError` (an :class:`~autellix.exceptions.AutellixError`), and the
swapper's state and both memories are as they were. A device cache the swapper cannot mirror
(layers with different block counts or devices) raises :class:`~autellix.exceptions.KVLayoutError`.

**Threads.** A swapper is not thread-safe: one thread (the engine's) owns it, as it owns the
engine's streams. Guard it with a lock if several threads must use it.

**Lifetime.** The pool is freed with the swapper; call :meth:`KVSwapper.synchronize` before
dropping one whose copies may still be running.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from autellix.exceptions import (
    ConfigError,
    DuplicateSwapError,
    InvalidBlockMappingError,
    KVLayoutError,
    SwapPoolFullError,
    UnknownSwapError,
)
from autellix.kvswap.ops import METHODS, Method, swap_blocks_multi

__all__ = ["KVSwapper", "SwapHandle", "SwapStats"]


@dataclass
class SwapStats:
    """What a :class:`KVSwapper` has moved since it was created (a copy; it does not change)."""

    swaps_out: int = 0
    swaps_in: int = 0
    discards: int = 0
    blocks_out: int = 0
    blocks_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0

    @property
    def swaps(self) -> int:
        """Swaps in both directions."""
        return self.swaps_out + self.swaps_in

    @property
    def blocks_moved(self) -> int:
        return self.blocks_out + self.blocks_in

    @property
    def bytes_moved(self) -> int:
        return self.bytes_out + self.bytes_in


class SwapHandle:
    """One swap in flight: :meth:`wait` orders later GPU work after it; :meth:`ready` polls it.

    On CPU the copy is done before the handle is returned: :meth:`ready` is true and :meth:`wait`
    does nothing.
    """

    __slots__ = ("_device", "_event", "_keepalive", "blocks", "bytes", "direction", "key")

    def __init__(
        self,
        key: Hashable,
        direction: str,
        blocks: int,
        nbytes: int,
        event: Any = None,
        keepalive: Any = None,
        device: Any = None,
    ) -> None:
        #: The swapped call's key.
        self.key = key
        #: ``"out"`` (device -> host) or ``"in"`` (host -> device).
        self.direction = direction
        #: Blocks moved (every layer of each).
        self.blocks = blocks
        #: Bytes moved, all layers together.
        self.bytes = nbytes
        self._event = event  # torch.cuda.Event recorded after the copy, or None (done already)
        self._keepalive = keepalive  # the mapping tensor, alive until the copy has run
        self._device = device  # the CUDA device of the copy

    def ready(self) -> bool:
        """Whether the copy has finished (never blocks)."""
        if self._event is None:
            return True
        if self._event.query():
            self._event = self._keepalive = None
            return True
        return False

    def wait(self, stream: Any = None) -> None:
        """Make ``stream`` (default: the current CUDA stream) wait for the copy; the host goes on.

        Call it before work on that stream touches the blocks: before overwriting the device
        blocks of a swap-out, before reading the device blocks of a swap-in.
        """
        if self._event is None:
            return
        if stream is None:
            import torch

            stream = torch.cuda.current_stream(self._device)
        stream.wait_event(self._event)

    def synchronize(self) -> None:
        """Block the host until the copy has finished (tests, benchmarks, shutdown)."""
        if self._event is not None:
            self._event.synchronize()
            self._event = self._keepalive = None

    def __repr__(self) -> str:
        state = "ready" if self._event is None else "in flight"
        return f"SwapHandle(key={self.key!r}, {self.direction}, {self.blocks} blocks, {state})"


@dataclass
class _Swapped:
    host_blocks: list[int]
    handle: SwapHandle


class KVSwapper:
    """Swaps calls' KV blocks between a device KV cache and a host pool of ``host_blocks`` blocks.

    ``device_cache``: the engine's KV cache, one tensor per layer (per-layer tensors of vLLM
    0.33's layout, e.g. ``[num_blocks, kv_heads, block_size, 2 * head_size]``; separate K and V
    tensors are simply more "layers"), block axis 0, all with the same number of blocks on one
    device. ``host_blocks``: the pool's size in blocks (a block = that block index in every layer).
    ``pin_memory``: pin the pool (default: whether CUDA is available; pinning needs CUDA).
    ``stream``: the side stream for the copies (default: a new one; CUDA caches only).
    ``method``: the copy op's CUDA copy engine (:func:`~autellix.kvswap.ops.swap_blocks_multi`).

    See the module documentation for the ordering guarantees, errors and threading.
    """

    def __init__(
        self,
        device_cache: Sequence[Any],
        host_blocks: int,
        *,
        pin_memory: bool | None = None,
        stream: Any = None,
        method: Method = "auto",
    ) -> None:
        import torch

        layers = list(device_cache)
        if not layers:
            raise KVLayoutError("KVSwapper needs a device cache of at least one layer tensor")
        for i, t in enumerate(layers):
            if not isinstance(t, torch.Tensor) or t.dim() < 1:
                raise KVLayoutError(f"device cache layer {i} is not a tensor with a block axis (dim 0)")
        num_blocks, device = layers[0].shape[0], layers[0].device
        for i, t in enumerate(layers):
            if t.shape[0] != num_blocks or t.device != device:
                raise KVLayoutError(
                    f"device cache layer {i} has {t.shape[0]} blocks on {t.device}; layer 0 has "
                    f"{num_blocks} on {device}: every layer needs the same block count and device"
                )
        if isinstance(host_blocks, bool) or not isinstance(host_blocks, int) or host_blocks < 0:
            raise ConfigError(f"host_blocks must be an integer >= 0, got {host_blocks!r}")
        cuda = torch.cuda.is_available()
        if pin_memory is None:
            pin_memory = cuda
        elif pin_memory and not cuda:
            raise ConfigError("pin_memory=True needs CUDA, which is not available")
        if device.type == "cuda" and not pin_memory:
            raise KVLayoutError("a CUDA device cache needs a pinned host pool (pin_memory=False given)")
        if device.type != "cuda" and stream is not None:
            raise ConfigError(f"a side stream needs a CUDA device cache; this one is on {device}")
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self._device_cache = layers
        self._num_device_blocks = int(num_blocks)
        self._device = device
        self._pinned = bool(pin_memory)
        self._method: Method = method
        self._host_cache = self._allocate_pool(layers, host_blocks, self._pinned)
        # The copy op's layout checks, now rather than at the first swap (an empty mapping
        # copies nothing): KVLayoutError for a device cache whose blocks are not dense ranges.
        empty = torch.empty((0, 2), dtype=torch.int64)
        swap_blocks_multi(layers, self._host_cache, empty, method=method)
        swap_blocks_multi(self._host_cache, layers, empty, method=method)
        self._host_blocks = host_blocks
        #: Free host blocks; popped from the end, so a fresh pool hands out 0, 1, 2, ...
        self._free: list[int] = list(range(host_blocks - 1, -1, -1))
        self._swapped: dict[Hashable, _Swapped] = {}
        self._block_bytes = int(sum(math.prod(t.shape[1:]) * t.element_size() for t in layers))
        self._stats = SwapStats()
        self._stream: Any = None
        if device.type == "cuda":
            self._stream = stream if stream is not None else torch.cuda.Stream(device=device)

    @staticmethod
    def _allocate_pool(layers: list[Any], blocks: int, pinned: bool) -> list[Any]:
        """Host tensors ``[blocks, ...]`` whose blocks are dense and order their elements as the
        device layers do (an HND view of an NHD buffer, say), which the copy op requires."""
        import torch

        def order(t: Any) -> list[int]:  # dims after the block axis, outermost first in memory
            return sorted(range(1, t.dim()), key=lambda d: -t.stride(d))

        def allocate(lead: tuple[int, ...], t: Any) -> Any:
            dims = order(t)
            pool = torch.empty((*lead, *(t.shape[d] for d in dims)), dtype=t.dtype, pin_memory=pinned)
            back = [0] * len(dims)  # permute the allocation back to the layer's dim order
            for i, d in enumerate(dims):
                back[d - 1] = i + len(lead)
            return pool.permute(*range(len(lead)), *back)

        kinds = {(tuple(t.shape[1:]), t.dtype, tuple(order(t))) for t in layers}
        if len(kinds) == 1:
            # One allocation for the whole pool (one page-locking call, one contiguous region).
            return list(allocate((len(layers), blocks), layers[0]).unbind(0))
        return [allocate((blocks,), t) for t in layers]

    # -- state ----------------------------------------------------------------------------------

    @property
    def host_blocks(self) -> int:
        """Size of the host pool in blocks."""
        return self._host_blocks

    @property
    def free_blocks(self) -> int:
        """Host blocks not holding a swapped-out call."""
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        """Host blocks holding swapped-out calls."""
        return self._host_blocks - len(self._free)

    @property
    def device_blocks(self) -> int:
        """Blocks in the device cache (valid device block indices are ``0 .. device_blocks - 1``)."""
        return self._num_device_blocks

    @property
    def block_bytes(self) -> int:
        """Bytes of one block over all layers (what one block costs to move)."""
        return self._block_bytes

    @property
    def pinned(self) -> bool:
        """Whether the host pool is page-locked."""
        return self._pinned

    @property
    def device(self) -> Any:
        """The device cache's ``torch.device``."""
        return self._device

    @property
    def stream(self) -> Any:
        """The side CUDA stream the copies run on; ``None`` for a CPU device cache."""
        return self._stream

    @property
    def host_cache(self) -> list[Any]:
        """The host pool, one tensor per layer ``[host_blocks, ...]`` (for inspection: never write
        it; read it only after :meth:`SwapHandle.synchronize`)."""
        return list(self._host_cache)

    @property
    def swapped(self) -> tuple[Hashable, ...]:
        """Keys of the calls swapped out now, oldest swap first."""
        return tuple(self._swapped)

    def __contains__(self, key: object) -> bool:
        return key in self._swapped

    def __len__(self) -> int:
        return len(self._swapped)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(tuple(self._swapped))

    def blocks_of(self, key: Hashable) -> int:
        """How many blocks ``key`` has swapped out (:class:`UnknownSwapError` if none)."""
        return len(self._entry(key).host_blocks)

    def handle_of(self, key: Hashable) -> SwapHandle:
        """The swap-out handle of ``key`` (:class:`UnknownSwapError` if it is not swapped out)."""
        return self._entry(key).handle

    @property
    def stats(self) -> SwapStats:
        """Swaps, blocks and bytes moved so far (a snapshot)."""
        return replace(self._stats)

    # -- swapping -------------------------------------------------------------------------------

    def swap_out(self, key: Hashable, device_blocks: Sequence[int] | Any) -> SwapHandle:
        """Copy ``device_blocks`` (every layer) of call ``key`` into free host blocks.

        Returns at once; on CUDA the copy runs on the side stream after the work queued so far
        on the current stream. The device blocks may be reused once the handle is waited for.
        """
        if key in self._swapped:
            raise DuplicateSwapError(f"call {key!r} is already swapped out ({self.blocks_of(key)} blocks)")
        blocks = self._check_device_blocks(device_blocks)
        n = len(blocks)
        if n > len(self._free):
            raise SwapPoolFullError(
                f"swapping out call {key!r} needs {n} host blocks; {len(self._free)} of "
                f"{self._host_blocks} are free"
            )
        host = [self._free.pop() for _ in range(n)]
        try:
            handle = self._copy(key, "out", blocks, host, self._device_cache, self._host_cache)
        except BaseException:
            self._free.extend(reversed(host))
            raise
        self._swapped[key] = _Swapped(host, handle)
        s = self._stats
        s.swaps_out += 1
        s.blocks_out += n
        s.bytes_out += handle.bytes
        return handle

    def swap_in(self, key: Hashable, device_blocks: Sequence[int] | Any) -> SwapHandle:
        """Copy call ``key``'s swapped-out blocks into ``device_blocks``, in the order they were
        swapped out (the i-th block swapped out lands in ``device_blocks[i]``; any free device
        blocks, as many as were swapped out), then free its host blocks.

        Returns at once; wait for the handle before reading the device blocks.
        """
        entry = self._entry(key)
        blocks = self._check_device_blocks(device_blocks)
        if len(blocks) != len(entry.host_blocks):
            raise InvalidBlockMappingError(
                f"call {key!r} swapped out {len(entry.host_blocks)} blocks; "
                f"swap_in got {len(blocks)} device blocks"
            )
        handle = self._copy(key, "in", entry.host_blocks, blocks, self._host_cache, self._device_cache)
        del self._swapped[key]
        # Safe at once: any later copy into these host blocks is queued behind this one.
        self._free.extend(reversed(entry.host_blocks))
        s = self._stats
        s.swaps_in += 1
        s.blocks_in += len(blocks)
        s.bytes_in += handle.bytes
        return handle

    def discard(self, key: Hashable) -> int:
        """Drop call ``key``'s host copy (it will be recomputed, or it finished); returns the
        number of host blocks freed."""
        entry = self._entry(key)
        del self._swapped[key]
        self._free.extend(reversed(entry.host_blocks))
        self._stats.discards += 1
        return len(entry.host_blocks)

    def synchronize(self) -> None:
        """Block the host until every copy issued so far has finished."""
        if self._stream is not None:
            self._stream.synchronize()

    # -- internals ------------------------------------------------------------------------------

    def _entry(self, key: Hashable) -> _Swapped:
        try:
            return self._swapped[key]
        except KeyError:
            raise UnknownSwapError(f"call {key!r} is not swapped out") from None
        except TypeError:  # unhashable key: cannot be swapped out either
            raise UnknownSwapError(f"call {key!r} is not swapped out") from None

    def _check_device_blocks(self, device_blocks: Sequence[int] | Any) -> list[int]:
        import torch

        if isinstance(device_blocks, torch.Tensor):
            if (
                device_blocks.dim() != 1
                or device_blocks.dtype.is_floating_point
                or device_blocks.dtype == torch.bool
            ):
                raise InvalidBlockMappingError(
                    f"device blocks must be a 1-D integer tensor, got {device_blocks.dtype} of shape "
                    f"{tuple(device_blocks.shape)}"
                )
            device_blocks = device_blocks.tolist()
        try:
            blocks = [_block_index(b) for b in device_blocks]
        except TypeError:
            raise InvalidBlockMappingError(f"device blocks must be integers, got {device_blocks!r}") from None
        bad = [b for b in blocks if not 0 <= b < self._num_device_blocks]
        if bad:
            raise InvalidBlockMappingError(
                f"device block {bad[0]} is out of range: "
                f"the device cache has {self._num_device_blocks} blocks"
            )
        if len(set(blocks)) != len(blocks):
            seen: set[int] = set()
            for b in blocks:
                if b in seen:
                    raise InvalidBlockMappingError(f"device block {b} appears more than once")
                seen.add(b)
        return blocks

    def _copy(
        self,
        key: Hashable,
        direction: str,
        src: list[int],
        dst: list[int],
        src_layers: list[Any],
        dst_layers: list[Any],
    ) -> SwapHandle:
        import torch

        n = len(src)
        nbytes = n * self._block_bytes
        if n == 0:
            return SwapHandle(key, direction, 0, 0)
        mapping = torch.tensor([src, dst], dtype=torch.int64).t().contiguous()
        if self._stream is None:
            swap_blocks_multi(src_layers, dst_layers, mapping, method=self._method)
            return SwapHandle(key, direction, n, nbytes)
        # The copy must see what the engine's queued work writes (swap-out) and must not
        # overwrite blocks that work still reads (swap-in): start it after that work.
        self._stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(self._stream):
            swap_blocks_multi(src_layers, dst_layers, mapping, method=self._method)
        event = torch.cuda.Event()
        event.record(self._stream)
        return SwapHandle(key, direction, n, nbytes, event, mapping, self._device)


def _block_index(b: Any) -> int:
    """``b`` as a block index: an integer (Python, numpy or 0-d tensor), never a bool."""
    if isinstance(b, bool):
        raise TypeError("a device block is an integer, not a bool")
    return operator.index(b)
