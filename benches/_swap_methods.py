"""``bench_swap.py``'s copy methods: the KV cache they move, one swap by each, its check, its timing."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from autellix.kvswap import KVSwapper, swap_blocks_multi
from autellix.testing import vllm_swap

#: Methods that only mean something on CUDA (the CPU kernel ignores the copy engine).
CUDA_ONLY = ("bulk_kernel", "bulk_memcpy_batch", "vllm_per_block", "vllm_batch")
DIRECTIONS = ("d2h", "h2d")
#: Swaps up to this many blocks are checked byte for byte after each method.
CHECK_BLOCKS = 100


# ----------------------------------------------------------------------------------- layout


class Layout:
    """The device KV cache and the swapper's host pool of one run."""

    def __init__(self, args: argparse.Namespace, blocks: int, device: torch.device) -> None:
        self.device = device
        self.blocks = blocks
        c = 2 * args.head_dim if args.layout == "packed" else args.head_dim
        page_shape = (args.kv_heads, args.block_tokens, c)
        tensors = args.layers * (1 if args.layout == "packed" else 2)
        # vLLM 0.33's physical order: one [L, B, H, N, C] allocation, per-layer views.
        self.cache = torch.empty((tensors, blocks, *page_shape), dtype=torch.bfloat16, device=device)
        # In place: a temporary as large as the cache would halve the sizes that fit.
        self.cache.normal_(generator=torch.Generator(device=device).manual_seed(args.seed))
        self.layers = list(self.cache.unbind(0))
        self.swapper = KVSwapper(self.layers, host_blocks=blocks)
        self.host = self.swapper.host_cache
        self.page_bytes = math.prod(page_shape) * self.cache.element_size()
        self.tensors = tensors

    def bytes(self, n: int) -> int:
        return n * self.tensors * self.page_bytes


def _block_sets(n: int, blocks: int, seed: int) -> tuple[list[int], list[int]]:
    """``n`` distinct random device blocks and ``n`` distinct random host blocks."""
    gen = torch.Generator().manual_seed(seed + n)
    dev = torch.randperm(blocks, generator=gen)[:n].tolist()
    host = torch.randperm(blocks, generator=gen)[:n].tolist()
    return dev, host


# ---------------------------------------------------------------------------------- methods


def _prepare(
    method: str, layout: Layout, direction: str, dev: list[int], host: list[int], vops: Any, link: Any
) -> Callable[[], Any]:
    """A closure doing one swap with ``method`` (built outside the timed region)."""
    d2h = direction == "d2h"
    src_layers, dst_layers = (layout.layers, layout.host) if d2h else (layout.host, layout.layers)
    src_blocks, dst_blocks = (dev, host) if d2h else (host, dev)
    pairs = list(zip(src_blocks, dst_blocks, strict=True))
    mapping = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)
    if method.startswith("bulk"):
        engine = {"bulk": "auto", "bulk_kernel": "kernel", "bulk_memcpy_batch": "memcpy_batch"}[method]
        return lambda: swap_blocks_multi(src_layers, dst_layers, mapping, method=engine)
    if method == "per_block":

        def loop() -> None:
            for src, dst in zip(src_layers, dst_layers, strict=True):
                for s, d in pairs:
                    dst[d].copy_(src[s], non_blocking=True)

        return loop
    if method == "vllm_per_block":
        return vllm_swap.per_block_swap(vops, src_layers, dst_layers, layout.page_bytes, mapping)
    if method == "vllm_batch":
        return vllm_swap.batch_swap(vops, src_layers, dst_layers, layout.page_bytes, mapping)
    if method == "link":
        host_buf, dev_buf = link
        nbytes = min(layout.bytes(len(dev)), host_buf.numel())
        a, b = (dev_buf[:nbytes], host_buf[:nbytes]) if d2h else (host_buf[:nbytes], dev_buf[:nbytes])
        return lambda: b.copy_(a, non_blocking=True)
    raise ValueError(method)


def _swapper_closure(layout: Layout, direction: str, dev: list[int]) -> Callable[[], Any]:
    swapper = layout.swapper
    if direction == "d2h":

        def out() -> Any:
            handle = swapper.swap_out("bench", dev)
            handle.wait()
            return handle

        return out

    def back() -> Any:
        handle = swapper.swap_in("bench", dev)
        handle.wait()
        return handle

    return back


def _check(layout: Layout, direction: str, method: str, dev: list[int], host: list[int]) -> bool:
    """Whether the last swap by ``method`` left the destination blocks equal to the sources."""
    if method == "link":
        return True
    if method == "swapper":
        return True  # checked by _check_swapper (its host blocks are its own)
    d = torch.tensor(dev, dtype=torch.int64, device=layout.device)
    h = torch.tensor(host, dtype=torch.int64)
    for dev_t, host_t in zip(layout.layers, layout.host, strict=True):
        a = dev_t.index_select(0, d).cpu().view(torch.uint8)
        b = host_t.index_select(0, h).view(torch.uint8)
        if not torch.equal(a, b):
            return False
    return True


def _check_swapper(layout: Layout, direction: str, dev: list[int]) -> bool:
    """Round trip through the swapper: out, scribble on the device blocks, back in, compare."""
    swapper = layout.swapper
    if "bench" in swapper:
        swapper.discard("bench")
    d = torch.tensor(dev, dtype=torch.int64, device=layout.device)
    before = [t.index_select(0, d).cpu() for t in layout.layers]
    swapper.swap_out("bench", dev).synchronize()
    for t in layout.layers:
        t.index_fill_(0, d, 0)
    swapper.swap_in("bench", dev).synchronize()
    return all(
        torch.equal(b.view(torch.uint8), t.index_select(0, d).cpu().view(torch.uint8))
        for b, t in zip(before, layout.layers, strict=True)
    )


# ----------------------------------------------------------------------------------- timing


class Timer:
    """Seconds of one call: CUDA events on the current stream, or ``perf_counter`` on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            self.start.record()
            fn()
            self.end.record()
            self.end.synchronize()
            return float(self.start.elapsed_time(self.end)) / 1e3
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t


def _measure(
    timer: Timer, fn: Callable[[], Any], repeats: int, max_repeats: int, before: Callable[[], Any]
) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after a warm-up (more runs, up to
    ``max_repeats``, while they add up to under 0.2 s; at most 2 when one takes over 0.5 s, as
    the per-block loop over thousands of blocks does); ``before`` runs untimed before each."""
    before()
    warm = timer(fn)
    if warm > 0.5:
        runs = min(repeats, 2)
    else:
        runs = max(repeats, min(max_repeats, int(0.2 / max(warm, 1e-6))))
    times = []
    for _ in range(runs):
        before()
        times.append(timer(fn))
    return statistics.median(times)


def run_cell(
    layout: Layout,
    timer: Timer,
    args: argparse.Namespace,
    method: str,
    direction: str,
    n: int,
    vops: Any,
    link: Any,
) -> dict[str, Any]:
    """One row of the result: ``n`` blocks moved ``direction`` by ``method``, timed and checked."""
    dev, host = _block_sets(n, layout.blocks, args.seed)
    nbytes = layout.bytes(n)
    copies = n * layout.tensors if method in ("per_block", "vllm_per_block") else 1
    row: dict[str, Any] = {
        "method": method,
        "direction": direction,
        "blocks": n,
        "bytes": nbytes,
        "copies": copies,
    }
    swapper = layout.swapper
    if method == "swapper":
        fn = _swapper_closure(layout, direction, dev)
        if direction == "d2h":

            def before() -> None:
                if "bench" in swapper:
                    swapper.discard("bench")

        else:

            def before() -> None:
                if "bench" not in swapper:
                    swapper.swap_out("bench", dev).synchronize()

        seconds = _measure(timer, fn, args.repeats, args.max_repeats, before)
        if n <= CHECK_BLOCKS:
            row["checked"] = _check_swapper(layout, direction, dev)
        if "bench" in swapper:
            swapper.discard("bench")
    else:
        fn = _prepare(method, layout, direction, dev, host, vops, link)
        seconds = _measure(timer, fn, args.repeats, args.max_repeats, lambda: None)
        if method == "link":
            timed = min(nbytes, link[0].numel())
            row["bytes_timed"] = timed
            seconds *= nbytes / timed
        elif n <= CHECK_BLOCKS:
            row["checked"] = _check(layout, direction, method, dev, host)
    row["seconds"] = seconds
    row["gbps"] = nbytes / seconds / 1e9 if seconds > 0 else None
    return row
