"""autellix: program-aware serving for LLM agents.

The scheduling core is Rust (``autellix-core``), exposed as :mod:`autellix._core`::

    from autellix import Scheduler, SchedulerConfig

    sched = Scheduler(SchedulerConfig("plas"))
    sched.submit(call=1, program=7, now=0.0, prompt_tokens=512)
    decision = sched.step(engine=0, now=0.0, max_running=256, kv_tokens=200_000)
"""

from autellix._core import (
    DECODE_STEP_SECONDS,
    CallInfo,
    CallState,
    Decision,
    ProgramInfo,
    Scheduler,
    SchedulerConfig,
    __version__,
)
from autellix.client import AsyncClient, Client
from autellix.exceptions import (
    AutellixError,
    ConfigError,
    CyclicParentError,
    DuplicateCallError,
    ForeignParentError,
    InternalError,
    InvalidArgumentError,
    InvalidBlockMappingError,
    InvalidParentError,
    InvalidTransitionError,
    KVLayoutError,
    KVSwapError,
    TraceError,
    UnknownCallError,
    UnknownProgramError,
)

__all__ = [
    "DECODE_STEP_SECONDS",
    "AsyncClient",
    "AutellixError",
    "CallInfo",
    "CallState",
    "Client",
    "ConfigError",
    "CyclicParentError",
    "Decision",
    "DuplicateCallError",
    "ForeignParentError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidBlockMappingError",
    "InvalidParentError",
    "InvalidTransitionError",
    "KVLayoutError",
    "KVSwapError",
    "ProgramInfo",
    "Scheduler",
    "SchedulerConfig",
    "TraceError",
    "UnknownCallError",
    "UnknownProgramError",
    "__version__",
]
