"""The ``autellix`` command line.

Adding a subcommand is a one-function affair: write ``_add_<name>(subparsers)`` that
creates the subparser, adds its arguments and sets ``handler`` via ``set_defaults``
(a callable ``(argparse.Namespace) -> int``), then append it to ``_SUBCOMMANDS``::

    def _add_demo(subparsers: _Subparsers) -> None:
        p = subparsers.add_parser("demo", help="run the worked example")
        p.set_defaults(handler=_run_demo)

    def _run_demo(args: argparse.Namespace) -> int:
        ...
        return 0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from autellix import __version__

if TYPE_CHECKING:
    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _Subparsers: TypeAlias = argparse._SubParsersAction

Handler: TypeAlias = Callable[[argparse.Namespace], int]


def _add_demo(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the paper's worked example through the scheduling core",
        description="Four agent programs on one engine (max batch 2), time in decode steps: "
        "total waiting under FCFS, MLFQ and PLAS, next to the paper's figures.",
    )
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from autellix import demo

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


# Functions that register one subcommand each (see module docstring).
_SUBCOMMANDS: list[Callable[[_Subparsers], None]] = [_add_demo]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level ``autellix`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="autellix",
        description="Autellix: program-aware scheduler for LLM agent workloads.",
    )
    parser.add_argument("--version", action="version", version=f"autellix {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for register in _SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if args.command is None or handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
