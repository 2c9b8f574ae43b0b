"""Fixtures of the ``autellix bench`` tests. Formatting and summary logic run against
``bench_support.fake_simulate`` (a deterministic stand-in with known latencies); the end-to-end
tests drive the real simulator on tiny sweeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autellix.bench import runner

from .bench_support import fake_simulate


@pytest.fixture
def fake_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``autellix bench`` with :func:`bench_support.fake_simulate` in place of the simulator
    (for ``--jobs 1``: :func:`autellix.bench.runner.run_configs` looks ``run_one`` up per call)."""
    monkeypatch.setattr(runner, "run_one", fake_simulate)
    yield
