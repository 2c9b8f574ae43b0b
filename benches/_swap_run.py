"""``bench_swap.py``'s sweep: the sizes that fit, every (method, direction, size) cell, the result."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from dataclasses import asdict
from typing import Any

import torch
from _progress import progress_bar
from _swap_methods import CUDA_ONLY, DIRECTIONS, Layout, Timer, run_cell
from _swap_report import goals, summary

from autellix.kvswap import ops_backend
from autellix.sim.cost_model import fit_swap_costs
from autellix.testing import vllm_swap

GiB = 1024**3


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


def run(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Every cell ``args`` asks for, on ``args.device``; the result ``--json`` writes (``model``:
    the name the layout is reported under)."""
    started = time.perf_counter()
    device = torch.device(args.device)
    sizes, notes = _fits(args, device, args.sizes)
    if not sizes:
        raise SystemExit("no swap size fits: " + "; ".join(notes))
    vops, why = vllm_swap.load_ops() if device.type == "cuda" else (None, "needs CUDA")
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
                    row = run_cell(layout, timer, args, method, direction, n, vops, link)
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
            "model": model,
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
            "vllm": vllm_swap.version(vops),
        },
        "rows": rows,
        "notes": notes,
        "setup_s": setup_s,
    }
    result["summary"] = summary(rows)
    result["goals"] = goals(result)
    result["checks_passed"] = all(r.get("checked", True) for r in rows)
    if device.type == "cuda":
        result["swap_costs"] = asdict(fit_swap_costs(result, source="this run"))
    else:
        result["swap_costs"] = None
    result["wall_s"] = time.perf_counter() - started
    return result
