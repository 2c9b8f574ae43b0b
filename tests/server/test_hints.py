"""The identity hints other agent stacks send (vLLM, NVIDIA Dynamo, OpenAI ``metadata``, Claude
Code, Codex, OpenCode): one test per row of the table in :mod:`autellix.server.identity`, read
from its own lists, so that the table and the tests cannot drift apart; then precedence, malformed
hints, the fields never read, and how a tenant's program is forwarded upstream."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from autellix.identity import CallIdentity, from_xargs
from autellix.server.identity import PARENTS_HINTS, PROGRAM_HINTS, THREAD_HINTS, forwarded_name

from .conftest import MODEL, MSG, Running

Serve = Callable[..., Running]
CHAT = {"model": MODEL, "messages": MSG, "max_tokens": 2}


def _placed(where: str, value: object) -> tuple[dict[str, Any], dict[str, str]]:
    """A request's (body fields, headers) holding ``value`` at a hint's place (``h:`` / ``b:``)."""
    kind, _, path = where.partition(":")
    if kind == "h":
        return {}, {path: str(value)}
    body: dict[str, Any] = {}
    node = body
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return body, {}


def _merged(*parts: tuple[dict[str, Any], dict[str, str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Body fields and headers of several hints, nested objects merged (two ``vllm_xargs`` keys)."""
    body: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for fields, more in parts:
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(body.get(key), dict):
                body[key] = {**body[key], **value}
            else:
                body[key] = value
        headers.update(more)
    return body, headers


def _post(h: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return h.post("/v1/chat/completions", json={**CHAT, **body}, headers=headers or {})


def _program_of(h: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    r = _post(h, body, headers)
    assert r.status_code == 200, r.text
    return r.headers["X-Autellix-Program-Id"]


@pytest.mark.parametrize("where", PROGRAM_HINTS)
def test_program_hint(serve: Serve, where: str) -> None:
    s = serve()
    name = str(uuid.uuid4())  # what agent stacks fill these with: a UUID is a valid id
    with s.http() as h:
        assert _program_of(h, *_placed(where, name)) == name
        assert _program_of(h, *_placed(where, name)) == name
    assert s.program(name)["finished_calls"] == 2


@pytest.mark.parametrize("where", THREAD_HINTS)
def test_thread_hint(serve: Serve, where: str) -> None:
    s = serve()
    with s.http() as h:
        for thread in ("planner", "critic", "critic"):
            body, headers = _placed(where, thread)
            assert _program_of(h, {**body, "program_id": f"threads-{where}"}, headers) == f"threads-{where}"
        # a control: calls without a thread share the unnamed one
        for _ in range(3):
            _program_of(h, {"program_id": "unthreaded"})
    assert s.program(f"threads-{where}")["threads"] == 2
    assert s.program("unthreaded")["threads"] == 1


@pytest.mark.parametrize("where", PARENTS_HINTS)
def test_parents_hint(serve: Serve, where: str) -> None:
    s = serve()
    with s.http() as h:
        first = _post(h, {"program_id": "dag"}).json()["id"]
        for parents in ([first], f"{first}, "):
            body, headers = _placed(where, parents)
            assert _post(h, {**body, "program_id": "dag"}, headers).status_code == 200
        # a well-formed parent the core does not know: the core refuses it, as if explicit
        body, headers = _placed(where, ["chatcmpl-999999"])
        refused = _post(h, {**body, "program_id": "dag"}, headers)
        assert refused.status_code == 400 and "999999" in refused.json()["error"]["message"]
        # not call ids, or no program to follow them in: ignored
        for value in (["not-a-call"], [first, 7], "", {"id": first}):
            body, headers = _placed(where, value)
            assert _post(h, {**body, "program_id": "dag"}, headers).status_code == 200, value
        body, headers = _placed(where, [first])
        assert _program_of(h, body, headers).startswith("anon-")
    assert s.program("dag")["finished_calls"] == 7


def test_explicit_ids_win_over_hints(serve: Serve) -> None:
    s = serve()
    hint = {"session_id": "hinted", "vllm_xargs": {"thread_id": "t-hint"}}
    with s.http() as h:
        assert _program_of(h, hint, {"X-Autellix-Program-Id": "by-header"}) == "by-header"
        assert _program_of(h, {**hint, "program_id": "by-body"}, {"X-Session-ID": "hinted"}) == "by-body"
        # explicit ids that disagree, or a malformed one, are still a 400
        assert _post(h, {**hint, "program_id": "a"}, {"X-Autellix-Program-Id": "b"}).status_code == 400
        assert _post(h, hint, {"X-Autellix-Program-Id": "bad id!"}).status_code == 400
        # an explicit thread wins too: both calls are on thread "mine"
        for _ in range(2):
            _program_of(h, {**hint, "program_id": "threaded", "thread_id": "mine"})
        assert h.get("/v1/programs/hinted").status_code == 404
    assert s.program("threaded")["threads"] == 1


def test_the_first_valid_hint_wins(serve: Serve) -> None:
    s = serve()
    with s.http() as h:
        both = _merged(
            _placed("b:vllm_xargs.program_id", "first"), _placed("b:vllm_xargs.session_id", "second")
        )
        assert _program_of(h, *both) == "first"
        assert _program_of(h, {"session_id": "body"}, {"X-Session-ID": "header"}) == "body"
        # a malformed hint is skipped: the next valid one is used
        skipped = _merged(_placed("b:session_id", "not valid!"), _placed("h:X-Claude-Code-Session-Id", "cc"))
        assert _program_of(h, *skipped) == "cc"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"session_id": "has space"}, {}),
        ({"session_id": "x" * 129}, {}),
        ({"session_id": ""}, {"X-Session-ID": "a b", "session-id": "a/b"}),
        ({"vllm_xargs": {"program_id": True}}, {}),
        ({"vllm_xargs": "program_id=p"}, {}),
        ({"metadata": {"program_id": {"nested": "p"}}}, {}),
        ({"metadata": ["program_id"]}, {}),
        ({"nvext": {"agent_context": "p"}}, {}),
        ({"nvext": {"agent_context": {"session_id": None}}}, {}),
        # never read: OpenAI's user (an end user, not a program) ...
        ({"user": "agent-1"}, {}),
        ({"user": "someone@example.com"}, {}),
        # ... Dynamo's agent hints (no identity in them) and parent-session headers
        ({"nvext": {"agent_hints": {"priority": 5, "osl": 64, "latency_sensitivity": 1.2}}}, {}),
        ({}, {"X-Parent-Session-ID": "ses_1", "X-Dynamo-Parent-Session-ID": "s-0"}),
        ({}, {"X-Claude-Code-Parent-Agent-Id": "a-0", "X-Codex-Parent-Thread-Id": "t-0"}),
    ],
)
def test_ignored_hints_leave_the_call_anonymous(
    serve: Serve, body: dict[str, Any], headers: dict[str, str]
) -> None:
    s = serve()
    with s.http() as h:
        assert _program_of(h, body, headers).startswith("anon-")


def test_numeric_hint_ids_are_names() -> None:
    """Numbers pass as ids (a JSON number in ``vllm_xargs``, as the plug-in reads it)."""
    assert from_xargs({"program_id": 42}) == CallIdentity("42")


def test_hinted_programs_are_scoped_to_the_key(serve: Serve) -> None:
    s = serve(api_keys=("ka", "kb"))
    cores = []
    for key in ("ka", "kb"):
        with s.http(headers={"Authorization": f"Bearer {key}"}) as h:
            assert _program_of(h, {}, {"X-Session-ID": "chat-1"}) == "chat-1"
            cores.append(h.get("/v1/programs/chat-1").json()["core_id"])
    assert cores[0] != cores[1]


def test_vllm_session_id_in_xargs_reaches_the_plugin_identity() -> None:
    assert from_xargs({"session_id": "s"}) == CallIdentity("s")
    assert from_xargs({"session_id": "xargs"}, session_id="request") == CallIdentity("request")
    assert from_xargs({"program_id": "p", "session_id": "xargs"}, session_id="r") == CallIdentity("p")
    assert from_xargs({"session_id": "bad id!"}) == CallIdentity()


def test_forwarded_program_names_are_tenant_qualified() -> None:
    assert forwarded_name("", "agent") == "agent"
    assert forwarded_name("key-2", "agent") == "key-2:agent"
    assert forwarded_name("key-2", None) is None
    long = forwarded_name("key-2", "a" * 128)
    assert long is not None and long.startswith("key-2::") and len(long) <= 128
    assert long != forwarded_name("key-2", "b" * 128)


def test_a_front_forwards_each_tenants_programs_apart(serve: Serve) -> None:
    """An ``--engine openai`` front with keys, over an autellix upstream that reads
    ``vllm_xargs.program_id``: one name under two keys reaches the upstream as two programs."""
    upstream = serve()
    front = serve(engine="openai", upstreams=(upstream.url,), upstream_identity=True, api_keys=("ka", "kb"))
    for key in ("ka", "kb"):
        with front.http(headers={"Authorization": f"Bearer {key}"}) as h:
            assert _program_of(h, {"program_id": "agent"}) == "agent"
    assert upstream.program("key-1:agent")["finished_calls"] == 1
    assert upstream.program("key-2:agent")["finished_calls"] == 1
    with upstream.http() as h:
        assert h.get("/v1/programs/agent").status_code == 404
