"""Program identity: the client's string ids mapped to the core's integer ids.

Clients name programs and threads with strings (``X-Autellix-Program-Id`` or ``program_id``);
the core takes integers. :class:`ProgramRegistry` hands out one integer per live program name
and, per program, one per thread name (thread ``0`` is the unnamed thread). A name is forgotten
when its program ends (``POST /v1/programs/{id}/finish``) or when the core expires it after its
idle TTL; the same name later starts a new program.

Call ids are the server's own: ``chatcmpl-<n>`` / ``cmpl-<n>`` in responses, where ``<n>`` is
the core's call id; parents may be given in either form or as the bare number.
"""

from __future__ import annotations

import itertools
import re

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_CALL = re.compile(r"(?:chatcmpl-|cmpl-)?([0-9]{1,19})")


class InvalidIdError(ValueError):
    """A malformed program, thread or call id (HTTP 400)."""


def check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidIdError(
            f"invalid {kind} id {name!r}: use 1-128 characters from A-Z a-z 0-9 . _ : @ -, "
            "starting with a letter or digit"
        )
    return name


def parse_call_id(text: str) -> int:
    """``chatcmpl-12``, ``cmpl-12`` or ``12`` -> 12."""
    match = _CALL.fullmatch(text.strip())
    if match is None or int(match.group(1)) >= 1 << 64:
        raise InvalidIdError(f"invalid parent call id {text!r}: expected a response id like chatcmpl-12")
    return int(match.group(1))


class ProgramRegistry:
    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._threads: dict[int, dict[str, int]] = {}
        self._next = itertools.count(1)

    def __len__(self) -> int:
        return len(self._ids)

    def resolve(self, name: str | None) -> int:
        """The core id of program ``name`` (created if new); a fresh anonymous one for ``None``."""
        if name is None:
            core = next(self._next)
            self._names[core] = f"anon-{core}"
            return core
        core_id = self._ids.get(name)
        if core_id is None:
            core_id = self._ids[name] = next(self._next)
            self._names[core_id] = name
        return core_id

    def lookup(self, name: str) -> int | None:
        return self._ids.get(name)

    def name(self, core: int) -> str:
        return self._names.get(core, str(core))

    def thread(self, core: int, name: str | None) -> int:
        if name is None:
            return 0
        threads = self._threads.setdefault(core, {})
        return threads.setdefault(name, len(threads) + 1)

    def forget(self, core: int) -> None:
        name = self._names.pop(core, None)
        if name is not None and self._ids.get(name) == core:
            del self._ids[name]
        self._threads.pop(core, None)
