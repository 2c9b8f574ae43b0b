"""How ``autellix serve`` runs under uvicorn: its options, and an HTTP protocol with deadlines for
slow clients (slowloris).

uvicorn has no deadline on receiving a request (its issue #157): ``timeout_keep_alive`` only
covers the idle time after a response, is cancelled by any byte received, and httptools
connections get no timer at all until their first response. A client sending its headers one byte
at a time therefore holds a connection (and counts toward ``limit_concurrency``) for as long as it
likes. :class:`GuardedHttpToolsProtocol` adds two deadlines:

* **headers**: complete request headers within ``header_timeout`` seconds of connecting, or of a
  request's first byte on a kept-alive connection (the idle time before it is uvicorn's
  ``timeout_keep_alive``, :attr:`ServerConfig.idle_timeout`);
* **body**: the whole body within ``body_timeout`` seconds of the headers.

A connection that misses one is answered ``408`` (when a request was begun and nothing answered
yet) and closed. Neither deadline runs while the response is being sent, so a long SSE stream is
never cut. Headers over :data:`MAX_HEADER_BYTES` get ``431`` and a close.

The subclass overrides uvicorn's ``HttpToolsProtocol`` (what ``http="auto"`` picks when httptools,
a dependency, is installed): the httptools parser callbacks and three of its attributes
(``transport``, ``cycle``, ``flow``). Written against uvicorn 0.30-0.55 (pyproject.toml keeps
uvicorn below 1.0); tests/server/test_slow_clients.py pins the behaviour.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from autellix.server.config import ServerConfig

#: largest request line + headers, bytes (431 beyond): httptools, unlike h11, has no limit, and
#: would buffer a header of any size while its deadline runs (h11's default is 16 KiB)
MAX_HEADER_BYTES = 64 * 1024


def _close_response(status: bytes, reason: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b" " + reason + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(reason)).encode() + b"\r\nconnection: close\r\n\r\n" + reason
    )


_REQUEST_TIMEOUT = _close_response(b"408", b"Request Timeout")
_HEADERS_TOO_LARGE = _close_response(b"431", b"Request Header Fields Too Large")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines (see the module docstring)."""

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0

    # class-level initial values: no __init__ override (uvicorn's signature stays its own)
    _deadline: asyncio.TimerHandle | None = None
    #: what the connection waits for: a request's first byte, the rest of its headers, its body
    _phase: Literal["idle", "headers", "body"] = "idle"
    #: bytes received toward the current request's headers
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heading = self._phase != "body"
        super().data_received(data)
        # Count chunks that leave a request's headers incomplete (completing them resets the count;
        # body bytes are not counted).
        if heading and self._phase == "headers" and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._disarm()
                self.transport.write(_HEADERS_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = "headers"
        if self._deadline is None:  # the first request of a connection keeps its connect deadline
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_bytes = 0
        super().on_headers_complete()
        self._phase = "body"
        self._arm(self.body_timeout)  # a bodiless request's on_message_complete follows at once

    def on_message_complete(self) -> None:
        self._disarm()
        self._phase = "idle"
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        # Waits the server caused are not the client's: a pipelined request waits for the
        # response before it (reading paused), a large body for the app to take it.
        if (self._phase == "headers" and answering) or (self._phase == "body" and self.flow.read_paused):
            self._arm(self.header_timeout if self._phase == "headers" else self.body_timeout)
            return
        begun = self._phase == "headers" or (self._phase == "body" and not self.cycle.response_started)
        if begun:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """:class:`GuardedHttpToolsProtocol` with these deadlines (uvicorn builds one per connection
    from the class alone, so the settings travel as class attributes)."""

    class Guarded(GuardedHttpToolsProtocol):
        pass

    Guarded.header_timeout, Guarded.body_timeout = header_timeout, body_timeout
    return Guarded


def uvicorn_options(config: ServerConfig, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` for ``config`` (``overrides``
    win): the guarded protocol, the idle timeout and the connection cap. ``autellix serve`` and
    the tests' servers both use it, so tests run the protocol that production runs."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "http": guarded_protocol(config.header_timeout, config.body_timeout),
        # the app has no WebSocket routes; an upgrade would hand the transport to another protocol
        "ws": "none",
        # uvicorn types it int but hands it to loop.call_later: fractions work
        "timeout_keep_alive": config.idle_timeout,
        # uvicorn answers 503 once connections >= its limit, the asking one included
        "limit_concurrency": None if config.max_connections is None else config.max_connections + 1,
    }
    options.update(overrides)
    return options
