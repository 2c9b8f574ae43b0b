"""``GET /metrics``: the server's Prometheus metrics, in a registry of its own per app.

Every app has its own :class:`prometheus_client.CollectorRegistry` (not the process-global
one), so several servers in one process (the tests) keep separate counts.

Metrics (times are wall seconds):

- ``autellix_queue_depth{level}``: waiting calls per priority level of the core's queue
  (level 0 is the highest priority), read from the core at scrape time;
- ``autellix_calls_running``, ``autellix_calls_waiting``: calls in the batch / in the queue;
- ``autellix_engine_load_ratio``: running calls over batch slots;
- ``autellix_programs_live``: programs in the core's process table;
- ``autellix_preemptions_total``: calls the core preempted;
- ``autellix_upstreams_up``, ``autellix_upstream_ejections_total``: upstreams available, and
  ejections since start (the ``openai`` and ``vllm`` engines only);
- ``autellix_time_to_first_token_seconds``, ``autellix_call_latency_seconds``: histograms, from
  submission to the first token and to the end of the call (a call that never produced a token
  has no TTFT sample);
- ``autellix_calls_total{finish_reason}``: calls ended, by reason (stop, length, abort);
- ``autellix_rejected_requests_total{reason}``: 429 responses, by reason (``queue_full``, the
  server's queue is full; ``key_concurrency``, the API key's concurrency limit).

- ``autellix_program_service_seconds``, ``autellix_program_wait_seconds``: histograms of a
  program's attained service and total waiting time (engine seconds, as the process table counts
  them), observed when the server ends the program: ``POST /v1/programs/{id}/finish``, or the end
  of a call without a program id. (Programs that expire after their idle TTL are gone from the
  core before they can be observed.)

Per-program values are not exported with a program label: a label per program id would grow
without bound (one time series per program ever seen). A live program's values are in the
process table, ``GET /v1/programs/{id}``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autellix._core import ProgramInfo
from autellix.server.engines.base import CallHandle, Engine

#: TTFT and call latency buckets, seconds: 5 ms to 5 min
_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class _EngineCollector(Collector):
    """The engine's load, read when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = self.engine.stats()
        depth = GaugeMetricFamily(
            "autellix_queue_depth", "Waiting calls per priority level (0 = highest)", labels=["level"]
        )
        for level, n in enumerate(stats.queue_depths):
            depth.add_metric([str(level)], n)
        yield depth
        yield GaugeMetricFamily("autellix_calls_running", "Calls in the engine's batch", value=stats.running)
        yield GaugeMetricFamily("autellix_calls_waiting", "Calls waiting for the engine", value=stats.waiting)
        yield GaugeMetricFamily(
            "autellix_engine_load_ratio", "Running calls over batch slots", value=stats.load
        )
        yield GaugeMetricFamily(
            "autellix_programs_live", "Programs in the process table", value=stats.live_programs
        )
        yield CounterMetricFamily(
            "autellix_preemptions", "Calls preempted by the scheduler", value=stats.preemptions
        )
        if stats.upstreams_up is not None:  # only engines in front of upstreams
            yield GaugeMetricFamily(
                "autellix_upstreams_up", "Upstreams available to take calls", value=stats.upstreams_up
            )
            yield CounterMetricFamily(
                "autellix_upstream_ejections",
                "Upstreams ejected (failed calls or health checks)",
                value=stats.ejections,
            )


class Metrics:
    """The metrics of one server."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine))
        self.ttft = Histogram(
            "autellix_time_to_first_token_seconds",
            "Wall seconds from submission to the first token",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "autellix_call_latency_seconds",
            "Wall seconds from submission to the end of the call",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.program_service = Histogram(
            "autellix_program_service_seconds",
            "Attained service of each ended program (engine seconds)",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.program_wait = Histogram(
            "autellix_program_wait_seconds",
            "Total waiting time of each ended program's calls (engine seconds)",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.calls = Counter(
            "autellix_calls_total", "Calls ended, by finish reason", ["finish_reason"], registry=self.registry
        )
        self.rejected = Counter(
            "autellix_rejected_requests_total",
            "Requests refused with 429, by reason",
            ["reason"],
            registry=self.registry,
        )

    def call_ended(self, handle: CallHandle) -> None:
        end = time.monotonic()
        if handle.first_token_at is not None:
            self.ttft.observe(handle.first_token_at - handle.submitted_at)
        self.latency.observe(end - handle.submitted_at)
        self.calls.labels(finish_reason=handle.finish_reason or "abort").inc()

    def program_ended(self, info: ProgramInfo) -> None:
        self.program_service.observe(info.attained_service)
        self.program_wait.observe(info.waiting_time)

    def render(self) -> bytes:
        return generate_latest(self.registry)
