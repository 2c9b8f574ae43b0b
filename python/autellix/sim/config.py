"""Settings of one simulated run, with their defaults and what they mean."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from autellix._core import SchedulerConfig
from autellix.balancer import BALANCERS
from autellix.exceptions import AutellixError, ConfigError
from autellix.options import option
from autellix.sim.kv_cache import KV_POLICIES
from autellix.sim.workload import WORKLOADS

#: ``vllm`` is the paper's "vLLM" baseline: FCFS on an engine configured like vLLM 0.6.1 (no prefix
#: caching, one scheduler call per iteration). The others are the core's policies, run on the
#: same engine as each other.
SCHEDULERS = ("vllm", *SchedulerConfig.policies())
#: Engine settings that ``vllm`` overrides.
VLLM_061_ENGINE = {"prefix_caching": False, "steps_per_schedule": 1}
SWAP_MODES = ("bulk", "per-block", "recompute")
#: The core's defaults (starvation beta), shared by every surface.
_CORE = SchedulerConfig()

__all__ = [
    "BALANCERS",
    "KV_POLICIES",
    "SCHEDULERS",
    "SWAP_MODES",
    "VLLM_061_ENGINE",
    "WORKLOADS",
    "SimConfig",
]


@dataclass(frozen=True)
class SimConfig:
    """One simulated run: a workload at an arrival rate, served by a cluster.

    ``workload`` is one of :data:`WORKLOADS` or the path of a JSONL trace (see
    ``autellix.sim.trace``); for a trace, ``rate`` > 0 re-draws Poisson arrivals and
    ``rate`` = 0 keeps the trace's own arrival times.
    """

    workload: str = option("sharegpt", "one of the workloads, or the path of a JSONL trace")
    rate: float = option(1.0, "program arrivals per second (Poisson)")
    programs: int = option(1000, "programs per run")
    tool_wait_scale: float = option(
        1.0, "multiplies every tool wait of a generated workload (10: tool calls of seconds, not 0.5 s)"
    )
    seed: int = option(0, "workload seed")
    scheduler: str = option("plas", "vllm (FCFS on a vLLM 0.6.1-like engine) or a core policy")
    balancer: str = option("program-aware", "how calls are spread over the engines")
    engines: int = option(1, "engines in the cluster")
    preset: str = option("llama3.1-8b-a100", "hardware + model preset of every engine")
    swap_results: str | None = option(
        None,
        "JSON of benches/bench_swap.py measured on the preset's GPU: swap times from those figures "
        "(default: datasheet figures)",
    )
    swap: str = option(
        "bulk",
        "how preempted KV leaves the GPU: one bulk copy, vLLM 0.6's per-block copies, or dropped "
        "and recomputed on resume",
    )
    max_batch: int = option(256, "most calls in one engine's batch (vLLM's max_num_seqs)")
    steps_per_schedule: int = option(
        4, "decode iterations an engine runs between scheduler calls (vLLM multi-step scheduling)"
    )
    prefix_caching: bool = option(
        True, "keep finished calls' KV as an evictable prefix cache (vLLM enable_prefix_caching)"
    )
    # None: the core's default ladder, the one `autellix serve` and the vLLM plug-in run (first
    # boundary 0.5 s; benches/RESULTS.md, "One scheduler default", says how it was chosen).
    quantum: float | None = option(
        None,
        "first MLFQ boundary / quantum in seconds of service; the 7 queues double from it "
        "(SchedulerConfig.ladder(q)); None: the core's default ladder",
    )
    starvation_beta: float | None = option(
        _CORE.starvation_beta, "anti-starvation ratio beta (paper section 5); None turns promotion off"
    )
    kv_policy: str = option(
        "lru",
        "where idle program contexts go under memory pressure: lru (vLLM prefix caching), ttl "
        "(Continuum), offload-lru (vLLM CPU offloading), autellix (the core's KV planner, and program "
        "admission on a one-engine cluster), ideal (GPU + host as one free pool: the limit)",
    )
    host_kv_gib: float | None = option(
        None,
        "host KV tier per engine, GiB (offload-lru, autellix; pooled by ideal); default: half the "
        "host memory per GPU of the preset's machine",
    )
    horizon: float | None = option(
        None,
        "stop the run at this simulated time, seconds (default: the last arrival plus 10x the slowest "
        "program's unloaded duration); programs still running then count as not completed",
    )

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if self.balancer not in BALANCERS:
            raise ConfigError(f"unknown balancer {self.balancer!r}; choose one of {', '.join(BALANCERS)}")
        if self.kv_policy not in KV_POLICIES:
            raise ConfigError(f"unknown kv policy {self.kv_policy!r}; choose one of {', '.join(KV_POLICIES)}")
        if not (0 <= self.tool_wait_scale < float("inf")):
            raise ConfigError(f"tool_wait_scale must be a finite number >= 0, got {self.tool_wait_scale!r}")
        if self.host_kv_gib is not None and not (0 <= self.host_kv_gib < float("inf")):
            raise ConfigError(f"host_kv_gib must be a finite number >= 0, got {self.host_kv_gib!r}")
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
        try:
            if self.quantum is None:
                return SchedulerConfig(policy, starvation_beta=self.starvation_beta)
            boundaries, quanta = SchedulerConfig.ladder(self.quantum)
            return SchedulerConfig(
                policy, boundaries=boundaries, quanta=quanta, starvation_beta=self.starvation_beta
            )
        except AutellixError as err:
            raise ConfigError(str(err)) from err

    def engine_settings(self) -> dict[str, Any]:
        """Per-engine settings, with the ``vllm`` baseline's overrides applied."""
        settings: dict[str, Any] = {
            "prefix_caching": self.prefix_caching,
            "steps_per_schedule": self.steps_per_schedule,
            "kv_policy": self.kv_policy,
        }
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
