"""Typed wrappers of ``torch.ops.autellix.swap_blocks`` / ``swap_blocks_multi``.

Layout contract (vLLM's legacy ``swap_blocks`` convention, applied to vLLM 0.33's paged cache):

- ``src`` and ``dst`` hold KV blocks along dim 0 and have equal dtypes and equal shapes after
  it, e.g. one layer's ``[B, H, N, C]`` view (blocks, KV heads, block size, packed K+V bytes).
  Each block must be one dense memory range, laid out the same way in ``src`` and ``dst``
  (vLLM's NHD and HND views both qualify); the block stride may be anything else (``BL*`` layouts).
- ``block_mapping`` is ``[n, 2]`` rows ``(src_block, dst_block)``: an int64 CPU tensor or a
  sequence of pairs. Destination blocks must be distinct. An empty mapping is a no-op.
- A host<->device copy needs pinned host memory (``tensor.pin_memory()``); both sides on the
  GPU must share one device. The copy runs on the current CUDA stream and is asynchronous to
  the host, like any CUDA op. If ``src`` and ``dst`` share memory, a block that is both read
  and written gives an undefined result.

Every check runs before the copy and raises :class:`~autellix.exceptions.InvalidBlockMappingError`
or :class:`~autellix.exceptions.KVLayoutError` with ``dst`` untouched. The compiled op repeats the
checks in C++ so that calling ``torch.ops.autellix.*`` directly cannot write out of bounds either.

``method`` chooses the CUDA copy engine: ``"kernel"`` (one launch, SMs copy, zero-copy for
pinned host memory), ``"memcpy_batch"`` (one ``cudaMemcpyBatchAsync``, copy engines; host<->device
only, CUDA >= 12.8, not on the legacy default stream) or ``"auto"`` (memcpy_batch for
host<->device pages >= 32 KiB when it can run, else kernel; rule in ``csrc/swap_blocks_cuda.cu``).
The CPU kernel and the reference ignore it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from autellix.exceptions import InvalidBlockMappingError, KVLayoutError, KVSwapError
from autellix.kvswap import _build

if TYPE_CHECKING:
    import torch

Backend = Literal["cuda", "cpu", "reference"]
Method = Literal["auto", "kernel", "memcpy_batch"]
METHODS: tuple[Method, ...] = ("auto", "kernel", "memcpy_batch")

# A block mapping as the caller may give it: an [n, 2] integer tensor or (src, dst) pairs.
BlockMapping = Any


def ops_backend() -> Backend:
    """The implementation :func:`swap_blocks` uses in this process: ``"cuda"`` (the CUDA build of
    the compiled ops, CPU kernels included), ``"cpu"`` (the CPU build) or ``"reference"`` (pure
    torch, when compiling failed or ``AUTELLIX_OPS_BACKEND=reference``). The first call builds or
    loads the ops (see :mod:`autellix.kvswap._build`)."""
    return _build.load_ops()


def swap_blocks(
    src: torch.Tensor, dst: torch.Tensor, block_mapping: BlockMapping, *, method: Method = "auto"
) -> None:
    """``dst[d] = src[s]`` for every row ``(s, d)`` of ``block_mapping``, in one operation."""
    swap_blocks_multi([src], [dst], block_mapping, method=method)


def swap_blocks_multi(
    src_layers: Sequence[torch.Tensor] | torch.Tensor,
    dst_layers: Sequence[torch.Tensor] | torch.Tensor,
    block_mapping: BlockMapping,
    *,
    method: Method = "auto",
) -> None:
    """:func:`swap_blocks` for every layer with the same mapping, in one launch / one batched copy.

    ``src_layers`` / ``dst_layers``: one tensor per layer (vLLM 0.33's per-layer ``[B, H, N, C]``
    views), or a stacked ``[L, B, ...]`` tensor, which is split along dim 0."""
    import torch

    src = _layers(src_layers, "src")
    dst = _layers(dst_layers, "dst")
    if method not in METHODS:
        raise KVSwapError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    mapping = _mapping(block_mapping)
    _check(src, dst, mapping)
    if mapping.shape[0] == 0 or not src:
        return
    backend = ops_backend()
    on_cuda = any(t.is_cuda for t in (src[0], dst[0]))
    if backend == "reference" or (backend == "cpu" and on_cuda):
        for s, d in zip(src, dst, strict=True):
            _reference(s, d, mapping)
    elif len(src) == 1:
        torch.ops.autellix.swap_blocks.default(src[0], dst[0], mapping, method)
    else:
        torch.ops.autellix.swap_blocks_multi.default(src, dst, mapping, method)


def reference_swap_blocks(src: torch.Tensor, dst: torch.Tensor, block_mapping: BlockMapping) -> None:
    """Pure-torch ``dst[d] = src[s]``: the fallback and the tests' oracle (no layout checks)."""
    _reference(src, dst, _mapping(block_mapping))


def reference_swap_blocks_multi(
    src_layers: Sequence[torch.Tensor] | torch.Tensor,
    dst_layers: Sequence[torch.Tensor] | torch.Tensor,
    block_mapping: BlockMapping,
) -> None:
    """:func:`reference_swap_blocks` for every layer."""
    mapping = _mapping(block_mapping)
    for s, d in zip(_layers(src_layers, "src"), _layers(dst_layers, "dst"), strict=True):
        _reference(s, d, mapping)


def _reference(src: torch.Tensor, dst: torch.Tensor, mapping: torch.Tensor) -> None:
    if mapping.shape[0] == 0:
        return
    pages = src.index_select(0, mapping[:, 0].to(src.device))
    dst.index_copy_(0, mapping[:, 1].to(dst.device), pages.to(dst.device))


def _layers(layers: Sequence[torch.Tensor] | torch.Tensor, what: str) -> list[torch.Tensor]:
    import torch

    if isinstance(layers, torch.Tensor):
        if layers.dim() < 2:
            raise KVLayoutError(f"stacked {what} layers need shape [L, B, ...], got {tuple(layers.shape)}")
        return list(layers.unbind(0))
    result = list(layers)
    for i, t in enumerate(result):
        if not isinstance(t, torch.Tensor):
            raise KVLayoutError(f"{what}[{i}] is a {type(t).__name__}, not a torch.Tensor")
    return result


def _mapping(block_mapping: BlockMapping) -> torch.Tensor:
    """``block_mapping`` as a contiguous int64 CPU ``[n, 2]`` tensor."""
    import torch

    if isinstance(block_mapping, torch.Tensor):
        if block_mapping.device.type != "cpu":
            # Validating a device tensor would synchronize with the GPU; the op wants it on the host.
            raise InvalidBlockMappingError(
                f"block_mapping must be a CPU tensor, got one on {block_mapping.device}"
            )
        if (
            block_mapping.dtype.is_floating_point
            or block_mapping.dtype.is_complex
            or block_mapping.dtype == torch.bool
        ):
            raise InvalidBlockMappingError(f"block_mapping must hold integers, got {block_mapping.dtype}")
        mapping = block_mapping.to(torch.int64).contiguous()
    else:
        pairs = list(block_mapping)
        if not pairs:
            return torch.empty((0, 2), dtype=torch.int64)
        try:
            mapping = torch.tensor(pairs, dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidBlockMappingError(f"block_mapping must be (src, dst) integer pairs: {exc}") from exc
    if mapping.numel() == 0:
        return mapping.reshape(0, 2)
    if mapping.dim() != 2 or mapping.shape[1] != 2:
        raise InvalidBlockMappingError(f"block_mapping must have shape [n, 2], got {tuple(mapping.shape)}")
    return mapping


def _page_is_dense(t: torch.Tensor) -> bool:
    """Whether one block (a dim-0 slice) of ``t`` is a single dense memory range, in any dim order."""
    dims = sorted((t.stride(d), t.size(d)) for d in range(1, t.dim()) if t.size(d) != 1)
    if any(size == 0 for _, size in dims):
        return True
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _check(src: list[torch.Tensor], dst: list[torch.Tensor], mapping: torch.Tensor) -> None:
    """The C++ checks of ``csrc/swap_blocks.h``, as typed errors."""
    import torch

    if len(src) != len(dst):
        raise KVLayoutError(f"{len(src)} src layers but {len(dst)} dst layers")
    for i, (s, d) in enumerate(zip(src, dst, strict=True)):
        if s.dtype != d.dtype:
            raise KVLayoutError(f"layer {i}: src dtype {s.dtype} != dst dtype {d.dtype}")
        if s.dim() == 0 or s.shape[1:] != d.shape[1:] or s.dim() != d.dim():
            raise KVLayoutError(
                f"layer {i}: src {tuple(s.shape)} and dst {tuple(d.shape)} must be [blocks, ...] "
                "with equal shapes after the block axis"
            )
        for t, what in ((s, "src"), (d, "dst")):
            if t.shape[0] > 0 and not _page_is_dense(t):
                raise KVLayoutError(
                    f"layer {i}: each {what} block must be one dense memory range, got shape "
                    f"{tuple(t.shape)} strides {t.stride()}"
                )
            if t.shape[0] > 1 and t.stride(0) < t[0].numel():
                raise KVLayoutError(f"layer {i}: {what} blocks overlap (stride(0) = {t.stride(0)})")
        if any(s.size(k) > 1 and s.stride(k) != d.stride(k) for k in range(1, s.dim())):
            raise KVLayoutError(
                f"layer {i}: src and dst order a block's elements differently "
                f"(strides {s.stride()} vs {d.stride()})"
            )
        if s.shape[0] != src[0].shape[0] or d.shape[0] != dst[0].shape[0]:
            raise KVLayoutError(
                f"layer {i} has {s.shape[0]} src / {d.shape[0]} dst blocks, layer 0 has "
                f"{src[0].shape[0]} / {dst[0].shape[0]}"
            )
        if s.device != src[0].device or d.device != dst[0].device:
            raise KVLayoutError(
                f"layer {i} is on {s.device} -> {d.device}, layer 0 on {src[0].device} -> {dst[0].device}"
            )
    if src:
        _check_devices(src[0], dst[0], src + dst)
    n = mapping.shape[0]
    if n == 0 or not src:
        return
    lo = mapping.amin(0).tolist()
    hi = mapping.amax(0).tolist()
    blocks = (src[0].shape[0], dst[0].shape[0])
    for col, what in ((0, "src"), (1, "dst")):
        if lo[col] < 0 or hi[col] >= blocks[col]:
            bad = int(((mapping[:, col] < 0) | (mapping[:, col] >= blocks[col])).nonzero()[0, 0])
            raise InvalidBlockMappingError(
                f"block_mapping[{bad}]: {what} block {int(mapping[bad, col])} out of range [0, {blocks[col]})"
            )
    if torch.unique(mapping[:, 1]).numel() != n:
        raise InvalidBlockMappingError("block_mapping lists a destination block more than once")


def _check_devices(src: torch.Tensor, dst: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    for t in (src, dst):
        if t.device.type not in ("cpu", "cuda"):
            raise KVLayoutError(f"tensors must be on the CPU or a CUDA device, got {t.device}")
    if src.is_cuda and dst.is_cuda and src.device != dst.device:
        raise KVLayoutError(
            f"src on {src.device} and dst on {dst.device}: copies between two GPUs are not supported"
        )
    if src.is_cuda != dst.is_cuda:
        # The kernel reads/writes host memory through its device mapping, and DMA needs it
        # page-locked: pageable memory would silently serialize (or fault).
        for t in tensors:
            if not t.is_cuda and not t.is_pinned():
                raise KVLayoutError(
                    "host tensors of a host<->device copy must be pinned (tensor.pin_memory())"
                )
