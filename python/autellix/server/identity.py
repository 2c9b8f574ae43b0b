"""A request's program identity, as ``autellix serve`` reads it (strictly: a bad id is a 400).

``X-Autellix-Program-Id``, ``X-Autellix-Thread-Id`` and ``X-Autellix-Parent-Ids``
(comma-separated) headers, or the body fields ``program_id``, ``thread_id``, ``parent_ids``
(list); see :mod:`autellix.identity`. Either place works; giving a field in both places with
different values is a 400. A call without a program id is a program of its own (anonymous),
ended when the call ends. Parents name calls by the ids the server answered with
(``chatcmpl-12``, ``cmpl-12`` or ``12``) and need a program id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autellix.exceptions import InvalidIdError, shown
from autellix.identity import (
    PARENTS_HEADER,
    PROGRAM_HEADER,
    THREAD_HEADER,
    ProgramRegistry,
    check_name,
    parse_call_id,
)
from autellix.server.errors import ApiError, not_found
from autellix.server.protocol import ChatCompletionRequest, CompletionRequest


@dataclass
class RequestIdentity:
    """Who a request's call belongs to, in the core's ids and the client's names."""

    program: int
    thread: int
    parents: list[int]
    #: the client's names (``None``: not given)
    name: str | None
    thread_name: str | None

    @property
    def anonymous(self) -> bool:
        """No program id was given: the call is a program of its own."""
        return self.name is None


def _one(kind: str, header: str | None, body: str | None) -> str | None:
    if header is not None and body is not None and header.strip() != body:
        raise ApiError(
            400, f"{kind} given as header ({shown(header)}) and in the body ({shown(body)}) differ"
        )
    value = header.strip() if header is not None else body
    return None if value is None else check_name(kind, value)


def read_identity(
    headers: Mapping[str, str], body: ChatCompletionRequest | CompletionRequest, programs: ProgramRegistry
) -> RequestIdentity:
    """The request's identity, its program and thread registered in ``programs``."""
    try:
        name = _one("program", headers.get(PROGRAM_HEADER), body.program_id)
        thread_name = _one("thread", headers.get(THREAD_HEADER), body.thread_id)
        listed = headers.get(PARENTS_HEADER)
        from_header = None if listed is None else [parse_call_id(p) for p in listed.split(",") if p.strip()]
        from_body = None if body.parent_ids is None else [parse_call_id(p) for p in body.parent_ids]
    except InvalidIdError as exc:
        raise ApiError(400, str(exc), code="invalid_id") from None
    if from_header is not None and from_body is not None and from_header != from_body:
        raise ApiError(400, "parent ids given as header and in the body differ", code="invalid_id")
    parents = from_header if from_header is not None else (from_body or [])
    if name is None and parents:
        raise ApiError(400, "parent ids need a program id", code="invalid_id")
    program = programs.resolve(name)
    thread = programs.thread(program, thread_name)
    return RequestIdentity(program, thread, parents, name, thread_name)


def program_named(programs: ProgramRegistry, name: str) -> int:
    """The core id of the live program ``name`` (400 for a malformed name, 404 for an unknown one)."""
    try:
        check_name("program", name)
    except InvalidIdError as exc:
        raise ApiError(400, str(exc), code="invalid_id") from None
    core = programs.lookup(name)
    if core is None:
        raise not_found("program", name, "program_not_found")
    return core
