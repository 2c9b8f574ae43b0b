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
    "UnknownCallError",
    "UnknownProgramError",
]
