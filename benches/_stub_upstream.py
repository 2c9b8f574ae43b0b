"""``bench_serve.py``'s stub upstream: a bare ASGI OpenAI-compatible server that answers every chat
completion at once with one token, as JSON or, for ``"stream": true``, as SSE chunks (role, token,
finish, usage, ``[DONE]``). It does no work, so calls straight to it give the floor: HTTP on
loopback plus the client."""

from __future__ import annotations

import json
import time
from typing import Any

from _procs import LOOPBACK

MODEL = "stub"


def stub_app() -> Any:
    """A bare ASGI OpenAI-compatible upstream: one token, answered at once."""
    created = int(time.time())

    def chunk(rid: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    counter = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal counter
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/health":
            await _respond(send, 200, b"application/json", b'{"status":"ok"}')
            return
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            await _respond(send, 404, b"application/json", b'{"error":{"message":"not found"}}')
            return
        request = json.loads(raw or b"{}")
        counter += 1
        rid = f"chatcmpl-stub-{counter}"
        usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
        if not request.get("stream"):
            body = {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": request.get("model", MODEL),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "x"},
                        "finish_reason": "length",
                    }
                ],
                "usage": usage,
            }
            await _respond(send, 200, b"application/json", json.dumps(body).encode())
            return
        events = chunk(rid, [{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        events += chunk(rid, [{"index": 0, "delta": {"content": "x"}}])
        events += chunk(rid, [{"index": 0, "delta": {}, "finish_reason": "length"}])
        if (request.get("stream_options") or {}).get("include_usage"):
            events += chunk(rid, [], usage)
        events += b"data: [DONE]\n\n"
        await _respond(send, 200, b"text/event-stream", events)

    return app


async def _respond(send: Any, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def run_stub(port: int) -> None:
    """Serve :func:`stub_app` on ``port`` of loopback until interrupted."""
    import uvicorn

    uvicorn.run(stub_app(), host=LOOPBACK, port=port, log_level="warning", access_log=False)
