"""The paper's worked example (section 11) through the Python API."""

from __future__ import annotations

import pytest

from autellix import demo


@pytest.mark.parametrize(
    ("policy", "quantum", "total"),
    [("fcfs", 1.0, 18.0), ("plas", 1.0, 12.0), ("mlfq", 4.0, 18.0), ("mlfq", 1.0, 11.0)],
)
def test_paper_worked_example(policy: str, quantum: float, total: float) -> None:
    """Section 11 of the paper through the Python API (autellix.demo runs it)."""
    out = demo.run(policy, quantum)
    assert out.total_waiting == total
    programs = out.programs.values()
    assert sum(p.waiting_time for p in programs) == total
    assert all(p.active_calls == 0 for p in programs)
    assert [p.finished_calls for p in programs] == [len(c) for c in demo.PROGRAMS.values()]
    # Every decode step is served exactly once.
    assert sum(p.attained_service for p in programs) == sum(map(sum, demo.PROGRAMS.values()))
