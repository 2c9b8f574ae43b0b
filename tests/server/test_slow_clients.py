"""Slow clients (slowloris): the header, body and idle deadlines of ``autellix serve``
(autellix.server.transport), on real uvicorn servers on loopback, with raw sockets as the slow
clients and the official ``openai`` client as the real one.

``BOUND`` (5x the deadline) is how long a test waits for the server to close a slow connection
before failing: a correctness bound for "it is closed at all", not a claim about timing.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable

import pytest

from autellix.exceptions import ConfigError
from autellix.server import ServerConfig
from autellix.server.transport import MAX_HEADER_BYTES

from .conftest import MODEL, MSG, Running

Serve = Callable[..., Running]

TIMEOUT = 0.5  # header / body / idle deadline of these servers, seconds
BOUND = 5 * TIMEOUT
FAST = {"header_timeout": TIMEOUT, "body_timeout": TIMEOUT}
HEALTH = b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n"


def _connect(s: Running) -> socket.socket:
    host, port = s.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=BOUND)


def _read_until_closed(sock: socket.socket, bound: float = BOUND) -> bytes:
    """Everything the server sends until it closes the connection (fails past ``bound``)."""
    sock.settimeout(bound)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with our bytes unread: also closed
            break
        except TimeoutError:
            pytest.fail(f"the server kept the connection open past {bound} s")
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _response(sock: socket.socket) -> bytes:
    """One response with a content-length body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _trickle(sock: socket.socket, stop: threading.Event) -> None:
    """Send a request line and headers that never end, a byte at a time, until the server closes
    the connection (or ``stop``)."""
    for byte in itertools.chain(b"GET /health HTTP/1.1\r\n", itertools.cycle(b"x-pad: a\r\n")):
        if stop.is_set():
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return
        time.sleep(0.01)


def test_silent_connection_is_closed(serve: Serve) -> None:
    s = serve(**FAST)
    with _connect(s) as sock:
        assert _read_until_closed(sock) == b""  # nothing begun, nothing to answer


def test_partial_headers_get_408(serve: Serve) -> None:
    s = serve(**FAST)
    with _connect(s) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-ty")
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_headers_sent_byte_by_byte_are_cut(serve: Serve) -> None:
    s = serve(**FAST)
    stop = threading.Event()
    with _connect(s) as sock:
        sender = threading.Thread(target=_trickle, args=(sock, stop))
        sender.start()
        try:
            answer = _read_until_closed(sock)
        finally:
            stop.set()
            sender.join()
    # a reset (bytes still arriving as it closed) may swallow the 408; the close is what counts
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def test_body_that_never_comes_gets_408(serve: Serve) -> None:
    s = serve(**FAST)
    with _connect(s) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: 200\r\n\r\n{"
        )
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    with s.client() as c:  # the server is none the worse
        out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=8)
        assert out.usage is not None and out.usage.completion_tokens == 8


def test_oversized_headers_get_431(serve: Serve) -> None:
    s = serve()
    with _connect(s) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nx-big: " + b"a" * (MAX_HEADER_BYTES + 1024))
        answer = _read_until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    with s.http() as h:
        assert h.get("/health", headers={"x-big": "a" * (MAX_HEADER_BYTES // 2)}).status_code == 200


def test_kept_alive_connection_outlives_the_header_timeout(serve: Serve) -> None:
    """Between requests only the idle timeout (5 s here) runs, not the header one."""
    s = serve(**FAST)
    with _connect(s) as sock:
        for _ in range(2):
            sock.sendall(HEALTH)
            assert _response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(2 * TIMEOUT)  # idle past the header deadline, within the idle one


def test_header_limit_is_per_request(serve: Serve) -> None:
    """Requests on one kept-alive connection, together past the header limit, are each served."""
    s = serve()
    request = b"GET /health HTTP/1.1\r\nhost: t\r\nx-pad: " + b"a" * 4096 + b"\r\n\r\n"
    with _connect(s) as sock:
        for _ in range(2 * MAX_HEADER_BYTES // len(request)):
            sock.sendall(request)
            assert _response(sock).startswith(b"HTTP/1.1 200 ")


def test_idle_kept_alive_connection_is_closed(serve: Serve) -> None:
    s = serve(idle_timeout=TIMEOUT)
    with _connect(s) as sock:
        sock.sendall(HEALTH)
        assert _response(sock).startswith(b"HTTP/1.1 200 ")
        assert _read_until_closed(sock) == b""


def test_many_slow_clients_do_not_stop_real_calls(serve: Serve) -> None:
    s = serve(header_timeout=1.0)
    slow = [_connect(s) for _ in range(200)]
    try:
        for sock in slow:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nx-pad: ")
        with s.client() as c:
            out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=8)
        assert out.usage is not None and out.usage.completion_tokens == 8
        # each was still waiting for its headers, so each is answered 408
        assert sum(_read_until_closed(sock, 5.0).startswith(b"HTTP/1.1 408 ") for sock in slow) == len(slow)
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("stream", [True, False])
def test_long_call_is_not_cut(serve: Serve, stream: bool) -> None:
    """Both deadlines are disarmed once the request is in: a call that runs many times longer
    (100 tokens of ~10 ms) is answered in full."""
    s = serve(time_scale=1.0, header_timeout=0.1, body_timeout=0.1)
    with s.client() as c:
        if stream:
            chunks = list(c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=100, stream=True))
            assert chunks[-1].choices[0].finish_reason == "length"
            assert sum(bool(ch.choices and ch.choices[0].delta.content) for ch in chunks) == 100
        else:
            out = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=100)
            assert out.usage is not None and out.usage.completion_tokens == 100


def test_max_connections_counts_open_connections(serve: Serve) -> None:
    """uvicorn's limit_concurrency counts every open connection, idle ones too: 503 past the cap."""
    s = serve(max_connections=2)
    with _connect(s) as idle, s.http() as h:
        idle.sendall(HEALTH)
        assert _response(idle).startswith(b"HTTP/1.1 200 ")  # accepted, now idle and kept alive
        assert h.get("/health").status_code == 200  # two open: at the cap
        with _connect(s) as another:
            another.sendall(HEALTH)
            assert _response(another).startswith(b"HTTP/1.1 503 ")  # three open: past it


@pytest.mark.parametrize(
    "option",
    [{"header_timeout": 0.0}, {"body_timeout": -1.0}, {"idle_timeout": float("inf")}, {"max_connections": 0}],
)
def test_bad_limits_are_config_errors(option: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**option)  # type: ignore[arg-type]
