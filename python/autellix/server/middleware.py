"""ASGI middleware of ``autellix serve``: the request body limit (413) and API keys with their
tenants and per-key concurrency limit (401, 429).

With ``ServerConfig.api_keys`` or ``admin_keys`` set, every ``/v1/*`` route needs
``Authorization: Bearer <key>``; ``/health`` stays open, and so do ``/metrics`` and the API docs
unless ``protect_metrics`` is set. With ``max_concurrent_per_key`` set, a key may have that many
completion requests in flight (a streaming one until its stream ends). With authentication off,
all requests share one (anonymous) key, so the limit is server-wide.

Each key is a tenant: programs and their calls are scoped to it (:mod:`.identity`). A tenant is
named by a stable, non-secret label, never by its key: ``key-N`` for the N-th API key and
``admin-N`` for the N-th admin key (1-based, in ``ServerConfig`` order), ``""`` with
authentication off. The matched :class:`Tenant` is put in the ASGI scope's ``state``
(``request.state.tenant``, read with :func:`tenant_of`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from autellix.server.errors import error_response
from autellix.server.metrics import Metrics

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


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


@dataclass(frozen=True)
class Tenant:
    """Whose request it is: the label of its API key, and whether that is an admin key (which may
    read and finish other tenants' programs)."""

    label: str
    admin: bool = False


#: the one tenant of a server without API keys
ANONYMOUS = Tenant("")


def tenants(keys: tuple[str, ...], admin_keys: tuple[str, ...] = ()) -> dict[str, Tenant]:
    """Each key's tenant: ``key-N`` for API keys, ``admin-N`` for admin keys (1-based)."""
    out = {key: Tenant(f"key-{i}") for i, key in enumerate(keys, 1)}
    out.update({key: Tenant(f"admin-{i}", admin=True) for i, key in enumerate(admin_keys, 1)})
    return out


def tenant_of(request: Request) -> Tenant:
    """The tenant :class:`ApiKeys` matched for ``request`` (:data:`ANONYMOUS` without keys)."""
    tenant = getattr(request.state, "tenant", ANONYMOUS)
    return tenant if isinstance(tenant, Tenant) else ANONYMOUS


class ApiKeys:
    """ASGI middleware: API keys on ``/v1/*`` and the ``protected`` paths (401), the request's
    tenant in its scope, and the per-key concurrency limit (429)."""

    def __init__(
        self,
        app: _ASGIApp,
        keys: tuple[str, ...],
        max_concurrent: int | None,
        metrics: Metrics,
        admin_keys: tuple[str, ...] = (),
        protected: tuple[str, ...] = (),
    ) -> None:
        self.app, self.max_concurrent, self.metrics = app, max_concurrent, metrics
        self.tenants = tenants(keys, admin_keys)
        self.protected = frozenset(protected)
        self.in_flight: dict[str, int] = {}

    def _tenant(self, scope: _Scope) -> Tenant | None:
        """The tenant of the request's valid key (:data:`ANONYMOUS` with authentication off), or
        ``None``."""
        if not self.tenants:
            return ANONYMOUS
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                token = token.strip()
                if scheme.lower() != "bearer" or not token:
                    return None
                # compare with every key, in constant time per key
                found = None
                for key, tenant in self.tenants.items():
                    if hmac.compare_digest(token.encode(), key.encode()):
                        found = tenant
                return found
        return None

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/v1" or path.startswith("/v1/") or path in self.protected):
            await self.app(scope, receive, send)
            return
        tenant = self._tenant(scope)
        if tenant is None:
            response = error_response(
                401,
                "missing or invalid API key: send Authorization: Bearer <key>",
                "authentication_error",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        key = tenant.label
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
