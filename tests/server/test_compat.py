"""What OpenAI clients send and expect, beyond the basics: text-part message content, a prompt
list, ``GET /v1/models/{id}``, ``finish_reason`` in every streamed chunk, OpenAI's finish reasons
only, finite sampling numbers, and error messages that do not echo whole values."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from .conftest import MODEL, MSG, Running

LONG = 100_000  # max_tokens of a call that runs until the test ends it

Serve = Callable[..., Running]

PARTS: list[Any] = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "Plan a trip"}, {"type": "text", "text": "to Paris."}],
    }
]


def test_message_content_as_text_parts(serve: Serve) -> None:
    s = serve()
    c = s.client()
    out = c.chat.completions.create(model=MODEL, messages=PARTS, max_tokens=3)
    assert out.choices[0].message.content == " tok" * 3
    # the parts count as their text, joined by newlines
    joined: list[Any] = [{"role": "user", "content": "Plan a trip\nto Paris."}]
    same = c.chat.completions.create(model=MODEL, messages=joined, max_tokens=3)
    assert out.usage is not None and same.usage is not None
    assert out.usage.prompt_tokens == same.usage.prompt_tokens
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    mixed: list[Any] = [{"role": "user", "content": [*PARTS[0]["content"], image]}]
    with pytest.raises(openai.BadRequestError, match="only text content parts are supported"):
        c.chat.completions.create(model=MODEL, messages=mixed, max_tokens=3)


def test_prompt_as_a_list(serve: Serve) -> None:
    c = serve().client()
    out = c.completions.create(model=MODEL, prompt=["Once upon a time"], max_tokens=3)
    assert [(ch.index, ch.text) for ch in out.choices] == [(0, " tok" * 3)]
    with pytest.raises(openai.BadRequestError, match="one prompt per request"):
        c.completions.create(model=MODEL, prompt=["one", "two"], max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="token-id prompts are not supported"):
        c.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=3)


def test_text_parts_and_prompt_list_reach_an_upstream(serve: Serve) -> None:
    up = serve()
    c = serve(engine="openai", upstreams=(up.url,)).client()
    out = c.chat.completions.create(model=MODEL, messages=PARTS, max_tokens=3)
    assert out.choices[0].message.content == " tok" * 3
    text = c.completions.create(model=MODEL, prompt=["Once upon a time"], max_tokens=3)
    assert text.choices[0].text == " tok" * 3


def test_retrieve_model(serve: Serve) -> None:
    c = serve().client()
    card = c.models.retrieve(MODEL)
    assert (card.id, card.object, card.owned_by) == (MODEL, "model", "autellix")
    assert card == c.models.list().data[0]
    with pytest.raises(openai.NotFoundError) as err:
        c.models.retrieve("gpt-9")
    body = err.value.response.json()["error"]
    assert (body["type"], body["code"]) == ("not_found_error", "model_not_found")
    # a model id with a slash, as Hugging Face names them
    assert serve(model="org/model-7b").client().models.retrieve("org/model-7b").id == "org/model-7b"


def _events(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    data = [line[len("data: ") :] for line in r.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", {"messages": MSG}), ("/v1/completions", {"prompt": "Once"})],
)
def test_streamed_chunks_carry_a_null_finish_reason(serve: Serve, path: str, body: dict[str, Any]) -> None:
    s = serve()
    request = {
        **body,
        "model": MODEL,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with s.http() as h:
        chunks = _events(h.post(path, json=request))
    choices = [ch["choices"][0] for ch in chunks if ch["choices"]]
    assert len(choices) >= 5
    # present in every choice, null until the closing one
    assert [c["finish_reason"] for c in choices] == [None] * (len(choices) - 1) + ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_call_ended_early_reports_length(serve: Serve) -> None:
    """A call the server ends before its natural end (here: its program is finished) reports an
    OpenAI finish reason, ``length`` (its text is cut short); ``/metrics`` keeps ``abort``."""
    s = serve(max_running=1)
    request = {"model": MODEL, "messages": MSG, "max_tokens": LONG, "stream": True, "program_id": "p"}
    with s.http() as h, h.stream("POST", "/v1/chat/completions", json=request) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        with s.http() as other:
            assert other.post("/v1/programs/p/finish").status_code == 200
        data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    closing = json.loads(data[-2])["choices"][0]
    assert closing["finish_reason"] == "length"
    with s.http() as h:
        assert 'autellix_calls_total{finish_reason="abort"} 1.0' in h.get("/metrics").text


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_non_finite_sampling_numbers_are_400(serve: Serve, field: str, number: str) -> None:
    s = serve()
    # the client's JSON encoder refuses these; Python's json module (and FastAPI's parser) reads them
    raw = f'{{"model": "{MODEL}", "messages": {json.dumps(MSG)}, "max_tokens": 2, "{field}": {number}}}'
    with s.http() as h:
        r = h.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert f"{field}: Input should be a finite number" in r.json()["error"]["message"]


def test_error_messages_cut_echoed_values(serve: Serve) -> None:
    s = serve()
    long_model, long_program = "m" * 5000, "p" * 128  # the longest valid program id
    with s.http() as h:
        for path in (f"/v1/models/{long_model}", f"/v1/programs/{long_program}"):
            r = h.get(path)
            assert r.status_code == 404, r.text
            message = r.json()["error"]["message"]
            assert len(message) < 100 and message.endswith("…'"), message
