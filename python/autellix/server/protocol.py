"""Request and response bodies of the OpenAI-compatible API (the subset autellix serves).

Modelled on vLLM's ``vllm/entrypoints/openai/protocol.py``: pydantic v2 models, one per body.
Sampling fields the simulated engine cannot honour (``temperature``, ``top_p``, ...) are
accepted and ignored, as are unknown fields (``extra="allow"``), so any OpenAI client works.
A chat message's ``content`` may be a list of text parts (``[{"type": "text", "text": ...}]``);
other parts (images, audio, files) are a 400. A completion's ``prompt`` is one text, or a list of
one (several prompts, or token ids, are a 400: one call per request).
The autellix fields ``program_id``, ``thread_id`` and ``parent_ids`` may be given in the body
(the official client sends them with ``extra_body``) or as ``X-Autellix-*`` headers; the identity
hints other stacks send (``session_id``, ``vllm_xargs``, ``nvext``, ``metadata``) stay unknown
fields, read leniently by :mod:`autellix.server.identity`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_serializer,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    # Strict numbers and booleans: ``"temperature": false`` or ``"stream": "yes"`` is a 400, not
    # silently coerced (an int is still a valid float); ``NaN`` and ``Infinity`` are a 400 too.
    model: str
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    temperature: StrictFloat | None = None
    top_p: StrictFloat | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    user: str | None = None
    # autellix program identity (also accepted as X-Autellix-* headers)
    program_id: str | None = None
    thread_id: str | None = None
    parent_ids: list[str] | None = None
    # not a body field (a client's "tenant" is an unknown field): set by the route from the key
    _tenant: str = PrivateAttr(default="")

    @property
    def tenant(self) -> str:
        """The label of the API key the request came with (``""`` without keys): its programs'
        scope."""
        return self._tenant

    @tenant.setter
    def tenant(self, label: str) -> None:
        self._tenant = label


class TextPart(BaseModel):
    """A text part of a message's ``content`` (the only kind of part served)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        if isinstance(content, list):
            for i, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ValueError(f"part {i} is not text: only text content parts are supported")
        return content

    def text(self) -> str:
        """The message's text (its text parts joined by newlines, as vLLM joins them)."""
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def prompt_text(self) -> str:
        return "\n".join(f"{m.role}: {m.text()}" for m in self.messages)


class CompletionRequest(_Request):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_text_prompt(cls, prompt: Any) -> Any:
        if isinstance(prompt, list):
            if not all(isinstance(p, str) for p in prompt):
                raise ValueError("token-id prompts are not supported: send the prompt as text")
            if len(prompt) != 1:
                raise ValueError(
                    f"one prompt per request is supported, not {len(prompt)}: send one request per prompt"
                )
        return prompt

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


#: the finish reasons a client sees (OpenAI's, less the tool-call ones: tool calls are not relayed)
FinishReason = Literal["stop", "length", "content_filter"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class _StreamedChoice(BaseModel):
    """A choice of a streamed chunk. Chunks leave out unset fields, but ``finish_reason`` is
    always there: ``null`` until the closing chunk, as OpenAI streams it."""

    @model_serializer(mode="wrap")
    def _with_finish_reason(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data.setdefault("finish_reason", None)
        return data


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_StreamedChoice):
    index: int = 0
    delta: DeltaMessage
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionChunkChoice(_StreamedChoice):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None


class CompletionChunk(BaseModel):
    """A chunk of a streamed ``/v1/completions`` response (a ``text_completion`` object too)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "autellix"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ProgramEntry(BaseModel):
    """``GET /v1/programs/{id}``: the core's process-table entry of a program (times in seconds
    of engine time, i.e. wall time divided by the server's time scale)."""

    id: str
    #: the label of the API key that owns the program (``""`` without keys)
    tenant: str = ""
    core_id: int
    arrival: float
    attained_service: float
    waiting_time: float
    critical_path: float
    active_calls: int
    finished_calls: int
    threads: int
    last_arrival: float
    last_completion: float | None
    live_calls: list[str]


class ProgramFinished(BaseModel):
    id: str
    aborted_calls: list[str]


class ErrorInfo(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
