"""``ServerConfig``: everything ``autellix serve`` is started with."""

from __future__ import annotations

from dataclasses import dataclass

from autellix._core import SchedulerConfig
from autellix.server.vllm_engine import VLLM_MAX_INFLIGHT, VllmLaunch
from autellix.sim.cost_model import PRESETS

#: engines behind the server
ENGINES = ("sim", "openai", "vllm")
#: calls in flight per upstream of the ``openai`` engine by default
UPSTREAM_MAX_INFLIGHT = 64
#: balancers of the ``openai`` engine (:func:`autellix.balancer.make_balancer`)
BALANCERS = ("program-aware", "least-loaded", "round-robin")


@dataclass(frozen=True)
class ServerConfig:
    """Options of the server and its simulated engine (``autellix serve --help``)."""

    #: the one model name served (``/v1/models``); requests for another get 404
    model: str = "autellix-sim"
    #: scheduling policy of the core: fcfs, mlfq, plas or atlas
    policy: str = "plas"
    #: cost-model preset of the simulated engine (``autellix.sim.cost_model.PRESETS``)
    preset: str = "llama3.1-8b-a100"
    #: wall seconds per engine second: 0.01 runs the simulated GPU 100x faster than real time
    time_scale: float = 1.0
    #: calls in one batch
    max_running: int = 64
    #: calls waiting for the engine; one more is refused with 429
    max_queued: int = 1024
    #: tokens generated when a request gives no max_tokens
    default_max_tokens: int = 16
    #: wall seconds an idle program stays in the process table
    program_ttl: float = 600.0
    #: largest request body accepted, bytes (413 beyond)
    max_body_bytes: int = 1 << 20
    #: API keys accepted as ``Authorization: Bearer <key>`` on every ``/v1/*`` route; empty (the
    #: default) turns authentication off. ``/health`` and ``/metrics`` stay open.
    api_keys: tuple[str, ...] = ()
    #: requests in flight per API key (``None``: no limit); one more is refused with 429
    max_concurrent_per_key: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    #: the engine: ``sim`` (the simulated engine), ``openai`` (forward to ``upstreams``) or ``vllm``
    #: (start ``vllm serve`` children with the autellix plug-in as ``vllm`` says, and forward to them)
    engine: str = "sim"
    #: base URLs of the OpenAI-compatible servers behind the ``openai`` engine (``http://host:port``,
    #: with or without ``/v1``); requests are forwarded with the client's ``model``
    upstreams: tuple[str, ...] = ()
    #: calls in flight per upstream (or vLLM server); the rest wait in autellix's queue. ``None``:
    #: :data:`UPSTREAM_MAX_INFLIGHT` for the ``openai`` engine, :data:`VLLM_MAX_INFLIGHT` for the
    #: ``vllm`` engine, whose servers order what waits in them by the same policy, knowing their KV
    max_inflight: int | None = None
    #: how the ``openai`` engine picks an upstream: program-aware, least-loaded or round-robin
    balancer: str = "program-aware"
    #: send the call's queue level as vLLM's ``priority`` body field (lower = more urgent); off by
    #: default since other servers may reject unknown fields
    upstream_priority: bool = False
    #: send the call's program and thread ids as vLLM's ``vllm_xargs`` (``program_id``,
    #: ``thread_id``), which the autellix vLLM plug-in reads; off by default, like the priority
    upstream_identity: bool = False
    #: model path or name the ``vllm`` engine serves (``vllm serve MODEL``; required with it)
    vllm_model: str | None = None
    #: extra ``vllm serve`` arguments, e.g. ``("--max-num-seqs", "128")``
    vllm_args: tuple[str, ...] = ()
    #: vLLM servers the ``vllm`` engine starts; calls are balanced over them
    vllm_replicas: int = 1
    #: GPUs per vLLM server (consecutive groups of CUDA_VISIBLE_DEVICES when replicas > 1)
    vllm_gpus_per_replica: int = 1
    #: seconds a vLLM server may take to load its model and answer ``/health``
    vllm_startup_timeout: float = 900.0

    def __post_init__(self) -> None:
        if self.policy not in SchedulerConfig.policies():
            raise ValueError(
                f"unknown policy {self.policy!r}; choose from {', '.join(SchedulerConfig.policies())}"
            )
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if not (self.time_scale > 0 and self.program_ttl > 0):
            raise ValueError("time_scale and program_ttl must be > 0")
        if min(self.max_running, self.default_max_tokens, self.max_body_bytes) < 1 or self.max_queued < 0:
            raise ValueError("max_running, default_max_tokens, max_body_bytes must be >= 1, max_queued >= 0")
        if not self.model:
            raise ValueError("model must not be empty")
        if any(not key or key != key.strip() or "," in key for key in self.api_keys):
            raise ValueError("API keys must be non-empty, without commas or surrounding whitespace")
        if self.max_concurrent_per_key is not None and self.max_concurrent_per_key < 1:
            raise ValueError("max_concurrent_per_key must be >= 1")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if self.engine == "openai" and not self.upstreams:
            raise ValueError("the openai engine needs at least one upstream URL")
        if self.engine != "openai" and self.upstreams:
            raise ValueError("upstream URLs are for the openai engine only")
        if any(not url.startswith(("http://", "https://")) for url in self.upstreams):
            raise ValueError("upstream URLs must start with http:// or https://")
        if (self.engine == "vllm") != bool(self.vllm_model):
            raise ValueError("the vllm engine needs a vLLM model (and only it takes one)")
        if self.vllm_replicas < 1 or self.vllm_gpus_per_replica < 1 or not self.vllm_startup_timeout > 0:
            raise ValueError("vLLM replicas, GPUs per replica and startup timeout must be >= 1, >= 1, > 0")
        if self.max_inflight is not None and self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        if self.balancer not in BALANCERS:
            raise ValueError(f"unknown balancer {self.balancer!r}; choose from {', '.join(BALANCERS)}")

    @property
    def inflight_limit(self) -> int:
        """:attr:`max_inflight`, or the engine's default when it is ``None``."""
        if self.max_inflight is not None:
            return self.max_inflight
        return VLLM_MAX_INFLIGHT if self.engine == "vllm" else UPSTREAM_MAX_INFLIGHT

    def vllm_launch(self) -> VllmLaunch:
        """How the ``vllm`` engine starts its vLLM servers (with this config's policy, TTL, name)."""
        if not self.vllm_model:
            raise ValueError("the vllm engine needs a vLLM model")
        return VllmLaunch(
            model=self.vllm_model,
            served_name=self.model,
            policy=self.policy,
            program_ttl=self.program_ttl,
            args=self.vllm_args,
            replicas=self.vllm_replicas,
            gpus_per_replica=self.vllm_gpus_per_replica,
            startup_timeout=self.vllm_startup_timeout,
        )
