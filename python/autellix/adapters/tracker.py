"""The core's process table for an engine that names its requests with strings.

:class:`ProgramTracker` gives every engine request a core call id, resolves its program, thread
and parent calls (:func:`call_identity` reads them from the request's metadata, see
:mod:`autellix.identity`), and forwards the engine's events (step, preemption, finish, abort) to
:class:`autellix.Scheduler`. It never raises on bad metadata: a malformed program id makes the
call a program of its own, an unknown parent is dropped, each logged once per kind, because a
scheduler cannot answer a client with a 400.

Two hints ride in the same metadata (:func:`call_hints`): ``last_call`` (the program makes no more
calls after this one: it ends once its live calls have finished, its contexts are freed, and none
is kept for them) and ``tool_seconds`` (the expected duration of the tool this call's output
starts: a prior for the gap until the program's next call, see :class:`CallHints`). A program
also ends by :meth:`ProgramTracker.finish_program` (the finish hint), by the core's TTL, and, for a
call without a program, with that call; :attr:`ProgramTracker.on_program_end` hears of every end.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autellix._core import CallState, Decision, Scheduler
from autellix.adapters.settings import PluginSettings
from autellix.exceptions import AutellixError, InvalidIdError, shown
from autellix.identity import CallIdentity, ProgramRegistry, from_xargs

log = logging.getLogger("autellix.adapters")

_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        log.warning("%s (further ones are not logged)", message)


def _bad_id(kind: str, exc: InvalidIdError) -> None:
    _warn_once(f"bad-{kind}", f"autellix: {exc}; the call is scheduled as a program of its own")


#: ``vllm_xargs`` keys of the hints (flat values: vLLM's ``vllm_xargs`` holds str, int, float)
LAST_CALL_FIELD = "last_call"
TOOL_SECONDS_FIELD = "tool_seconds"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class CallHints:
    """What a client tells the plug-in about a call beyond its identity."""

    #: the program makes no more calls after this one
    last_call: bool = False
    #: expected seconds of the tool this call's output starts (``None``: unknown); the planner
    #: learns the real gap until the program's next call and lets it override this prior
    tool_seconds: float | None = None


def call_hints(extra: Mapping[str, Any] | None) -> CallHints:
    """The hints in a request's ``vllm_xargs``; a malformed one is logged once and ignored."""
    if not extra:
        return CallHints()
    last = extra.get(LAST_CALL_FIELD)
    last_call = _flag(last)
    if last_call is None:
        _warn_once("last-call", f"autellix: {LAST_CALL_FIELD} {shown(str(last))} is not a boolean; ignored")
    raw = extra.get(TOOL_SECONDS_FIELD)
    tool_seconds = None
    if raw is not None:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value) and value >= 0:
            tool_seconds = value
        else:
            _warn_once(
                "tool-seconds",
                f"autellix: {TOOL_SECONDS_FIELD} {shown(str(raw))} is not a number of seconds >= 0; ignored",
            )
    return CallHints(bool(last_call), tool_seconds)


def _flag(value: object) -> bool | None:
    """A flag's value (``None``: absent is False; unreadable is ``None``)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    return None


def call_identity(extra: Mapping[str, Any] | None, session_id: str | None = None) -> CallIdentity:
    """The identity in a request's metadata (:func:`autellix.identity.from_xargs`: vLLM's
    ``vllm_xargs``, else ``session_id``); a malformed id is logged once per kind and dropped."""
    return from_xargs(extra, session_id, on_invalid=_bad_id)


@dataclass
class _Program:
    core: int
    anonymous: bool
    #: request ids (and aliases) of its calls, live or finished: what parents refer to
    requests: list[str] = field(default_factory=list)
    live: int = 0
    #: no more calls will come (``last_call`` or the finish hint): it ends with its last live call
    finishing: bool = False
    #: what the anti-starvation rule counts as its service (ATLAS: critical path), at its last
    #: finished call: the core forgets an expired program before the tracker hears of it
    service: float = 0.0


@dataclass(frozen=True)
class LiveCall:
    """A call the engine still runs or queues."""

    request_id: str
    program: int
    thread: int


class ProgramTracker:
    """Engine requests (by string id) as calls of programs in the core."""

    def __init__(
        self,
        settings: PluginSettings | None = None,
        engine: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings or PluginSettings()
        #: seconds, never decreasing: wall time since creation by default; a simulation (tests, the
        #: replay benchmark) puts its own clock here
        self.clock = clock or _since(time.perf_counter())
        self.core = Scheduler(self.settings.scheduler_config())
        self.engine = engine
        #: told ``(program, service)`` when a program leaves (finished, expired, or its only call
        #: ended), after the core forgot it
        self.on_program_end: Callable[[int, float], None] | None = None
        self._registry = ProgramRegistry()
        self._programs: dict[int, _Program] = {}
        #: request id or alias -> call id, for the calls of live programs (parents may be finished)
        self._calls: dict[str, int] = {}
        #: live calls: call id -> (the call, its program)
        self._live: dict[int, tuple[LiveCall, _Program]] = {}
        self._ids = itertools.count(1)
        self._atlas = self.core.policy == "atlas"

    def now(self) -> float:
        return self.clock()

    def __len__(self) -> int:
        """Live calls."""
        return len(self._live)

    def call_id(self, request_id: str) -> int | None:
        return self._calls.get(request_id)

    def request_id(self, call: int) -> str | None:
        live = self._live.get(call)
        return live[0].request_id if live is not None else None

    def live_call(self, request_id: str) -> LiveCall | None:
        call = self._calls.get(request_id)
        live = self._live.get(call) if call is not None else None
        return live[0] if live is not None else None

    def keeps_context(self, request_id: str) -> bool:
        """Whether the program of this live call may call again (named, not finishing)."""
        call = self._calls.get(request_id)
        live = self._live.get(call) if call is not None else None
        return live is not None and not live[1].anonymous and not live[1].finishing

    def resolve(self, identity: CallIdentity) -> tuple[int, bool]:
        """The core id of the identity's program, and whether the tracker did not know it yet."""
        core = self._registry.resolve(identity.program)
        if core in self._programs:
            return core, False
        self._programs[core] = _Program(core, identity.program is None)
        return core, True

    def submit(
        self,
        request_id: str,
        identity: CallIdentity,
        prompt_tokens: int,
        aliases: Sequence[str] = (),
        *,
        program: int | None = None,
        hints: CallHints | None = None,
    ) -> int:
        """Register a new request (of ``program``, from :meth:`resolve`, else resolved here); its
        call id."""
        core = program if program is not None else self.resolve(identity)[0]
        state = self._programs[core]
        call = next(self._ids)
        parents = [self._calls[p] for p in identity.parents if p in self._calls]
        if len(parents) < len(identity.parents):
            _warn_once("parent", f"autellix: unknown parent call ids {list(identity.parents)} dropped")
        thread = self._registry.thread(core, identity.thread)
        now = self.now()
        try:
            self.core.submit(
                call,
                core,
                now,
                thread=thread,
                engine=self.engine,
                parents=parents,
                prompt_tokens=prompt_tokens,
            )
        except AutellixError as exc:  # e.g. a parent of another program: keep the call, drop the edges
            _warn_once("parent-edge", f"autellix: parents of {request_id!r} dropped: {exc}")
            self.core.submit(call, core, now, thread=thread, engine=self.engine, prompt_tokens=prompt_tokens)
        for name in (request_id, *aliases):
            self._calls[name] = call
            state.requests.append(name)
        self._live[call] = (LiveCall(request_id, core, thread), state)
        state.live += 1
        if hints is not None and hints.last_call:
            state.finishing = True
        return call

    def is_running(self, request_id: str) -> bool:
        """Whether the core has the request's call running (admitted, not preempted)."""
        call = self._calls.get(request_id)
        if call is None or call not in self._live:
            return False
        return self.core.call(call).state == CallState.RUNNING

    def preempted(self, request_id: str) -> None:
        """The engine preempted the request itself: back to the core's queue."""
        call = self._calls.get(request_id)
        if call is not None and self.is_running(request_id):
            self.core.preempt(call, self.now())

    def ended(self, request_id: str, *, aborted: bool) -> None:
        """The request finished (or was aborted): the call leaves the core, and its program with
        it if it has no program of its own or is finishing."""
        call = self._calls.get(request_id)
        live = self._live.pop(call, None) if call is not None else None
        if call is None or live is None:
            return
        now = self.now()
        program = live[1]
        program.live -= 1
        with _suppressed():
            if not aborted and self.core.call(call).state == CallState.RUNNING:
                self.core.finish(call, now)
                info = self.core.program(program.core)
                program.service = info.critical_path if self._atlas else info.attained_service
            else:
                self.core.abort(call, now)
        if program.live == 0 and (program.anonymous or program.finishing):
            self._end(program.core, now)

    def finish_program(self, name: str, tenant: str = "") -> int | None:
        """The finish hint: ``tenant``'s program ``name`` makes no more calls. It ends now, or with
        its last live call; its core id (``None``: no such live program)."""
        core = self._registry.lookup(name, tenant)
        program = self._programs.get(core) if core is not None else None
        if core is None or program is None:
            return None
        program.finishing = True
        if program.live == 0 and program.requests:  # else the core never had it: it ends with its calls
            self._end(core, self.now())
        return core

    def drop_program(self, core: int) -> None:
        """Forget a program that never had a call in the core (its requests were deferred, then
        aborted): nobody else is told."""
        program = self._programs.get(core)
        if program is not None and not program.requests:
            self._forget(core)

    def step(self, max_running: int, kv_tokens: int, decoded: int = 0) -> Decision:
        """One core step for the engine: who runs now, who is admitted, who is preempted."""
        decision = self.core.step(self.engine, self.now(), max_running, kv_tokens, decoded=decoded)
        for core in decision.expired_programs:
            program = self._programs.get(core)
            self._forget(core)
            if program is not None and self.on_program_end is not None:
                self.on_program_end(core, program.service)
        return decision

    def _end(self, core: int, now: float) -> None:
        with _suppressed():
            self.core.end_program(core, now)
        program = self._programs.get(core)
        self._forget(core)
        if program is not None and self.on_program_end is not None:
            self.on_program_end(core, program.service)

    def _forget(self, core: int) -> None:
        program = self._programs.pop(core, None)
        if program is not None:
            for name in program.requests:
                self._calls.pop(name, None)
        self._registry.forget(core)


def _since(t0: float) -> Callable[[], float]:
    return lambda: time.perf_counter() - t0


class _suppressed:
    """Log and swallow an AutellixError: the engine's own bookkeeping must go on regardless."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, AutellixError):
            log.error("autellix core refused an engine event: %s", exc)
            return True
        return False
