"""The state behind the routes of ``autellix serve``: its config, engine, program names and
metrics, and the life of a call from submission to its settlement."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from autellix.exceptions import InvalidCallError, ProgramNotFoundError, shown
from autellix.identity import PROGRAM_HEADER, ProgramRegistry
from autellix.server.config import ServerConfig
from autellix.server.engines import CallHandle, Engine, make_engine
from autellix.server.errors import ApiError
from autellix.server.identity import forwarded_name, read_identity
from autellix.server.metrics import Metrics
from autellix.server.middleware import Tenant, tenants
from autellix.server.protocol import ChatCompletionRequest, CompletionRequest
from autellix.tokens import estimate_tokens

#: response header with the core's id of the call (what ``X-Autellix-Parent-Ids`` may name)
CALL_HEADER = "X-Autellix-Call-Id"
#: the prefix of a call's response id, by endpoint (as the completions module answers)
CHAT_PREFIX, TEXT_PREFIX = "chatcmpl-", "cmpl-"


class Server:
    """Config, engine, program registry and metrics of one app."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine: Engine = engine or make_engine(config)
        self.programs = ProgramRegistry()
        self.engine.on_programs_expired = self._expired
        self.metrics = Metrics(self.engine)
        #: tenant labels (``key-N``, ``admin-N``), the names an admin key may give in ``?tenant=``
        self.tenants = sorted({t.label for t in tenants(config.api_keys, config.admin_keys).values()})
        #: response-id prefix of each live call (GET /v1/programs lists them as the client saw them)
        self._prefixes: dict[int, str] = {}

    def _expired(self, programs: list[int]) -> None:
        for core in programs:
            self.programs.forget(core)

    def submit(
        self, headers: Mapping[str, str], body: ChatCompletionRequest | CompletionRequest
    ) -> tuple[CallHandle, bool]:
        """The call, and whether its program is anonymous (ended with the call)."""
        if body.model != self.config.model:
            raise ApiError(
                404,
                f"the model {shown(body.model)} does not exist; this server serves {self.config.model!r}",
                code="model_not_found",
            )
        # expire idle programs first: one expired after its name resolved would take the name with it
        self.engine.collect_garbage()
        who = read_identity(headers, body, self.programs, body.tenant)
        # the identity as resolved (headers, body or hints), for an engine that forwards it: the
        # program qualified by its tenant, or two tenants' programs would merge upstream
        body.program_id, body.thread_id = forwarded_name(who.tenant, who.name), who.thread_name
        requested = body.requested_tokens()
        try:
            handle = self.engine.submit(
                who.program,
                estimate_tokens(body.prompt_text()),
                requested if requested is not None else self.config.default_max_tokens,
                thread=who.thread,
                parents=who.parents,
                limit_reason="length" if requested is not None else "stop",
                body=body,
            )
        except Exception as exc:
            self._refused(who.program)
            if isinstance(exc, InvalidCallError):
                raise ApiError(400, str(exc), code="invalid_call") from None
            raise
        self._prefixes[handle.id] = CHAT_PREFIX if isinstance(body, ChatCompletionRequest) else TEXT_PREFIX
        return handle, who.anonymous

    def response_id(self, call: int) -> str:
        """``call``'s id as its response named it (``chatcmpl-12``, ``cmpl-12``)."""
        return f"{self._prefixes.get(call, CHAT_PREFIX)}{call}"

    def tenant_scope(self, caller: Tenant, named: str | None) -> str:
        """The tenant whose programs ``caller`` addresses: its own, or, for an admin key, the
        tenant ``named`` (``?tenant=``; 400 for another key, or an unknown label)."""
        if named is None or named == caller.label:
            return caller.label
        if not caller.admin:
            raise ApiError(400, "only an admin key may name another tenant", code="admin_only")
        if named not in self.tenants:
            raise ApiError(
                400,
                f"unknown tenant {shown(named)}; the tenants are {', '.join(self.tenants)}",
                code="unknown_tenant",
            )
        return named

    def call_headers(self, handle: CallHandle) -> dict[str, str]:
        return {PROGRAM_HEADER: self.programs.name(handle.program), CALL_HEADER: str(handle.id)}

    def end_program(self, program: int) -> list[int]:
        """End ``program`` (ProgramNotFoundError if the engine has no such program); its service
        and waiting time go to the metrics. The calls it aborted."""
        self.programs.forget(program)
        self.metrics.program_ended(self.engine.program(program))
        return self.engine.end_program(program)

    def _refused(self, program: int) -> None:
        """The engine refused a call of ``program`` (429, 400, a parent the core rejected): forget
        the program's name unless the core holds the program, i.e. it was named only for this
        call (submission runs without a pause, so no other call of it can be under way)."""
        try:
            self.engine.program(program)
        except ProgramNotFoundError:
            self.programs.forget(program)

    def _release(self, program: int, anonymous: bool) -> None:
        if anonymous:
            with contextlib.suppress(ProgramNotFoundError):
                self.end_program(program)

    def settle(self, handle: CallHandle, anonymous: bool) -> None:
        """The response is over (sent, failed, or the client left): cancel what still runs."""
        if handle.settled:
            return
        handle.settled = True
        self._prefixes.pop(handle.id, None)
        if not handle.done:
            self.engine.cancel(handle)
        self.metrics.call_ended(handle)
        self._release(handle.program, anonymous)
