"""Step-time cost model of one vLLM engine: hardware + model presets, roofline step time, KV swap time.

The simulator asks three questions of an :class:`EnginePreset`:

* how many KV-cache tokens fit (:attr:`EnginePreset.kv_blocks`, :attr:`EnginePreset.kv_tokens`);
* how long one engine iteration (one forward pass) takes (:meth:`EnginePreset.step_time`);
* how long moving KV blocks between GPU and host takes, per-block (vLLM 0.6.1) or bulk
  (Autellix) (:meth:`EnginePreset.swap_time`, :meth:`EnginePreset.swap_copies`): from datasheet
  figures by default, or from :class:`SwapCosts` measured by ``benches/bench_swap.py`` on the
  preset's GPU (:func:`load_swap_costs`, :meth:`EnginePreset.with_swap_costs`,
  :func:`measured_preset`), read from a file the caller names.

By concern:

* :mod:`.hardware`: GPUs (:class:`Hardware`, :data:`HARDWARE`), models (:class:`Model`,
  :data:`MODELS`) and vLLM's fixed costs, each constant with its source;
* :mod:`.preset`: :class:`EnginePreset`, :data:`PRESETS`, :func:`preset`, :func:`measured_preset`;
* :mod:`.swap`: measured swap costs (:class:`SwapCosts`, :func:`fit_swap_costs`,
  :func:`load_swap_costs`);
* :mod:`.validation`: the published vLLM measurements the model is checked against
  (:data:`PUBLISHED_MEASUREMENTS`, from the package's ``data/published_measurements.json``);
* :mod:`.report`: the tables of ``docs/cost-model.md``, printed by
  ``python -m autellix.sim.cost_model``.

``docs/cost-model.md`` explains the model, lists the sources, and compares it with the published
measurements (which the tests check so the doc and the code cannot drift apart).
"""

from autellix.sim.cost_model.hardware import (
    A100_SXM4_40GB,
    A100_SXM4_80GB,
    ALLREDUCE_LINK_EFFICIENCY,
    GATHER_LAUNCH_S,
    H100_SXM5_80GB,
    H200_SXM_141GB,
    HARDWARE,
    ITERATION_OVERHEAD_S,
    LLAMA31_8B,
    LLAMA31_70B,
    MBU,
    MEMCPY_LATENCY_S,
    MODELS,
    NON_KV_RESERVE_BYTES,
    SCHEDULE_OVERHEAD_PER_SEQ_S,
    SCHEDULE_OVERHEAD_S,
    GiB,
    Hardware,
    Model,
)
from autellix.sim.cost_model.preset import PRESETS, EnginePreset, measured_preset, preset
from autellix.sim.cost_model.report import main, swap_table, typical_table, validation_table
from autellix.sim.cost_model.swap import SwapCosts, fit_swap_costs, load_swap_costs
from autellix.sim.cost_model.validation import (
    KINDS,
    PUBLISHED_MEASUREMENTS,
    Measurement,
    load_published_measurements,
    parse_measurements,
)

__all__ = [
    "A100_SXM4_40GB",
    "A100_SXM4_80GB",
    "ALLREDUCE_LINK_EFFICIENCY",
    "GATHER_LAUNCH_S",
    "H100_SXM5_80GB",
    "H200_SXM_141GB",
    "HARDWARE",
    "ITERATION_OVERHEAD_S",
    "KINDS",
    "LLAMA31_8B",
    "LLAMA31_70B",
    "MBU",
    "MEMCPY_LATENCY_S",
    "MODELS",
    "NON_KV_RESERVE_BYTES",
    "PRESETS",
    "PUBLISHED_MEASUREMENTS",
    "SCHEDULE_OVERHEAD_PER_SEQ_S",
    "SCHEDULE_OVERHEAD_S",
    "EnginePreset",
    "GiB",
    "Hardware",
    "Measurement",
    "Model",
    "SwapCosts",
    "fit_swap_costs",
    "load_published_measurements",
    "load_swap_costs",
    "main",
    "measured_preset",
    "parse_measurements",
    "preset",
    "swap_table",
    "typical_table",
    "validation_table",
]
