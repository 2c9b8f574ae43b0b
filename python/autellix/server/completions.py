"""``/v1/chat/completions`` and ``/v1/completions``: one handler, two response shapes.

Both submit the call (:meth:`Server.submit`), then answer with the whole text or stream it as
server-sent events; a :class:`Shape` builds the bodies each endpoint sends.

Finish reasons on the wire are OpenAI's: a call the server ended early (its program was finished,
or the server stopped; ``abort`` inside the server and in ``/metrics``) reports ``length``, as its
text is cut short, which is what ``length`` tells a client (``stop`` would claim a complete answer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from autellix.server.engines import CallHandle
from autellix.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionRequest,
    DeltaMessage,
    FinishReason,
    Usage,
)
from autellix.server.state import Server
from autellix.server.streaming import events, opening, whole_text


class Shape(ABC):
    """The bodies of one endpoint: the whole response, and the chunks of its stream."""

    #: prefix of the response id (``<prefix><call id>``)
    prefix: str

    def __init__(self, rid: str, model: str) -> None:
        self.rid, self.model = rid, model

    @abstractmethod
    def response(self, text: str, reason: FinishReason, usage: Usage) -> BaseModel: ...

    def opening(self) -> BaseModel | None:
        """The stream's first chunk, before any token (``None``: none)."""
        return None

    @abstractmethod
    def delta(self, text: str) -> BaseModel: ...

    @abstractmethod
    def closing(self, reason: FinishReason) -> BaseModel: ...

    @abstractmethod
    def usage(self, usage: Usage) -> BaseModel: ...


class ChatShape(Shape):
    prefix = "chatcmpl-"

    def response(self, text: str, reason: FinishReason, usage: Usage) -> BaseModel:
        choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=reason)
        return ChatCompletion(id=self.rid, model=self.model, choices=[choice], usage=usage)

    def _chunk(self, *choices: ChatChunkChoice, usage: Usage | None = None) -> BaseModel:
        return ChatCompletionChunk(id=self.rid, model=self.model, choices=list(choices), usage=usage)

    def opening(self) -> BaseModel | None:
        return self._chunk(ChatChunkChoice(delta=DeltaMessage(role="assistant", content="")))

    def delta(self, text: str) -> BaseModel:
        return self._chunk(ChatChunkChoice(delta=DeltaMessage(content=text)))

    def closing(self, reason: FinishReason) -> BaseModel:
        return self._chunk(ChatChunkChoice(delta=DeltaMessage(), finish_reason=reason))

    def usage(self, usage: Usage) -> BaseModel:
        return self._chunk(usage=usage)


class TextShape(Shape):
    prefix = "cmpl-"

    def response(self, text: str, reason: FinishReason, usage: Usage) -> BaseModel:
        choice = CompletionChoice(text=text, finish_reason=reason)
        return Completion(id=self.rid, model=self.model, choices=[choice], usage=usage)

    def _chunk(self, *choices: CompletionChunkChoice, usage: Usage | None = None) -> BaseModel:
        return CompletionChunk(id=self.rid, model=self.model, choices=list(choices), usage=usage)

    def delta(self, text: str) -> BaseModel:
        return self._chunk(CompletionChunkChoice(text=text))

    def closing(self, reason: FinishReason) -> BaseModel:
        return self._chunk(CompletionChunkChoice(text="", finish_reason=reason))

    def usage(self, usage: Usage) -> BaseModel:
        return self._chunk(usage=usage)


def _usage(handle: CallHandle) -> Usage:
    return Usage(
        prompt_tokens=handle.prompt_tokens,
        completion_tokens=handle.generated,
        total_tokens=handle.prompt_tokens + handle.generated,
    )


def _reason(handle: CallHandle) -> FinishReason:
    """The call's finish reason as the client sees it (see the module's docs)."""
    reason = handle.finish_reason
    if reason == "abort":
        return "length"
    return reason if reason in ("stop", "length", "content_filter") else "stop"  # type: ignore[return-value]


async def complete(
    server: Server,
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    shape: type[Shape],
) -> Response:
    """Run one completion request to its response (plain JSON or an SSE stream)."""
    handle, anonymous = server.submit(request.headers, body)
    out = shape(f"{shape.prefix}{handle.id}", server.config.model)
    headers = server.call_headers(handle)
    if not body.stream:
        text = await whole_text(server, handle, anonymous, request)
        if isinstance(text, Response):
            return text
        done = out.response(text, _reason(handle), _usage(handle))
        return JSONResponse(done.model_dump(), headers=headers)
    # the response waits for the first token: a call failing before one gets its own status
    held = await opening(server, handle, anonymous, request)
    if isinstance(held, Response):
        return held
    wants_usage = bool((body.stream_options or {}).get("include_usage"))
    stream = events(
        server,
        handle,
        anonymous,
        first=out.opening(),
        token=out.delta,
        last=lambda: out.closing(_reason(handle)),
        usage=(lambda: out.usage(_usage(handle))) if wants_usage else None,
        held=held,
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
