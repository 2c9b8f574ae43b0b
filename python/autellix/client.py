"""``autellix.Client``: the official ``openai`` client, with every call tagged with its program.

::

    from autellix import Client

    client = Client("http://127.0.0.1:8000/v1")
    with client.program("trip-planner") as p:
        plan = p.chat.completions.create(model="autellix-sim", messages=[...])
        a, b = p.thread("flights"), p.thread("hotels")  # parallel branches of the program
        a.chat.completions.create(model="autellix-sim", messages=[...])
    # leaving the block finishes the program: POST /v1/programs/trip-planner/finish

A :class:`Program` (and a :class:`Thread`) *is* an ``openai.OpenAI`` client sharing the parent's
connection pool, with the ``X-Autellix-Program-Id`` (and ``X-Autellix-Thread-Id``) headers set on
every request, so everything of the ``openai`` API works on it. Parent calls can still be named
per request with ``extra_headers={"X-Autellix-Parent-Ids": call.id}``.

Needs the ``openai`` package (``pip install 'autellix[client]'``); it is imported only when a
:class:`Client` is made, so ``import autellix`` works without it. Sync only for now.
"""

from __future__ import annotations

import os
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai
    from openai.resources.chat import Chat
    from openai.resources.completions import Completions

PROGRAM_HEADER = "X-Autellix-Program-Id"
THREAD_HEADER = "X-Autellix-Thread-Id"


def _openai() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("autellix.Client needs the openai package: pip install 'autellix[client]'") from exc
    return openai


class Client:
    """A connection to an ``autellix serve`` server (or any OpenAI-compatible one).

    ``api_key`` defaults to ``$AUTELLIX_API_KEY``; a server without keys accepts anything. Other
    keyword arguments go to ``openai.OpenAI`` (``timeout``, ``max_retries``, ``http_client``...).
    """

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000/v1", api_key: str | None = None, **kwargs: Any
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("AUTELLIX_API_KEY", "none")
        self.openai: openai.OpenAI = _openai().OpenAI(base_url=base_url, api_key=key, **kwargs)

    def program(self, name: str | None = None) -> Program:
        """A program named ``name`` (a fresh unique name by default); use it in a ``with``."""
        return Program(self.openai, name or f"program-{uuid.uuid4().hex}")

    def close(self) -> None:
        self.openai.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Thread:
    """One branch of a program: an ``openai.OpenAI`` client tagging calls with program and thread."""

    def __init__(self, base: openai.OpenAI, headers: dict[str, str]) -> None:
        self.openai: openai.OpenAI = base.with_options(default_headers=headers)
        self.headers = headers

    @property
    def chat(self) -> Chat:
        return self.openai.chat

    @property
    def completions(self) -> Completions:
        return self.openai.completions


class Program(Thread):
    """An agent program: calls made through it (or its threads) belong to program :attr:`id`."""

    def __init__(self, base: openai.OpenAI, name: str) -> None:
        super().__init__(base, {PROGRAM_HEADER: name})
        self.id = name
        self.finished = False

    def thread(self, name: str) -> Thread:
        """The program's thread ``name``: calls on it form one branch of the program."""
        return Thread(self.openai, {**self.headers, THREAD_HEADER: name})

    def info(self) -> dict[str, Any]:
        """The program's process-table entry (``GET /v1/programs/{id}``)."""
        out: dict[str, Any] = self.openai.get(f"/programs/{self.id}", cast_to=dict[str, Any])
        return out

    def finish(self) -> list[str]:
        """End the program on the server; the ids of calls it aborted. A program the server does
        not know (no call made yet, or expired) is already over: ``[]``."""
        if self.finished:
            return []
        self.finished = True
        try:
            out: dict[str, Any] = self.openai.post(f"/programs/{self.id}/finish", cast_to=dict[str, Any])
        except _openai().NotFoundError:
            return []
        return list(out.get("aborted_calls", []))

    def __enter__(self) -> Program:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()
