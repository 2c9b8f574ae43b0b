"""torch.ops.autellix.swap_blocks / swap_blocks_multi on CPU: the compiled op (built on first use,
see autellix.kvswap._build) and the pure-torch fallback, both against the reference oracle.

The compiled backend must build here: a failed build fails these tests (CI has g++ and ninja).
Set AUTELLIX_SKIP_OPS_BUILD=1 to skip them on a machine without a compiler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="autellix.kvswap needs torch (pip install 'autellix[vllm]')")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from autellix import InvalidBlockMappingError, KVLayoutError, KVSwapError  # noqa: E402
from autellix.kvswap import _build, ops  # noqa: E402
from autellix.kvswap.ops import (  # noqa: E402
    reference_swap_blocks,
    reference_swap_blocks_multi,
    swap_blocks,
    swap_blocks_multi,
)

BACKENDS = ["compiled", "reference"]


def _compiled_backend() -> str:
    if os.environ.get("AUTELLIX_SKIP_OPS_BUILD") == "1":
        pytest.skip("AUTELLIX_SKIP_OPS_BUILD=1: compiled ops not built")
    backend = _build.load_ops()
    assert backend in ("cpu", "cuda"), "building the ops failed; see the warning logged by autellix.kvswap"
    return backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "compiled":
        yield _compiled_backend()
    else:
        monkeypatch.setattr(ops, "ops_backend", lambda: "reference")
        yield "reference"


def _data(blocks: int, *inner: int, dtype: Any = torch.float32, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(blocks, *inner, generator=g).to(dtype)
    return torch.randint(-100, 100, (blocks, *inner), generator=g).to(dtype)


def _expect(src: Any, dst: Any, mapping: Any) -> Any:
    expected = dst.clone()
    reference_swap_blocks(src, expected, mapping)
    return expected


def test_backend_is_compiled() -> None:
    backend = _compiled_backend()
    assert backend == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ops.ops_backend() == backend
    assert torch.ops.autellix.swap_blocks.default is not None


def test_reference_semantics() -> None:
    src = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3)
    dst = torch.zeros(4, 3)
    reference_swap_blocks(src, dst, [(4, 0), (1, 2)])
    assert dst.tolist() == [[12, 13, 14], [0, 0, 0], [3, 4, 5], [0, 0, 0]]


@pytest.mark.parametrize("mapping_kind", ["list", "tensor", "int32 tensor"])
def test_basic(backend: str, mapping_kind: str) -> None:
    src = _data(9, 2, 16, 8)
    dst = _data(5, 2, 16, 8, seed=1)
    pairs = [(8, 0), (0, 4), (3, 1)]
    mapping: Any = {
        "list": pairs,
        "tensor": torch.tensor(pairs),
        "int32 tensor": torch.tensor(pairs, dtype=torch.int32),
    }[mapping_kind]
    expected = _expect(src, dst, pairs)
    swap_blocks(src, dst, mapping)
    assert torch.equal(dst, expected)
    assert torch.equal(dst[0], src[8]) and torch.equal(dst[4], src[0]) and torch.equal(dst[1], src[3])


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    src_blocks=st.integers(1, 17),
    dst_blocks=st.integers(1, 17),
    inner=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    dtype=st.sampled_from(["float32", "float16", "bfloat16", "float64", "int8", "uint8", "int64"]),
    use_backend=st.sampled_from(BACKENDS),
)
def test_matches_reference_random_layouts(
    data: st.DataObject, src_blocks: int, dst_blocks: int, inner: list[int], dtype: str, use_backend: str
) -> None:
    # Odd block counts and odd page sizes (1-byte pages included) exercise every copy width.
    if use_backend == "compiled":
        _compiled_backend()
    torch_dtype = getattr(torch, dtype)
    src = _data(src_blocks, *inner, dtype=torch_dtype, seed=data.draw(st.integers(0, 1000)))
    dst = _data(dst_blocks, *inner, dtype=torch_dtype, seed=7)
    n = data.draw(st.integers(0, min(src_blocks, dst_blocks)))
    srcs = data.draw(st.lists(st.integers(0, src_blocks - 1), min_size=n, max_size=n))
    dsts = data.draw(st.permutations(range(dst_blocks)))[:n]
    pairs = list(zip(srcs, dsts, strict=True))
    expected = _expect(src, dst, pairs)
    original = ops.ops_backend
    if use_backend == "reference":
        ops.ops_backend = lambda: "reference"  # type: ignore[assignment]
    try:
        swap_blocks(src, dst, pairs)
    finally:
        ops.ops_backend = original  # type: ignore[method-assign]
    assert torch.equal(dst, expected)


@pytest.mark.parametrize(
    "mapping", [[], (), torch.empty(0, 2, dtype=torch.int64), torch.empty(0, dtype=torch.int64)]
)
def test_empty_mapping_is_a_noop(backend: str, mapping: Any) -> None:
    src = _data(3, 4)
    dst = _data(3, 4, seed=1)
    before = dst.clone()
    swap_blocks(src, dst, mapping)
    swap_blocks_multi([src], [dst], mapping)
    assert torch.equal(dst, before)


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ([(0, 0), (6, 1)], r"src block 6 out of range \[0, 6\)"),
        ([(-1, 0)], "src block -1 out of range"),
        ([(0, 4)], r"dst block 4 out of range \[0, 4\)"),
        ([(0, -2)], "dst block -2 out of range"),
        ([(0, 1), (2, 1)], "destination block more than once"),
    ],
)
def test_bad_indices(backend: str, pairs: list[tuple[int, int]], match: str) -> None:
    src = _data(6, 8)
    dst = _data(4, 8, seed=1)
    before = dst.clone()
    with pytest.raises(InvalidBlockMappingError, match=match):
        swap_blocks(src, dst, pairs)
    with pytest.raises(InvalidBlockMappingError, match=match):
        swap_blocks(src, dst, torch.tensor(pairs))
    assert torch.equal(dst, before)


@pytest.mark.parametrize(
    "mapping",
    [
        [(0, 1, 2)],
        [0, 1],
        torch.zeros(3, dtype=torch.int64),
        torch.zeros(2, 2, dtype=torch.float32),
        torch.zeros(2, 2, dtype=torch.bool),
        [("a", 1)],
    ],
)
def test_malformed_mapping(backend: str, mapping: Any) -> None:
    src = _data(3, 4)
    dst = _data(3, 4, seed=1)
    before = dst.clone()
    with pytest.raises(InvalidBlockMappingError):
        swap_blocks(src, dst, mapping)
    assert torch.equal(dst, before)


@pytest.mark.parametrize(
    ("src", "dst", "match"),
    [
        (_data(3, 4), _data(3, 4, dtype=torch.float16), "dtype"),
        (_data(3, 4), _data(3, 5), "equal shapes after the block axis"),
        (_data(3, 4, 2), _data(3, 8), "equal shapes after the block axis"),
        (torch.tensor(1.0), torch.tensor(2.0), "equal shapes"),
        # every other element of a block: not one dense range
        (_data(3, 4, 8)[:, :, ::2], _data(3, 4, 8)[:, :, ::2], "dense memory range"),
        # same shape, elements of a block in a different order
        (_data(3, 4, 8), _data(3, 8, 4).transpose(1, 2), "order a block's elements differently"),
        # blocks overlapping each other (stride(0) smaller than a block)
        (_data(3, 4), torch.zeros(16).as_strided((3, 4), (2, 1)), "overlap"),
    ],
)
def test_layout_mismatch(backend: str, src: Any, dst: Any, match: str) -> None:
    before = dst.clone()
    with pytest.raises(KVLayoutError, match=match):
        swap_blocks(src, dst, [(0, 0)])
    assert torch.equal(dst, before)
    assert issubclass(KVLayoutError, KVSwapError) and issubclass(InvalidBlockMappingError, KVSwapError)


def test_bad_method(backend: str) -> None:
    with pytest.raises(KVSwapError, match="method"):
        swap_blocks(_data(2, 2), _data(2, 2), [(0, 0)], method="dma")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["auto", "kernel", "memcpy_batch"])
def test_methods_on_cpu_all_copy(backend: str, method: Any) -> None:
    src, dst = _data(4, 3, 5), _data(4, 3, 5, seed=1)
    expected = _expect(src, dst, [(3, 0), (1, 1)])
    swap_blocks(src, dst, [(3, 0), (1, 1)], method=method)
    assert torch.equal(dst, expected)


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_vllm_layouts(backend: str, layout: str) -> None:
    # vLLM 0.33: logical per-layer [B, H, N, C] over a physical [L, B, N, H, C] (NHD) or
    # [L, B, H, N, C] (HND) cache; K and V packed in C.
    layers, blocks, heads, block_size, c = 3, 7, 2, 16, 6
    if layout == "NHD":
        gpu = _data(layers, blocks, block_size, heads, c).permute(0, 1, 3, 2, 4)
        host = torch.zeros(layers, 5, block_size, heads, c).permute(0, 1, 3, 2, 4)
    else:
        gpu = _data(layers, blocks, heads, block_size, c)
        host = torch.zeros(layers, 5, heads, block_size, c)
    assert gpu.shape[1:] == (blocks, heads, block_size, c)
    pairs = [(6, 0), (2, 3), (5, 4)]
    expected = host.clone()
    reference_swap_blocks_multi(gpu, expected, pairs)
    swap_blocks_multi(list(gpu.unbind(0)), list(host.unbind(0)), pairs)
    assert torch.equal(host, expected)
    # and back: the stacked form is split along dim 0
    back = torch.zeros_like(gpu)
    swap_blocks_multi(host, back, [(d, s) for s, d in pairs])
    for s, _ in pairs:
        assert torch.equal(back[:, s], gpu[:, s])
    assert torch.count_nonzero(back[:, [0, 1, 3, 4]]) == 0


def test_block_major_layout(backend: str) -> None:
    # BL* layouts keep a block's layers together: per-layer views have stride(0) = L * page.
    physical = _data(6, 4, 2, 8)  # [B, L, ...]
    src = list(physical.unbind(1))
    dst_physical = torch.zeros(5, 4, 2, 8)
    dst = list(dst_physical.unbind(1))
    swap_blocks_multi(src, dst, [(5, 1), (0, 4)])
    assert torch.equal(dst_physical[1], physical[5]) and torch.equal(dst_physical[4], physical[0])
    assert torch.count_nonzero(dst_physical[[0, 2, 3]]) == 0


def test_multi_matches_per_layer(backend: str) -> None:
    src = [_data(9, 4, 3, seed=i) for i in range(5)]
    dst = [_data(6, 4, 3, seed=10 + i) for i in range(5)]
    pairs = [(8, 5), (1, 0), (4, 2), (4, 3)]  # a source block may be read twice
    expected = [d.clone() for d in dst]
    reference_swap_blocks_multi(src, expected, pairs)
    swap_blocks_multi(src, dst, torch.tensor(pairs))
    for got, want in zip(dst, expected, strict=True):
        assert torch.equal(got, want)


def test_multi_layer_mismatches(backend: str) -> None:
    src = [_data(4, 3) for _ in range(3)]
    dst = [_data(4, 3, seed=1) for _ in range(3)]
    before = [d.clone() for d in dst]
    with pytest.raises(KVLayoutError, match="3 src layers but 2 dst layers"):
        swap_blocks_multi(src, dst[:2], [(0, 0)])
    with pytest.raises(KVLayoutError, match="blocks, layer 0 has"):
        swap_blocks_multi(src, [*dst[:2], _data(5, 3)], [(0, 0)])
    with pytest.raises(KVLayoutError, match="dtype"):
        swap_blocks_multi(src, [*dst[:2], _data(4, 3, dtype=torch.float64)], [(0, 0)])
    with pytest.raises(KVLayoutError, match=r"not a torch\.Tensor"):
        swap_blocks_multi(src, [*dst[:2], [1, 2, 3]], [(0, 0)])  # type: ignore[list-item]
    with pytest.raises(KVLayoutError, match=r"\[L, B, \.\.\.\]"):
        swap_blocks_multi(torch.zeros(3), torch.zeros(3), [(0, 0)])
    for got, want in zip(dst, before, strict=True):
        assert torch.equal(got, want)
    swap_blocks_multi([], [], [(0, 0)])  # no layers: nothing to copy


def test_mapping_on_another_device_is_refused(backend: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to place the mapping on")
    with pytest.raises(InvalidBlockMappingError, match="CPU tensor"):
        swap_blocks(_data(2, 2), _data(2, 2), torch.zeros(1, 2, dtype=torch.int64, device="cuda"))


# ----------------------------------------------------------------------------- the op itself


def test_op_schema_and_opcheck() -> None:
    _compiled_backend()
    schema = str(torch.ops.autellix.swap_blocks.default._schema)
    assert "Tensor(a!) dst" in schema
    assert "Tensor(a!)[] dst" in str(torch.ops.autellix.swap_blocks_multi.default._schema)
    src, dst, mapping = _data(6, 3, 4), _data(4, 3, 4), torch.tensor([[5, 0], [2, 3]])
    torch.library.opcheck(torch.ops.autellix.swap_blocks.default, (src, dst, mapping, "auto"))
    torch.library.opcheck(
        torch.ops.autellix.swap_blocks_multi.default,
        ([src, src.clone()], [dst, dst.clone()], mapping, "auto"),
        test_utils=("test_schema", "test_autograd_registration"),
    )


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((_data(6, 8), _data(4, 8), torch.tensor([[6, 0]])), IndexError, "src block 6 out of range"),
        ((_data(6, 8), _data(4, 8), torch.tensor([[0, 4]])), IndexError, "dst block 4 out of range"),
        ((_data(6, 8), _data(4, 8), torch.tensor([[0, -1]])), IndexError, "dst block -1 out of range"),
        ((_data(6, 8), _data(4, 8), torch.tensor([[0, 1], [1, 1]])), ValueError, "appears twice"),
        ((_data(6, 8), _data(4, 8), torch.tensor([[0, 1]], dtype=torch.int32)), TypeError, "int64"),
        ((_data(6, 8), _data(4, 8), torch.tensor([0, 1])), ValueError, r"shape \[n, 2\]"),
        ((_data(6, 8), _data(4, 8, dtype=torch.float64), torch.tensor([[0, 1]])), TypeError, "dtype"),
        ((_data(6, 8), _data(4, 9), torch.tensor([[0, 1]])), ValueError, "differ after the block axis"),
        ((_data(6, 8, 2)[:, :, 0], _data(4, 8, 2)[:, :, 0], torch.tensor([[0, 1]])), ValueError, "dense"),
        ((torch.tensor(1.0), torch.tensor(1.0), torch.tensor([[0, 0]])), ValueError, "block axis"),
    ],
)
def test_op_checks_in_cpp(args: tuple[Any, Any, Any], error: type[Exception], match: str) -> None:
    """Called directly (no Python validation), the op refuses and leaves dst untouched."""
    _compiled_backend()
    src, dst, mapping = args
    before = dst.clone()
    with pytest.raises(error, match=match):
        torch.ops.autellix.swap_blocks.default(src, dst, mapping, "auto")
    with pytest.raises(error, match=match):
        torch.ops.autellix.swap_blocks_multi.default([src, src], [dst, dst], mapping, "kernel")
    assert torch.equal(dst, before)


def test_op_multi_checks_in_cpp() -> None:
    _compiled_backend()
    a, b = _data(4, 2), _data(4, 2)
    with pytest.raises(ValueError, match="2 src layers but 1 dst layers"):
        torch.ops.autellix.swap_blocks_multi.default([a, a], [b], torch.tensor([[0, 0]]), "auto")
    with pytest.raises(ValueError, match="blocks, layer 0 has"):
        torch.ops.autellix.swap_blocks_multi.default([a, a], [b, _data(5, 2)], torch.tensor([[0, 0]]), "auto")
    with pytest.raises(ValueError, match="method must be"):
        torch.ops.autellix.swap_blocks.default(a, b, torch.tensor([[0, 0]]), "dma")
    torch.ops.autellix.swap_blocks_multi.default([], [], torch.tensor([[0, 0]]), "auto")


def test_large_copy_uses_threads() -> None:
    """Many pages (more than one parallel_for chunk) land where the reference puts them."""
    _compiled_backend()
    src = _data(3000, 64)
    dst = torch.zeros(2500, 64)
    perm = torch.randperm(2500, generator=torch.Generator().manual_seed(3))
    mapping = torch.stack([torch.arange(2500) % 3000, perm], dim=1)
    expected = _expect(src, dst, mapping)
    swap_blocks(src, dst, mapping)
    assert torch.equal(dst, expected)
