"""torch.ops.autellix.swap_blocks on a real GPU: device-to-host, host-to-device and
device-to-device, with the kernel and the batched-DMA method, against the pure-torch reference.

Run with ``python -m pytest -m gpu tests/gpu``; the CUDA build of the ops compiles on first use."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="autellix.kvswap needs torch (pip install 'autellix[vllm]')")

from autellix import InvalidBlockMappingError, KVLayoutError  # noqa: E402
from autellix.kvswap import ops  # noqa: E402
from autellix.kvswap.ops import reference_swap_blocks_multi, swap_blocks, swap_blocks_multi  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available())"
    ),
]

METHODS = ["kernel", "memcpy_batch", "auto"]


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    assert ops.ops_backend() == "cuda", "the CUDA build of the ops failed; see autellix.kvswap's warning"


def _make(where: str, *shape: int, dtype: Any = torch.bfloat16, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        t = torch.randn(*shape, generator=g).to(dtype)
    else:
        t = torch.randint(0, 255, shape, generator=g, dtype=torch.uint8).to(dtype)
    return t.cuda() if where == "gpu" else t.pin_memory()


def _copy(src: Any, dst: Any, pairs: list[tuple[int, int]], method: str, multi: bool) -> None:
    # memcpy_batch cannot run on the legacy default stream: copy on a side stream, as KVSwapper does.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        if multi:
            swap_blocks_multi(src, dst, pairs, method=method)  # type: ignore[arg-type]
        else:
            swap_blocks(src, dst, pairs, method=method)  # type: ignore[arg-type]
    stream.synchronize()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("src_where", "dst_where"), [("gpu", "cpu"), ("cpu", "gpu"), ("gpu", "gpu")])
@pytest.mark.parametrize("multi", [False, True], ids=["one-layer", "multi-layer"])
def test_directions(src_where: str, dst_where: str, method: str, multi: bool) -> None:
    if method == "memcpy_batch" and src_where == dst_where == "gpu":
        pytest.skip("memcpy_batch is host<->device only (tested below)")
    # an 8B-like page per layer: [B, H=8, N=16, C=256 bytes] bf16 -> 64 KiB per (layer, block)
    layers = 4 if multi else 1
    src = _make(src_where, layers, 37, 8, 16, 128)
    dst = _make(dst_where, layers, 23, 8, 16, 128, seed=1)
    pairs = [(36, 0), (0, 22), (17, 5), (5, 17), (20, 11)]
    expected = dst.cpu().clone()
    reference_swap_blocks_multi(src.cpu(), expected, pairs)
    if multi:
        _copy(list(src.unbind(0)), list(dst.unbind(0)), pairs, method, multi=True)
    else:
        _copy(src[0], dst[0], pairs, method, multi=False)
    assert torch.equal(dst.cpu(), expected)


@pytest.mark.parametrize("method", ["kernel", "auto"])
@pytest.mark.parametrize("inner", [(7,), (3, 5), (1,), (4, 4)])
def test_odd_pages_and_dtypes(method: str, inner: tuple[int, ...]) -> None:
    # 1-, 7-, 15-byte pages: the 1/4/8/16-byte kernel variants
    for dtype in (torch.uint8, torch.float16, torch.float32):
        for src_where, dst_where in (("gpu", "cpu"), ("cpu", "gpu"), ("gpu", "gpu")):
            src = _make(src_where, 9, *inner, dtype=dtype)
            dst = _make(dst_where, 6, *inner, dtype=dtype, seed=2)
            pairs = [(8, 5), (0, 0), (3, 2)]
            expected = dst.cpu().clone()
            reference_swap_blocks_multi([src.cpu()], [expected], pairs)
            _copy(src, dst, pairs, method, multi=False)
            assert torch.equal(dst.cpu(), expected), (dtype, src_where, dst_where)


def test_many_blocks_default_stream() -> None:
    """10k blocks on the current (default) stream: the kernel path, ordered with later work."""
    src = _make("gpu", 10_000, 2, 16, 64)
    dst = _make("cpu", 10_000, 2, 16, 64, seed=1)
    perm = torch.randperm(10_000)
    mapping = torch.stack([torch.arange(10_000), perm], dim=1)
    swap_blocks(src, dst, mapping)
    torch.cuda.synchronize()
    assert torch.equal(dst[perm], src.cpu())


def test_refusals_leave_dst_untouched() -> None:
    gpu = _make("gpu", 4, 8)
    pageable = torch.zeros(4, 8, dtype=torch.bfloat16)
    with pytest.raises(KVLayoutError, match="pinned"):
        swap_blocks(gpu, pageable, [(0, 0)])
    with pytest.raises(ValueError, match="pinned"):  # the op's own check
        torch.ops.autellix.swap_blocks.default(gpu, pageable, torch.tensor([[0, 0]]), "kernel")
    assert torch.count_nonzero(pageable) == 0
    with pytest.raises(InvalidBlockMappingError):
        swap_blocks(gpu, _make("cpu", 4, 8), [(0, 4)])
    with pytest.raises(IndexError):
        torch.ops.autellix.swap_blocks.default(gpu, _make("cpu", 4, 8), torch.tensor([[0, 4]]), "kernel")
    with pytest.raises(ValueError, match="host<->device"):
        torch.ops.autellix.swap_blocks.default(gpu, gpu.clone(), torch.tensor([[0, 1]]), "memcpy_batch")
    if torch.cuda.current_stream().cuda_stream == 0:
        with pytest.raises(ValueError, match="legacy default stream"):
            swap_blocks(gpu, _make("cpu", 4, 8), [(0, 0)], method="memcpy_batch")


def test_opcheck_on_gpu() -> None:
    src, dst = _make("gpu", 6, 4, 8), _make("cpu", 5, 4, 8)
    torch.library.opcheck(
        torch.ops.autellix.swap_blocks.default,
        (src, dst, torch.tensor([[5, 0], [1, 4]]), "kernel"),
        test_utils=("test_schema", "test_autograd_registration"),
    )
