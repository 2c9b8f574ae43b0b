//! Python-facing value types: ids, configuration, call state, and read-only snapshots of the
//! process table and of a step's decision.

use autellix_core as core;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyType};

use crate::errors::{InvalidArgumentError, to_py};

/// An unsigned integer argument; anything else (negative, too large, not an int) raises
/// `InvalidArgumentError` rather than a bare `OverflowError` / `TypeError`.
#[derive(Debug, Clone, Copy)]
pub struct Uint<T>(pub T);

/// Program, thread and call ids: ints in `[0, 2**64)`.
pub type Id = Uint<u64>;

/// The range an unsigned type accepts, for error messages.
pub trait Range {
    const RANGE: &'static str;
}

impl Range for u32 {
    const RANGE: &'static str = "[0, 2**32)";
}

impl Range for u64 {
    const RANGE: &'static str = "[0, 2**64)";
}

impl<'a, 'py, T> FromPyObject<'a, 'py> for Uint<T>
where
    T: for<'b> FromPyObject<'b, 'py> + Range,
{
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        obj.extract::<T>().map(Uint).map_err(|_| {
            InvalidArgumentError::new_err(format!(
                "expected an int in {}, got {}",
                T::RANGE,
                obj.repr()
                    .map_or_else(|_| "?".to_owned(), |r| r.to_string())
            ))
        })
    }
}

pub fn ids(v: Vec<Id>) -> Vec<u64> {
    v.into_iter().map(|i| i.0).collect()
}

/// A number of queues: any int; one that does not even fit a `usize` is refused like any other
/// bad count, with `ConfigError` (the core checks the range of the rest).
pub struct Levels(pub usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Levels {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let int = obj.cast::<PyInt>()?;
        int.extract::<usize>().map(Levels).map_err(|_| {
            to_py(core::CoreError::InvalidConfig(format!(
                "levels must be between 1 and 255, got {}",
                int.as_any()
            )))
        })
    }
}

/// Scheduler configuration; every argument is optional and defaults to the documented value.
#[pyclass(module = "autellix._core", frozen, eq, from_py_object)]
#[derive(Clone, PartialEq)]
pub struct SchedulerConfig(pub core::SchedulerConfig);

#[pymethods]
impl SchedulerConfig {
    #[new]
    #[pyo3(
        signature = (policy = "plas", *, boundaries = None, quanta = None, starvation_beta = Some(8.0), service_floor = None, program_ttl = None),
        text_signature = "(policy='plas', *, boundaries=None, quanta=None, starvation_beta=8.0, service_floor=None, program_ttl=None)"
    )]
    fn new(
        policy: &str,
        boundaries: Option<Vec<f64>>,
        quanta: Option<Vec<f64>>,
        starvation_beta: Option<f64>,
        service_floor: Option<f64>,
        program_ttl: Option<f64>,
    ) -> PyResult<Self> {
        let defaults = core::SchedulerConfig::default();
        let config = core::SchedulerConfig {
            policy: policy.parse().map_err(to_py)?,
            boundaries: boundaries.unwrap_or(defaults.boundaries),
            quanta: quanta.unwrap_or(defaults.quanta),
            starvation_beta,
            service_floor: service_floor.unwrap_or(defaults.service_floor),
            program_ttl: program_ttl.unwrap_or(defaults.program_ttl),
        };
        config.validate().map_err(to_py)?;
        Ok(Self(config))
    }

    /// The policy names accepted by `policy`.
    #[classmethod]
    fn policies(_cls: &Bound<'_, PyType>) -> Vec<&'static str> {
        core::PolicyKind::ALL.iter().map(|p| p.as_str()).collect()
    }

    /// The doubling MLFQ ladder `(boundaries, quanta)`: boundaries `b, 2b, 4b, ...` from
    /// `first_boundary`, each queue's quantum its width, the top queue's `top_quantum` (default
    /// `first_boundary`).
    #[staticmethod]
    #[pyo3(
        signature = (first_boundary, levels = Levels(7), top_quantum = None),
        text_signature = "(first_boundary, levels=7, top_quantum=None)"
    )]
    fn ladder(
        first_boundary: f64,
        levels: Levels,
        top_quantum: Option<f64>,
    ) -> PyResult<(Vec<f64>, Vec<f64>)> {
        core::SchedulerConfig::ladder(
            first_boundary,
            levels.0,
            top_quantum.unwrap_or(first_boundary),
        )
        .map_err(to_py)
    }

    #[getter]
    fn policy(&self) -> &'static str {
        self.0.policy.as_str()
    }
    #[getter]
    fn boundaries(&self) -> Vec<f64> {
        self.0.boundaries.clone()
    }
    #[getter]
    fn quanta(&self) -> Vec<f64> {
        self.0.quanta.clone()
    }
    #[getter]
    fn starvation_beta(&self) -> Option<f64> {
        self.0.starvation_beta
    }
    #[getter]
    fn service_floor(&self) -> f64 {
        self.0.service_floor
    }
    #[getter]
    fn program_ttl(&self) -> f64 {
        self.0.program_ttl
    }
    /// Number of queues K.
    #[getter]
    fn levels(&self) -> usize {
        self.0.levels()
    }
    /// Queue (0 = highest priority) that a priority value falls in.
    fn level_of(&self, value: f64) -> u8 {
        self.0.level_of(value)
    }

    fn __repr__(&self) -> String {
        let c = &self.0;
        format!(
            "SchedulerConfig(policy={:?}, boundaries={:?}, quanta={:?}, starvation_beta={}, service_floor={}, program_ttl={})",
            c.policy.as_str(),
            c.boundaries,
            c.quanta,
            c.starvation_beta
                .map_or_else(|| "None".to_owned(), |b| b.to_string()),
            c.service_floor,
            c.program_ttl
        )
    }
}

/// Lifecycle state of a call.
#[pyclass(module = "autellix._core", frozen, eq, eq_int, hash, from_py_object)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    #[pyo3(name = "WAITING")]
    Waiting,
    #[pyo3(name = "RUNNING")]
    Running,
    #[pyo3(name = "PREEMPTED")]
    Preempted,
    #[pyo3(name = "FINISHED")]
    Finished,
}

impl From<core::CallState> for CallState {
    fn from(s: core::CallState) -> Self {
        match s {
            core::CallState::Waiting => Self::Waiting,
            core::CallState::Running => Self::Running,
            core::CallState::Preempted => Self::Preempted,
            core::CallState::Finished => Self::Finished,
        }
    }
}

#[pymethods]
impl CallState {
    #[allow(clippy::trivially_copy_pass_by_ref)] // pymethods receive &self
    fn __str__(&self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Preempted => "preempted",
            Self::Finished => "finished",
        }
    }
}

/// A program's process-table entry, as of the scheduler's latest time.
#[pyclass(module = "autellix._core", frozen, get_all, skip_from_py_object)]
#[derive(Clone)]
pub struct ProgramInfo {
    pub id: u64,
    pub arrival: f64,
    pub attained_service: f64,
    pub waiting_time: f64,
    pub critical_path: f64,
    pub engine: Option<u32>,
    pub active_calls: u32,
    pub finished_calls: u64,
    pub threads: usize,
    pub last_arrival: f64,
    pub last_completion: Option<f64>,
    pub live_calls: Vec<u64>,
}

impl ProgramInfo {
    pub fn new(p: &core::Program, live_calls: Vec<u64>) -> Self {
        Self {
            id: p.id,
            arrival: p.arrival,
            attained_service: p.attained_service,
            waiting_time: p.waiting_time,
            critical_path: p.critical_path,
            engine: p.engine,
            active_calls: p.active_calls,
            finished_calls: p.finished_calls,
            threads: p.thread_count(),
            last_arrival: p.last_arrival,
            last_completion: p.last_completion,
            live_calls,
        }
    }
}

#[pymethods]
impl ProgramInfo {
    fn __repr__(&self) -> String {
        format!(
            "ProgramInfo(id={}, attained_service={}, critical_path={}, waiting_time={}, active_calls={})",
            self.id,
            self.attained_service,
            self.critical_path,
            self.waiting_time,
            self.active_calls
        )
    }
}

/// A live call's entry, as of the scheduler's latest time.
#[pyclass(module = "autellix._core", frozen, get_all, skip_from_py_object)]
#[derive(Clone)]
pub struct CallInfo {
    pub id: u64,
    pub program: u64,
    pub thread: u64,
    pub engine: u32,
    pub state: CallState,
    pub level: u8,
    pub priority: f64,
    pub path_start: f64,
    pub arrival: f64,
    pub waiting_time: f64,
    pub service: f64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
}

impl CallInfo {
    pub fn new(c: &core::Call, now: f64) -> Self {
        Self {
            id: c.id,
            program: c.program,
            thread: c.thread,
            engine: c.engine,
            state: c.state.into(),
            level: c.level,
            priority: c.priority,
            path_start: c.path_start,
            arrival: c.arrival,
            waiting_time: c.waiting_time(now),
            service: c.service(now),
            prompt_tokens: c.prompt_tokens,
            generated_tokens: c.generated_tokens,
        }
    }
}

#[pymethods]
impl CallInfo {
    fn __repr__(&self) -> String {
        format!(
            "CallInfo(id={}, program={}, state={}, level={}, waiting_time={}, service={})",
            self.id,
            self.program,
            self.state.__str__(),
            self.level,
            self.waiting_time,
            self.service
        )
    }
}

/// What one engine runs after a step.
#[pyclass(module = "autellix._core", frozen, get_all, skip_from_py_object)]
pub struct Decision {
    /// The batch, in priority order.
    pub running: Vec<u64>,
    /// Calls that were queued and now run.
    pub admitted: Vec<u64>,
    /// Calls that were running and are now preempted.
    pub preempted: Vec<u64>,
    /// Calls whose KV footprint alone exceeds the engine's budget: skipped (still queued, or
    /// preempted if it was running and grew past the budget). Abort them.
    pub too_large: Vec<u64>,
    pub demoted: u32,
    pub promoted: u32,
    /// Programs garbage-collected (idle past the TTL) during this step.
    pub expired_programs: Vec<u64>,
}

impl From<core::Decision> for Decision {
    fn from(d: core::Decision) -> Self {
        Self {
            running: d.running,
            admitted: d.admitted,
            preempted: d.preempted,
            too_large: d.too_large,
            demoted: d.demoted,
            promoted: d.promoted,
            expired_programs: d.expired_programs,
        }
    }
}

#[pymethods]
impl Decision {
    fn __repr__(&self) -> String {
        format!(
            "Decision(running={}, admitted={:?}, preempted={:?}, too_large={:?}, demoted={}, promoted={})",
            self.running.len(),
            self.admitted,
            self.preempted,
            self.too_large,
            self.demoted,
            self.promoted
        )
    }
}
