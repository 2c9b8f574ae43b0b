"""How a forwarded call failed, typed: the status and error the client gets, and what the engine does.

* an upstream **4xx** before any token (400, 404, 413, 422, 429) goes to the client with the same
  status, the upstream's message (cut to :data:`MESSAGE_CHARS`) and its error type and code; a 429
  carries the upstream's ``Retry-After``. A 401/403 is the front's credentials at fault, not the
  client's: 502. A 4xx does not count against the upstream (it is alive and answering).
* a **5xx** or a broken stream is 502 ``upstream_failed``; a connect or read timeout is 504
  ``upstream_timeout``; both count toward ejecting the upstream.
* a call that **never reached** the upstream (connection refused, connect timeout, the connection
  closed before any response byte) may be retried on another upstream (``retryable``).

Messages name the upstream by index; its address and the HTTP library's text (which names host
and port) go to the server's log only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

#: characters of an upstream's error message passed on
MESSAGE_CHARS = 300
#: upstream statuses passed through to the client as they are
PASSED_THROUGH = frozenset({400, 404, 413, 422, 429})
_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass
class UpstreamFailure(Exception):
    """A forwarded call's failure as the client will see it."""

    message: str
    status: int = 502
    type: str = "upstream_error"
    code: str | None = "upstream_failed"
    retry_after: float | None = None
    #: counts toward ejecting the upstream (a 4xx does not)
    counts: bool = True
    #: the call never reached the upstream: another one may take it
    retryable: bool = False

    def __str__(self) -> str:
        return self.message


def cut(text: str, limit: int = MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def from_status(upstream: int, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamFailure:
    """The failure an upstream's non-2xx answer (before any token) becomes."""
    message, type_, code = _error_fields(body)
    if status in PASSED_THROUGH:
        retry = _seconds(headers.get("Retry-After")) if status == 429 else None
        return UpstreamFailure(
            cut(message or f"upstream {upstream} answered HTTP {status}"),
            status,
            type_ or _TYPES[status],
            code,
            retry_after=retry,
            counts=False,
        )
    detail = f": {cut(message)}" if message else ""
    return UpstreamFailure(f"upstream {upstream} failed: HTTP {status}{detail}", counts=status >= 500)


def from_event(upstream: int, error: Any) -> UpstreamFailure:
    """The failure an error event in the upstream's stream becomes."""
    message = error.get("message") if isinstance(error, dict) else None
    text = str(message) if message is not None else json.dumps(error)
    # the upstream is alive and answering: not a reason to eject it
    return UpstreamFailure(f"upstream {upstream} failed: {cut(text)}", counts=False)


def from_exception(upstream: int, exc: BaseException, answered: bool) -> UpstreamFailure:
    """The failure an exception of the HTTP client becomes; ``answered``: response bytes came."""
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamFailure(
            f"upstream {upstream} timed out connecting", 504, code="upstream_timeout", retryable=True
        )
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return UpstreamFailure(
            f"upstream {upstream} timed out: no data within the read timeout", 504, code="upstream_timeout"
        )
    # refused, reset, or a kept-alive connection the upstream had closed: nothing was answered
    never_reached = not answered and isinstance(
        exc, (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError)
    )
    return UpstreamFailure(f"upstream {upstream} failed: {name}", retryable=never_reached)


def _error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """Message, type and code of an error body: OpenAI's ``{"error": {...}}``, vLLM's flat
    ``{"message", "type", "code"}``, FastAPI's ``{"detail"}``, or plain text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return (text or None), None, None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message", error.get("detail"))
            type_, code = error.get("type"), error.get("code")
            return (
                None
                if message is None
                else str(message)
                if isinstance(message, str)
                else json.dumps(message),
                type_ if isinstance(type_, str) and type_ else None,
                None if code is None else str(code),
            )
        if isinstance(error, str):
            return error, None, None
    return text or None, None, None


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (an HTTP date is not used: ``None``, and one is computed)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None
