"""A request's program identity, as ``autellix serve`` reads it: explicit ids (strict: a bad id is
a 400), else the hints other agent stacks already send (lenient: a bad hint is ignored).

A call belongs to a program (one agent run), a thread within it, and follows parent calls. Where
each is read (``h:`` a header, ``b:`` a body field, dotted for nesting), explicit ids first, then
the hints; for each of program, thread and parents the first row with a valid value wins:

| where                                   | sets    | who sends it                                    |
|-----------------------------------------|---------|-------------------------------------------------|
| h:X-Autellix-Program-Id, b:program_id   | program | autellix clients: explicit (a bad id is a 400)  |
| h:X-Autellix-Thread-Id, b:thread_id     | thread  | autellix clients: explicit                      |
| h:X-Autellix-Parent-Ids, b:parent_ids   | parents | autellix clients: explicit                      |
| b:vllm_xargs.program_id                 | program | clients of autellix's vLLM plug-in              |
| b:vllm_xargs.thread_id                  | thread  | clients of autellix's vLLM plug-in              |
| b:vllm_xargs.parent_ids                 | parents | clients of autellix's vLLM plug-in              |
| b:metadata.program_id                   | program | OpenAI clients, in ``metadata``                 |
| b:metadata.thread_id                    | thread  | OpenAI clients, in ``metadata``                 |
| b:nvext.agent_context.session_id        | program | NVIDIA Dynamo harnesses (the agent run)         |
| b:nvext.agent_context.trajectory_id     | thread  | NVIDIA Dynamo harnesses (one chain of the run)  |
| b:session_id                            | program | vLLM clients                                    |
| b:vllm_xargs.session_id                 | program | vLLM clients (its older place)                  |
| h:X-Dynamo-Session-ID                   | program | NVIDIA Dynamo harnesses                         |
| h:X-Session-ID                          | program | vLLM clients, OpenCode                          |
| h:X-Claude-Code-Session-Id              | program | Claude Code (its session)                       |
| h:X-Claude-Code-Agent-Id                | thread  | Claude Code (a subagent of the session)         |
| h:thread-id, then h:session-id          | program | Codex                                           |
| b:user, b:nvext.agent_hints, parent-session headers | -- | not read (below)                       |

Explicit ids: the ``X-Autellix-*`` headers or the body fields (see :mod:`autellix.identity`; the
official client sends body fields with ``extra_body``). Either place works; giving a field in both
places with different values is a 400, and so is a malformed id. Parents name calls by the ids the
server answered with (``chatcmpl-12``, ``cmpl-12`` or ``12``), of the same program (another
program's call is a 400 from the core), and need a program id.

Hints fill only what was not given explicitly: a hint that conflicts with an explicit id is
ignored. Each field is taken from the first row whose value is valid; a hint outside the id
grammar (1-128 of ``A-Z a-z 0-9 . _ : @ -``, e.g. a UUID passes), of the wrong type, or empty is
ignored without an error, since other systems fill these fields for their own use. Hinted parents
are used only with a program, and only if every id is a call id. A call with no program at all is
a program of its own (anonymous), ended when the call ends. Program names are scoped to the
tenant (the API key, :mod:`.middleware`): the same name under two keys is two programs.

Not read, on purpose: OpenAI's ``user`` (it names an end user, not a program: taking it as one
would merge all of a user's agent runs into one program, so a new run would inherit the service
of every earlier one); Dynamo's ``nvext.agent_hints`` (``priority``, ``osl``,
``latency_sensitivity``, ``speculative_prefill``: no identity in them, and the core orders calls
by attained service, not by a priority a client sets for itself); the parent *session* headers
(``X-Dynamo-Parent-Session-ID``, ``X-Parent-Session-ID``, ``X-Claude-Code-Parent-Agent-Id``,
``X-Codex-Parent-Thread-Id``), which name sessions, not calls: a subagent's own session id makes
it a program of its own.

Sources: vLLM's ``session_id`` body field, ``X-Session-ID`` header and ``vllm_xargs.session_id``
fallback (vllm-project/vllm PR 48048, "session id plumbing into requests"); Dynamo's
``nvext.agent_context`` (docs.nvidia.com/dynamo, "Agent Tracing": ``session_id`` is the whole
agent run, ``trajectory_id`` one chain in it), ``nvext.agent_hints`` (same docs, "Agent Hints")
and the coding-agent headers it recognizes (dynamo-llm crate, ``src/protocols/agents.rs``: Claude
Code's ``x-claude-code-session-id`` / ``x-claude-code-agent-id``, OpenCode's ``x-session-id``,
Codex's ``session-id`` in 1.4 and ``thread-id`` in 1.5); OpenCode's headers (anomalyco/opencode
PR 12932).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

#: where hints are read, in precedence order: ``h:`` a header, ``b:`` a body path (module docs)
PROGRAM_HINTS = (
    "b:vllm_xargs.program_id",
    "b:metadata.program_id",
    "b:nvext.agent_context.session_id",
    "b:session_id",
    "b:vllm_xargs.session_id",
    "h:X-Dynamo-Session-ID",
    "h:X-Session-ID",
    "h:X-Claude-Code-Session-Id",
    "h:thread-id",
    "h:session-id",
)
THREAD_HINTS = (
    "b:vllm_xargs.thread_id",
    "b:metadata.thread_id",
    "b:nvext.agent_context.trajectory_id",
    "h:X-Claude-Code-Agent-Id",
)
PARENTS_HINTS = ("b:vllm_xargs.parent_ids",)
#: the headers among the hints, lowercased (read once per request: see :func:`_hint_headers`)
_HINT_HEADERS = frozenset(
    where[2:].lower() for where in (*PROGRAM_HINTS, *THREAD_HINTS, *PARENTS_HINTS) if where.startswith("h:")
)

#: longest program id (:func:`autellix.identity.check_name`)
_MAX_NAME = 128


@dataclass
class RequestIdentity:
    """Who a request's call belongs to, in the core's ids and the client's names."""

    program: int
    thread: int
    parents: list[int]
    #: the client's names (``None``: not given)
    name: str | None
    thread_name: str | None
    #: the API key's label the program is scoped to (``""`` without keys)
    tenant: str = ""

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


def _hint_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The hint headers a request carries, by lowercased name: one pass over its headers rather
    than a case-insensitive scan per hint (most requests carry none)."""
    return {name.lower(): value for name, value in headers.items() if name.lower() in _HINT_HEADERS}


@functools.cache
def _place(where: str) -> tuple[bool, tuple[str, ...]]:
    """A hint's place parsed: (a header?, its lowercased name / the body's key path)."""
    kind, _, path = where.partition(":")
    return (True, (path.lower(),)) if kind == "h" else (False, tuple(path.split(".")))


def _raw(where: str, headers: Mapping[str, str], extra: Mapping[str, Any]) -> object:
    """The value at ``where`` (a hint's place), or ``None``; ``headers`` as :func:`_hint_headers`
    gives them."""
    header, path = _place(where)
    if header:
        return headers.get(path[0])
    value: object = extra
    for key in path:
        if not isinstance(value, dict):  # parsed JSON: objects are dicts
            return None
        value = value.get(key)
    return value


def _hinted_name(
    kind: str, places: tuple[str, ...], headers: Mapping[str, str], extra: Mapping[str, Any]
) -> str | None:
    """The first valid id at ``places``; invalid ones are skipped (hints are never a 400)."""
    for where in places:
        value = _raw(where, headers, extra)
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue
        try:
            return check_name(kind, str(value).strip())
        except InvalidIdError:
            continue
    return None


def _hinted_parents(headers: Mapping[str, str], extra: Mapping[str, Any]) -> list[int] | None:
    """Parents from the first hint that holds only call ids (a list or a comma-separated string)."""
    for where in PARENTS_HINTS:
        value = _raw(where, headers, extra)
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
        if not items or not all(isinstance(item, str) for item in items):
            continue
        try:
            return [parse_call_id(item) for item in items if item.strip()]
        except InvalidIdError:
            continue
    return None


def read_identity(
    headers: Mapping[str, str],
    body: ChatCompletionRequest | CompletionRequest,
    programs: ProgramRegistry,
    tenant: str = "",
) -> RequestIdentity:
    """The request's identity, its program (in ``tenant``'s scope) and thread registered in
    ``programs``."""
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
    explicit = from_header if from_header is not None else from_body
    # hints fill only what is missing: an explicit id always wins
    extra = body.model_extra or {}
    hinted = _hint_headers(headers) if name is None or thread_name is None else {}
    if hinted or extra:  # most calls carry no hint at all
        if name is None:
            name = _hinted_name("program", PROGRAM_HINTS, hinted, extra)
        if thread_name is None:
            thread_name = _hinted_name("thread", THREAD_HINTS, hinted, extra)
    parents = explicit or []
    if explicit is None and name is not None and extra:
        parents = _hinted_parents(hinted, extra) or []
    if name is None and parents:
        raise ApiError(400, "parent ids need a program id", code="invalid_id")
    program = programs.resolve(name, tenant)
    thread = programs.thread(program, thread_name)
    return RequestIdentity(program, thread, parents, name, thread_name, tenant)


def forwarded_name(tenant: str, name: str | None) -> str | None:
    """The program id an engine forwards upstream (``vllm_xargs``): ``name`` qualified by the
    tenant (``key-2:agent``), so that tenants stay apart in an upstream's own scheduler; a name
    too long for that is replaced by its digest (``key-2::<hex>``, which no client name can be:
    names start with a letter or digit)."""
    if name is None or not tenant:
        return name
    qualified = f"{tenant}:{name}"
    if len(qualified) <= _MAX_NAME:
        return qualified
    return f"{tenant}::{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def program_named(programs: ProgramRegistry, name: str, tenant: str = "") -> int:
    """The core id of ``tenant``'s live program ``name`` (400 for a malformed name, 404 for an
    unknown one, or one of another tenant: the two are indistinguishable)."""
    try:
        check_name("program", name)
    except InvalidIdError as exc:
        raise ApiError(400, str(exc), code="invalid_id") from None
    core = programs.lookup(name, tenant)
    if core is None:
        raise not_found("program", name, "program_not_found")
    return core
