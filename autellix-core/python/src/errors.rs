//! The Python exception tree (rooted at `AutellixError`) and the one boundary wrapper every
//! binding goes through: it catches panics, so nothing unwinds into Python, and maps core errors
//! to their own exception classes.

use std::panic::{AssertUnwindSafe, catch_unwind};

use autellix_core::CoreError;
use pyo3::exceptions::PyException;
use pyo3::{PyErr, PyResult, create_exception};

create_exception!(
    autellix._core,
    AutellixError,
    PyException,
    "Base of every autellix error."
);
create_exception!(
    autellix._core,
    UnknownProgramError,
    AutellixError,
    "No live program has this id."
);
create_exception!(
    autellix._core,
    UnknownCallError,
    AutellixError,
    "No live call has this id."
);
create_exception!(
    autellix._core,
    DuplicateCallError,
    AutellixError,
    "The call id is already in use."
);
create_exception!(
    autellix._core,
    InvalidTransitionError,
    AutellixError,
    "The call's state does not allow this action."
);
create_exception!(
    autellix._core,
    InvalidParentError,
    AutellixError,
    "A call's parents are not valid."
);
create_exception!(
    autellix._core,
    CyclicParentError,
    InvalidParentError,
    "A call names itself as its parent."
);
create_exception!(
    autellix._core,
    ForeignParentError,
    InvalidParentError,
    "A parent belongs to another program."
);
create_exception!(
    autellix._core,
    ConfigError,
    AutellixError,
    "The scheduler configuration is invalid."
);
create_exception!(
    autellix._core,
    InvalidArgumentError,
    AutellixError,
    "An argument is out of its domain."
);
create_exception!(
    autellix._core,
    InternalError,
    AutellixError,
    "A bug in autellix: please report it."
);

/// Maps a core error to its Python exception.
pub fn to_py(err: CoreError) -> PyErr {
    let msg = err.to_string();
    match err {
        CoreError::UnknownProgram(_) => UnknownProgramError::new_err(msg),
        CoreError::UnknownCall(_) => UnknownCallError::new_err(msg),
        CoreError::DuplicateCall(_) => DuplicateCallError::new_err(msg),
        CoreError::InvalidTransition { .. } => InvalidTransitionError::new_err(msg),
        CoreError::CyclicParents(_) => CyclicParentError::new_err(msg),
        CoreError::ForeignParent { .. } => ForeignParentError::new_err(msg),
        CoreError::InvalidConfig(_) => ConfigError::new_err(msg),
        CoreError::InvalidArgument(_) => InvalidArgumentError::new_err(msg),
    }
}

/// Runs `f`, turning a panic into `InternalError` (a panic while the scheduler's lock is held
/// poisons it, so the damaged scheduler is never used again).
pub fn guard<R>(f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(InternalError::new_err(format!(
                "internal error in the scheduling core: {what}"
            )))
        }
    }
}
