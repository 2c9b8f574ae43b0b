"""Tenant isolation (issue 16, finding 2): programs and their calls are scoped to the API key.
Another key's program is a 404, its calls are not valid parents, the same name under two keys is
two programs; an admin key names another key's programs with ``?tenant=``. Also the program
routes' response ids (each call's own prefix) and a program expiring between name and submission.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from autellix import ConfigError
from autellix.server import ServerConfig

from .conftest import MODEL, MSG, Running

Serve = Callable[..., Running]
LONG = 100_000  # max_tokens of a call that runs until its stream is closed


def _as(s: Running, key: str) -> httpx.Client:
    return s.http(headers={"Authorization": f"Bearer {key}"})


def _chat(h: httpx.Client, program: str, **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": MSG, "max_tokens": 3, "program_id": program, **fields}
    return h.post("/v1/chat/completions", json=body)


def test_another_keys_program_is_out_of_reach(serve: Serve) -> None:
    s = serve(api_keys=("ka", "kb"))
    with (
        s.client(api_key="ka") as a,
        a.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body={"program_id": "p"}
        ) as stream,
    ):
        chunks = iter(stream)
        first = next(chunks)
        with _as(s, "ka") as ha, _as(s, "kb") as hb:
            mine = ha.get("/v1/programs/p").json()
            assert (mine["tenant"], mine["live_calls"]) == ("key-1", [first.id])
            # B can neither read nor finish A's program: a 404, as for a missing one
            for r in (hb.get("/v1/programs/p"), hb.post("/v1/programs/p/finish")):
                assert r.status_code == 404, r.text
                assert r.json()["error"]["code"] == "program_not_found"
            # the same name under B is B's own program, with its own service
            done = _chat(hb, "p")
            assert done.status_code == 200, done.text
            assert done.headers["X-Autellix-Program-Id"] == "p"
            theirs = hb.get("/v1/programs/p").json()
            assert theirs["core_id"] != mine["core_id"]
            assert (theirs["tenant"], theirs["finished_calls"], theirs["active_calls"]) == ("key-2", 1, 0)
            # A's call is no parent of B's program (the core refuses a parent of another program)
            foreign = _chat(hb, "p", parent_ids=[first.id])
            assert foreign.status_code == 400, foreign.text
            assert foreign.json()["error"]["code"] == "invalid_call"
            assert hb.get("/v1/programs/p").json()["finished_calls"] == 1
            # nor of a program B names only for that call, which is forgotten again
            assert _chat(hb, "q", parent_ids=[first.id]).status_code == 400
            assert hb.get("/v1/programs/q").status_code == 404
            # A's stream was untouched by all of this
            assert ha.get("/v1/programs/p").json()["live_calls"] == [first.id]
        assert next(chunks).choices[0].delta.content


def test_admin_key_reaches_every_tenant(serve: Serve) -> None:
    s = serve(api_keys=("ka", "kb"), admin_keys=("root",))
    with _as(s, "ka") as ha, _as(s, "root") as root:
        assert _chat(ha, "job").status_code == 200
        # without ?tenant= the admin key addresses its own programs
        assert root.get("/v1/programs/job").status_code == 404
        entry = root.get("/v1/programs/job", params={"tenant": "key-1"})
        assert entry.status_code == 200, entry.text
        assert (entry.json()["tenant"], entry.json()["finished_calls"]) == ("key-1", 1)
        assert root.get("/v1/programs/job", params={"tenant": "key-2"}).status_code == 404
        unknown = root.get("/v1/programs/job", params={"tenant": "key-9"})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "unknown_tenant"
        assert "admin-1, key-1, key-2" in unknown.json()["error"]["message"]
        # a tenant key may name only itself
        assert ha.get("/v1/programs/job", params={"tenant": "key-1"}).status_code == 200
        refused = ha.get("/v1/programs/job", params={"tenant": "key-2"})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "admin_only"
        finished = root.post("/v1/programs/job/finish", params={"tenant": "key-1"})
        assert finished.status_code == 200, finished.text
        assert ha.get("/v1/programs/job").status_code == 404
        # the admin key is a tenant of its own for completions
        assert _chat(root, "job").status_code == 200
        assert root.get("/v1/programs/job").json()["tenant"] == "admin-1"


def test_metrics_and_docs_protection(serve: Serve) -> None:
    open_ = serve(api_keys=("k",))
    with httpx.Client(base_url=open_.url) as anyone:
        assert anyone.get("/metrics").status_code == 200  # the default: open, as before
        assert anyone.get("/v1/models").status_code == 401
    s = serve(api_keys=("k",), protect_metrics=True)
    with httpx.Client(base_url=s.url) as anyone, s.http() as keyed:
        for path in ("/metrics", "/openapi.json", "/docs", "/redoc"):
            assert anyone.get(path).status_code == 401, path
            assert keyed.get(path).status_code == 200, path
        assert anyone.get("/health").status_code == 200


def test_without_keys_one_anonymous_tenant(serve: Serve) -> None:
    s = serve()
    with s.http() as h:
        assert _chat(h, "shared").status_code == 200
        with s.http(headers={"Authorization": "Bearer anything"}) as other:
            assert _chat(other, "shared").status_code == 200
        entry = h.get("/v1/programs/shared").json()
        assert (entry["tenant"], entry["finished_calls"]) == ("", 2)


def test_program_routes_name_calls_by_their_response_ids(serve: Serve) -> None:
    s = serve()
    ident = {"program_id": "mix"}
    with s.client() as c:
        chat = c.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=LONG, stream=True, extra_body=ident
        )
        text = c.completions.create(model=MODEL, prompt="hi", max_tokens=LONG, stream=True, extra_body=ident)
        with chat, text:
            ids = {next(iter(chat)).id, next(iter(text)).id}
            assert {i.split("-")[0] for i in ids} == {"chatcmpl", "cmpl"}
            assert set(s.program("mix")["live_calls"]) == ids
            with s.http() as h:
                finished = h.post("/v1/programs/mix/finish")
    assert set(finished.json()["aborted_calls"]) == ids


def test_a_program_expired_while_idle_is_renamed_before_its_next_call(serve: Serve) -> None:
    """The name of a program past its TTL must map to the program its next call creates (idle
    programs are expired before the name is resolved, not between resolution and submission)."""
    s = serve(program_ttl=0.05)
    with s.http() as h:
        assert _chat(h, "idle").status_code == 200
        first = s.program("idle")["core_id"]
        time.sleep(0.3)  # past the TTL (and the once-per-engine-second collection)
        again = _chat(h, "idle")
        assert again.status_code == 200, again.text
        assert again.headers["X-Autellix-Program-Id"] == "idle"
        entry = s.program("idle")
        assert entry["core_id"] != first
        assert entry["finished_calls"] == 1


@pytest.mark.parametrize(
    "options",
    [
        {"admin_keys": ("k",), "api_keys": ("k",)},
        {"admin_keys": ("a,b",)},
        {"admin_keys": ("",)},
        {"protect_metrics": True},
    ],
)
def test_bad_tenant_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**options)


def test_serve_admin_keys_from_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from autellix.cli import main

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    monkeypatch.setenv("AUTELLIX_ADMIN_KEYS", "r2, r1")
    assert main(["serve", "--api-key", "k", "--admin-key", "r1", "--protect-metrics"]) == 0
    config = apps[0].state.server.config
    assert (config.admin_keys, config.protect_metrics) == (("r1", "r2"), True)
    monkeypatch.delenv("AUTELLIX_ADMIN_KEYS")
    assert main(["serve"]) == 0
    assert (apps[1].state.server.config.admin_keys, apps[1].state.server.config.protect_metrics) == (
        (),
        False,
    )
