"""The pure-Python reference schedulers and cross-checks, imported from their one home,
``tests/reference/autellix_reference`` (the test suite checks them against the Rust core).

The directory goes first on ``sys.path`` and the package has a name no distribution uses, so nothing
installed can shadow it (importing ``tests.reference...`` could: ``tests`` would be a namespace
package, and any wheel that installs a ``tests`` package wins over it). The check below catches
the one remaining way, a copy imported from elsewhere before this module ran."""

from __future__ import annotations

import sys
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "tests" / "reference"
if str(REFERENCE_DIR) not in sys.path:
    sys.path.insert(0, str(REFERENCE_DIR))

import autellix_reference  # noqa: E402
from autellix_reference import (  # noqa: E402
    Check,
    PyPlas,
    PyPlasDue,
    PyPlasQueue,
    crosscheck,
    crosscheck_cycle,
)

if Path(autellix_reference.__file__ or "").resolve().parent.parent != REFERENCE_DIR:
    raise ImportError(f"autellix_reference came from {autellix_reference.__file__}, not {REFERENCE_DIR}")

__all__ = ["Check", "PyPlas", "PyPlasDue", "PyPlasQueue", "crosscheck", "crosscheck_cycle"]
