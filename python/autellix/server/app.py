"""The FastAPI application: OpenAI-compatible endpoints in front of a program-aware engine.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``,
``POST /v1/completions`` (both with SSE streaming), ``GET /v1/programs/{id}`` (the core's
process-table entry), ``POST /v1/programs/{id}/finish`` (ends the program in the core) and
``GET /metrics`` (Prometheus text format, see :mod:`autellix.server.metrics`).

Authentication: with ``ServerConfig.api_keys`` set, every ``/v1/*`` route needs
``Authorization: Bearer <key>`` (401 otherwise); ``/health`` and ``/metrics`` stay open. With
``max_concurrent_per_key`` set, a key may have that many completion requests in flight (a
streaming one until its stream ends); one more is a 429 with ``Retry-After``. With
authentication off, all requests share one (anonymous) key, so the limit is server-wide.

A client that disconnects cancels its call, streaming or not: the call leaves the core at once
and frees its slot.

Program identity of a call: ``X-Autellix-Program-Id``, ``X-Autellix-Thread-Id`` and
``X-Autellix-Parent-Ids`` (comma-separated) headers, or the body fields ``program_id``,
``thread_id``, ``parent_ids`` (list). Either place works; giving a field in both places with
different values is a 400. A call without a program id is a program of its own, ended when the
call ends. Every error is an OpenAI-style ``{"error": {"message", "type", "code"}}`` body with a
4xx status: 400 invalid body or ids, 401 missing or unknown API key, 404 unknown model / program
/ route, 413 body too large, 429 queue full or key over its concurrency limit (with
``Retry-After``); and 502 when an upstream of the ``openai`` or ``vllm`` engine fails (connection
refused, 5xx, broken stream): a streaming response already under way ends with an error event
instead. ``/health`` answers 503 while the engine is down (a vLLM server of the ``vllm`` engine
exited).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix.server.config import ServerConfig
from autellix.server.engine import (
    CallHandle,
    Engine,
    InvalidCallError,
    ProgramNotFoundError,
    QueueFullError,
    SimEngine,
)
from autellix.server.metrics import Metrics
from autellix.server.programs import InvalidIdError, ProgramRegistry, check_name, parse_call_id
from autellix.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    FinishReason,
    ModelCard,
    ModelList,
    ProgramEntry,
    ProgramFinished,
    Usage,
)
from autellix.server.upstream import UpstreamEngine
from autellix.server.vllm_engine import VllmEngine
from autellix.sim.trace import estimate_tokens

PROGRAM_HEADER = "x-autellix-program-id"
THREAD_HEADER = "x-autellix-thread-id"
PARENTS_HEADER = "x-autellix-parent-ids"

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


def error_response(
    status: int, message: str, type_: str, code: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type_, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_ERROR_DOCS = {
    400: "invalid body, parameters or ids",
    401: "missing or unknown API key",
    404: "unknown model or program",
    413: "request body too large",
    429: "queue full or API key over its concurrency limit (with Retry-After)",
    502: "an upstream of the openai or vllm engine failed",
    503: "the engine is down (a vLLM server of the vllm engine exited)",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that can fail with ``statuses`` (all ``ErrorResponse``)."""
    return {status: {"model": ErrorResponse, "description": _ERROR_DOCS[status]} for status in statuses}


def _completion_docs(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a completion route: ``model`` as JSON, or an SSE stream with ``stream: true``."""
    # one server-sent event: a JSON chunk, an error object, or ``[DONE]``
    event = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
    stream = {"text/event-stream": {"schema": event}}
    return {200: {"model": model, "content": stream}, **_errors(400, 401, 404, 413, 429, 502)}


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: _ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._reject(scope, receive, send)
                    return
        if any(key == b"content-length" for key, _ in scope.get("headers", [])):
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): read the body up to the limit, then replay it.
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body", False))
            if size > self.limit:
                await self._reject(scope, receive, send)
                return
        replayed = False

        async def replay() -> _Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        response = error_response(
            413, f"request body exceeds {self.limit} bytes", "invalid_request_error", "body_too_large"
        )
        await response(scope, receive, send)


_COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")


class ApiKeys:
    """ASGI middleware: API keys on ``/v1/*`` (401) and the per-key concurrency limit (429)."""

    def __init__(
        self, app: _ASGIApp, keys: tuple[str, ...], max_concurrent: int | None, metrics: Metrics
    ) -> None:
        self.app, self.keys, self.max_concurrent, self.metrics = app, keys, max_concurrent, metrics
        self.in_flight: dict[str, int] = {}

    def _key(self, scope: _Scope) -> str | None:
        """The request's valid key ("" with authentication off), or ``None``."""
        if not self.keys:
            return ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                token = token.strip()
                if scheme.lower() != "bearer" or not token:
                    return None
                # compare with every key, in constant time per key
                found = None
                for key in self.keys:
                    if hmac.compare_digest(token.encode(), key.encode()):
                        found = key
                return found
        return None

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/v1" or path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        key = self._key(scope)
        if key is None:
            response = error_response(
                401,
                "missing or invalid API key: send Authorization: Bearer <key>",
                "authentication_error",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        if self.max_concurrent is None or path not in _COMPLETION_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight.get(key, 0) >= self.max_concurrent:
            self.metrics.rejected.labels(reason="key_concurrency").inc()
            response = error_response(
                429,
                f"this API key already has {self.max_concurrent} requests in flight",
                "rate_limit_error",
                "concurrency_limit",
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]


@dataclass
class _Identity:
    program: int
    anonymous: bool
    thread: int
    parents: list[int]
    #: the client's names (``None``: not given)
    name: str | None
    thread_name: str | None


def make_engine(config: ServerConfig) -> Engine:
    """The engine ``config`` names: :class:`SimEngine`, :class:`UpstreamEngine` or :class:`VllmEngine`."""
    if config.engine == "vllm":
        return VllmEngine(
            config.vllm_launch(),
            max_inflight=config.inflight_limit,
            max_queued=config.max_queued,
            balancer=config.balancer,
        )
    if config.engine == "openai":
        return UpstreamEngine(
            config.upstreams,
            policy=config.policy,
            max_inflight=config.inflight_limit,
            max_queued=config.max_queued,
            program_ttl=config.program_ttl,
            balancer=config.balancer,
            forward_priority=config.upstream_priority,
            forward_identity=config.upstream_identity,
        )
    return SimEngine(
        policy=config.policy,
        preset=config.preset,
        time_scale=config.time_scale,
        max_running=config.max_running,
        max_queued=config.max_queued,
        program_ttl=config.program_ttl,
    )


class Server:
    """The state behind the routes: config, engine, program registry."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine: Engine = engine or make_engine(config)
        self.programs = ProgramRegistry()
        self.engine.on_programs_expired = self._expired
        self.metrics = Metrics(self.engine)

    def _expired(self, programs: list[int]) -> None:
        for core in programs:
            self.programs.forget(core)

    # -- identity ---------------------------------------------------------------------------

    @staticmethod
    def _one(kind: str, header: str | None, body: str | None) -> str | None:
        if header is not None and body is not None and header.strip() != body:
            raise ApiError(400, f"{kind} given as header ({header!r}) and in the body ({body!r}) differ")
        value = header.strip() if header is not None else body
        return None if value is None else check_name(kind, value)

    def identity(self, request: Request, body: ChatCompletionRequest | CompletionRequest) -> _Identity:
        h = request.headers
        try:
            name = self._one("program", h.get(PROGRAM_HEADER), body.program_id)
            thread_name = self._one("thread", h.get(THREAD_HEADER), body.thread_id)
            header_parents = h.get(PARENTS_HEADER)
            from_header = (
                None
                if header_parents is None
                else [parse_call_id(p) for p in header_parents.split(",") if p.strip()]
            )
            from_body = None if body.parent_ids is None else [parse_call_id(p) for p in body.parent_ids]
        except InvalidIdError as exc:
            raise ApiError(400, str(exc), code="invalid_id") from None
        if from_header is not None and from_body is not None and from_header != from_body:
            raise ApiError(400, "parent ids given as header and in the body differ", code="invalid_id")
        parents = from_header if from_header is not None else (from_body or [])
        if name is None and parents:
            raise ApiError(400, "parent ids need a program id", code="invalid_id")
        program = self.programs.resolve(name)
        thread = self.programs.thread(program, thread_name)
        return _Identity(program, name is None, thread, parents, name, thread_name)

    # -- calls --------------------------------------------------------------------------------

    def submit(
        self, request: Request, body: ChatCompletionRequest | CompletionRequest
    ) -> tuple[CallHandle, bool]:
        """The call, and whether its program is anonymous (ended with the call)."""
        if body.model != self.config.model:
            raise ApiError(
                404,
                f"the model {body.model!r} does not exist; this server serves {self.config.model!r}",
                code="model_not_found",
            )
        who = self.identity(request, body)
        # the identity as resolved (headers or body), for an engine that forwards it
        body.program_id, body.thread_id = who.name, who.thread_name
        requested = body.requested_tokens()
        try:
            handle = self.engine.submit(
                who.program,
                estimate_tokens(body.prompt_text()),
                requested if requested is not None else self.config.default_max_tokens,
                thread=who.thread,
                parents=who.parents,
                limit_reason="length" if requested is not None else "stop",
                body=body,
            )
        except InvalidCallError as exc:
            self._release(who.program, who.anonymous)
            raise ApiError(400, str(exc), code="invalid_call") from None
        except QueueFullError:
            self._release(who.program, who.anonymous)
            raise
        return handle, who.anonymous

    def end_program(self, program: int) -> list[int]:
        """End ``program`` (ProgramNotFoundError if the engine has no such program); its service
        and waiting time go to the metrics. The calls it aborted."""
        self.programs.forget(program)
        self.metrics.program_ended(self.engine.program(program))
        return self.engine.end_program(program)

    def _release(self, program: int, anonymous: bool) -> None:
        if anonymous:
            with contextlib.suppress(ProgramNotFoundError):
                self.end_program(program)

    def settle(self, handle: CallHandle, anonymous: bool) -> None:
        """The response is over (sent, failed, or the client left): cancel what still runs."""
        if handle.settled:
            return
        handle.settled = True
        if not handle.done:
            self.engine.cancel(handle)
        self.metrics.call_ended(handle)
        self._release(handle.program, anonymous)


def _usage(handle: CallHandle) -> Usage:
    return Usage(
        prompt_tokens=handle.prompt_tokens,
        completion_tokens=handle.generated,
        total_tokens=handle.prompt_tokens + handle.generated,
    )


def _reason(handle: CallHandle) -> FinishReason:
    reason = handle.finish_reason
    return reason if reason in ("stop", "length", "abort") else "stop"  # type: ignore[return-value]


def _call_headers(server: Server, handle: CallHandle) -> dict[str, str]:
    return {
        "X-Autellix-Program-Id": server.programs.name(handle.program),
        "X-Autellix-Call-Id": str(handle.id),
    }


async def _collect(server: Server, handle: CallHandle, anonymous: bool, request: Request) -> str | None:
    """The call's whole text, or ``None`` when the client left first (the call is cancelled)."""
    parts: list[str] = []

    async def read() -> None:
        while (token := await handle.tokens.get()) is not None:
            parts.append(token)

    async def disconnected() -> None:
        # the body is read already: the next message is the disconnect (or, with uvicorn, also
        # the end of the response, but by then the reader has won)
        while (await request.receive())["type"] != "http.disconnect":
            pass

    reader = asyncio.ensure_future(read())
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((reader, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, watcher):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(reader, watcher, return_exceptions=True)
        server.settle(handle, anonymous)
    if not reader.done() or reader.cancelled():
        return None
    reader.result()
    return "".join(parts)


async def _plain_text(
    server: Server, handle: CallHandle, anonymous: bool, request: Request
) -> str | Response:
    """A non-streamed call's text, or the response that replaces it (client gone, upstream failed)."""
    text = await _collect(server, handle, anonymous, request)
    if text is None:
        return Response(status_code=499)  # nobody reads it
    if handle.error is not None:
        return _upstream_error(handle)
    return text


async def _events(
    server: Server,
    handle: CallHandle,
    anonymous: bool,
    *,
    token: Callable[[str], Any],
    last: Callable[[], Any],
    usage: Callable[[], Any] | None,
    first: Any = None,
) -> AsyncIterator[str]:
    """The SSE body of a streamed call: ``first`` (if any), a chunk per token, the closing chunk
    (built once the finish reason is known), the usage chunk when asked for, ``[DONE]``; an error
    event instead of the close when the upstream failed."""
    try:
        if first is not None:
            yield _sse(first)
        while (text := await handle.tokens.get()) is not None:
            yield _sse(token(text))
        if handle.error is not None:
            yield _error_event(handle)
            return
        yield _sse(last())
        if usage is not None:
            yield _sse(usage())
        yield "data: [DONE]\n\n"
    finally:
        server.settle(handle, anonymous)


def _upstream_error(handle: CallHandle) -> JSONResponse:
    return error_response(502, handle.error or "upstream failed", "upstream_error", "upstream_failed")


def _error_event(handle: CallHandle) -> str:
    """The SSE event that ends a stream whose upstream failed (the official client raises it)."""
    info = ErrorInfo(message=handle.error or "upstream failed", type="upstream_error", code="upstream_failed")
    return f"data: {ErrorResponse(error=info).model_dump_json(exclude_none=True)}\n\n"


def _wants_usage(body: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


def _sse(model: Any) -> str:
    return f"data: {model.model_dump_json(exclude_none=True)}\n\n"


def create_app(config: ServerConfig | None = None, engine: Engine | None = None) -> FastAPI:
    """The ASGI app of ``autellix serve`` (``engine`` defaults to a :class:`SimEngine`)."""
    server = Server(config or ServerConfig(), engine)
    cfg = server.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.engine.start()
        try:
            yield
        finally:
            await server.engine.stop()

    app = FastAPI(title="autellix", version=_version(), lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    # added last, so it runs first: a request without a valid key is not even read
    app.add_middleware(
        ApiKeys, keys=cfg.api_keys, max_concurrent=cfg.max_concurrent_per_key, metrics=server.metrics
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.code)

    @app.exception_handler(QueueFullError)
    async def _queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        retry = str(max(1, math.ceil(exc.retry_after)))
        server.metrics.rejected.labels(reason="queue_full").inc()
        return error_response(429, str(exc), "rate_limit_error", "queue_full", headers={"Retry-After": retry})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
        return error_response(400, "invalid request: " + "; ".join(problems), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind, headers=exc.headers)  # 405: Allow

    @app.get("/health", responses=_errors(503))
    async def health() -> Any:
        if not server.engine.healthy:
            return error_response(503, "the engine is down", "server_error", "engine_down")
        return {"status": "ok", "policy": server.engine.policy}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", responses=_errors(401))
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=cfg.model)])

    @app.post("/v1/chat/completions", response_model=None, responses=_completion_docs(ChatCompletion))
    async def chat(request: Request, body: ChatCompletionRequest) -> Response:
        handle, anonymous = server.submit(request, body)
        rid, headers = f"chatcmpl-{handle.id}", _call_headers(server, handle)
        if not body.stream:
            text = await _plain_text(server, handle, anonymous, request)
            if isinstance(text, Response):
                return text
            choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=_reason(handle))
            done = ChatCompletion(id=rid, model=cfg.model, choices=[choice], usage=_usage(handle))
            return JSONResponse(done.model_dump(), headers=headers)

        def chunk(*choices: ChatChunkChoice, usage: Usage | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=rid, model=cfg.model, choices=list(choices), usage=usage)

        events = _events(
            server,
            handle,
            anonymous,
            first=chunk(ChatChunkChoice(delta=DeltaMessage(role="assistant", content=""))),
            token=lambda text: chunk(ChatChunkChoice(delta=DeltaMessage(content=text))),
            last=lambda: chunk(ChatChunkChoice(delta=DeltaMessage(), finish_reason=_reason(handle))),
            usage=(lambda: chunk(usage=_usage(handle))) if _wants_usage(body) else None,
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    @app.post("/v1/completions", response_model=None, responses=_completion_docs(Completion))
    async def completions(request: Request, body: CompletionRequest) -> Response:
        handle, anonymous = server.submit(request, body)
        rid, headers = f"cmpl-{handle.id}", _call_headers(server, handle)
        if not body.stream:
            text = await _plain_text(server, handle, anonymous, request)
            if isinstance(text, Response):
                return text
            choice = CompletionChoice(text=text, finish_reason=_reason(handle))
            done = Completion(id=rid, model=cfg.model, choices=[choice], usage=_usage(handle))
            return JSONResponse(done.model_dump(), headers=headers)

        def chunk(*choices: CompletionChoice, usage: Usage | None = None) -> Completion:
            return Completion(id=rid, model=cfg.model, choices=list(choices), usage=usage)

        events = _events(
            server,
            handle,
            anonymous,
            token=lambda text: chunk(CompletionChoice(text=text)),
            last=lambda: chunk(CompletionChoice(text="", finish_reason=_reason(handle))),
            usage=(lambda: chunk(usage=_usage(handle))) if _wants_usage(body) else None,
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    def _program(name: str) -> int:
        try:
            check_name("program", name)
        except InvalidIdError as exc:
            raise ApiError(400, str(exc), code="invalid_id") from None
        core = server.programs.lookup(name)
        if core is None:
            raise ApiError(404, f"no program {name!r}", "not_found_error", "program_not_found")
        return core

    @app.get("/v1/programs/{program_id}", responses=_errors(400, 401, 404))
    async def program(program_id: str) -> ProgramEntry:
        core = _program(program_id)
        try:
            info = server.engine.program(core)
        except ProgramNotFoundError:
            server.programs.forget(core)
            raise ApiError(
                404, f"no program {program_id!r}", "not_found_error", "program_not_found"
            ) from None
        return ProgramEntry(
            id=program_id,
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
            live_calls=[f"chatcmpl-{c}" for c in info.live_calls],
        )

    @app.post("/v1/programs/{program_id}/finish", responses=_errors(400, 401, 404))
    async def finish(program_id: str) -> ProgramFinished:
        core = _program(program_id)
        try:
            aborted = server.end_program(core)
        except ProgramNotFoundError:
            raise ApiError(
                404, f"no program {program_id!r}", "not_found_error", "program_not_found"
            ) from None
        return ProgramFinished(id=program_id, aborted_calls=[f"chatcmpl-{c}" for c in aborted])

    return app


def _version() -> str:
    from autellix import __version__

    return __version__
