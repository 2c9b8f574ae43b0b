"""KVSwapper on a CUDA device: correctness on device tensors with a pinned pool, and that swaps run
asynchronously on the side stream, overlapping compute on the current stream.

Deselected by default (``-m gpu``); skipped with a reason without torch or a CUDA device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="autellix.kvswap needs torch (pip install 'autellix[vllm]')")

from autellix.exceptions import InvalidBlockMappingError  # noqa: E402
from autellix.kvswap import KVSwapper, SwapPoolFullError  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

#: Llama-3.1-8B bf16 page (vLLM 0.33 packed K+V): [kv_heads, block_tokens, 2 * head_dim] = 64 KiB.
PAGE = (8, 16, 256)


def make_cache(layers: int, blocks: int, seed: int = 0) -> list[Any]:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    cache = torch.randn((layers, blocks, *PAGE), generator=gen, device="cuda", dtype=torch.bfloat16)
    return list(cache.unbind(0))


def bits(t: Any) -> Any:
    return t.contiguous().view(torch.int16)


def gpu_seconds(fn: Callable[[], Any]) -> float:
    """Seconds ``fn``'s work takes on the current stream (CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / 1e3


def test_round_trip_on_device_tensors() -> None:
    cache = make_cache(4, 64)
    s = KVSwapper(cache, host_blocks=40)
    assert s.pinned and all(h.is_pinned() for h in s.host_cache)
    assert s.stream is not None and s.stream != torch.cuda.current_stream()
    out_blocks = [63, 0, 17, 5, 42, 8, 31]  # odd count, scattered
    original = [t[out_blocks].clone() for t in cache]
    out = s.swap_out("a", out_blocks)
    out.wait()  # the current stream waits; the next writes to those blocks come after the copy
    for t in cache:
        t[out_blocks] = 0
    back = s.swap_in("a", [1, 2, 3, 4, 6, 7, 9])
    back.wait()
    for t, o in zip(cache, original, strict=True):
        assert torch.equal(bits(t[[1, 2, 3, 4, 6, 7, 9]]), bits(o))
    torch.cuda.synchronize()
    assert out.ready() and back.ready()
    assert s.free_blocks == 40 and s.stats.blocks_moved == 14


def test_host_pool_matches_device_after_swap_out() -> None:
    cache = make_cache(2, 16, seed=1)
    s = KVSwapper(cache, host_blocks=16)
    s.swap_out("a", [9, 4, 11]).synchronize()
    for t, h in zip(cache, s.host_cache, strict=True):
        assert torch.equal(bits(h[:3]), bits(t[[9, 4, 11]].cpu()))


def test_swap_out_sees_work_queued_before_it() -> None:
    """The side stream starts after the current stream's queued work: a slow write to a block,
    queued just before the swap-out, is what the host receives."""
    cache = make_cache(1, 8, seed=2)
    s = KVSwapper(cache, host_blocks=8)
    x = torch.randn(4096, 4096, device="cuda")
    for _ in range(20):
        x = x @ x / 64  # keep the current stream busy
    cache[0][3].fill_(7.0)
    s.swap_out("a", [3]).synchronize()
    assert torch.all(s.host_cache[0][0] == 7.0)


def test_errors_on_device_leave_memory_untouched() -> None:
    cache = make_cache(2, 8, seed=3)
    s = KVSwapper(cache, host_blocks=2)
    before = [t.clone() for t in cache]
    with pytest.raises(SwapPoolFullError):
        s.swap_out("a", [0, 1, 2])
    with pytest.raises(InvalidBlockMappingError):
        s.swap_out("a", [0, 8])
    torch.cuda.synchronize()
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(cache, before, strict=True))
    assert s.free_blocks == 2 and s.swapped == ()


def test_swap_returns_before_the_copy_finishes() -> None:
    """swap_out only enqueues: the host gets control back long before the copy is done."""
    cache = make_cache(32, 512, seed=4)  # 1 GiB on each side
    s = KVSwapper(cache, host_blocks=512)
    s.swap_out("warm", list(range(512))).synchronize()
    s.discard("warm")
    t = time.perf_counter()
    handle = s.swap_out("a", list(range(512)))
    issued = time.perf_counter() - t
    handle.synchronize()
    total = time.perf_counter() - t
    assert issued < 0.5 * total, f"swap_out took {issued * 1e3:.2f} ms of a {total * 1e3:.2f} ms copy"


def test_swap_overlaps_compute_on_the_current_stream() -> None:
    """A swap on the side stream and matrix products on the current stream, issued together, take
    clearly less than the sum of the two run alone (pinned memory: the copy engine works while
    the SMs compute)."""
    cache = make_cache(32, 256, seed=5)  # 512 MiB per swap
    blocks = list(range(256))
    s = KVSwapper(cache, host_blocks=256)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def swap() -> None:
        s.swap_out("k", blocks).wait()
        s.discard("k")

    swap()  # warm-up
    swap_s = min(gpu_seconds(swap) for _ in range(3))

    def matmuls(count: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(count):
                torch.mm(a, a)

        return run

    one = min(gpu_seconds(matmuls(4)) for _ in range(3)) / 4
    count = max(1, round(swap_s / one))  # about as long as the swap
    compute_s = min(gpu_seconds(matmuls(count)) for _ in range(3))

    def both() -> None:
        handle = s.swap_out("k", blocks)  # side stream, after the work queued so far
        matmuls(count)()  # current stream, concurrently
        handle.wait()
        s.discard("k")

    both_s = min(gpu_seconds(both) for _ in range(3))
    serial = swap_s + compute_s
    assert both_s < 0.8 * serial, (
        f"swap {swap_s * 1e3:.2f} ms + compute {compute_s * 1e3:.2f} ms = {serial * 1e3:.2f} ms serial; "
        f"together {both_s * 1e3:.2f} ms ({both_s / serial:.2f} of serial)"
    )


def test_wait_does_not_block_the_host() -> None:
    """handle.wait() orders the current stream after the copy; the host goes on at once."""
    cache = make_cache(32, 512, seed=6)
    s = KVSwapper(cache, host_blocks=512)
    s.swap_out("warm", list(range(512))).synchronize()
    s.discard("warm")
    handle = s.swap_out("a", list(range(512)))
    t = time.perf_counter()
    handle.wait()
    waited = time.perf_counter() - t
    not_done = not handle.ready()
    torch.cuda.synchronize()
    assert handle.ready()
    if not_done:  # the copy (~10-40 ms) was still running when wait() returned
        assert waited < 5e-3
