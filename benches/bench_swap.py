#!/usr/bin/env python3
"""Host<->device KV swap bandwidth: autellix's bulk op against a per-block copy loop and vLLM's ops.

Standalone script (not collected by pytest; needs torch, e.g. ``pip install 'autellix[vllm]'``; a
GPU for figures that mean anything)::

    python benches/bench_swap.py                      # GPU: 1, 10, 100, 1k, 10k blocks (~20 GiB pinned)
    python benches/bench_swap.py --max-blocks 1000    # smaller memory footprint (2 GiB per side)
    python benches/bench_swap.py --quick              # smoke run: 1, 10, 100 blocks (CPU: 4 layers)
    python benches/bench_swap.py --json benches/results/swap.json   # the file the simulator reads

**Layout.** The KV cache of Llama-3.1-8B in bf16 with 16-token blocks as vLLM 0.33 lays it out
(``vllm/v1/kv_cache_layout.py``, LBHNC): one device tensor ``[layers, blocks, kv_heads, 16,
2 x head_dim]`` whose per-layer views ``[blocks, 8, 16, 256]`` pack K and V, so a (layer, block)
page is 16 x 8 x 256 x 2 B = 64 KiB and one block is 32 pages = 2 MiB. ``--layout split`` keeps
K and V in separate per-layer tensors (32 KiB pages, twice as many; vLLM 0.6's layout). The
host side is a :class:`autellix.kvswap.KVSwapper`'s pool (pinned on CUDA) of as many blocks.

**Methods**, each moving the same ``n`` randomly chosen device blocks to / from ``n`` random host
blocks, device -> host (``d2h``, a swap-out) and host -> device (``h2d``, a swap-in):

* ``bulk``: autellix's op, ``autellix.kvswap.swap_blocks_multi``: one call for every layer
  (``method="auto"``); ``bulk_kernel`` / ``bulk_memcpy_batch`` force its copy engine (one kernel
  launch where SMs copy through mapped pinned memory, or one ``cudaMemcpyBatchAsync``; CUDA only);
* ``swapper``: ``KVSwapper.swap_out`` / ``swap_in`` end to end (host-block allocation, side
  stream, events) around the same op;
* ``per_block``: a Python loop of ``dst[d].copy_(src[s], non_blocking=True)``, one per block per
  layer tensor: the copy pattern of vLLM 0.6's swap, issued from Python;
* ``vllm_per_block``: vLLM's legacy ``_custom_ops.swap_blocks`` once per layer tensor, a C++
  loop of one ``cudaMemcpyAsync`` per block: exactly vLLM 0.6.1's ``CacheEngine.swap_out``;
* ``vllm_batch``: vLLM 0.33's ``_custom_ops.swap_blocks_batch`` (the OffloadingConnector's copy:
  one ``cuMemcpyBatchAsync`` of one descriptor per page; descriptors built before timing);
* ``link``: one contiguous pinned copy of the same byte count, the host link's bandwidth (up to
  ``--link-cap-mib`` per copy; a larger swap's time is scaled from that size).

The ``vllm_*`` methods need CUDA and an importable vLLM; otherwise they are skipped with a note.
A method that fails on this machine (say ``memcpy_batch`` before CUDA 12.8) gets an ``error`` in
its rows instead of figures; the others go on. On CUDA everything runs on one non-default stream
(``cudaMemcpyBatchAsync`` refuses the legacy default stream), the swapper on its own side stream.

**Timing.** CUDA events on the current stream around each call (the swapper's handle joined by
the current stream), after one warm-up, median of ``--repeats`` runs (more for short ones, up to
``--max-repeats``); on CPU, ``time.perf_counter``. Every method's copy is checked byte for byte
against its source for swaps of up to 100 blocks.

**Goals** (per direction, at the largest size both methods ran): bulk >= 5x the per-block loop,
and bulk >= 85% of the link. Printed as PASS / FAIL, never enforced (the exit status is 0). The
figures are a GPU's: a CPU run (``--quick`` without CUDA) copies RAM to RAM and only checks that
the script and its JSON work; its goals are printed as ``n/a (cpu)``.

**Simulator.** ``--json`` also records the swap costs fitted from these timings
(``autellix.sim.cost_model.fit_swap_costs``: link GB/s, bulk fixed cost and efficiency, per-copy
latency); ``autellix bench --preset <the GPU's preset> --swap-results benches/results/swap.json``
(``SimConfig.swap_results``, ``autellix.sim.cost_model.measured_preset``) feeds them to the
simulator's ``EnginePreset.swap_time``, and ``python -m autellix.sim.cost_model --swap-results
benches/results/swap.json`` prints datasheet vs measured swap times.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError:
    raise SystemExit("bench_swap.py needs torch: pip install 'autellix[vllm]'") from None

from autellix.kvswap import KVSwapper, ops_backend, swap_blocks_multi
from autellix.sim.cost_model import fit_swap_costs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benches/_progress.py
from _progress import progress_bar

#: Llama-3.1-8B (config.json): layers, KV heads, head dim; vLLM's default block size; bf16.
LAYERS, KV_HEADS, HEAD_DIM, BLOCK_TOKENS = 32, 8, 128, 16
SIZES = (1, 10, 100, 1000, 10_000)
QUICK_SIZES = (1, 10, 100)
METHODS = (
    "link",
    "bulk",
    "bulk_kernel",
    "bulk_memcpy_batch",
    "swapper",
    "per_block",
    "vllm_per_block",
    "vllm_batch",
)
#: Methods that only mean something on CUDA (the CPU kernel ignores the copy engine).
CUDA_ONLY = ("bulk_kernel", "bulk_memcpy_batch", "vllm_per_block", "vllm_batch")
DIRECTIONS = ("d2h", "h2d")
GOAL_VS_PER_BLOCK = 5.0
GOAL_VS_LINK = 0.85
#: Swaps up to this many blocks are checked byte for byte after each method.
CHECK_BLOCKS = 100
GiB = 1024**3


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


def _vllm_ops() -> tuple[Any, str | None]:
    """vLLM's ``_custom_ops`` if its CUDA swap ops load here, else (None, why not)."""
    if not torch.cuda.is_available():
        return None, "needs CUDA"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import vllm._custom_ops as vops  # type: ignore[import-not-found]

        cache_ops = torch.ops._C_cache_ops
        for name in ("swap_blocks", "swap_blocks_batch"):
            getattr(cache_ops, name)
    except Exception as e:  # ImportError, or its C extension does not load on this machine
        return None, f"vLLM's swap ops are not importable: {type(e).__name__}: {e}"
    return vops, None


def page_pointers(layers: list[Any], blocks: Any) -> Any:
    """Address of every (layer, block) page, layer-major: ``int64 [len(layers) * len(blocks)]``.
    One descriptor per page, as vLLM 0.33's CPU offload worker builds them for
    ``swap_blocks_batch``: a layer's base address + block index x its block stride in bytes."""
    base = torch.tensor([t.data_ptr() for t in layers], dtype=torch.int64)
    stride = torch.tensor([t.stride(0) * t.element_size() for t in layers], dtype=torch.int64)
    return (base[:, None] + blocks[None, :] * stride[:, None]).reshape(-1).contiguous()


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
        page = layout.page_bytes

        def legacy() -> None:
            for src, dst in zip(src_layers, dst_layers, strict=True):
                vops.swap_blocks(src, dst, page, mapping)

        return legacy
    if method == "vllm_batch":
        src_ptrs = page_pointers(src_layers, mapping[:, 0])
        dst_ptrs = page_pointers(dst_layers, mapping[:, 1])
        sizes = torch.full_like(src_ptrs, layout.page_bytes)
        return lambda: vops.swap_blocks_batch(src_ptrs, dst_ptrs, sizes)
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
        return True  # checked by _run_swapper (its host blocks are its own)
    d = torch.tensor(dev, dtype=torch.int64, device=layout.device)
    h = torch.tensor(host, dtype=torch.int64)
    for dev_t, host_t in zip(layout.layers, layout.host, strict=True):
        a = dev_t.index_select(0, d).cpu().view(torch.uint8)
        b = host_t.index_select(0, h).view(torch.uint8)
        if not torch.equal(a, b):
            return False
    return True


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


def _run_cell(
    layout: Layout,
    timer: Timer,
    args: argparse.Namespace,
    method: str,
    direction: str,
    n: int,
    vops: Any,
    link: Any,
) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------- running


def _fits(args: argparse.Namespace, device: torch.device, sizes: list[int]) -> tuple[list[int], list[str]]:
    """The sizes whose device cache and host pool fit in 80% of the free memory (and --max-blocks)."""
    notes = []
    page = args.kv_heads * args.block_tokens * 2 * args.head_dim * 2
    per_block = args.layers * page
    host_free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    budget = 0.8 * host_free
    if device.type == "cuda":
        budget = min(budget, 0.8 * torch.cuda.mem_get_info(device)[0])
    else:
        budget = 0.4 * host_free  # both sides in RAM
    kept = []
    for n in sizes:
        if n > args.max_blocks:
            notes.append(f"{n} blocks skipped: above --max-blocks {args.max_blocks}")
        elif n * per_block > budget:
            notes.append(
                f"{n} blocks skipped: {n * per_block / GiB:.1f} GiB per side does not fit in free memory"
            )
        else:
            kept.append(n)
    return kept, notes


def run(args: argparse.Namespace) -> dict[str, Any]:

    started = time.perf_counter()
    device = torch.device(args.device)
    sizes, notes = _fits(args, device, args.sizes)
    if not sizes:
        raise SystemExit("no swap size fits: " + "; ".join(notes))
    vops, why = _vllm_ops() if device.type == "cuda" else (None, "needs CUDA")
    methods = [m for m in args.methods if not (m.startswith("vllm_") and vops is None)]
    if vops is None and any(m.startswith("vllm_") for m in args.methods):
        notes.append(f"vllm_per_block, vllm_batch skipped: {why}")
    if device.type != "cuda":
        skipped = [m for m in methods if m in CUDA_ONLY]
        methods = [m for m in methods if m not in CUDA_ONLY]
        if skipped:
            notes.append(f"{', '.join(skipped)} skipped: CUDA only")
    if device.type != "cuda":
        notes.append("CPU run: RAM-to-RAM copies, not a host link; the figures only smoke-test the script")
    t = time.perf_counter()
    layout = Layout(args, max(sizes), device)
    setup_s = time.perf_counter() - t
    link_bytes = min(layout.bytes(max(sizes)), args.link_cap_mib * 2**20)
    link = (
        torch.empty(link_bytes, dtype=torch.uint8, pin_memory=layout.swapper.pinned),
        torch.empty(link_bytes, dtype=torch.uint8, device=device),
    )
    timer = Timer(device)
    rows: list[dict[str, Any]] = []
    cells = [
        (m, d, n)
        for n in sizes
        for d in DIRECTIONS
        for m in methods
        if not (m == "per_block" and n > args.per_block_max)
    ]
    if any(n > args.per_block_max for n in sizes) and "per_block" in methods:
        notes.append(f"per_block skipped above {args.per_block_max} blocks (--per-block-max)")
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(torch.cuda.stream(torch.cuda.Stream(device=device)))
        progress = stack.enter_context(progress_bar(args.no_progress))
        task = progress.add_task("swaps", total=len(cells))
        failed: set[str] = set()
        for method, direction, n in cells:
            progress.update(task, description=f"{method} {direction} {n} blocks")
            if method in failed:
                row = {
                    "method": method,
                    "direction": direction,
                    "blocks": n,
                    "error": "failed at a smaller size",
                }
            else:
                try:
                    row = _run_cell(layout, timer, args, method, direction, n, vops, link)
                except Exception as e:  # a method this machine cannot run; the others go on
                    failed.add(method)
                    row = {
                        "method": method,
                        "direction": direction,
                        "blocks": n,
                        "error": f"{type(e).__name__}: {e}",
                    }
                    notes.append(f"{method} failed at {n} blocks {direction}: {row['error']}")
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if "bench" in layout.swapper:
                        layout.swapper.discard("bench")
            row.setdefault("seconds", None)
            row.setdefault("gbps", None)
            rows.append(row)
            progress.advance(task)
    result: dict[str, Any] = {
        "config": {
            "sizes": sizes,
            "methods": methods,
            "repeats": args.repeats,
            "max_repeats": args.max_repeats,
            "seed": args.seed,
            "quick": args.quick,
            "link_cap_bytes": link_bytes,
            "per_block_max": args.per_block_max,
        },
        "layout": {
            "model": _model_name(args),
            "layout": args.layout,
            "layers": args.layers,
            "tensors": layout.tensors,
            "kv_heads": args.kv_heads,
            "head_dim": args.head_dim,
            "block_tokens": args.block_tokens,
            "dtype": "bfloat16",
            "page_bytes": layout.page_bytes,
            "block_bytes": layout.tensors * layout.page_bytes,
            "pinned": layout.swapper.pinned,
        },
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or "cpu",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "ops_backend": ops_backend(),
            "vllm": _vllm_version(vops),
        },
        "rows": rows,
        "notes": notes,
        "setup_s": setup_s,
    }
    result["summary"] = _summary(rows)
    result["goals"] = _goals(result)
    result["checks_passed"] = all(r.get("checked", True) for r in rows)
    if device.type == "cuda":
        result["swap_costs"] = asdict(fit_swap_costs(result, source="this run"))
    else:
        result["swap_costs"] = None
    result["wall_s"] = time.perf_counter() - started
    return result


def _model_name(args: argparse.Namespace) -> str:
    if (args.kv_heads, args.head_dim) != (KV_HEADS, HEAD_DIM):
        return "custom"
    return "Llama-3.1-8B" if args.layers == LAYERS else f"Llama-3.1-8B ({args.layers} of {LAYERS} layers)"


def _vllm_version(vops: Any) -> str | None:
    if vops is None:
        return None
    import vllm  # type: ignore[import-not-found]

    return str(vllm.__version__)


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per direction and method: GB/s at each size, and the largest size measured."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        cell = out.setdefault(r["direction"], {}).setdefault(r["method"], {"gbps": {}, "largest": 0})
        cell["gbps"][str(r["blocks"])] = r["gbps"]
        cell["largest"] = max(cell["largest"], r["blocks"])
    return out


def _gbps(rows: list[dict[str, Any]], method: str, direction: str, n: int) -> float | None:
    for r in rows:
        if (r["method"], r["direction"], r["blocks"]) == (method, direction, n):
            return float(r["gbps"]) if r["gbps"] else None
    return None


def _goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Bulk vs per-block loop and vs link, per direction, at the largest size both ran; info
    ratios vs vLLM's ops where measured."""
    rows, cuda = result["rows"], result["device"]["type"] == "cuda"
    goals = []
    for direction in DIRECTIONS:
        for other, goal, name in (
            ("per_block", GOAL_VS_PER_BLOCK, "bulk / per-block loop"),
            ("link", GOAL_VS_LINK, "bulk / link"),
            ("vllm_per_block", None, "bulk / vLLM per-block op"),
            ("vllm_batch", None, "bulk / vLLM batch op"),
        ):
            common = {r["blocks"] for r in rows if r["method"] == other and r["direction"] == direction} & {
                r["blocks"] for r in rows if r["method"] == "bulk" and r["direction"] == direction
            }
            if not common:
                continue
            n = max(common)
            bulk, base = _gbps(rows, "bulk", direction, n), _gbps(rows, other, direction, n)
            value = bulk / base if bulk and base else None
            if goal is None:
                verdict = "info"
            elif not cuda:
                verdict = "n/a (cpu)"
            else:
                verdict = "PASS" if value is not None and value >= goal else "FAIL"
            goals.append(
                {
                    "name": name,
                    "direction": direction,
                    "blocks": n,
                    "value": value,
                    "goal": goal,
                    "verdict": verdict,
                }
            )
    return goals


# ---------------------------------------------------------------------------------- report

LABELS = {
    "link": "link",
    "bulk": "bulk (autellix)",
    "swapper": "KVSwapper",
    "per_block": "per-block loop",
    "vllm_per_block": "vLLM swap_blocks",
    "vllm_batch": "vLLM batch",
}


def report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 132))
    lay, dev = result["layout"], result["device"]
    methods = result["config"]["methods"]
    pinned = "pinned" if lay["pinned"] else "not pinned"
    table = Table(
        title=f"KV swap GB/s on {dev['name']} ({dev['type']}), {lay['model']} {lay['layout']} layout: "
        f"{lay['tensors']} tensors x {lay['page_bytes'] // 1024} KiB pages = "
        f"{lay['block_bytes'] // 1024:,} KiB per block, host pool {pinned}",
        title_justify="left",
    )
    table.add_column("dir")
    table.add_column("blocks", justify="right")
    table.add_column("MiB", justify="right")
    for m in methods:
        table.add_column(LABELS[m], justify="right")
    table.add_column("bulk / per-block", justify="right")
    table.add_column("bulk / link", justify="right")
    rows = result["rows"]
    for direction in DIRECTIONS:
        for n in result["config"]["sizes"]:
            cells = [_gbps(rows, m, direction, n) for m in methods]
            bulk, per, link = (_gbps(rows, m, direction, n) for m in ("bulk", "per_block", "link"))
            table.add_row(
                direction,
                f"{n:,}",
                f"{n * lay['block_bytes'] / 2**20:,.1f}",
                *("-" if c is None else f"{c:.2f}" for c in cells),
                f"{bulk / per:.1f}x" if bulk and per else "-",
                f"{bulk / link:.0%}" if bulk and link else "-",
                end_section=n == result["config"]["sizes"][-1],
            )
    console.print(table)
    for g in result["goals"]:
        goal = (
            ""
            if g["goal"] is None
            else (f" (goal >= {g['goal']:.0%})" if g["goal"] < 1 else f" (goal >= {g['goal']:g}x)")
        )
        value = (
            "-"
            if g["value"] is None
            else (f"{g['value']:.0%}" if "link" in g["name"] else f"{g['value']:.2f}x")
        )
        console.print(
            f"{g['verdict']:>9}  {g['name']}, {g['direction']}, {g['blocks']:,} blocks: {value}{goal}"
        )
    if not result["checks_passed"]:
        console.print("[bold red]FAILED[/]: a method's copy differs from its source")
    for note in result["notes"]:
        console.print(f"note: {note}")
    costs = result["swap_costs"]
    if costs is not None:
        lat = costs["memcpy_latency"]
        console.print(
            f"fitted swap costs: link {costs['link_bandwidth'] / 1e9:.1f} GB/s, "
            f"bulk {costs['bulk_efficiency']:.0%} of it + {costs['bulk_latency'] * 1e6:.1f} us, "
            "per-block copy "
            + ("not measured" if lat is None else f"{lat * 1e6:.2f} us ({costs['per_block_method']})")
        )
    console.print(f"wall {result['wall_s']:.1f} s (setup {result['setup_s']:.1f} s)")


# ------------------------------------------------------------------------------------- CLI


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated block counts, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"block counts must be >= 1, got {text!r}")
    return sizes


def _methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or "bulk" not in names:
        raise argparse.ArgumentTypeError(
            f"a comma-separated subset of {', '.join(METHODS)} with bulk, got {text!r}"
        )
    return [m for m in METHODS if m in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1, 10, 100 blocks, 2 repeats (CPU: 4 layers)"
    )
    p.add_argument("--sizes", type=_sizes, help=f"block counts (default {','.join(map(str, SIZES))})")
    p.add_argument(
        "--max-blocks", type=int, default=10_000, help="largest swap (memory: 2 MiB/block per side)"
    )
    p.add_argument(
        "--per-block-max", type=int, default=10_000, help="largest swap for the Python per-block loop"
    )
    p.add_argument("--methods", type=_methods, default=list(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument(
        "--layout", choices=("packed", "split"), default="packed", help="K+V packed (vLLM 0.33) or split"
    )
    p.add_argument("--layers", type=int, help=f"layers (default {LAYERS}; --quick on CPU: 4)")
    p.add_argument("--kv-heads", type=int, default=KV_HEADS)
    p.add_argument("--head-dim", type=int, default=HEAD_DIM)
    p.add_argument("--block-tokens", type=int, default=BLOCK_TOKENS)
    p.add_argument("--repeats", type=int, help="timed runs per cell at least (default 5; --quick 2)")
    p.add_argument("--max-repeats", type=int, default=50, help="timed runs per cell at most")
    p.add_argument(
        "--link-cap-mib", type=int, default=1024, help="largest contiguous copy for the link figure"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    cpu = torch.device(args.device).type != "cuda"
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else SIZES)
    if args.layers is None:
        args.layers = 4 if args.quick and cpu else LAYERS
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.quick:
        args.max_repeats = min(args.max_repeats, 5)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its table; returns the result (what ``--json`` writes)."""
    args = parse_args(argv)
    result = run(args)
    report(result)
    if args.json:
        import json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
