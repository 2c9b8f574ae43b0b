"""What the benchmarks print and write: a console wide enough for their tables, strict JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from autellix import bench


def console() -> Console:
    """The terminal's console, at least 132 columns wide (narrower ones would wrap the tables)."""
    return Console(width=max(Console().width, 132))


def write_json(path: str | Path, result: Any) -> None:
    """``result`` as strict, indented JSON in ``path`` (NaN / infinity as null), folders created:
    :func:`autellix.bench.write_json`, the writer of ``autellix bench``'s files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bench.write_json(path, result)
