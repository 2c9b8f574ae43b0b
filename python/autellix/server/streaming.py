"""Delivering a call's tokens to its client: the whole text (a plain response) or server-sent
events, with the same settlement either way.

A client that disconnects cancels its call, streaming or not: the call leaves the core at once
and frees its slot. A stream's response is held (:func:`opening`) until the call's first token or
its end, so that a call that fails before any token gets its own status, as a plain response does:
the upstream's 4xx passed through, 502 (upstream failed), 503 (no upstream available), 504
(upstream timed out), with ``Retry-After`` where known. A stream already under way can only end
with an error event (the official client raises it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from autellix.server.engines import CallHandle
from autellix.server.errors import error_response
from autellix.server.protocol import ErrorInfo, ErrorResponse
from autellix.server.state import Server

_T = TypeVar("_T")


async def _collect(server: Server, handle: CallHandle, anonymous: bool, request: Request) -> str | None:
    """The call's whole text, or ``None`` when the client left first (the call is cancelled)."""
    parts: list[str] = []

    async def read() -> None:
        while (token := await handle.tokens.get()) is not None:
            parts.append(token)

    try:
        done = await _unless_client_leaves(request, asyncio.ensure_future(read()))
    finally:
        server.settle(handle, anonymous)
    if done is None:
        return None
    done.result()
    return "".join(parts)


async def _first(handle: CallHandle, request: Request) -> list[str | None] | None:
    """``[the call's first token, or None at its end]``, or ``None`` when the client left first."""
    done = await _unless_client_leaves(request, asyncio.ensure_future(handle.tokens.get()))
    return None if done is None else [done.result()]


async def _disconnected(request: Request) -> None:
    # the body is read already: the next message is the disconnect (or, with uvicorn, also the end
    # of the response, but by then the work has won)
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: asyncio.Future[_T]) -> asyncio.Future[_T] | None:
    """``work``, finished, or ``None`` (and ``work`` cancelled) when the client left first."""
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, watcher):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(work, watcher, return_exceptions=True)
    if not work.done() or work.cancelled():
        return None
    return work


async def opening(
    server: Server, handle: CallHandle, anonymous: bool, request: Request
) -> list[str | None] | Response:
    """Wait for a streamed call's first token or end: ``[it]`` for :func:`events`, or the response
    that replaces the stream (the call failed before any token, or the client left)."""
    if handle.tokens.empty():
        held = await _first(handle, request)
        if held is None:
            server.settle(handle, anonymous)  # cancels the call
            return Response(status_code=499)  # nobody reads it
    else:
        held = [handle.tokens.get_nowait()]
    if held[0] is None and handle.error is not None:
        server.settle(handle, anonymous)
        return _upstream_error(handle)
    return held


async def whole_text(server: Server, handle: CallHandle, anonymous: bool, request: Request) -> str | Response:
    """A non-streamed call's text, or the response that replaces it (client gone, upstream failed)."""
    text = await _collect(server, handle, anonymous, request)
    if text is None:
        return Response(status_code=499)  # nobody reads it
    if handle.error is not None:
        return _upstream_error(handle)
    return text


async def events(
    server: Server,
    handle: CallHandle,
    anonymous: bool,
    *,
    first: Any,
    token: Any,
    last: Any,
    usage: Any,
    held: list[str | None] | None = None,
) -> AsyncIterator[str]:
    """The SSE body of a streamed call: ``first`` (if not ``None``), ``token(text)`` per token (the
    first one ``held[0]`` when :func:`opening` took it), the closing ``last()`` (built once the
    finish reason is known), ``usage()`` when not ``None``, ``[DONE]``; an error event instead of
    the close when the upstream failed."""
    try:
        if first is not None:
            yield _sse(first)
        text = held[0] if held else await handle.tokens.get()
        while text is not None:
            yield _sse(token(text))
            text = await handle.tokens.get()
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
    headers = None
    if handle.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(handle.retry_after)))}
    message = handle.error or "upstream failed"
    return error_response(handle.error_status, message, handle.error_type, handle.error_code, headers)


def _error_event(handle: CallHandle) -> str:
    info = ErrorInfo(
        message=handle.error or "upstream failed", type=handle.error_type, code=handle.error_code
    )
    return f"data: {ErrorResponse(error=info).model_dump_json(exclude_none=True)}\n\n"


def _sse(model: Any) -> str:
    return f"data: {model.model_dump_json(exclude_none=True)}\n\n"
