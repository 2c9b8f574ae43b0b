"""The core's process table for an engine that names its requests with strings.

:class:`ProgramTracker` gives every engine request a core call id, resolves its program, thread
and parent calls (:func:`call_identity` reads them from the request's metadata, see
:mod:`autellix.identity`), and forwards the engine's events (step, preemption, finish, abort) to
:class:`autellix.Scheduler`. It never raises on bad metadata: a malformed program id makes the
call a program of its own, an unknown parent is dropped, each logged once per kind, because a
scheduler cannot answer a client with a 400.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autellix._core import CallState, Decision, Scheduler
from autellix.adapters.settings import PluginSettings
from autellix.exceptions import AutellixError, InvalidIdError
from autellix.identity import CallIdentity, ProgramRegistry, from_xargs

log = logging.getLogger("autellix.adapters")

_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        log.warning("%s (further ones are not logged)", message)


def _bad_id(kind: str, exc: InvalidIdError) -> None:
    _warn_once(f"bad-{kind}", f"autellix: {exc}; the call is scheduled as a program of its own")


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
        self._registry = ProgramRegistry()
        self._programs: dict[int, _Program] = {}
        #: request id or alias -> call id, for the calls of live programs (parents may be finished)
        self._calls: dict[str, int] = {}
        #: live calls: call id -> (request id, program)
        self._live: dict[int, tuple[str, _Program]] = {}
        self._ids = itertools.count(1)

    def now(self) -> float:
        return self.clock()

    def __len__(self) -> int:
        """Live calls."""
        return len(self._live)

    def call_id(self, request_id: str) -> int | None:
        return self._calls.get(request_id)

    def request_id(self, call: int) -> str | None:
        live = self._live.get(call)
        return live[0] if live is not None else None

    def submit(
        self, request_id: str, identity: CallIdentity, prompt_tokens: int, aliases: Sequence[str] = ()
    ) -> int:
        """Register a new request; its call id."""
        core = self._registry.resolve(identity.program)
        program = self._programs.get(core)
        if program is None:
            program = self._programs[core] = _Program(core, identity.program is None)
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
            program.requests.append(name)
        self._live[call] = (request_id, program)
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
        """The request finished (or was aborted): the call leaves the core."""
        call = self._calls.get(request_id)
        live = self._live.pop(call, None) if call is not None else None
        if call is None or live is None:
            return
        now = self.now()
        with _suppressed():
            if not aborted and self.core.call(call).state == CallState.RUNNING:
                self.core.finish(call, now)
            else:
                self.core.abort(call, now)
        program = live[1]
        if program.anonymous:
            with _suppressed():
                self.core.end_program(program.core, now)
            self._forget(program.core)

    def step(self, max_running: int, kv_tokens: int, decoded: int = 0) -> Decision:
        """One core step for the engine: who runs now, who is admitted, who is preempted."""
        decision = self.core.step(self.engine, self.now(), max_running, kv_tokens, decoded=decoded)
        for core in decision.expired_programs:
            self._forget(core)
        return decision

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
