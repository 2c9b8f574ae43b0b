"""The autellix error hierarchy: every error autellix raises derives from :class:`AutellixError`
and is importable from here.

The scheduling core's errors come from the Rust extension (``autellix._core``); the rest are
defined below. An error that callers could already catch as a builtin keeps that builtin as a
second base (as polars does), so ``except ValueError`` still works where it did::

    AutellixError
    ├── UnknownProgramError, UnknownCallError, DuplicateCallError, InvalidTransitionError
    ├── InvalidParentError ── CyclicParentError, ForeignParentError
    ├── ConfigError, InvalidArgumentError, InternalError
    ├── InvalidIdError (also ValueError)          a malformed program / thread / call id
    ├── TraceError                                 a trace file that cannot be read or written
    ├── EngineError                                a call an engine of ``autellix serve`` refuses
    │   ├── QueueFullError, InvalidCallError, ProgramNotFoundError
    │   └── VllmStartError                         a ``vllm serve`` child failed to start
    ├── KVSwapError                                the bulk KV swap op or its host pool
    │   ├── InvalidBlockMappingError, KVLayoutError
    │   └── SwapPoolFullError, UnknownSwapError, DuplicateSwapError
    └── OpsBuildError (also RuntimeError)          the C++/CUDA ops could not be built
"""

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


class InvalidIdError(AutellixError, ValueError):
    """A malformed program, thread or call id (HTTP 400 from ``autellix serve``)."""


class TraceError(AutellixError):
    """A trace file (or the ShareGPT dataset behind ``import_sharegpt``) cannot be read or written.

    The message names the file, the line and the field at fault."""


# -- engines of ``autellix serve`` -------------------------------------------------------------------


class EngineError(AutellixError):
    """A call an engine of ``autellix serve`` refuses; the server maps each subclass to a status."""


class QueueFullError(EngineError):
    """``max_queued`` calls are already waiting (HTTP 429); retry after :attr:`retry_after` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidCallError(EngineError):
    """The core rejected the call: unknown or foreign parents, oversized context (HTTP 400)."""


class ProgramNotFoundError(EngineError):
    """No such program in the process table (HTTP 404)."""


class VllmStartError(EngineError):
    """A ``vllm serve`` child of the ``vllm`` engine exited or timed out before it answered
    ``/health``, or cannot be started at all (vLLM missing, too few GPUs)."""


# -- bulk KV swapping (autellix.kvswap) ----------------------------------------------------------------


class KVSwapError(AutellixError):
    """A KV-block transfer or its host pool (:mod:`autellix.kvswap`) refused a request before
    writing any memory."""


class InvalidBlockMappingError(KVSwapError):
    """A block mapping is malformed: not ``[n, 2]`` integers, an index outside the source or
    destination blocks, or a destination block listed twice."""


class KVLayoutError(KVSwapError):
    """Source and destination KV tensors do not fit together: dtype, shape after the block axis,
    devices, page layout, or host memory that is not pinned for a host<->device copy."""


class SwapPoolFullError(KVSwapError):
    """The host pool has fewer free blocks than a swap-out needs; nothing was allocated or copied."""


class UnknownSwapError(KVSwapError):
    """No call of this key is swapped out (never was, or was swapped in or discarded since)."""


class DuplicateSwapError(KVSwapError):
    """The key is already swapped out; swap it in or discard it first."""


class OpsBuildError(AutellixError, RuntimeError):
    """The C++/CUDA KV-swap ops could not be compiled or loaded; the message says why and what
    to install."""


__all__ = [
    "AutellixError",
    "ConfigError",
    "CyclicParentError",
    "DuplicateCallError",
    "DuplicateSwapError",
    "EngineError",
    "ForeignParentError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidBlockMappingError",
    "InvalidCallError",
    "InvalidIdError",
    "InvalidParentError",
    "InvalidTransitionError",
    "KVLayoutError",
    "KVSwapError",
    "OpsBuildError",
    "ProgramNotFoundError",
    "QueueFullError",
    "SwapPoolFullError",
    "TraceError",
    "UnknownCallError",
    "UnknownProgramError",
    "UnknownSwapError",
    "VllmStartError",
]


#: Characters of a client's value an error message repeats.
_SHOWN = 64


def shown(value: str) -> str:
    """``value`` quoted for an error message, cut to its first characters (a client's invalid
    value can be as long as the body limit; the message need not carry all of it)."""
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")
