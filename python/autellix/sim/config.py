"""Settings of one simulated run, with their defaults and what they mean."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from autellix._core import SchedulerConfig
from autellix.exceptions import AutellixError, ConfigError

#: ``vllm`` is the paper's "vLLM" baseline: FCFS on an engine configured like vLLM 0.6.1 (no prefix
#: caching, one scheduler call per iteration). The others run on the same engine as each other.
SCHEDULERS = ("vllm", "fcfs", "mlfq", "plas", "atlas")
#: Engine settings that ``vllm`` overrides.
VLLM_061_ENGINE = {"prefix_caching": False, "steps_per_schedule": 1}
BALANCERS = ("round-robin", "least-loaded", "program-aware")
SWAP_MODES = ("bulk", "per-block", "recompute")
WORKLOADS = ("sharegpt", "bfcl", "lats", "mixed")


@dataclass(frozen=True)
class SimConfig:
    """One simulated run: a workload at an arrival rate, served by a cluster.

    ``workload`` is one of :data:`WORKLOADS` or the path of a JSONL trace (see
    ``autellix.sim.trace``); for a trace, ``rate`` > 0 re-draws Poisson arrivals and
    ``rate`` = 0 keeps the trace's own arrival times.
    """

    workload: str = "sharegpt"
    #: Program arrivals per second (Poisson).
    rate: float = 1.0
    programs: int = 1000
    seed: int = 0
    scheduler: str = "plas"
    balancer: str = "program-aware"
    engines: int = 1
    #: Hardware + model preset of every engine (``autellix.sim.cost_model.PRESETS``).
    preset: str = "llama3.1-8b-a100"
    #: JSON of ``benches/bench_swap.py`` measured on the preset's GPU: swap times from those
    #: figures (:func:`autellix.sim.cost_model.measured_preset`); ``None``: datasheet figures.
    swap_results: str | None = None
    #: How preempted KV leaves the GPU: one bulk copy, vLLM 0.6's per-block copies, or dropped
    #: and recomputed on resume.
    swap: str = "bulk"
    #: Most calls in one engine's batch (vLLM's ``max_num_seqs``).
    max_batch: int = 256
    #: Decode iterations an engine runs between scheduler calls (vLLM multi-step scheduling).
    steps_per_schedule: int = 4
    #: Keep finished calls' KV as an evictable prefix cache (vLLM ``enable_prefix_caching``).
    prefix_caching: bool = True
    #: First MLFQ boundary in seconds of attained service; the K = 7 queues' boundaries double
    #: from it (q, 2q, ... 32q) and each queue's quantum is its width (q for Q1), as in FastServe.
    #: A simulated call runs for seconds (a 277-token ShareGPT reply at a full batch: ~15 s), not
    #: the core's default tens of milliseconds; 32 s is about two such calls. Smaller values
    #: demote calls mid-reply and preempt them back and forth (see benches/RESULTS.md).
    #: ``None``: the core's default ladder (quanta from 25 ms), which ``autellix serve`` and the
    #: vLLM plug-in use; the comparisons against them simulate that.
    quantum: float | None = 32.0
    #: Anti-starvation ratio (paper §5); ``None`` turns promotion off.
    starvation_beta: float | None = 8.0
    #: Stop the run at this simulated time (seconds); ``None`` = the last arrival plus 10 x the
    #: slowest program's unloaded duration (``cluster.default_horizon``). Programs still running
    #: then count as not completed: the load was more than the cluster sustains.
    horizon: float | None = None

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if self.balancer not in BALANCERS:
            raise ConfigError(f"unknown balancer {self.balancer!r}; choose one of {', '.join(BALANCERS)}")
        if self.swap not in SWAP_MODES:
            raise ConfigError(f"unknown swap mode {self.swap!r}; choose one of {', '.join(SWAP_MODES)}")
        if not self.rate >= 0 or self.rate == float("inf"):
            raise ConfigError(f"rate must be a finite number >= 0, got {self.rate!r}")
        for name in ("programs", "engines", "max_batch", "steps_per_schedule"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.quantum is not None and not (0 < self.quantum < float("inf")):
            raise ConfigError(f"quantum must be a positive number of seconds, got {self.quantum!r}")
        if self.horizon is not None and not self.horizon > 0:
            raise ConfigError(f"horizon must be > 0 seconds, got {self.horizon!r}")

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduling core's configuration for this run."""
        policy = "fcfs" if self.scheduler == "vllm" else self.scheduler
        if self.quantum is None:
            return SchedulerConfig(policy, starvation_beta=self.starvation_beta)
        levels = 7
        boundaries = [self.quantum * 2**i for i in range(levels - 1)]
        quanta = [self.quantum, *boundaries]
        try:
            return SchedulerConfig(
                policy, boundaries=boundaries, quanta=quanta, starvation_beta=self.starvation_beta
            )
        except AutellixError as err:
            raise ConfigError(str(err)) from err

    def engine_settings(self) -> dict[str, Any]:
        """Per-engine settings, with the ``vllm`` baseline's overrides applied."""
        settings = {"prefix_caching": self.prefix_caching, "steps_per_schedule": self.steps_per_schedule}
        if self.scheduler == "vllm":
            settings.update(VLLM_061_ENGINE)
        return settings

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with some fields changed (validated again)."""
        return SimConfig(**{**asdict(self), **changes})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
