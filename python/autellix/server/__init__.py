"""``autellix serve``: an OpenAI-compatible server that schedules agent programs with the core.

Modelled on vLLM's ``vllm/entrypoints/openai/``, one concept per module:

* ``config``: :class:`ServerConfig`, every option documented once;
* ``app``: the FastAPI routes; ``completions``: the two completion endpoints' handler and
  bodies; ``streaming``: delivering tokens (whole text or SSE) and cancelling on disconnect;
* ``identity``: a request's program / thread / parents (headers or body, strictly checked; the
  hints agent stacks send);
* ``middleware``: API keys and tenants, per-key concurrency, the body limit; ``errors``: error
  bodies; ``transport``: uvicorn's HTTP protocol with header and body deadlines (slow clients);
* ``state``: the :class:`~autellix.server.state.Server` behind the routes; ``metrics``:
  Prometheus; ``protocol``: request and response bodies;
* ``engines``: the engine interface and the ``sim``, ``openai`` (upstream, with failover:
  ``upstream_health``, ``upstream_probe``, ``upstream_failure``) and ``vllm`` engines.
"""

from autellix.server.app import create_app
from autellix.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
