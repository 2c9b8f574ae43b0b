"""Errors as the API shows them: OpenAI-style ``{"error": {"message", "type", "code"}}`` bodies.

Statuses: 400 invalid body or ids, 401 missing or unknown API key, 404 unknown model, program
or route, 413 body too large, 429 queue full or key over its concurrency limit (with
``Retry-After``), 502 an upstream of the ``openai`` or ``vllm`` engine failed, 503 the engine is
down or no upstream is available, 504 an upstream timed out. An upstream's own 400, 404, 413,
422 or 429 reaches the client as that status. :func:`install_handlers` maps every exception a
route can raise to one of them. A value a message echoes (an id, a model name) is cut to its first
64 characters (:func:`autellix.exceptions.shown`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix.exceptions import QueueFullError, shown
from autellix.server.metrics import Metrics
from autellix.server.protocol import ErrorInfo, ErrorResponse


class ApiError(Exception):
    """A request the API refuses: ``status`` with an OpenAI-style error body."""

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


def not_found(what: str, name: str, code: str) -> ApiError:
    return ApiError(404, f"no {what} {shown(name)}", "not_found_error", code)


_ERROR_DOCS = {
    400: "invalid body, parameters or ids",
    401: "missing or unknown API key",
    404: "unknown model or program",
    413: "request body too large",
    422: "an upstream refused the request as unprocessable",
    429: "queue full, API key over its concurrency limit, or an upstream's 429 (with Retry-After)",
    502: "an upstream of the openai or vllm engine failed",
    503: "the engine is down, or no upstream is available (with Retry-After)",
    504: "an upstream timed out (connect, first token, or between chunks)",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that can fail with ``statuses`` (all ``ErrorResponse``)."""
    return {status: {"model": ErrorResponse, "description": _ERROR_DOCS[status]} for status in statuses}


def install_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error a route raises becomes its status with an OpenAI-style body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.code)

    @app.exception_handler(QueueFullError)
    async def _queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        retry = str(max(1, math.ceil(exc.retry_after)))
        metrics.rejected.labels(reason="queue_full").inc()
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
