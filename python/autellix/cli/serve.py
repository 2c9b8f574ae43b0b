"""``autellix serve``: the OpenAI-compatible server; every option is a field of
:class:`~autellix.server.config.ServerConfig` and takes its help text from there."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
from typing import Any

from autellix.cli._args import (
    Subparsers,
    documented,
    int_at_least,
    non_negative_float,
    positive_float,
    preset_name,
    shell_words,
)


def register(subparsers: Subparsers) -> None:
    from autellix._core import SchedulerConfig
    from autellix.balancer import BALANCERS
    from autellix.server.config import ENGINES, ServerConfig

    p = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible server on a simulated engine or in front of upstream servers",
        description="Serve /v1/chat/completions and /v1/completions (SSE streaming too), /v1/models, "
        "/health, /metrics (Prometheus), GET /v1/programs/{id} and POST /v1/programs/{id}/finish. Calls "
        "are scheduled by the core as parts of agent programs: name the program with the "
        "X-Autellix-Program-Id header or a program_id body field (also X-Autellix-Thread-Id / thread_id, "
        "X-Autellix-Parent-Ids / parent_ids). The sim engine is the simulator's cost model run in real "
        "time, producing placeholder tokens; the openai engine queues calls in autellix and forwards "
        "them, in policy order, to OpenAI-compatible --upstream servers.",
    )

    def option(name: str, *flags: str, group: argparse._ActionsContainer = p, **kwargs: Any) -> None:
        documented(group, ServerConfig, name, *flags, **kwargs)

    option("host", "--host")
    option("port", "--port", type=int_at_least(0, "port"))
    option("policy", "--policy", choices=SchedulerConfig.policies())
    option("first_boundary", "--first-boundary", type=positive_float("first boundary"), metavar="S")
    option("starvation_beta", "--starvation-beta", type=_beta, metavar="BETA")
    option("preset", "--preset", type=preset_name, metavar="NAME")
    option("time_scale", "--time-scale", type=positive_float("time scale"), metavar="X")
    option("max_running", "--max-running", type=int_at_least(1, "max running"), metavar="N")
    option(
        "max_batched_tokens", "--max-batched-tokens", type=int_at_least(1, "max batched tokens"), metavar="N"
    )
    option("max_queued", "--max-queued", type=int_at_least(0, "max queued"), metavar="N")
    option("default_max_tokens", "--max-tokens", type=int_at_least(1, "max tokens"), metavar="N")
    option("model", "--model", default=None, metavar="NAME")
    option("api_keys", "--api-key", action="append", default=None, metavar="KEY")
    option("admin_keys", "--admin-key", action="append", default=None, metavar="KEY")
    option("protect_metrics", "--protect-metrics", action="store_true")
    option(
        "max_concurrent_per_key",
        "--max-concurrent-per-key",
        type=int_at_least(1, "max concurrent per key"),
        metavar="N",
    )
    option("engine", "--engine", choices=ENGINES)
    option("upstreams", "--upstream", action="append", default=None, metavar="URL")
    option("max_inflight", "--max-inflight", type=int_at_least(1, "max inflight"), metavar="N")
    option("balancer", "--balancer", choices=BALANCERS)
    option("upstream_priority", "--upstream-priority", action="store_true")
    option("upstream_identity", "--upstream-identity", action="store_true")
    for what, parse in (
        ("connect timeout", positive_float),
        ("first-token timeout", positive_float),
        ("read timeout", positive_float),
        ("health interval", non_negative_float),
        ("health timeout", positive_float),
    ):
        words = what.replace("-", " ").split()
        field = "_".join(["upstream", *words])
        option(field, "--" + "-".join(["upstream", *words]), type=parse(f"upstream {what}"), metavar="S")
    option("upstream_retries", "--upstream-retries", type=int_at_least(0, "upstream retries"), metavar="N")
    vllm = p.add_argument_group(
        "vllm engine",
        "autellix starts `vllm serve MODEL --scheduler-cls autellix.adapters.vllm.AutellixScheduler` on "
        "loopback ports (needs `pip install autellix[vllm]` and a GPU), forwards calls to it with their "
        "program and thread ids, and stops it on exit. --policy, --first-boundary, --starvation-beta and "
        "--program-ttl reach the plug-in; its other settings come from AUTELLIX_* environment variables "
        "(see autellix.adapters.settings).",
    )
    option("vllm_model", "--vllm-model", group=vllm, metavar="MODEL")
    option(
        "vllm_args",
        "--vllm-args",
        group=vllm,
        action="append",
        type=shell_words,
        default=None,
        metavar="ARGS",
    )
    option("vllm_replicas", "--vllm-replicas", group=vllm, type=int_at_least(1, "vLLM replicas"), metavar="N")
    option(
        "vllm_gpus_per_replica",
        "--vllm-gpus-per-replica",
        group=vllm,
        type=int_at_least(1, "GPUs per replica"),
        metavar="N",
    )
    option(
        "vllm_startup_timeout",
        "--vllm-startup-timeout",
        group=vllm,
        type=positive_float("startup timeout"),
        metavar="S",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (uvicorn's access log); off by default: at thousands of calls/s it "
        "costs more CPU than scheduling them",
    )
    option("header_timeout", "--header-timeout", type=positive_float("header timeout"), metavar="S")
    option("body_timeout", "--body-timeout", type=positive_float("body timeout"), metavar="S")
    option("idle_timeout", "--idle-timeout", type=positive_float("idle timeout"), metavar="S")
    option("max_connections", "--max-connections", type=int_at_least(1, "max connections"), metavar="N")
    p.epilog = (
        "--api-key also reads the comma-separated AUTELLIX_API_KEYS environment variable, --admin-key "
        "AUTELLIX_ADMIN_KEYS; --vllm-args "
        "takes shell-quoted words, e.g. --vllm-args='--max-num-seqs 128' (repeatable; the = keeps a "
        "leading -- from being read as an option); --model defaults to --vllm-model with the vllm engine."
    )
    p.set_defaults(handler=_with_admin_keys)


def _beta(text: str) -> float | None:
    """``--starvation-beta``: a finite number > 0, or ``none``/``off`` (no promotion)."""
    if text.strip().lower() in ("none", "off"):
        return None
    return positive_float("starvation beta")(text)


def _api_keys(given: list[str] | None, variable: str = "AUTELLIX_API_KEYS") -> tuple[str, ...]:
    """``--api-key`` values, then those of ``AUTELLIX_API_KEYS`` (comma-separated), deduplicated
    (``--admin-key`` and ``AUTELLIX_ADMIN_KEYS`` likewise)."""
    keys = [k.strip() for k in given or []]
    keys += [k.strip() for k in os.environ.get(variable, "").split(",") if k.strip()]
    return tuple(dict.fromkeys(keys))


def _with_admin_keys(args: argparse.Namespace) -> int:
    """:func:`run`, with ``--admin-key`` values and ``AUTELLIX_ADMIN_KEYS`` as one tuple."""
    args.admin_keys = _api_keys(args.admin_keys, "AUTELLIX_ADMIN_KEYS")
    return run(args)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from autellix.exceptions import AutellixError
    from autellix.server import ServerConfig, create_app
    from autellix.server.transport import uvicorn_options

    # every field that has a flag (the rest keep their defaults)
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(ServerConfig) if hasattr(args, f.name)
    }
    values["api_keys"] = _api_keys(args.api_keys)
    values["upstreams"] = tuple(args.upstreams or ())
    values["vllm_args"] = tuple(word for words in args.vllm_args or () for word in words)
    if args.model is None:
        values["model"] = args.vllm_model if args.engine == "vllm" and args.vllm_model else ServerConfig.model
    try:
        config = ServerConfig(**values)
        app = create_app(config)
    except AutellixError as exc:
        print(f"autellix serve: error: {exc}", file=sys.stderr)
        return 2
    # What startup allocated (modules, the app) leaves the garbage collector's view: collections
    # then walk only per-request objects, which keeps their pauses short. (Here, not in the app:
    # an app embedded in a bigger process must not freeze that process's objects.)
    gc.freeze()
    uvicorn.run(app, **uvicorn_options(config, log_level="info", access_log=args.access_log))
    return 0
