"""Program identity: which program and thread an LLM call belongs to, and which calls it follows.

Clients name a call's program and thread with strings and its parents with call ids. The same
identity travels in three forms, all defined here:

* HTTP headers (``autellix serve``, the client SDK): :data:`PROGRAM_HEADER`,
  :data:`THREAD_HEADER`, :data:`PARENTS_HEADER` (comma-separated call ids);
* request body fields (``autellix serve``, sent with the official client's ``extra_body``):
  ``program_id``, ``thread_id``, ``parent_ids`` (:data:`FIELDS`);
* vLLM's ``vllm_xargs`` (the vLLM plug-in; ``autellix serve`` forwards identity upstream in
  this form, :func:`to_xargs`): the same keys, or vLLM's own ``session_id`` for the program.

``autellix serve`` also reads the ids agent stacks already send (vLLM's ``session_id``, Dynamo's
agent context, coding-agent session headers) as lenient hints: :mod:`autellix.server.identity`.

The scheduling core takes integers: :class:`ProgramRegistry` hands out one per live program
name and, per program, one per thread name.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autellix.exceptions import InvalidIdError, shown

PROGRAM_HEADER = "X-Autellix-Program-Id"
THREAD_HEADER = "X-Autellix-Thread-Id"
PARENTS_HEADER = "X-Autellix-Parent-Ids"
#: body fields (and ``vllm_xargs`` keys) of a call's program, thread and parents
PROGRAM_FIELD, THREAD_FIELD, PARENTS_FIELD = "program_id", "thread_id", "parent_ids"
#: vLLM's own session id (a body field, an ``X-Session-ID`` header, a ``vllm_xargs`` key)
SESSION_FIELD = "session_id"
FIELDS = (PROGRAM_FIELD, THREAD_FIELD, PARENTS_FIELD)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_CALL = re.compile(r"(?:chatcmpl-|cmpl-)?([0-9]{1,19})")


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid ``kind`` (program, thread) id, else :class:`InvalidIdError`."""
    if not _NAME.fullmatch(name):
        raise InvalidIdError(
            f"invalid {kind} id {shown(name)}: use 1-128 characters from A-Z a-z 0-9 . _ : @ -, "
            "starting with a letter or digit"
        )
    return name


def parse_call_id(text: str) -> int:
    """A call id as ``autellix serve`` answers it: ``chatcmpl-12``, ``cmpl-12`` or ``12`` -> 12."""
    match = _CALL.fullmatch(text.strip())
    if match is None or int(match.group(1)) >= 1 << 64:
        raise InvalidIdError(f"invalid parent call id {shown(text)}: expected a response id like chatcmpl-12")
    return int(match.group(1))


@dataclass(frozen=True)
class CallIdentity:
    """Who a call belongs to, by the client's names; ``program is None``: a program of its own."""

    program: str | None = None
    thread: str | None = None
    #: the engine's ids of the calls this one follows
    parents: tuple[str, ...] = ()


def to_xargs(program: str | None, thread: str | None) -> dict[str, str]:
    """The ``vllm_xargs`` entries that carry a call's program and thread to a vLLM plug-in."""
    ids = {PROGRAM_FIELD: program, THREAD_FIELD: thread}
    return {key: value for key, value in ids.items() if value is not None}


def from_xargs(
    extra: Mapping[str, Any] | None,
    session_id: str | None = None,
    on_invalid: Callable[[str, InvalidIdError], None] | None = None,
) -> CallIdentity:
    """The identity in a vLLM request's ``vllm_xargs`` (``extra``): its ``program_id``, else
    the request's ``session_id``, else ``session_id`` in ``extra`` (where vLLM versions before
    the request field carried it).

    Lenient, because a scheduler cannot answer a client with a 400: a malformed id is dropped
    (reported to ``on_invalid(kind, error)``), which makes the call a program of its own.
    ``parent_ids`` may be a list or a comma-separated string."""
    extra = extra or {}

    def name(kind: str, value: object) -> str | None:
        if value is None or value == "" or not isinstance(value, str | int):
            return None
        try:
            return check_name(kind, str(value))
        except InvalidIdError as exc:
            if on_invalid is not None:
                on_invalid(kind, exc)
            return None

    program = (
        name("program", extra.get(PROGRAM_FIELD))
        or name("program", session_id)
        or name("program", extra.get(SESSION_FIELD))
    )
    if program is None:
        return CallIdentity()
    raw = extra.get(PARENTS_FIELD)
    items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else ()
    parents = tuple(p.strip() for p in items if isinstance(p, str) and p.strip())
    return CallIdentity(program, name("thread", extra.get(THREAD_FIELD)), parents)


class ProgramRegistry:
    """The core's integer ids of live program names and, per program, of its thread names.

    Names are scoped to a tenant (``autellix serve``'s API key; ``""`` without keys): the same
    name under two tenants is two programs. Thread ``0`` is the unnamed thread. A name is
    forgotten when its program ends; the same name later starts a new program."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        #: core id -> (tenant, name)
        self._names: dict[int, tuple[str, str]] = {}
        self._threads: dict[int, dict[str, int]] = {}
        self._next = itertools.count(1)

    def __len__(self) -> int:
        """Programs held, named or anonymous."""
        return len(self._names)

    def resolve(self, name: str | None, tenant: str = "") -> int:
        """The core id of ``tenant``'s program ``name`` (created if new); a fresh anonymous one
        for ``None``."""
        if name is None:
            core = next(self._next)
            self._names[core] = (tenant, f"anon-{core}")
            return core
        core_id = self._ids.get((tenant, name))
        if core_id is None:
            core_id = self._ids[tenant, name] = next(self._next)
            self._names[core_id] = (tenant, name)
        return core_id

    def lookup(self, name: str, tenant: str = "") -> int | None:
        """The core id of ``tenant``'s live program ``name``, if any (never another tenant's)."""
        return self._ids.get((tenant, name))

    def name(self, core: int) -> str:
        entry = self._names.get(core)
        return entry[1] if entry is not None else str(core)

    def tenant(self, core: int) -> str:
        entry = self._names.get(core)
        return entry[0] if entry is not None else ""

    def thread(self, core: int, name: str | None) -> int:
        if name is None:
            return 0
        threads = self._threads.setdefault(core, {})
        return threads.setdefault(name, len(threads) + 1)

    def forget(self, core: int) -> None:
        entry = self._names.pop(core, None)
        if entry is not None and self._ids.get(entry) == core:
            del self._ids[entry]
        self._threads.pop(core, None)
