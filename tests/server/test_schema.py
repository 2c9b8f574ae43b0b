"""Schemathesis against the server's own OpenAPI schema: no request, valid or not, gets a 5xx.

Cases are generated (positive and negative) from ``create_app(...).openapi()`` for every operation
and sent over real HTTP to a uvicorn server on loopback, with API keys on, the ``X-Autellix-*``
identity headers and the ``Authorization`` header fuzzed too. Every response goes through
schemathesis's checks (not a server error, documented status code / content type / body schema,
negative data rejected, ...) except ``positive_data_acceptance``: a schema-valid body may still be
refused with a 400 for what the schema cannot say (unknown parent calls, a token budget over the
engine's KV capacity, a program id given differently in header and body).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from autellix.server import ServerConfig, create_app
from autellix.server.engines.vllm import free_port

from .conftest import MODEL, Running, wait_for

KEY = "sk-schema"
#: a program the live server knows (so program routes are also tested on their 200 path)
KNOWN = "schema-known"
CONFIG = ServerConfig(time_scale=0.01, api_keys=(KEY,), max_concurrent_per_key=64)

schema = schemathesis.openapi.from_dict(create_app(CONFIG).openapi())


@pytest.fixture(scope="module")
def live() -> Iterator[Running]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(CONFIG), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    yield Running(f"http://127.0.0.1:{port}", CONFIG)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def test_served_schema_is_the_tested_one(live: Running) -> None:
    with live.http() as h:
        served = h.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == create_app(CONFIG).openapi()
    responses = served.json()["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "429"} <= set(responses)
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}


# header values requests can send: latin-1 without control characters or leading whitespace
_header_text = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=20).map(
    str.lstrip
)
_program_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,15}", fullmatch=True)
_identity_headers = st.dictionaries(
    st.sampled_from(["X-Autellix-Program-Id", "X-Autellix-Thread-Id", "X-Autellix-Parent-Ids"]),
    st.one_of(_header_text, _program_name),
    max_size=3,
)
_authorization = st.one_of(st.just(f"Bearer {KEY}"), st.just(f"Bearer {KEY}"), _header_text)


def _steer(case: Case, program: str | None, use_model: bool, use_known: bool, stream: bool) -> None:
    """Point some cases at the served model and a known program, stream some, keep token budgets small
    (a budget near the engine's KV capacity is valid but takes minutes to generate). Only values
    that are valid already are replaced, so a negative case stays negative."""
    if use_known and "program_id" in (case.path_parameters or {}):
        case.path_parameters["program_id"] = KNOWN
    body = case.body
    if not isinstance(body, dict):
        return
    if use_model and isinstance(body.get("model"), str):
        body["model"] = MODEL
    if program is not None and isinstance(body.get("program_id", ""), str):
        body["program_id"] = program
    if stream and isinstance(body.get("stream", False), bool):
        body["stream"] = True
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and 8 < value <= 1_000_000:
            body[field] = 8


@schema.parametrize()
@schema.given(
    use_model=st.booleans(),
    use_known=st.booleans(),
    stream=st.booleans(),
    program=st.none() | st.just(KNOWN) | _program_name,
    identity=_identity_headers,
    authorization=_authorization,
)
@settings(
    max_examples=40,
    # the same cases every run, so CI does not fail by chance (to search further, run it locally
    # with derandomize=False and more max_examples)
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_no_server_errors(
    case: Case,
    live: Running,
    session: requests.Session,
    use_model: bool,
    use_known: bool,
    stream: bool,
    program: str | None,
    identity: dict[str, str],
    authorization: str,
) -> None:
    _steer(case, program, use_model, use_known, stream)
    if use_known:  # (re)create the known program: an earlier case may have finished it
        known = session.post(
            f"{live.url}/v1/completions",
            json={"model": MODEL, "prompt": "x", "max_tokens": 1, "program_id": KNOWN},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        assert known.status_code == 200, known.text
    headers = {**identity, "Authorization": authorization}
    response = case.call_and_validate(
        base_url=live.url,
        session=session,
        headers=headers,
        excluded_checks=[positive_data_acceptance],
        timeout=30,
    )
    assert 200 <= response.status_code < 500
    if response.status_code >= 400:
        error = json.loads(response.text)["error"]
        assert error["message"] and error["type"]
    elif isinstance(case.body, dict) and case.body.get("stream") is True:
        assert response.headers["content-type"][0].startswith("text/event-stream")
        events = [line for line in response.text.split("\n\n") if line]
        assert events[-1] == "data: [DONE]"
        assert all(e.startswith("data: ") for e in events)
