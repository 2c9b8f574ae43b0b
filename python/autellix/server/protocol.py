"""Request and response bodies of the OpenAI-compatible API (the subset autellix serves).

Modelled on vLLM's ``vllm/entrypoints/openai/protocol.py``: pydantic v2 models, one per body.
Sampling fields the simulated engine cannot honour (``temperature``, ``top_p``, ...) are
accepted and ignored, as are unknown fields (``extra="allow"``), so any OpenAI client works.
The autellix fields ``program_id``, ``thread_id`` and ``parent_ids`` may be given in the body
(the official client sends them with ``extra_body``) or as ``X-Autellix-*`` headers.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    # Strict numbers and booleans: ``"temperature": false`` or ``"stream": "yes"`` is a 400, not
    # silently coerced (an int is still a valid float).
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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def prompt_text(self) -> str:
        return "\n".join(f"{m.role}: {m.content or ''}" for m in self.messages)


class CompletionRequest(_Request):
    prompt: str

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def prompt_text(self) -> str:
        return self.prompt


FinishReason = Literal["stop", "length", "abort"]


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


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
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
