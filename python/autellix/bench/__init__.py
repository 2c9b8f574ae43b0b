"""``autellix bench``: sweeps of the cluster simulator in the shape of the paper's experiments.

Four experiments (paper §7-§10, and KV placement):

``schedulers``
    One engine; every workload x scheduler x arrival rate (the paper's "program latency per
    token vs arrival rate" figures).
``balancers``
    ``engines`` engines; workloads x load balancers x rates, each workload served by
    autellix's scheduler for it (:data:`AUTELLIX_POLICY`); default rates are per engine and
    scaled by the number of engines.
``swap``
    One engine in a preemption-heavy setting (high rates); how preempted KV leaves the GPU:
    vLLM's per-block copies, autellix's bulk copy, or recompute.
``kv``
    One engine; workloads x schedulers (fcfs, plas, atlas) x KV policies x rates: where idle
    program contexts go under memory pressure (:data:`~autellix.sim.config.KV_POLICIES`), and
    each config's throughput at a latency target relative to ``ideal`` and to fcfs + lru.

A run is one :class:`~autellix.sim.config.SimConfig`; the sweep runs them in a process pool
(:func:`run_configs`), and every :meth:`~autellix.sim.metrics.SimResult.row` lands in
``results.csv`` / ``results.json``, tagged with its experiment. :func:`summarize` derives the
paper's headline numbers from those rows alone (see its docstring for the rules).

One concern per module:

- :mod:`~autellix.bench.plan`: the experiments, sweeps (:data:`QUICK`, :data:`FULL`), defaults,
  :class:`BenchOptions` and :func:`plan`;
- :mod:`~autellix.bench.runner`: simulating the planned configs (process pool, progress);
- :mod:`~autellix.bench.results`: rows, their order (:func:`rank`, by the registries) and the
  ``results.*`` files;
- :mod:`~autellix.bench.summary`: the headline numbers (ratios, throughput at a latency target);
- :mod:`~autellix.bench.tables`: the rich tables printed; :mod:`~autellix.bench.plots`: the PNG
  figures (matplotlib, imported only when they are drawn);
- :mod:`~autellix.bench.run`: :func:`run_bench`, which ties them together.
"""

from autellix.bench.plan import (
    AUTELLIX_BALANCER,
    AUTELLIX_KV_POLICY,
    AUTELLIX_POLICY,
    AUTELLIX_SCHEDULERS,
    BASELINE_BALANCERS,
    BASELINE_SCHEDULERS,
    DEFAULT_ENGINES,
    DEFAULT_WORKLOADS,
    EXPERIMENTS,
    FULL,
    KV_BASELINE,
    KV_EXPERIMENT_POLICIES,
    KV_LIMIT,
    KV_SCHEDULERS,
    QUICK,
    SWAP_EXPERIMENT_MODES,
    SWAP_SCHEDULERS,
    SWEEPS,
    BenchOptions,
    Run,
    Sweep,
    autellix_policy,
    plan,
)
from autellix.bench.results import (
    WALL_FIELDS,
    collect_rows,
    read_rows,
    result_row,
    row_sort_key,
    write_json,
    write_results,
)
from autellix.bench.run import BenchOutcome, run_bench
from autellix.bench.runner import default_jobs, run_configs, run_one
from autellix.bench.summary import (
    LATENCY_TARGET_FACTOR,
    compare,
    latency_target_for,
    summarize,
    summarize_balancers,
    summarize_kv,
    summarize_schedulers,
    summarize_swap,
    throughput_at_target,
)
from autellix.bench.tables import results_table, summary_tables

__all__ = [
    "AUTELLIX_BALANCER",
    "AUTELLIX_KV_POLICY",
    "AUTELLIX_POLICY",
    "AUTELLIX_SCHEDULERS",
    "BASELINE_BALANCERS",
    "BASELINE_SCHEDULERS",
    "DEFAULT_ENGINES",
    "DEFAULT_WORKLOADS",
    "EXPERIMENTS",
    "FULL",
    "KV_BASELINE",
    "KV_EXPERIMENT_POLICIES",
    "KV_LIMIT",
    "KV_SCHEDULERS",
    "LATENCY_TARGET_FACTOR",
    "QUICK",
    "SWAP_EXPERIMENT_MODES",
    "SWAP_SCHEDULERS",
    "SWEEPS",
    "WALL_FIELDS",
    "BenchOptions",
    "BenchOutcome",
    "Run",
    "Sweep",
    "autellix_policy",
    "collect_rows",
    "compare",
    "default_jobs",
    "latency_target_for",
    "plan",
    "read_rows",
    "result_row",
    "results_table",
    "row_sort_key",
    "run_bench",
    "run_configs",
    "run_one",
    "summarize",
    "summarize_balancers",
    "summarize_kv",
    "summarize_schedulers",
    "summarize_swap",
    "summary_tables",
    "throughput_at_target",
    "write_json",
    "write_results",
]
