"""What the benchmarks print and write: a console wide enough for their tables, strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console


def console() -> Console:
    """The terminal's console, at least 132 columns wide (narrower ones would wrap the tables)."""
    return Console(width=max(Console().width, 132))


def finite(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by ``None`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path: str | Path, result: Any) -> None:
    """``result`` as strict, indented JSON in ``path`` (NaN / infinity as null), folders created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(result), indent=2, allow_nan=False) + "\n")
