"""``autellix:*`` Prometheus metrics of the vLLM plug-in's KV planner.

The plug-in runs in vLLM's EngineCore process and ``/metrics`` is served by the API server
process, so the numbers cross over through prometheus_client's multiprocess mode: with
``PROMETHEUS_MULTIPROC_DIR`` set (``autellix serve --engine vllm`` sets it for its vLLM servers;
plain ``vllm serve`` users set it to an empty directory themselves), every process writes its
values to files there and vLLM's ``/metrics`` reads them all. Without it, :func:`exporter` makes
nothing and the plug-in logs its numbers now and then instead.

Gauges: ``autellix:kv_retained_blocks``, ``autellix:kv_retained_contexts``,
``autellix:deferred_programs``, ``autellix:deferred_requests``, ``autellix:kv_host_contexts``.
Counters: ``autellix:kv_reclaimed_blocks_total{action=drop|offload|end}``,
``autellix:kv_retained_hits_total``, ``autellix:kv_retained_hit_tokens_total``, and with the host
tier ``autellix:kv_offloaded_blocks_total``, ``autellix:kv_prefetch_requests_total``,
``autellix:kv_prefetch_loads_total``. Histogram: ``autellix:program_deferral_seconds``.
Labels: ``model_name``, ``engine``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import prometheus_client as prom

#: gauge name -> key of the plug-in's ``autellix_stats()``
_GAUGES = {
    "kv_retained_blocks": "kv_retained_blocks",
    "kv_retained_contexts": "kv_retained_contexts",
    "deferred_programs": "deferred_programs",
    "deferred_requests": "deferred_requests",
    "kv_host_contexts": "kv_host_contexts",
}
#: counter name (``_total`` is added by prometheus_client) -> stats key
_COUNTERS = {
    "kv_retained_hits": "kv_retained_hits_total",
    "kv_retained_hit_tokens": "kv_retained_hit_tokens_total",
    "kv_offloaded_blocks": "kv_offloaded_blocks_total",
    "kv_prefetch_requests": "kv_prefetch_requests_total",
    "kv_prefetch_loads": "kv_prefetch_loads_total",
}
_RECLAIMED = "kv_reclaimed_blocks_total:"
_DEFERRAL_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, float("inf"))


class KvMetrics:
    """The plug-in's metrics for one engine; :meth:`update` takes ``autellix_stats()``."""

    def __init__(self, labels: Mapping[str, str], registry: Any = None) -> None:
        """``registry``: where to register (``None``: nowhere, as multiprocess mode wants: the
        values go to ``PROMETHEUS_MULTIPROC_DIR`` and vLLM's registry collects them there)."""
        names = sorted(labels)
        self._labels = dict(labels)

        def labelled(metric: Any) -> Any:
            return metric.labels(**self._labels)

        self._gauges = {
            key: labelled(
                prom.Gauge(
                    f"autellix:{name}",
                    _HELP[name],
                    names,
                    registry=registry,
                    multiprocess_mode="mostrecent",
                )
            )
            for name, key in _GAUGES.items()
        }
        self._counters = {
            key: labelled(prom.Counter(f"autellix:{name}", _HELP[name], names, registry=registry))
            for name, key in _COUNTERS.items()
        }
        self._reclaimed = prom.Counter(
            "autellix:kv_reclaimed_blocks",
            "KV blocks of retained contexts given back, by why: the planner dropped or offloaded "
            "them for memory, or their program ended",
            [*names, "action"],
            registry=registry,
        )
        self._deferral = labelled(
            prom.Histogram(
                "autellix:program_deferral_seconds",
                "Seconds a new program waited for admission (working sets did not fit)",
                names,
                registry=registry,
                buckets=_DEFERRAL_BUCKETS,
            )
        )
        self._last: dict[str, float] = {}

    def update(self, stats: Mapping[str, float]) -> None:
        """Gauges to their values, counters by what their totals grew since the last update."""
        for key, gauge in self._gauges.items():
            gauge.set(stats.get(key, 0))
        for key, counter in self._counters.items():
            self._grow(key, stats, counter)
        for key in stats:
            if key.startswith(_RECLAIMED):
                action = key[len(_RECLAIMED) :]
                self._grow(key, stats, self._reclaimed.labels(**self._labels, action=action))

    def deferred(self, seconds: float) -> None:
        """A deferred program was admitted after ``seconds``."""
        self._deferral.observe(max(0.0, seconds))

    def _grow(self, key: str, stats: Mapping[str, float], counter: Any) -> None:
        value = stats.get(key, 0)
        grown = value - self._last.get(key, 0)
        if grown > 0:
            counter.inc(grown)
        self._last[key] = value


_HELP = {
    "kv_retained_blocks": "KV blocks held on the GPU for idle program contexts (vLLM counts them as used)",
    "kv_retained_contexts": "Program contexts retained for their program's next call",
    "deferred_programs": "New programs waiting for admission (their requests count in vLLM's waiting)",
    "deferred_requests": "Requests of programs waiting for admission",
    "kv_retained_hits": "Calls admitted with a prefix-cache hit on their program's retained context",
    "kv_retained_hit_tokens": "Prompt tokens those calls found in the prefix cache",
    "kv_host_contexts": "Program contexts the KV planner keeps in host memory (the offloading connector's)",
    "kv_offloaded_blocks": "KV blocks of contexts offloaded to host memory (their GPU references given back)",
    "kv_prefetch_requests": "Load-only requests issued to bring host contexts back before their calls",
    "kv_prefetch_loads": "Prefetch requests whose load from host memory completed",
}


def exporter(labels: Mapping[str, str]) -> KvMetrics | None:
    """The metrics, in multiprocess mode, if ``PROMETHEUS_MULTIPROC_DIR`` is set; else ``None``."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    return KvMetrics(labels)
