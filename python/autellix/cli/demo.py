"""``autellix demo``: the paper's worked example (section 11) through the scheduling core."""

from __future__ import annotations

import argparse

from autellix.cli._args import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the paper's worked example through the scheduling core",
        description="Four agent programs on one engine (max batch 2), time in decode steps: "
        "total waiting under FCFS, MLFQ and PLAS, next to the paper's figures.",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import autellix.demo as demo

    table = Table(title="Autellix worked example: 4 programs, max batch 2 (decode steps)")
    for column in ("policy", "total waiting", "paper", "makespan", "program completion times"):
        table.add_column(column, justify="left" if column.startswith(("policy", "program")) else "right")
    ok = True
    for policy, expected in demo.PAPER_WAITING.items():
        out = demo.run(policy)
        ok &= out.total_waiting == expected
        done = ", ".join(f"{k}={v:g}" for k, v in sorted(out.completion.items()))
        table.add_row(policy, f"{out.total_waiting:g}", str(expected), f"{out.makespan:g}", done)
    console = Console()
    console.print(table)
    console.print("matches the paper" if ok else "[red]differs from the paper[/red]")
    return 0 if ok else 1
