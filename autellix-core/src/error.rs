//! The one error type of the core. Every fallible operation validates its input before it mutates
//! anything, so an `Err` always leaves the scheduler exactly as it was.

use crate::types::{CallId, CallState, ProgramId};

/// Everything that can go wrong in a call into the scheduling core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// No live program has this id.
    #[error("unknown program {0}")]
    UnknownProgram(ProgramId),
    /// No live (or, for parents, retained finished) call has this id.
    #[error("unknown call {0}")]
    UnknownCall(CallId),
    /// A call id was submitted twice while the first call is still known.
    #[error("call {0} already exists")]
    DuplicateCall(CallId),
    /// The call is not in a state that allows the requested action.
    #[error("call {call} is {state}; cannot {action}")]
    InvalidTransition {
        call: CallId,
        state: CallState,
        action: &'static str,
    },
    /// A call names itself as its parent. (A parent must be submitted before its child, so no
    /// longer cycle can form; naming a later call is an unknown parent.)
    #[error("call {0} cannot be its own parent")]
    CyclicParents(CallId),
    /// A parent belongs to another program.
    #[error("parent {parent} of call {call} belongs to program {parent_program}, not {program}")]
    ForeignParent {
        call: CallId,
        parent: CallId,
        program: ProgramId,
        parent_program: ProgramId,
    },
    /// The scheduler configuration is not usable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument is out of its domain (a non-finite time, a call on the wrong engine, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias of the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
