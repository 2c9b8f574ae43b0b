"""Makes the reference schedulers importable as ``autellix_reference`` (see its docstring for why
not as ``tests.reference...``). pytest runs with ``--import-mode=importlib``, which leaves
``sys.path`` alone, so this directory goes first on it here, before the tests beside it import."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# The package holds no tests; collecting it would import it a second time under another name.
collect_ignore = ["autellix_reference"]
