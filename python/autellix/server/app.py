"""The FastAPI application: OpenAI-compatible endpoints in front of a program-aware engine.

Endpoints: ``GET /health`` (503 while the engine is down), ``GET /v1/models``,
``GET /v1/models/{id}`` (404 for another model), ``POST /v1/chat/completions``,
``POST /v1/completions`` (both with SSE streaming, :mod:`.completions`), ``GET /v1/programs/{id}``
(the core's process-table entry), ``POST /v1/programs/{id}/finish`` (ends the program in the core)
and ``GET /metrics`` (Prometheus text format, :mod:`.metrics`). Programs are the caller's API
key's own; an admin key names another key's with ``?tenant=<label>`` (:mod:`.middleware`).

Where the rest lives: program identity of a call in :mod:`.identity`, API keys and the body
limit in :mod:`.middleware`, error bodies and statuses in :mod:`.errors`, the engines in
:mod:`.engines`, the state behind the routes in :mod:`.state`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from autellix._core import __version__
from autellix.exceptions import ProgramNotFoundError
from autellix.server.completions import ChatShape, TextShape, complete
from autellix.server.config import ServerConfig
from autellix.server.engines import Engine
from autellix.server.errors import documented, error_response, install_handlers, not_found
from autellix.server.identity import program_named
from autellix.server.middleware import ApiKeys, BodyLimit, tenant_of
from autellix.server.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelCard,
    ModelList,
    ProgramEntry,
    ProgramFinished,
)
from autellix.server.state import Server


def _completion_docs(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a completion route: ``model`` as JSON, or an SSE stream with ``stream: true``."""
    # one server-sent event: a JSON chunk, an error object, or ``[DONE]``
    event = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
    stream = {"text/event-stream": {"schema": event}}
    return {
        200: {"model": model, "content": stream},
        **documented(400, 401, 404, 413, 422, 429, 502, 503, 504),
    }


def create_app(config: ServerConfig | None = None, engine: Engine | None = None) -> FastAPI:
    """The ASGI app of ``autellix serve`` (``engine`` defaults to the one ``config`` names)."""
    server = Server(config or ServerConfig(), engine)
    cfg = server.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.engine.start()
        try:
            yield
        finally:
            await server.engine.stop()

    app = FastAPI(title="autellix", version=__version__, lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    # added last, so it runs first: a request without a valid key is not even read
    # with protect_metrics, /metrics and the API docs need a key too (/health stays open)
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        ApiKeys,
        keys=cfg.api_keys,
        max_concurrent=cfg.max_concurrent_per_key,
        metrics=server.metrics,
        admin_keys=cfg.admin_keys,
        protected=("/metrics", *(p for p in docs if p)) if cfg.protect_metrics else (),
    )
    install_handlers(app, server.metrics)

    @app.get("/health", responses=documented(503))
    async def health() -> Any:
        upstreams = server.engine.upstreams_available
        if upstreams is not None and upstreams[0] == 0:
            message = f"no upstream is available: all {upstreams[1]} are down or ejected"
            return error_response(503, message, "server_error", "no_upstream")
        if not server.engine.healthy:
            return error_response(503, "the engine is down", "server_error", "engine_down")
        if upstreams is None:
            return {"status": "ok", "policy": server.engine.policy}
        up = {"up": upstreams[0], "total": upstreams[1]}
        return {"status": "ok", "policy": server.engine.policy, "upstreams": up}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    card = ModelCard(id=cfg.model)

    @app.get("/v1/models", responses=documented(401))
    async def models() -> ModelList:
        return ModelList(data=[card])

    # ``:path``: a model id may hold slashes (``org/model``)
    @app.get("/v1/models/{model_id:path}", responses=documented(401, 404))
    async def model(model_id: str) -> ModelCard:
        if model_id != cfg.model:
            raise not_found("model", model_id, "model_not_found")
        return card

    @app.post("/v1/chat/completions", response_model=None, responses=_completion_docs(ChatCompletion))
    async def chat(request: Request, body: ChatCompletionRequest) -> Response:
        body.tenant = tenant_of(request).label
        return await complete(server, request, body, ChatShape)

    @app.post("/v1/completions", response_model=None, responses=_completion_docs(Completion))
    async def completions(request: Request, body: CompletionRequest) -> Response:
        body.tenant = tenant_of(request).label
        return await complete(server, request, body, TextShape)

    @app.get("/v1/programs/{program_id}", responses=documented(400, 401, 404))
    async def program(request: Request, program_id: str, tenant: str | None = None) -> ProgramEntry:
        # a program of the caller's key; an admin key may name another key's (?tenant=key-2)
        scope = server.tenant_scope(tenant_of(request), tenant)
        core = program_named(server.programs, program_id, scope)
        try:
            info = server.engine.program(core)
        except ProgramNotFoundError:
            server.programs.forget(core)
            raise not_found("program", program_id, "program_not_found") from None
        return ProgramEntry(
            id=program_id,
            tenant=scope,
            core_id=core,
            arrival=info.arrival,
            attained_service=info.attained_service,
            waiting_time=info.waiting_time,
            critical_path=info.critical_path,
            active_calls=info.active_calls,
            finished_calls=info.finished_calls,
            threads=info.threads,
            last_arrival=info.last_arrival,
            last_completion=info.last_completion,
            live_calls=[server.response_id(c) for c in info.live_calls],
        )

    @app.post("/v1/programs/{program_id}/finish", responses=documented(400, 401, 404))
    async def finish(request: Request, program_id: str, tenant: str | None = None) -> ProgramFinished:
        scope = server.tenant_scope(tenant_of(request), tenant)
        core = program_named(server.programs, program_id, scope)
        try:
            aborted = server.end_program(core)
        except ProgramNotFoundError:
            raise not_found("program", program_id, "program_not_found") from None
        return ProgramFinished(id=program_id, aborted_calls=[server.response_id(c) for c in aborted])

    return app
