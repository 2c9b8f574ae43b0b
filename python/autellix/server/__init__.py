"""``autellix serve``: an OpenAI-compatible server that schedules agent programs with the core.

Modelled on vLLM's ``vllm/entrypoints/openai/``, one concept per module: ``protocol`` (request and
response bodies), ``programs`` (client program ids -> core ids), ``engine`` (the engine interface
and the real-time simulated engine), ``upstream`` (the ``openai`` engine in front of
OpenAI-compatible servers), ``vllm_engine`` (the ``vllm`` engine: ``vllm serve`` children with the
plug-in, behind the ``openai`` engine's queue), ``app`` (the FastAPI routes), ``config``
(:class:`ServerConfig`).
"""

from autellix.server.app import create_app
from autellix.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
