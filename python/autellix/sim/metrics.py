"""What a simulated run measured, and how it is summarised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autellix.sim.config import SimConfig


@dataclass(frozen=True)
class Distribution:
    """Mean and percentiles of one metric (NaN when nothing was measured)."""

    mean: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Distribution:
        a = np.asarray(values, dtype=np.float64)
        if a.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan)
        p50, p95, p99 = np.percentile(a, [50, 95, 99])
        return cls(float(a.mean()), float(p50), float(p95), float(p99))


@dataclass(frozen=True, slots=True)
class ProgramOutcome:
    """One program's fate: ``finish`` is -1 if it had not finished by the horizon."""

    id: int
    workload: str
    arrival: float
    finish: float
    output_tokens: int

    @property
    def latency(self) -> float:
        """Response time per generated token (s/token); NaN if unfinished."""
        if self.finish < 0:
            return float("nan")
        return (self.finish - self.arrival) / max(1, self.output_tokens)


@dataclass(frozen=True)
class SimResult:
    """Everything one run reports. ``latency`` is the paper's metric: each program's
    response time (arrival to last call finished, tool waits included) divided by the
    tokens it generated, in seconds per token."""

    config: SimConfig
    #: Every program finished before the horizon.
    completed: bool
    programs: int
    programs_done: int
    calls_done: int
    #: Per-program latency per output token (s/token), over finished programs.
    latency: Distribution
    #: Per-program response time (s).
    response: Distribution
    #: Per-call time to first token (s): issue to the end of its prefill iteration.
    ttft: Distribution
    #: Finished programs per second of simulated time (first arrival to last finish).
    throughput: float
    #: Generated tokens per second of simulated time.
    token_throughput: float
    #: Simulated seconds from the first arrival to the last event.
    makespan: float
    #: Calls preempted by the scheduler.
    preemptions: int
    #: Swap-outs plus swap-ins, and the copies (cudaMemcpy calls) and seconds they took.
    swaps: int
    swap_copies: int
    swap_time: float
    #: Tokens prefilled again after a recompute preemption.
    recomputed_tokens: int
    #: Prompt tokens served from the prefix cache.
    cached_tokens: int
    #: Prompt tokens a call could continue from its parent's context, and those prefilled again
    #: because the context was gone; ``hit_share`` = 1 - re-prefilled / reusable.
    reusable_tokens: int
    reprefilled_tokens: int
    hit_share: float
    #: Idle program contexts moved to the host tier, loaded back on demand, prefetched (GB).
    offloaded_gb: float
    loaded_gb: float
    prefetched_gb: float
    #: New programs deferred by admission, and the longest deferral (s).
    deferred_programs: int
    longest_deferral: float
    #: The worst finished program's latency (s/token) and response time (s).
    worst_latency: float
    worst_response: float
    #: Engine iterations and scheduler calls over all engines.
    iterations: int
    scheduler_steps: int
    #: Wall-clock seconds the simulation took.
    wall_seconds: float
    #: Every program's arrival and finish, in program order (not part of :meth:`row`).
    outcomes: tuple[ProgramOutcome, ...] = field(default=(), repr=False)

    def row(self) -> dict[str, Any]:
        """A flat dict (config fields, then metrics) for CSV / JSON."""
        out: dict[str, Any] = dict(self.config.as_dict())
        for key, value in asdict(self).items():
            if key in ("config", "outcomes"):
                continue
            if isinstance(value, dict):
                out.update({f"{key}_{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out
