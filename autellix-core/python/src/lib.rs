//! `PyO3` bindings of autellix-core (`autellix._core`): conversions and errors only.
// Arguments arrive by value from Python's argument extraction.
#![allow(clippy::needless_pass_by_value)]
// Python signatures with keyword arguments are wider than Rust's taste.
#![allow(clippy::too_many_arguments)]

mod errors;
mod kv;
mod scheduler;
mod types;

/// The program-aware scheduling core of autellix, implemented in Rust.
#[pyo3::pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::kv::KvPlanner;
    #[pymodule_export]
    use crate::scheduler::Scheduler;
    #[pymodule_export]
    use crate::types::{CallInfo, CallState, Decision, ProgramInfo, SchedulerConfig};

    #[allow(non_upper_case_globals)]
    #[pymodule_export]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    /// Seconds per decode step used to convert the third-party step-counted defaults.
    #[pymodule_export]
    const DECODE_STEP_SECONDS: f64 = autellix_core::DECODE_STEP_SECONDS;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        use crate::errors as e;
        let py = m.py();
        m.add("AutellixError", py.get_type::<e::AutellixError>())?;
        m.add(
            "UnknownProgramError",
            py.get_type::<e::UnknownProgramError>(),
        )?;
        m.add("UnknownCallError", py.get_type::<e::UnknownCallError>())?;
        m.add("DuplicateCallError", py.get_type::<e::DuplicateCallError>())?;
        m.add(
            "InvalidTransitionError",
            py.get_type::<e::InvalidTransitionError>(),
        )?;
        m.add("InvalidParentError", py.get_type::<e::InvalidParentError>())?;
        m.add("CyclicParentError", py.get_type::<e::CyclicParentError>())?;
        m.add("ForeignParentError", py.get_type::<e::ForeignParentError>())?;
        m.add("ConfigError", py.get_type::<e::ConfigError>())?;
        m.add(
            "InvalidArgumentError",
            py.get_type::<e::InvalidArgumentError>(),
        )?;
        m.add("InternalError", py.get_type::<e::InternalError>())?;
        Ok(())
    }
}
