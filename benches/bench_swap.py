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
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benches/_swap_*.py, _output.py, ...
from _output import write_json

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


def _torch() -> Any:
    """torch, imported once the arguments are parsed: ``--help`` and a bad argument answer at once."""
    try:
        import torch
    except ImportError:
        raise SystemExit("bench_swap.py needs torch: pip install 'autellix[vllm]'") from None
    return torch


def _model_name(args: argparse.Namespace) -> str:
    if (args.kv_heads, args.head_dim) != (KV_HEADS, HEAD_DIM):
        return "custom"
    return "Llama-3.1-8B" if args.layers == LAYERS else f"Llama-3.1-8B ({args.layers} of {LAYERS} layers)"


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
    p.add_argument("--device", help="cuda or cpu")  # default: cuda if there is one (needs torch: below)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    torch = _torch()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
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
    from _swap_report import report  # these import torch (parse_args made sure it is there)
    from _swap_run import run

    result = run(args, model=_model_name(args))
    report(result)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
