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

:class:`AsyncClient` is the same on ``openai.AsyncOpenAI``, for ``asyncio`` agents::

    from autellix import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000/v1") as client:
        async with client.program("trip-planner") as p:
            plan = await p.chat.completions.create(model="autellix-sim", messages=[...])
            flights, hotels = await asyncio.gather(
                p.thread("flights").chat.completions.create(model="autellix-sim", messages=[...]),
                p.thread("hotels").chat.completions.create(model="autellix-sim", messages=[...]),
            )
        # leaving the block awaits the program's finish

Needs the ``openai`` package (``pip install 'autellix[client]'``); it is imported only when a
client is made, so ``import autellix`` works without it.
"""

from __future__ import annotations

import os
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    import openai
    from openai.resources.chat import AsyncChat, Chat
    from openai.resources.completions import AsyncCompletions, Completions

PROGRAM_HEADER = "X-Autellix-Program-Id"
THREAD_HEADER = "X-Autellix-Thread-Id"

#: The ``openai`` client class underneath: sync or async.
_C = TypeVar("_C", "openai.OpenAI", "openai.AsyncOpenAI")


def _openai() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("autellix.Client needs the openai package: pip install 'autellix[client]'") from exc
    return openai


def _aborted_calls(out: dict[str, Any]) -> list[str]:
    """The ids of the calls a ``POST /programs/{id}/finish`` answer says it aborted."""
    return list(out.get("aborted_calls", []))


class _ClientBase(Generic[_C]):
    """What :class:`Client` and :class:`AsyncClient` share: the ``openai`` client and program names."""

    _openai_class: ClassVar[str]

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000/v1", api_key: str | None = None, **kwargs: Any
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("AUTELLIX_API_KEY", "none")
        self.openai: _C = getattr(_openai(), self._openai_class)(base_url=base_url, api_key=key, **kwargs)

    @staticmethod
    def _program_name(name: str | None) -> str:
        return name or f"program-{uuid.uuid4().hex}"


class _Branch(Generic[_C]):
    """What threads and programs share: a copy of the ``openai`` client sending ``headers``."""

    def __init__(self, base: _C, headers: dict[str, str]) -> None:
        self.openai: _C = base.with_options(default_headers=headers)
        self.headers = headers


class _ProgramBase(_Branch[_C]):
    """What :class:`Program` and :class:`AsyncProgram` share: the id, thread headers, finish state."""

    def __init__(self, base: _C, name: str) -> None:
        # not super(): mypy loses the constrained ``_C`` through it
        _Branch.__init__(self, base, {PROGRAM_HEADER: name})
        self.id = name
        self.finished = False

    def _thread_headers(self, name: str) -> dict[str, str]:
        return {**self.headers, THREAD_HEADER: name}

    @property
    def _path(self) -> str:
        return f"/programs/{self.id}"

    def _start_finish(self) -> bool:
        """Mark the program finished; ``False`` if it already was (finishing is idempotent)."""
        if self.finished:
            return False
        self.finished = True
        return True


class Client(_ClientBase["openai.OpenAI"]):
    """A connection to an ``autellix serve`` server (or any OpenAI-compatible one).

    ``api_key`` defaults to ``$AUTELLIX_API_KEY``; a server without keys accepts anything. Other
    keyword arguments go to ``openai.OpenAI`` (``timeout``, ``max_retries``, ``http_client``...).
    """

    _openai_class = "OpenAI"

    def program(self, name: str | None = None) -> Program:
        """A program named ``name`` (a fresh unique name by default); use it in a ``with``."""
        return Program(self.openai, self._program_name(name))

    def close(self) -> None:
        self.openai.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Thread(_Branch["openai.OpenAI"]):
    """One branch of a program: an ``openai.OpenAI`` client tagging calls with program and thread."""

    @property
    def chat(self) -> Chat:
        return self.openai.chat

    @property
    def completions(self) -> Completions:
        return self.openai.completions


class Program(_ProgramBase["openai.OpenAI"], Thread):
    """An agent program: calls made through it (or its threads) belong to program :attr:`id`."""

    def thread(self, name: str) -> Thread:
        """The program's thread ``name``: calls on it form one branch of the program."""
        return Thread(self.openai, self._thread_headers(name))

    def info(self) -> dict[str, Any]:
        """The program's process-table entry (``GET /v1/programs/{id}``)."""
        out: dict[str, Any] = self.openai.get(self._path, cast_to=dict[str, Any])
        return out

    def finish(self) -> list[str]:
        """End the program on the server; the ids of calls it aborted. A program the server does
        not know (no call made yet, or expired) is already over: ``[]``."""
        if not self._start_finish():
            return []
        try:
            out: dict[str, Any] = self.openai.post(f"{self._path}/finish", cast_to=dict[str, Any])
        except _openai().NotFoundError:
            return []
        return _aborted_calls(out)

    def __enter__(self) -> Program:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()


class AsyncClient(_ClientBase["openai.AsyncOpenAI"]):
    """:class:`Client` on ``openai.AsyncOpenAI``: use it in an ``async with``, or ``await close()``.

    Other keyword arguments go to ``openai.AsyncOpenAI``.
    """

    _openai_class = "AsyncOpenAI"

    def program(self, name: str | None = None) -> AsyncProgram:
        """A program named ``name`` (a fresh unique name by default); use it in an ``async with``."""
        return AsyncProgram(self.openai, self._program_name(name))

    async def close(self) -> None:
        await self.openai.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncThread(_Branch["openai.AsyncOpenAI"]):
    """One branch of a program: an ``openai.AsyncOpenAI`` client tagging calls with program and thread."""

    @property
    def chat(self) -> AsyncChat:
        return self.openai.chat

    @property
    def completions(self) -> AsyncCompletions:
        return self.openai.completions


class AsyncProgram(_ProgramBase["openai.AsyncOpenAI"], AsyncThread):
    """:class:`Program` on ``openai.AsyncOpenAI``: ``await`` its calls, :meth:`info` and :meth:`finish`."""

    def thread(self, name: str) -> AsyncThread:
        """The program's thread ``name``: calls on it form one branch of the program."""
        return AsyncThread(self.openai, self._thread_headers(name))

    async def info(self) -> dict[str, Any]:
        """The program's process-table entry (``GET /v1/programs/{id}``)."""
        out: dict[str, Any] = await self.openai.get(self._path, cast_to=dict[str, Any])
        return out

    async def finish(self) -> list[str]:
        """End the program on the server; the ids of calls it aborted (``[]`` for an unknown one)."""
        if not self._start_finish():
            return []
        try:
            out: dict[str, Any] = await self.openai.post(f"{self._path}/finish", cast_to=dict[str, Any])
        except _openai().NotFoundError:
            return []
        return _aborted_calls(out)

    async def __aenter__(self) -> AsyncProgram:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.finish()
