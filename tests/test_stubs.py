"""The hand-written ``_core.pyi`` must match the compiled extension (mypy stubtest), and the
package must stay ``mypy --strict`` clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / ".mypy-stubtest-allowlist"


def _assert_module_succeeds(*args: str) -> None:
    """Runs ``python -m <args>`` from the repository root and asserts it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=ROOT,
    )
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode == 0, f"{args[0]} failed:\n{output}"


def test_stubtest_core() -> None:
    _assert_module_succeeds("mypy.stubtest", "autellix._core", "--allowlist", str(ALLOWLIST))


def test_mypy_strict_package() -> None:
    """``mypy --strict`` over python/autellix (config in pyproject.toml) must stay clean."""
    _assert_module_succeeds("mypy", "--config-file", str(ROOT / "pyproject.toml"))
