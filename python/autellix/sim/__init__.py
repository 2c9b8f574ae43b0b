"""A discrete-event simulator of an LLM serving cluster driven by the real scheduling core.

>>> from autellix.sim import SimConfig, simulate
>>> result = simulate(SimConfig(workload="sharegpt", rate=1.0, programs=50, scheduler="plas"))
>>> result.latency.mean  # seconds per generated token, averaged over programs  # doctest: +SKIP
"""

from autellix.sim.cluster import load_programs, simulate
from autellix.sim.config import BALANCERS, SCHEDULERS, SWAP_MODES, WORKLOADS, SimConfig
from autellix.sim.metrics import Distribution, SimResult
from autellix.sim.spec import CallSpec, ProgramSpec

__all__ = [
    "BALANCERS",
    "SCHEDULERS",
    "SWAP_MODES",
    "WORKLOADS",
    "CallSpec",
    "Distribution",
    "ProgramSpec",
    "SimConfig",
    "SimResult",
    "load_programs",
    "simulate",
]
