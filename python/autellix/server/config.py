"""``ServerConfig``: everything ``autellix serve`` is started with, each setting documented once
(``autellix serve --help`` shows the same text)."""

from __future__ import annotations

from dataclasses import dataclass

from autellix._core import SchedulerConfig
from autellix.adapters.settings import PluginSettings
from autellix.balancer import BALANCERS
from autellix.exceptions import ConfigError
from autellix.options import option
from autellix.sim.cost_model import PRESETS

#: engines behind the server
ENGINES = ("sim", "openai", "vllm")
#: calls in flight per upstream of the ``openai`` engine by default
UPSTREAM_MAX_INFLIGHT = 64
#: calls in flight per vLLM server of the ``vllm`` engine by default: enough that the plug-in,
#: not autellix's queue in front, orders the calls (it sees the KV cache), but bounded so that a
#: burst waits in autellix's queue (429 past ``max_queued``) rather than in vLLM's
VLLM_MAX_INFLIGHT = 1024

_CORE = SchedulerConfig()


@dataclass(frozen=True)
class ServerConfig:
    """Options of the server and its engine. Bad values raise :class:`~autellix.ConfigError`."""

    model: str = option("autellix-sim", "the one model name served (/v1/models); others get 404")
    policy: str = option(_CORE.policy, "scheduling policy of the core: fcfs, mlfq, plas or atlas")
    first_boundary: float | None = option(
        None,
        "first MLFQ boundary in seconds of service; the 7 queues double from it "
        "(SchedulerConfig.ladder); default: the core's ladder",
    )
    starvation_beta: float | None = option(
        _CORE.starvation_beta, "anti-starvation ratio beta (paper section 5); none turns promotion off"
    )
    preset: str = option(
        "llama3.1-8b-a100", "hardware + model preset of the simulated engine (autellix.sim.cost_model)"
    )
    time_scale: float = option(
        1.0, "wall seconds per simulated engine second; 0.1 runs the simulated GPU 10x faster"
    )
    max_running: int = option(64, "calls per batch of the simulated engine")
    max_queued: int = option(1024, "calls waiting for the engine before new ones get 429")
    default_max_tokens: int = option(16, "tokens generated when a request sets no max_tokens")
    program_ttl: float = option(_CORE.program_ttl, "wall seconds an idle program stays in the process table")
    max_body_bytes: int = option(1 << 20, "largest request body accepted, bytes (413 beyond)")
    api_keys: tuple[str, ...] = option(
        (),
        "API keys accepted as 'Authorization: Bearer KEY' on /v1/*; none turns authentication off "
        "(/health and /metrics stay open)",
    )
    max_concurrent_per_key: int | None = option(
        None, "completion requests in flight per API key before 429 (server-wide without keys)"
    )
    host: str = option("127.0.0.1", "address to bind")
    port: int = option(8000, "port to bind")
    engine: str = option(
        "sim",
        "sim: the simulated engine; openai: forward calls to upstream servers; vllm: start vLLM "
        "servers with the autellix scheduler plug-in and forward calls to them",
    )
    upstreams: tuple[str, ...] = option(
        (),
        "base URLs of the OpenAI-compatible servers (vLLM, SGLang, llama.cpp, autellix) behind the "
        "openai engine, with or without /v1",
    )
    max_inflight: int | None = option(
        None,
        f"calls in flight per upstream or vLLM server; the rest wait in autellix's queue (default: "
        f"{UPSTREAM_MAX_INFLIGHT}; {VLLM_MAX_INFLIGHT} with the vllm engine, whose plug-in orders them)",
    )
    balancer: str = option("program-aware", "how calls are spread over upstreams")
    upstream_priority: bool = option(
        False,
        "send each call's queue level as vLLM's 'priority' field (only for upstreams that accept it)",
    )
    upstream_identity: bool = option(
        False,
        "send each call's program and thread ids as vLLM's 'vllm_xargs', for vLLM upstreams "
        "running the autellix scheduler plug-in",
    )
    vllm_model: str | None = option(None, "model path or name for `vllm serve` (the vllm engine)")
    vllm_args: tuple[str, ...] = option((), "extra `vllm serve` arguments")
    vllm_replicas: int = option(1, "vLLM servers to start, balanced by the balancer")
    vllm_gpus_per_replica: int = option(
        1, "GPUs per vLLM server, given as consecutive CUDA_VISIBLE_DEVICES groups"
    )
    vllm_startup_timeout: float = option(900.0, "seconds a vLLM server may take to load its model")

    def __post_init__(self) -> None:
        for problem in self._problems():
            raise ConfigError(problem)
        self.scheduler_config()  # the core checks the rest (a ladder that overflows)

    def _problems(self) -> list[str]:
        checks = [
            (
                self.policy in SchedulerConfig.policies(),
                f"unknown policy {self.policy!r}; choose from {', '.join(SchedulerConfig.policies())}",
            ),
            (self.preset in PRESETS, f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}"),
            (self.time_scale > 0 and self.program_ttl > 0, "time_scale and program_ttl must be > 0"),
            (
                all(v is None or 0 < v < float("inf") for v in (self.first_boundary, self.starvation_beta)),
                "first_boundary and starvation_beta must be finite and > 0 (or None)",
            ),
            (
                min(self.max_running, self.default_max_tokens, self.max_body_bytes) >= 1
                and self.max_queued >= 0,
                "max_running, default_max_tokens, max_body_bytes must be >= 1, max_queued >= 0",
            ),
            (bool(self.model), "model must not be empty"),
            (
                all(key and key == key.strip() and "," not in key for key in self.api_keys),
                "API keys must be non-empty, without commas or surrounding whitespace",
            ),
            (
                self.max_concurrent_per_key is None or self.max_concurrent_per_key >= 1,
                "max_concurrent_per_key must be >= 1",
            ),
            (self.engine in ENGINES, f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}"),
            (
                self.engine != "openai" or bool(self.upstreams),
                "the openai engine needs at least one upstream URL",
            ),
            (self.engine == "openai" or not self.upstreams, "upstream URLs are for the openai engine only"),
            (
                all(url.startswith(("http://", "https://")) for url in self.upstreams),
                "upstream URLs must start with http:// or https://",
            ),
            (
                (self.engine == "vllm") == bool(self.vllm_model),
                "the vllm engine needs a vLLM model (and only it takes one)",
            ),
            (
                self.vllm_replicas >= 1 and self.vllm_gpus_per_replica >= 1 and self.vllm_startup_timeout > 0,
                "vLLM replicas, GPUs per replica and startup timeout must be >= 1, >= 1, > 0",
            ),
            (self.max_inflight is None or self.max_inflight >= 1, "max_inflight must be >= 1"),
            (
                self.balancer in BALANCERS,
                f"unknown balancer {self.balancer!r}; choose from {', '.join(BALANCERS)}",
            ),
        ]
        return [message for ok, message in checks if not ok]

    @property
    def inflight_limit(self) -> int:
        """:attr:`max_inflight`, or the engine's default when it is ``None``."""
        if self.max_inflight is not None:
            return self.max_inflight
        return VLLM_MAX_INFLIGHT if self.engine == "vllm" else UPSTREAM_MAX_INFLIGHT

    def scheduler_config(self) -> SchedulerConfig:
        """The core's config: :attr:`policy`, the ladder from :attr:`first_boundary`,
        :attr:`starvation_beta` and :attr:`program_ttl`; the rest the core's defaults (built as
        the vLLM plug-in builds its own from the same settings)."""
        return PluginSettings(
            policy=self.policy,
            first_boundary=self.first_boundary,
            starvation_beta=self.starvation_beta,
            program_ttl=self.program_ttl,
        ).scheduler_config()
