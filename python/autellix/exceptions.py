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


class KVSwapError(AutellixError):
    """A KV-block transfer or its host pool (:mod:`autellix.kvswap`) refused a request before
    writing any memory."""


class InvalidBlockMappingError(KVSwapError):
    """A block mapping is malformed: not ``[n, 2]`` integers, an index outside the source or
    destination blocks, or a destination block listed twice."""


class KVLayoutError(KVSwapError):
    """Source and destination KV tensors do not fit together: dtype, shape after the block axis,
    devices, page layout, or host memory that is not pinned for a host<->device copy."""


__all__ = [
    "AutellixError",
    "ConfigError",
    "CyclicParentError",
    "DuplicateCallError",
    "ForeignParentError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidBlockMappingError",
    "InvalidParentError",
    "InvalidTransitionError",
    "KVLayoutError",
    "KVSwapError",
    "TraceError",
    "UnknownCallError",
    "UnknownProgramError",
]
