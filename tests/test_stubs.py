"""The hand-written ``_core.pyi`` must match the compiled extension (mypy stubtest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / ".mypy-stubtest-allowlist"


def test_stubtest_core() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "autellix._core",
            "--allowlist",
            str(ALLOWLIST),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=ROOT,
    )
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode == 0, f"stubtest failed:\n{output}"


def test_mypy_strict_package() -> None:
    """``mypy --strict`` over python/autellix (config in pyproject.toml) must stay clean."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=ROOT,
    )
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode == 0, f"mypy failed:\n{output}"
