#!/usr/bin/env python3
"""End to end on a GPU: ``vllm serve`` with the autellix plug-in, behind ``autellix serve``, against
stock vLLM, on a BFCL-style replay. Run by ``.ci/gpu``::

    AUTELLIX_E2E_MODEL=/models/Qwen2.5-0.5B-Instruct python benches/gpu_vllm_e2e.py --json out.json

Needs vLLM and a model directory on the machine (nothing is downloaded: the device machines reach
no registry). Without vLLM, or without ``AUTELLIX_E2E_MODEL`` naming a local directory, it prints
one line saying what is missing and exits 0 (a skip, not a failure).

Sides, one after the other on the same GPU, each with the same ``vllm serve`` engine settings
(prefix caching on, ``--num-gpu-blocks-override`` so that the contexts of programs waiting on a
tool do not all fit, ``--max-num-seqs``, ``--enable-prompt-tokens-details`` for per-call cache hits):

* ``stock``: ``vllm serve MODEL``, vLLM's own scheduler; the client talks to it directly;
* ``lru`` and ``autellix``: ``autellix serve --engine vllm --vllm-model MODEL --policy plas``,
  which starts ``vllm serve`` with the plug-in (``AutellixScheduler``; ``kv_policy`` from
  ``AUTELLIX_KV_POLICY`` in its environment) and forwards program and thread ids as
  ``vllm_xargs``; the client talks to the front, tags each call ``X-Autellix-Program-Id`` and ends
  each program with ``POST /v1/programs/{id}/finish``, which the front passes to the plug-in (its
  control channel) so that the program's retained contexts go back at once.

The workload is ``autellix.sim.workload.generate("bfcl", ...)``: each program is one chat whose
turns are its calls, issued after their tool waits; a turn's new input is filler text of about the
spec's new tokens x ``--token-scale`` words, so a call's prompt is its parent's conversation (the
shared history vLLM's prefix cache can hit) plus that turn. Every call generates exactly its spec's
output tokens (``ignore_eos``). Reported per side: mean / P99 / worst program latency per output
token (wall seconds), the history hit share (each call's ``usage.prompt_tokens_details
.cached_tokens``, capped at its parent's prompt + completion tokens, over those), and vLLM's own
prefix-cache hit rate over all prompt tokens (``vllm:prefix_cache_hits`` / ``queries`` from the
server's ``/metrics``, where it shows them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

MODEL_ENV = "AUTELLIX_E2E_MODEL"
#: stock vLLM, then the plug-in with kv lru and with kv autellix (``_vllm_replay_e2e.SIDES``)
SIDE_NAMES = ("stock", "lru", "autellix")


def skip_reason(model: str | None) -> str | None:
    """Why this machine cannot run the check (None: it can)."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not importable here (pip install 'autellix[vllm]' where a registry is reachable)"
    if not model:
        return f"${MODEL_ENV} is not set: point it at a local model directory (nothing is downloaded)"
    if not Path(model).is_dir():
        return f"${MODEL_ENV}={model} is not a directory"
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--programs", type=int, default=24, help="BFCL-style programs (default: 24)")
    p.add_argument("--rate", type=float, default=1.0, help="program arrivals per second (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: 0)")
    p.add_argument("--tool-wait-scale", type=float, default=1.0, help="multiplies tool waits (default: 1)")
    p.add_argument(
        "--token-scale", type=float, default=0.25, help="new-input words per spec token (default: 0.25)"
    )
    p.add_argument(
        "--num-gpu-blocks", type=int, default=1500, help="vLLM's KV blocks (16 tokens; default: 1500)"
    )
    p.add_argument("--max-num-seqs", type=int, default=16, help="vLLM's batch slots (default: 16)")
    p.add_argument("--max-model-len", type=int, default=16384, help="vLLM's max_model_len (default: 16384)")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds vLLM may take to start")
    sides = ",".join(SIDE_NAMES)
    p.add_argument("--sides", default=sides, help=f"comma-separated (default: {sides})")
    p.add_argument(
        "--out", type=Path, default=None, help="folder for the servers' logs (default: a temp one)"
    )
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model = os.environ.get(MODEL_ENV)
    reason = skip_reason(model)
    if reason is not None:
        print(f"gpu_vllm_e2e: SKIP: {reason}")
        return 0
    assert model is not None
    # only now: a machine without vLLM may lack what the replay needs too
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _vllm_replay_e2e import SIDES, run_side

    from autellix.sim.workload import generate

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or any(s not in SIDES for s in sides):
        raise SystemExit(f"--sides: a comma-separated list of {', '.join(SIDES)}")
    programs = generate("bfcl", args.programs, args.rate, args.seed, tool_wait_scale=args.tool_wait_scale)
    out = args.out or Path(os.environ.get("OUT") or "/tmp") / "gpu-vllm-e2e"
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"config": {**vars(args), "out": str(out), "json": args.json, "model": model}}
    for side in sides:
        print(f"gpu_vllm_e2e: {side} ...", flush=True)
        result[side] = run_side(side, model, programs, args, out)
        r = result[side]
        d = r["per_token_s"]
        print(
            f"gpu_vllm_e2e: {side}: per-token latency mean {d['mean'] * 1e3:.1f} ms, "
            f"P99 {d['p99'] * 1e3:.1f} ms, "
            f"worst {d['worst'] * 1e3:.1f} ms; history hit share {r['history_hit_share']:.3f}; "
            f"vLLM prefix-cache hit rate {r['prefix_cache_hit_rate']:.3f}",
            flush=True,
        )
    for side in sides:
        if "stock" in result and side != "stock":  # > 1: faster than stock vLLM
            stock, ours = result["stock"]["per_token_s"], result[side]["per_token_s"]
            q = result[side]["vs_stock"] = {k: stock[k] / ours[k] for k in stock}
            print(
                f"gpu_vllm_e2e: stock / {side}: mean {q['mean']:.2f}, P99 {q['p99']:.2f}, "
                f"worst {q['worst']:.2f}"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
