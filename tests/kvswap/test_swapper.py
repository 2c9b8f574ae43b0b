"""KVSwapper on CPU: round trips against the reference copy, the host pool's allocator, typed errors
that leave the swapper and both memories as they were. (The CUDA side: tests/gpu/test_kvswap_gpu.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="autellix.kvswap needs torch (pip install 'autellix[vllm]')")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from autellix.exceptions import (  # noqa: E402
    AutellixError,
    ConfigError,
    InvalidBlockMappingError,
    KVLayoutError,
    KVSwapError,
)
from autellix.kvswap import (  # noqa: E402
    DuplicateSwapError,
    KVSwapper,
    SwapHandle,
    SwapPoolFullError,
    UnknownSwapError,
    reference_swap_blocks,
)

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.int64)


def make_cache(
    layers: int, blocks: int, page: Sequence[int] = (2, 3), dtype: Any = torch.float32, seed: int = 0
) -> list[Any]:
    """``layers`` tensors ``[blocks, *page]`` of seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(layers):
        t = torch.randint(-100, 100, (blocks, *page), generator=gen)
        out.append(t.to(dtype))
    return out


def snapshot(cache: Sequence[Any]) -> list[Any]:
    return [t.clone() for t in cache]


def bits(t: Any) -> Any:
    """The bytes of ``t`` (an uninitialised host pool may hold NaNs, which never compare equal)."""
    return t.contiguous().view(torch.uint8)


def same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Equal layer by layer, bit for bit."""
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(bits(x), bits(y))
        for x, y in zip(a, b, strict=True)
    )


def blocks_of(cache: Sequence[Any], blocks: Sequence[int]) -> list[Any]:
    idx = torch.tensor(list(blocks), dtype=torch.int64)
    return [t.index_select(0, idx) for t in cache]


def scribble(cache: Sequence[Any], blocks: Sequence[int], value: int = 0) -> None:
    """What an engine does to blocks it reuses after a swap-out."""
    idx = torch.tensor(list(blocks), dtype=torch.int64)
    for t in cache:
        t.index_fill_(0, idx, value)


def state(s: KVSwapper) -> tuple[Any, ...]:
    return (s.free_blocks, s.used_blocks, s.swapped, s.stats, snapshot(s.host_cache))


def same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[:4] == b[:4] and same(a[4], b[4])


# ---------------------------------------------------------------------------------- basics


def test_import_autellix_does_not_import_torch() -> None:
    code = "import sys, autellix, autellix.sim, autellix.exceptions; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_errors_are_typed() -> None:
    for cls in (SwapPoolFullError, UnknownSwapError, DuplicateSwapError, InvalidBlockMappingError):
        assert issubclass(cls, KVSwapError)
        assert issubclass(cls, AutellixError)


def test_a_fresh_swapper() -> None:
    cache = make_cache(3, 8, (4, 5), torch.bfloat16)
    s = KVSwapper(cache, host_blocks=6)
    assert (s.host_blocks, s.free_blocks, s.used_blocks, s.device_blocks) == (6, 6, 0, 8)
    assert s.swapped == () and len(s) == 0 and "x" not in s
    assert s.block_bytes == 3 * 4 * 5 * 2
    assert not s.pinned and s.stream is None and s.device == torch.device("cpu")
    host = s.host_cache
    assert [h.shape for h in host] == [torch.Size([6, 4, 5])] * 3
    assert all(h.dtype == torch.bfloat16 and h.device.type == "cpu" for h in host)
    assert s.stats.swaps == s.stats.bytes_moved == 0


def test_round_trip_to_other_device_blocks() -> None:
    cache = make_cache(4, 10, (2, 16), torch.bfloat16, seed=1)
    s = KVSwapper(cache, host_blocks=7)
    original = snapshot(cache)
    out = s.swap_out("call-1", [7, 2, 9])
    assert isinstance(out, SwapHandle) and out.ready() and (out.blocks, out.direction) == (3, "out")
    out.wait()
    out.synchronize()
    assert out.bytes == 3 * s.block_bytes
    assert s.swapped == ("call-1",) and s.blocks_of("call-1") == 3 and s.handle_of("call-1") is out
    assert (s.free_blocks, s.used_blocks) == (4, 3)
    assert same(cache, original)  # a swap-out only reads the device cache
    scribble(cache, [7, 2, 9])
    back = s.swap_in("call-1", [0, 5, 1])
    assert back.ready() and (back.blocks, back.direction, back.bytes) == (3, "in", out.bytes)
    # Block i of the swap-out lands in device_blocks[i]: the reference copy from the snapshot.
    expected = snapshot(cache)
    moved = blocks_of(original, [7, 2, 9])
    for src, dst in zip(moved, expected, strict=True):
        reference_swap_blocks(src, dst, torch.tensor([[0, 0], [1, 5], [2, 1]]))
    assert same(cache, expected)
    assert s.swapped == () and (s.free_blocks, s.used_blocks) == (7, 0)
    st_ = s.stats
    assert (st_.swaps_out, st_.swaps_in, st_.blocks_out, st_.blocks_in) == (1, 1, 3, 3)
    assert st_.bytes_out == st_.bytes_in == 3 * s.block_bytes and st_.swaps == 2 and st_.blocks_moved == 6


def test_host_pool_holds_the_blocks_in_swap_order() -> None:
    cache = make_cache(2, 6, (3,), torch.int64, seed=2)
    s = KVSwapper(cache, host_blocks=4)
    s.swap_out(1, [5, 0])
    # A fresh pool hands out blocks 0, 1, ...
    assert same([h[:2] for h in s.host_cache], blocks_of(cache, [5, 0]))


def test_host_blocks_are_reused_after_swap_in_and_discard() -> None:
    cache = make_cache(2, 8, seed=3)
    s = KVSwapper(cache, host_blocks=4)
    s.swap_out("a", [0, 1, 2])
    s.swap_out("b", [3])
    assert s.free_blocks == 0
    with pytest.raises(SwapPoolFullError):
        s.swap_out("c", [4])
    assert s.discard("a") == 3
    assert s.free_blocks == 3 and s.swapped == ("b",) and s.stats.discards == 1
    original = snapshot(cache)
    s.swap_out("c", [4, 5, 6])  # reuses a's host blocks
    scribble(cache, [3, 4, 5, 6], 7)
    s.swap_in("b", [3])
    s.swap_in("c", [6, 5, 4])
    assert same(blocks_of(cache, [3, 6, 5, 4]), blocks_of(original, [3, 4, 5, 6]))
    assert s.free_blocks == 4 and s.swapped == ()


def test_odd_and_full_pool_sizes() -> None:
    cache = make_cache(3, 13, (5,), seed=4)
    s = KVSwapper(cache, host_blocks=13)
    original = snapshot(cache)
    s.swap_out("all", list(range(12, -1, -1)))  # the whole pool, in reverse
    assert s.free_blocks == 0
    scribble(cache, range(13))
    s.swap_in("all", list(range(13)))
    assert same(cache, [t.flip(0) for t in original])


def test_empty_swaps() -> None:
    cache = make_cache(1, 2, seed=5)
    s = KVSwapper(cache, host_blocks=0)
    h = s.swap_out("empty", [])
    assert h.ready() and h.blocks == h.bytes == 0
    assert s.swapped == ("empty",) and s.blocks_of("empty") == 0
    with pytest.raises(SwapPoolFullError):
        s.swap_out("one", [0])
    assert s.swap_in("empty", []).blocks == 0
    assert s.swapped == () and s.stats.swaps == 2


def test_block_lists_may_be_tensors_or_numpy_integers() -> None:
    np = pytest.importorskip("numpy")
    cache = make_cache(2, 5, seed=6)
    original = snapshot(cache)
    s = KVSwapper(cache, host_blocks=5)
    s.swap_out("t", torch.tensor([4, 1], dtype=torch.int32))
    s.swap_out("n", np.array([0, 2]))
    scribble(cache, [0, 1, 2, 4])
    s.swap_in("t", (np.int64(4), torch.tensor(1)))
    s.swap_in("n", range(0, 3, 2))
    assert same(cache, original)


def test_layers_of_different_shapes_and_dtypes() -> None:
    # Separate K and V tensors, and a layer of another dtype: each layer gets its own pool tensor.
    cache = make_cache(2, 6, (4, 2), torch.bfloat16, seed=7) + make_cache(1, 6, (3,), torch.int8, seed=8)
    original = snapshot(cache)
    s = KVSwapper(cache, host_blocks=3)
    assert [(h.shape, h.dtype) for h in s.host_cache] == [
        (torch.Size([3, 4, 2]), torch.bfloat16),
        (torch.Size([3, 4, 2]), torch.bfloat16),
        (torch.Size([3, 3]), torch.int8),
    ]
    assert s.block_bytes == 2 * 8 * 2 + 3
    s.swap_out("k", [5, 3, 1])
    scribble(cache, [5, 3, 1], 9)
    s.swap_in("k", [5, 3, 1])
    assert same(cache, original)


# ---------------------------------------------------------------------- errors leave no trace


def test_pool_exhaustion_allocates_and_copies_nothing() -> None:
    cache = make_cache(2, 10, seed=9)
    s = KVSwapper(cache, host_blocks=5)
    s.swap_out("a", [0, 1, 2])
    device, before = snapshot(cache), state(s)
    with pytest.raises(SwapPoolFullError, match="needs 3 host blocks; 2 of 5 are free"):
        s.swap_out("b", [3, 4, 5])
    assert same_state(state(s), before) and same(cache, device) and "b" not in s
    s.swap_out("b", [3, 4])  # exactly what is left fits
    assert s.free_blocks == 0


@pytest.mark.parametrize(
    ("blocks", "error", "match"),
    [
        ([0, 8], InvalidBlockMappingError, "device block 8 is out of range"),
        ([-1], InvalidBlockMappingError, "device block -1 is out of range"),
        ([2, 3, 2], InvalidBlockMappingError, "device block 2 appears more than once"),
        ([1.0], InvalidBlockMappingError, "integers"),
        ([True], InvalidBlockMappingError, "integers"),
        (["1"], InvalidBlockMappingError, "integers"),
        (torch.tensor([[0, 1]]), InvalidBlockMappingError, "1-D integer tensor"),
        (torch.tensor([0.0]), InvalidBlockMappingError, "1-D integer tensor"),
    ],
)
def test_bad_device_blocks_on_swap_out(blocks: Any, error: type[Exception], match: str) -> None:
    cache = make_cache(2, 8, seed=10)
    s = KVSwapper(cache, host_blocks=4)
    s.swap_out("a", [6])
    device, before = snapshot(cache), state(s)
    with pytest.raises(error, match=match):
        s.swap_out("b", blocks)
    assert same_state(state(s), before) and same(cache, device)


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        ([0, 1], "swapped out 3 blocks; swap_in got 2"),
        ([0, 1, 2, 3], "swapped out 3 blocks; swap_in got 4"),
        ([0, 1, 8], "device block 8 is out of range"),
        ([0, 1, 1], "device block 1 appears more than once"),
    ],
)
def test_bad_device_blocks_on_swap_in(blocks: list[int], match: str) -> None:
    cache = make_cache(2, 8, seed=11)
    s = KVSwapper(cache, host_blocks=4)
    s.swap_out("a", [5, 6, 7])
    scribble(cache, [0, 1, 2], 3)
    device, before = snapshot(cache), state(s)
    with pytest.raises(InvalidBlockMappingError, match=match):
        s.swap_in("a", blocks)
    assert same_state(state(s), before) and same(cache, device) and "a" in s
    s.swap_in("a", [0, 1, 2])  # still there, intact
    assert same(blocks_of(cache, [0, 1, 2]), blocks_of(cache, [5, 6, 7]))


def test_unknown_and_duplicate_keys() -> None:
    cache = make_cache(1, 4, seed=12)
    s = KVSwapper(cache, host_blocks=4)
    s.swap_out("a", [0, 1])
    device, before = snapshot(cache), state(s)
    with pytest.raises(DuplicateSwapError, match="already swapped out"):
        s.swap_out("a", [2])
    with pytest.raises(UnknownSwapError, match="'b' is not swapped out"):
        s.swap_in("b", [2, 3])
    with pytest.raises(UnknownSwapError):
        s.discard("b")
    with pytest.raises(UnknownSwapError):
        s.blocks_of("b")
    with pytest.raises(UnknownSwapError):
        s.discard(["unhashable"])  # type: ignore[arg-type]
    assert same_state(state(s), before) and same(cache, device)
    s.swap_in("a", [2, 3])
    with pytest.raises(UnknownSwapError):
        s.swap_in("a", [0, 1])  # already back in
    with pytest.raises(TypeError):
        s.swap_out(["unhashable"], [0])  # type: ignore[arg-type]
    assert s.free_blocks == 4


def test_constructor_checks() -> None:
    with pytest.raises(KVLayoutError, match="at least one layer"):
        KVSwapper([], host_blocks=1)
    with pytest.raises(KVLayoutError, match="not a tensor"):
        KVSwapper([torch.tensor(1.0)], host_blocks=1)
    with pytest.raises(KVLayoutError, match="same block count"):
        KVSwapper([torch.zeros(4, 2), torch.zeros(5, 2)], host_blocks=1)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="host_blocks"):
            KVSwapper([torch.zeros(4, 2)], host_blocks=bad)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="pin_memory=True needs CUDA"):
            KVSwapper([torch.zeros(4, 2)], host_blocks=1, pin_memory=True)
    with pytest.raises(ConfigError, match="side stream needs a CUDA"):
        KVSwapper([torch.zeros(4, 2)], host_blocks=1, stream=object())
    assert issubclass(KVLayoutError, KVSwapError)


# -------------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 3),
    device_blocks=st.integers(1, 17),
    host_blocks=st.integers(0, 17),
    page=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    dtype=st.sampled_from(DTYPES),
    data=st.data(),
)
def test_round_trips_match_the_reference(
    layers: int, device_blocks: int, host_blocks: int, page: list[int], dtype: Any, data: st.DataObject
) -> None:
    """Random layouts: swap out any blocks the pool can hold, overwrite them, swap them back into
    any other blocks; the device cache is what the reference copy from a snapshot gives."""
    cache = make_cache(layers, device_blocks, page, dtype, seed=data.draw(st.integers(0, 2**16)))
    s = KVSwapper(cache, host_blocks=host_blocks)
    n = data.draw(st.integers(0, min(device_blocks, host_blocks)))
    out = data.draw(st.permutations(range(device_blocks)))[:n]
    into = data.draw(st.permutations(range(device_blocks)))[:n]
    original = snapshot(cache)
    s.swap_out("k", out)
    assert s.used_blocks == n
    scribble(cache, out, 1)
    s.swap_in("k", into)
    expected = [t.clone() for t in original]
    for t in expected:
        t.index_fill_(0, torch.tensor(out, dtype=torch.int64), 1)
    mapping = torch.tensor([[i, d] for i, d in enumerate(into)], dtype=torch.int64).reshape(-1, 2)
    for src, dst in zip(blocks_of(original, out), expected, strict=True):
        reference_swap_blocks(src, dst, mapping)
    assert same(cache, expected)
    assert s.free_blocks == host_blocks and s.swapped == ()


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_operation_sequences_keep_every_call_intact(data: st.DataObject) -> None:
    """Interleaved swap-outs, swap-ins, discards and refused requests on one pool, against a model:
    every swapped-out call comes back bit for bit, the pool's accounting always adds up, and a
    refused request changes nothing."""
    blocks, host_blocks = data.draw(st.integers(1, 12)), data.draw(st.integers(0, 12))
    cache = make_cache(2, blocks, (3,), torch.int64, seed=data.draw(st.integers(0, 999)))
    s = KVSwapper(cache, host_blocks=host_blocks)
    model: dict[Hashable, list[Any]] = {}  # key -> its blocks' contents when swapped out, per layer

    def count(key: Hashable) -> int:
        return int(model[key][0].shape[0])

    for step in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(["out", "in", "discard", "bad-in", "unknown"]))
        before, device = state(s), snapshot(cache)
        if op == "out":
            key = data.draw(st.integers(0, 4))
            n = data.draw(st.integers(0, blocks))
            chosen = data.draw(st.permutations(range(blocks)))[:n]
            if key in model:
                with pytest.raises(DuplicateSwapError):
                    s.swap_out(key, chosen)
            elif n > s.free_blocks:
                with pytest.raises(SwapPoolFullError):
                    s.swap_out(key, chosen)
            else:
                s.swap_out(key, chosen)
                model[key] = blocks_of(cache, chosen)
                scribble(cache, chosen, -step)
                continue
        elif op in ("in", "discard", "bad-in") and model:
            key = data.draw(st.sampled_from(sorted(model)))
            n = count(key)
            if op == "in":
                into = data.draw(st.permutations(range(blocks)))[:n]
                s.swap_in(key, into)
                assert same(blocks_of(cache, into), model.pop(key))
            elif op == "discard":
                assert s.discard(key) == n
                del model[key]
            else:
                # n + 1 blocks, or n - 1 when n + 1 do not exist: never the count swapped out
                wrong = data.draw(st.permutations(range(blocks)))[: n + 1 if n < blocks else n - 1]
                with pytest.raises(InvalidBlockMappingError):
                    s.swap_in(key, wrong)
            if op != "bad-in":
                continue
        else:
            with pytest.raises(UnknownSwapError):
                s.swap_in(99, [])
        assert same_state(state(s), before) and same(cache, device)
        assert set(s.swapped) == set(model)
    assert s.used_blocks + s.free_blocks == host_blocks
    assert s.used_blocks == sum(count(k) for k in model)
    assert set(s.swapped) == set(model)


def test_permuted_layer_views_get_a_pool_of_the_same_element_order() -> None:
    # vLLM's HND view of an NHD buffer: [B, N, H, C] storage seen as [B, H, N, C].
    buffers = make_cache(2, 6, (4, 2, 3), torch.float16, seed=13)
    cache = [b.permute(0, 2, 1, 3) for b in buffers]
    original = snapshot(cache)
    s = KVSwapper(cache, host_blocks=6)
    for h, t in zip(s.host_cache, cache, strict=True):
        assert h.shape[1:] == t.shape[1:] and h.stride()[1:] == (3, 6, 1) == t.stride()[1:]
    s.swap_out("p", [4, 0, 5])
    scribble(cache, [4, 0, 5])
    s.swap_in("p", [4, 0, 5])
    assert same(cache, original)


def test_a_cache_the_copy_op_cannot_take_is_refused_up_front() -> None:
    # Every block a strided slice, not one dense memory range.
    cache = [torch.zeros(4, 6, 8)[:, :, :3]]
    with pytest.raises(KVLayoutError, match="dense"):
        KVSwapper(cache, host_blocks=2)
    with pytest.raises(ConfigError, match="method"):
        KVSwapper([torch.zeros(4, 2)], host_blocks=1, method="dma")  # type: ignore[arg-type]
