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
    max_batched_tokens: int | None = option(
        None,
        "tokens per iteration of the simulated engine (vLLM's max_num_batched_tokens): decodes first, "
        "then prompts in chunks, so a long prompt cannot stall the others; >= max_running. Default: "
        "vLLM V1's for `vllm serve` on the preset's GPU, 2048 on A100, 8192 on H100",
    )
    max_queued: int = option(1024, "calls waiting for the engine before new ones get 429")
    default_max_tokens: int = option(16, "tokens generated when a request sets no max_tokens")
    program_ttl: float = option(_CORE.program_ttl, "wall seconds an idle program stays in the process table")
    max_body_bytes: int = option(1 << 20, "largest request body accepted, bytes (413 beyond)")
    header_timeout: float = option(
        10.0,
        "seconds a connection has to send a request's complete headers, from connecting or from the "
        "request's first byte (slowloris); else 408 and the connection is closed",
    )
    body_timeout: float = option(
        30.0, "seconds a request body may take to arrive once its headers are in; else 408 and close"
    )
    idle_timeout: float = option(
        65.0,
        "seconds a kept-alive connection may wait for its next request (uvicorn's timeout_keep_alive); "
        "longer than clients' and load balancers' own idle expiry (the openai SDK's 5 s, aiohttp's 15 s, "
        "AWS ALB's 60 s), so that the client drops an idle connection first: a request sent just as "
        "the server closes the connection is lost",
    )
    max_connections: int | None = option(
        None,
        "open connections past which a new request is answered 503 (uvicorn's limit_concurrency: "
        "connections are still accepted, and idle or slow ones count, so a flood of them turns real "
        "calls away); default: no cap",
    )
    api_keys: tuple[str, ...] = option(
        (),
        "API keys accepted as 'Authorization: Bearer KEY' on /v1/*, each a tenant with its own "
        "programs; none (and no admin_keys) turns authentication off (/health stays open, "
        "/metrics too unless protect_metrics)",
    )
    max_concurrent_per_key: int | None = option(
        None, "completion requests in flight per API key before 429 (server-wide without keys)"
    )
    admin_keys: tuple[str, ...] = option(
        (),
        "API keys that may also read and finish other keys' programs, named by the key's label: "
        "GET /v1/programs/ID?tenant=key-2 (key-N: the N-th API key; admin-N: the N-th admin key); "
        "like api_keys, they turn authentication on",
    )
    protect_metrics: bool = option(
        False,
        "require an API key on /metrics, /docs, /redoc and /openapi.json too (off: they stay open "
        "for scrapers and readers, as /health always does)",
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
    upstream_connect_timeout: float = option(
        5.0, "seconds to connect to an upstream (a loopback or LAN connect takes milliseconds); 504 beyond"
    )
    upstream_first_token_timeout: float = option(
        120.0,
        "seconds an upstream may take to send a call's first event (it queues and prefills: long "
        "prompts legitimately take a while); 504 beyond",
    )
    upstream_read_timeout: float = option(
        30.0,
        "seconds of silence allowed between two reads of a call's stream once it flows (a decode "
        "step takes well under a second: longer means a stopped upstream); 504 beyond",
    )
    upstream_health_interval: float = option(
        1.0,
        "seconds between health checks of each upstream (GET /health, or /v1/models where /health "
        "is 404): a failing check ejects it, a passing one brings it back; 0 turns checks off",
    )
    upstream_health_timeout: float = option(2.0, "seconds a health check waits for an answer")
    upstream_retries: int = option(
        2, "other upstreams a call that never reached its upstream (refused, reset) is retried on"
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
            (
                all(key and key == key.strip() and "," not in key for key in self.admin_keys)
                and not set(self.admin_keys) & set(self.api_keys),
                "admin keys must be non-empty, without commas or surrounding whitespace, and not "
                "also API keys",
            ),
            (
                not self.protect_metrics or bool(self.api_keys or self.admin_keys),
                "protect_metrics needs API keys (or admin keys) to protect with",
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
                self.max_batched_tokens is None or self.max_batched_tokens >= self.max_running,
                "max_batched_tokens must be >= max_running (each call of a full batch decodes a token)",
            ),
            (
                all(
                    0 < t < float("inf") for t in (self.header_timeout, self.body_timeout, self.idle_timeout)
                ),
                "header_timeout, body_timeout and idle_timeout must be finite and > 0",
            ),
            (self.max_connections is None or self.max_connections >= 1, "max_connections must be >= 1"),
            (
                self.balancer in BALANCERS,
                f"unknown balancer {self.balancer!r}; choose from {', '.join(BALANCERS)}",
            ),
            (
                min(
                    self.upstream_connect_timeout,
                    self.upstream_first_token_timeout,
                    self.upstream_read_timeout,
                    self.upstream_health_timeout,
                )
                > 0
                and self.upstream_health_interval >= 0
                and self.upstream_retries >= 0,
                "upstream timeouts must be > 0, the health check interval and retries >= 0",
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
