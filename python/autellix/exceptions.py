"""The autellix error hierarchy. Every error autellix raises derives from :class:`AutellixError`."""

from autellix._core import (
    AutellixError,
    ConfigError,
    CyclicParentError,
    DuplicateCallError,
    ForeignParentError,
    InternalError,
    InvalidArgumentError,
    InvalidParentError,
    InvalidTransitionError,
    UnknownCallError,
    UnknownProgramError,
)


class TraceError(AutellixError):
    """A trace file (or the ShareGPT dataset behind ``import_sharegpt``) cannot be read or written.

    The message names the file, the line and the field at fault."""


__all__ = [
    "AutellixError",
    "ConfigError",
    "CyclicParentError",
    "DuplicateCallError",
    "ForeignParentError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidParentError",
    "InvalidTransitionError",
    "TraceError",
    "UnknownCallError",
    "UnknownProgramError",
]
