"""The ``autellix`` command line: one module per subcommand.

Each subcommand module (:mod:`.demo`, :mod:`.bench`, :mod:`.trace`, :mod:`.serve`) has
``register(subparsers)``, which adds its parser and sets ``handler`` (a callable
``(argparse.Namespace) -> int``, the exit code); add a module to :data:`SUBCOMMANDS` to add a
subcommand. Options that configure a run take their help text from the documented fields of the
config they set (:func:`autellix.options.doc_of`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TypeAlias

from autellix._core import __version__
from autellix.cli import bench, demo, serve, trace
from autellix.cli._args import Subparsers

Handler: TypeAlias = Callable[[argparse.Namespace], int]

SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    demo.register,
    bench.register,
    trace.register,
    serve.register,
]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level ``autellix`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="autellix",
        description="Autellix: program-aware scheduler for LLM agent workloads.",
    )
    parser.add_argument("--version", action="version", version=f"autellix {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for register in SUBCOMMANDS:
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


__all__ = ["build_parser", "main"]
