"""What ``autellix bench`` runs: the experiments, their sweeps and defaults, and :func:`plan`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autellix.exceptions import ConfigError
from autellix.sim.config import BALANCERS, KV_POLICIES, SCHEDULERS, SWAP_MODES, SimConfig
from autellix.sim.workload import WORKLOADS

EXPERIMENTS = ("schedulers", "balancers", "swap", "kv")

#: The scheduler autellix runs for each workload (paper §9): PLAS on single-threaded programs,
#: ATLAS on multi-threaded ones. Trace files get ATLAS (it reduces to PLAS on one thread).
AUTELLIX_POLICY: dict[str, str] = {"sharegpt": "plas", "bfcl": "plas", "lats": "atlas", "mixed": "atlas"}
#: The program-aware policies.
AUTELLIX_SCHEDULERS = ("plas", "atlas")
#: The other schedulers, which autellix's policies are compared against.
BASELINE_SCHEDULERS = tuple(s for s in SCHEDULERS if s not in AUTELLIX_SCHEDULERS)
#: Autellix's load balancer and the baselines it is compared against.
AUTELLIX_BALANCER = "program-aware"
BASELINE_BALANCERS = tuple(b for b in BALANCERS if b != AUTELLIX_BALANCER)
#: Autellix's KV policy (the core's KV planner and program admission), the baseline config
#: (scheduler, KV policy) of the kv experiment, and the policy that bounds every other's
#: throughput under the same scheduler (GPU + host memory as one free pool).
AUTELLIX_KV_POLICY = "autellix"
KV_BASELINE = ("fcfs", "lru")
KV_LIMIT = "ideal"

#: Workloads each experiment runs unless ``--workloads`` says otherwise.
DEFAULT_WORKLOADS: dict[str, tuple[str, ...]] = {
    "schedulers": WORKLOADS,
    "balancers": ("sharegpt", "lats"),
    "swap": ("sharegpt",),
    "kv": ("sharegpt", "bfcl", "lats", "mixed"),
}
#: Schedulers of the swap experiment unless ``--schedulers`` says otherwise (the balancers
#: experiment uses :data:`AUTELLIX_POLICY`, the schedulers experiment all of them).
SWAP_SCHEDULERS = ("plas", "mlfq")
#: Swap modes of the swap experiment unless ``--swap-modes`` says otherwise: all of them.
SWAP_EXPERIMENT_MODES = SWAP_MODES
#: Schedulers of the kv experiment unless ``--schedulers`` says otherwise: the FCFS baseline and
#: autellix's two policies.
KV_SCHEDULERS = ("fcfs", "plas", "atlas")
#: KV policies of the kv experiment unless ``--kv-policies`` says otherwise: all of them. The
#: other experiments use the :class:`SimConfig` default (lru).
KV_EXPERIMENT_POLICIES = KV_POLICIES
DEFAULT_ENGINES = 4


@dataclass(frozen=True)
class Sweep:
    """Sizes of a sweep: programs per run and the arrival rates (programs/s) per workload."""

    name: str
    programs: int
    #: Rates of the schedulers experiment.
    rates: Mapping[str, tuple[float, ...]]
    #: Per-engine rates of the balancers experiment (multiplied by the number of engines).
    balancer_rates: Mapping[str, tuple[float, ...]]
    #: Rates of the swap experiment: high enough that the scheduler preempts a lot.
    swap_rates: Mapping[str, tuple[float, ...]]
    #: Rates of the kv experiment, above the schedulers sweep's: idle program contexts compete for
    #: GPU memory more as the load grows.
    kv_rates: Mapping[str, tuple[float, ...]]

    def rates_for(self, experiment: str, workload: str) -> tuple[float, ...]:
        table = {
            "schedulers": self.rates,
            "balancers": self.balancer_rates,
            "swap": self.swap_rates,
            "kv": self.kv_rates,
        }[experiment]
        if workload in table:
            return table[workload]
        if experiment == "swap" and workload in self.rates:
            return self.rates[workload][-2:]  # the two highest rates of the scheduler sweep
        if experiment == "balancers" and workload in self.rates:
            return self.rates[workload]
        raise KeyError(workload)


#: ``autellix bench``: every workload x scheduler at three rates, sized to finish in under
#: 2 minutes on 2 cores. Rates: low load, near the FCFS knee, past it (``benches/RESULTS.md``).
QUICK = Sweep(
    name="quick",
    programs=150,
    rates={
        "sharegpt": (0.4, 0.8, 1.2),
        "bfcl": (0.3, 0.5, 0.7),
        "lats": (0.03, 0.05, 0.07),
        "mixed": (0.08, 0.14, 0.2),
    },
    balancer_rates={"sharegpt": (0.4, 0.8), "lats": (0.03, 0.05)},
    swap_rates={"sharegpt": (0.8, 1.2)},
    kv_rates={
        "sharegpt": (1.2, 2.0, 2.8),
        "bfcl": (0.6, 0.8, 1.0),
        "lats": (0.05, 0.08, 0.11),
        "mixed": (0.14, 0.23, 0.32),
    },
)

#: ``autellix bench --full``: the issue's full sweep, 4 workloads x 5 schedulers x 6 rates x
#: 1000 programs (target: under 10 minutes on 2 cores). Each workload's rates run from light
#: load to just past the point where FCFS's latency takes off on a LLaMA-3.1-8B / A100 engine
#: (sharegpt further: its latency rises gradually, and its long chats let FCFS drain a backlog).
FULL = Sweep(
    name="full",
    programs=1000,
    rates={
        "sharegpt": (0.4, 0.8, 1.2, 1.6, 2.0, 2.4),
        "bfcl": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
        "lats": (0.02, 0.03, 0.04, 0.05, 0.06, 0.07),
        "mixed": (0.05, 0.08, 0.11, 0.14, 0.17, 0.2),
    },
    balancer_rates={"sharegpt": (0.4, 0.6, 0.8, 1.0), "lats": (0.03, 0.04, 0.05, 0.06)},
    swap_rates={"sharegpt": (0.8, 1.0, 1.2)},
    kv_rates={
        "sharegpt": (1.2, 1.6, 2.0, 2.4, 2.8, 3.2),
        "bfcl": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        "lats": (0.05, 0.07, 0.08, 0.09, 0.1, 0.11),
        "mixed": (0.14, 0.2, 0.23, 0.26, 0.29, 0.32),
    },
)

SWEEPS: dict[str, Sweep] = {s.name: s for s in (QUICK, FULL)}


def autellix_policy(workload: str) -> str:
    """The scheduler autellix uses for ``workload`` (a name of :data:`WORKLOADS` or a trace)."""
    return AUTELLIX_POLICY.get(workload, "atlas")


@dataclass(frozen=True)
class BenchOptions:
    """What ``autellix bench`` runs; ``None`` = the experiment's default."""

    experiments: tuple[str, ...] = ("schedulers",)
    sweep: Sweep = QUICK
    workloads: tuple[str, ...] | None = None
    schedulers: tuple[str, ...] | None = None
    balancers: tuple[str, ...] | None = None
    swap_modes: tuple[str, ...] | None = None
    kv_policies: tuple[str, ...] | None = None
    #: Rates used as given for every workload and experiment (not scaled by the engines).
    rates: tuple[float, ...] | None = None
    programs: int | None = None
    seed: int = 0
    #: Cost-model preset; ``None`` = the :class:`SimConfig` default.
    preset: str | None = None
    #: ``benches/bench_swap.py`` JSON calibrating every engine's swap times; ``None``: datasheet.
    swap_results: str | None = None
    #: Host KV tier per engine (GiB) of every run; ``None`` = the :class:`SimConfig` default.
    host_kv_gib: float | None = None
    #: Multiplier of every generated tool wait; ``None`` = the :class:`SimConfig` default.
    tool_wait_scale: float | None = None
    engines: int = DEFAULT_ENGINES
    #: Engine prefix caching for every run but ``vllm`` (which never has it).
    prefix_caching: bool = True
    #: First MLFQ boundary in seconds; ``None`` = the :class:`SimConfig` default.
    quantum: float | None = None
    jobs: int = 1
    out: Path = Path("autellix-bench")
    plots: bool = True
    #: Latency target (s/token) for "throughput at a latency target"; ``None`` = automatic.
    latency_target: float | None = None


@dataclass(frozen=True)
class Run:
    """One planned simulation and the experiment it belongs to."""

    experiment: str
    config: SimConfig


def _variants(experiment: str, options: BenchOptions, workload: str) -> list[dict[str, Any]]:
    """The settings each of ``experiment``'s runs of ``workload`` varies, at one rate."""
    if experiment == "schedulers":
        return [{"scheduler": s, "engines": 1} for s in options.schedulers or SCHEDULERS]
    if experiment == "balancers":
        return [
            {"scheduler": s, "balancer": b, "engines": options.engines}
            for s in options.schedulers or (autellix_policy(workload),)
            for b in options.balancers or BALANCERS
        ]
    if experiment == "swap":
        return [
            {"scheduler": s, "swap": m, "engines": 1}
            for s in options.schedulers or SWAP_SCHEDULERS
            for m in options.swap_modes or SWAP_EXPERIMENT_MODES
        ]
    return [
        {"scheduler": s, "kv_policy": k, "engines": 1}
        for s in options.schedulers or KV_SCHEDULERS
        for k in options.kv_policies or KV_EXPERIMENT_POLICIES
    ]


def plan(options: BenchOptions) -> list[Run]:
    """Every (experiment, config) the options ask for, in a deterministic order.

    Raises :class:`~autellix.exceptions.ConfigError` for an unknown experiment or a setting
    :class:`SimConfig` refuses.
    """
    runs: list[Run] = []
    base: dict[str, Any] = {"seed": options.seed, "prefix_caching": options.prefix_caching}
    if options.preset is not None:
        base["preset"] = options.preset
    if options.swap_results is not None:
        base["swap_results"] = options.swap_results
    if options.quantum is not None:
        base["quantum"] = options.quantum
    if options.host_kv_gib is not None:
        base["host_kv_gib"] = options.host_kv_gib
    if options.tool_wait_scale is not None:
        base["tool_wait_scale"] = options.tool_wait_scale
    base["programs"] = options.programs if options.programs is not None else options.sweep.programs
    for experiment in options.experiments:
        if experiment not in EXPERIMENTS:
            raise ConfigError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
        for workload in options.workloads or DEFAULT_WORKLOADS[experiment]:
            rates = options.rates or options.sweep.rates_for(experiment, workload)
            if experiment == "balancers" and options.rates is None:  # the sweep's rates are per engine
                rates = tuple(r * options.engines for r in rates)
            for rate in rates:
                for variant in _variants(experiment, options, workload):
                    config = SimConfig(workload=workload, rate=rate, **variant, **base)
                    runs.append(Run(experiment, config))
    return runs
