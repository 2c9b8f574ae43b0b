"""The engines behind ``autellix serve``: what runs the calls the server queues.

* :class:`SimEngine` (``--engine sim``): the simulator's engine model in real time;
* :class:`UpstreamEngine` (``--engine openai``): in front of OpenAI-compatible servers;
* :class:`VllmEngine` (``--engine vllm``): ``vllm serve`` children with the autellix plug-in.

All share :class:`Engine` (:mod:`.base`) and schedule with the real core.
"""

from __future__ import annotations

from autellix.server.config import ServerConfig
from autellix.server.engines.base import CallHandle, Engine, EngineStats
from autellix.server.engines.sim import SimEngine
from autellix.server.engines.upstream import UpstreamEngine
from autellix.server.engines.vllm import VllmEngine, VllmLaunch


def make_engine(config: ServerConfig) -> Engine:
    """The engine ``config`` names, scheduling with ``config``'s core settings."""
    if config.engine == "vllm":
        return VllmEngine(
            VllmLaunch.from_config(config),
            max_inflight=config.inflight_limit,
            max_queued=config.max_queued,
            balancer=config.balancer,
        )
    if config.engine == "openai":
        return UpstreamEngine(
            config.upstreams,
            config.scheduler_config(),
            max_inflight=config.inflight_limit,
            max_queued=config.max_queued,
            balancer=config.balancer,
            forward_priority=config.upstream_priority,
            forward_identity=config.upstream_identity,
            connect_timeout=config.upstream_connect_timeout,
            first_token_timeout=config.upstream_first_token_timeout,
            read_timeout=config.upstream_read_timeout,
            health_interval=config.upstream_health_interval,
            health_timeout=config.upstream_health_timeout,
            retries=config.upstream_retries,
        )
    return SimEngine(
        config.scheduler_config(),
        preset=config.preset,
        time_scale=config.time_scale,
        max_running=config.max_running,
        max_batched_tokens=config.max_batched_tokens,
        max_queued=config.max_queued,
    )


__all__ = [
    "CallHandle",
    "Engine",
    "EngineStats",
    "SimEngine",
    "UpstreamEngine",
    "VllmEngine",
    "VllmLaunch",
    "make_engine",
]
