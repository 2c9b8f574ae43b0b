//! `Scheduler`: the core behind a mutex, shareable between Python threads. Microsecond operations
//! keep the GIL; batch operations (a step, a large submission) release it while they run.

use std::sync::{Mutex, MutexGuard, TryLockError};

use autellix_core::{self as core, CallSpec, Capacity, CoreError, StepReport};
use pyo3::prelude::*;

use crate::errors::{InternalError, InvalidArgumentError, guard, to_py};
use crate::types::{CallInfo, Decision, Id, ProgramInfo, SchedulerConfig, Uint, ids};

/// Batches at least this long release the GIL while the core works on them.
const DETACH_AT: usize = 64;

/// The program-aware scheduler: process table, policy and per-engine queues.
///
/// Time is passed in by the caller (`now`, in the unit the configuration assumes: seconds by
/// default) and never goes backwards: an earlier `now` reads as the latest seen.
#[pyclass(module = "autellix._core", frozen)]
pub struct Scheduler {
    inner: Mutex<core::Scheduler>,
}

impl Scheduler {
    /// Takes the lock; while another thread holds it (say, in a long batch without the GIL), waits
    /// without the GIL too, so other Python threads keep running.
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, core::Scheduler>> {
        loop {
            match self.inner.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(_)) => return Err(poisoned()),
                Err(TryLockError::WouldBlock) => py.detach(|| drop(self.inner.lock())),
            }
        }
    }

    /// Runs `f` on the core under the lock, mapping errors and panics.
    fn with<R>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut core::Scheduler) -> Result<R, CoreError>,
    ) -> PyResult<R> {
        guard(|| f(&mut *self.lock(py)?).map_err(to_py))
    }

    /// As [`Scheduler::with`], releasing the GIL for the whole call when the batch is long.
    fn with_batch<R: Send>(
        &self,
        py: Python<'_>,
        len: usize,
        f: impl FnOnce(&mut core::Scheduler) -> Result<R, CoreError> + Send,
    ) -> PyResult<R> {
        if len < DETACH_AT {
            return self.with(py, f);
        }
        py.detach(|| {
            guard(|| {
                let mut core = self.inner.lock().map_err(|_| poisoned())?;
                f(&mut core).map_err(to_py)
            })
        })
    }

    /// Reads the core under the lock.
    fn read<R>(&self, py: Python<'_>, f: impl FnOnce(&core::Scheduler) -> R) -> PyResult<R> {
        guard(|| Ok(f(&*self.lock(py)?)))
    }
}

fn poisoned() -> PyErr {
    InternalError::new_err(
        "this scheduler is unusable after an earlier internal error; create a new one",
    )
}

#[pymethods]
impl Scheduler {
    #[new]
    #[pyo3(signature = (config = None))]
    fn new(config: Option<SchedulerConfig>) -> PyResult<Self> {
        let config = config.map_or_else(core::SchedulerConfig::default, |c| c.0);
        let inner = core::Scheduler::new(config).map_err(to_py)?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<SchedulerConfig> {
        self.read(py, |s| SchedulerConfig(s.config().clone()))
    }

    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.read(py, |s| s.config().policy.as_str())
    }

    /// Latest time seen.
    #[getter]
    fn now(&self, py: Python<'_>) -> PyResult<f64> {
        self.read(py, core::Scheduler::now)
    }

    #[getter]
    fn num_programs(&self, py: Python<'_>) -> PyResult<usize> {
        self.read(py, |s| s.table().num_programs())
    }

    /// Live calls (waiting, running or preempted) on all engines.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.read(py, |s| s.table().num_live_calls())
    }

    /// Registers a new waiting call; its program is created on first sight. `parents` are
    /// explicit parent calls (same program, already submitted); without them the previous call
    /// of the same thread is the parent.
    #[pyo3(
        signature = (call, program, now, *, thread = Uint(0), engine = Uint(0), parents = None, prompt_tokens = Uint(0)),
        text_signature = "(self, /, call, program, now, *, thread=0, engine=0, parents=None, prompt_tokens=0)"
    )]
    fn submit(
        &self,
        py: Python<'_>,
        call: Id,
        program: Id,
        now: f64,
        thread: Id,
        engine: Uint<u32>,
        parents: Option<Vec<Id>>,
        prompt_tokens: Uint<u64>,
    ) -> PyResult<()> {
        let parents = parents.map(ids);
        self.with(py, |s| {
            s.submit(
                &CallSpec {
                    call: call.0,
                    program: program.0,
                    thread: thread.0,
                    engine: engine.0,
                    parents: parents.as_deref(),
                    prompt_tokens: prompt_tokens.0,
                },
                now,
            )
        })
    }

    /// Registers many calls at once, column by column (all columns as long as `calls`); all or
    /// none are accepted. A parent may be an earlier call of the same batch.
    #[pyo3(signature = (now, calls, programs, *, threads = None, engines = None, prompt_tokens = None, parents = None))]
    fn submit_many(
        &self,
        py: Python<'_>,
        now: f64,
        calls: Vec<Id>,
        programs: Vec<Id>,
        threads: Option<Vec<Id>>,
        engines: Option<Vec<Uint<u32>>>,
        prompt_tokens: Option<Vec<Uint<u64>>>,
        parents: Option<Vec<Option<Vec<Id>>>>,
    ) -> PyResult<()> {
        let n = calls.len();
        let column_len = |name: &str, len: Option<usize>| match len {
            Some(len) if len != n => Err(InvalidArgumentError::new_err(format!(
                "{name} has {len} entries but calls has {n}"
            ))),
            _ => Ok(()),
        };
        column_len("programs", Some(programs.len()))?;
        column_len("threads", threads.as_ref().map(Vec::len))?;
        column_len("engines", engines.as_ref().map(Vec::len))?;
        column_len("prompt_tokens", prompt_tokens.as_ref().map(Vec::len))?;
        column_len("parents", parents.as_ref().map(Vec::len))?;
        let parents: Option<Vec<Option<Vec<u64>>>> =
            parents.map(|ps| ps.into_iter().map(|p| p.map(ids)).collect());
        self.with_batch(py, n, |s| {
            let specs: Vec<CallSpec<'_>> = (0..n)
                .map(|i| CallSpec {
                    call: calls[i].0,
                    program: programs[i].0,
                    thread: threads.as_ref().map_or(0, |t| t[i].0),
                    engine: engines.as_ref().map_or(0, |e| e[i].0),
                    parents: parents.as_ref().and_then(|p| p[i].as_deref()),
                    prompt_tokens: prompt_tokens.as_ref().map_or(0, |t| t[i].0),
                })
                .collect();
            s.submit_many(&specs, now)
        })
    }

    /// One engine step: records `finished` calls, `progress` (call, new tokens) and `decoded`
    /// (tokens generated by every call of the last batch), applies due quantum demotions and
    /// anti-starvation promotions, and forms the batch within `max_running` calls and
    /// `kv_tokens` KV-cache tokens. Validated first: on error nothing changed.
    #[pyo3(
        signature = (engine, now, max_running, kv_tokens, *, finished = None, progress = None, decoded = Uint(0)),
        text_signature = "(self, /, engine, now, max_running, kv_tokens, *, finished=None, progress=None, decoded=0)"
    )]
    fn step(
        &self,
        py: Python<'_>,
        engine: Uint<u32>,
        now: f64,
        max_running: Uint<u32>,
        kv_tokens: Uint<u64>,
        finished: Option<Vec<Id>>,
        progress: Option<Vec<(Id, Uint<u64>)>>,
        decoded: Uint<u64>,
    ) -> PyResult<Decision> {
        let finished = finished.map(ids).unwrap_or_default();
        let progress: Vec<(u64, u64)> = progress
            .unwrap_or_default()
            .into_iter()
            .map(|(c, t)| (c.0, t.0))
            .collect();
        let capacity = Capacity {
            max_running: max_running.0,
            kv_tokens: kv_tokens.0,
        };
        let work = max_running.0 as usize + finished.len() + progress.len();
        let report = StepReport {
            finished: &finished,
            progress: &progress,
            decoded: decoded.0,
        };
        self.with_batch(py, work, |s| s.step_with(engine.0, now, capacity, &report))
            .map(Decision::from)
    }

    /// A running call completed.
    fn finish(&self, py: Python<'_>, call: Id, now: f64) -> PyResult<()> {
        self.with(py, |s| s.finish(call.0, now))
    }

    /// Cancels a live call in any state (its service so far still counts for its program).
    fn abort(&self, py: Python<'_>, call: Id, now: f64) -> PyResult<()> {
        self.with(py, |s| s.abort(call.0, now))
    }

    /// The engine preempted a running call on its own.
    fn preempt(&self, py: Python<'_>, call: Id, now: f64) -> PyResult<()> {
        self.with(py, |s| s.preempt(call.0, now))
    }

    /// Records tokens generated by a live call.
    fn add_tokens(&self, py: Python<'_>, call: Id, tokens: Uint<u64>) -> PyResult<()> {
        self.with(py, |s| s.add_tokens(call.0, tokens.0))
    }

    /// Ends a program; returns its live calls, which are aborted.
    fn end_program(&self, py: Python<'_>, program: Id, now: f64) -> PyResult<Vec<u64>> {
        self.with(py, |s| s.end_program(program.0, now))
    }

    /// Forgets programs idle for longer than the TTL; returns their ids.
    fn collect_garbage(&self, py: Python<'_>, now: f64) -> PyResult<Vec<u64>> {
        self.with(py, |s| s.collect_garbage(now))
    }

    /// The program's process-table entry.
    fn program(&self, py: Python<'_>, program: Id) -> PyResult<ProgramInfo> {
        self.with(py, |s| {
            let live = s.table().live_calls(program.0)?;
            Ok(ProgramInfo::new(s.program(program.0)?, live))
        })
    }

    /// The live call's entry.
    fn call(&self, py: Python<'_>, call: Id) -> PyResult<CallInfo> {
        self.with(py, |s| Ok(CallInfo::new(s.call(call.0)?, s.now())))
    }

    /// Whether `call` is a live call id (anything that is not an id is not one).
    fn __contains__(&self, py: Python<'_>, call: &Bound<'_, PyAny>) -> PyResult<bool> {
        match call.extract::<u64>() {
            Ok(id) => self.read(py, |s| s.call(id).is_ok()),
            Err(_) => Ok(false),
        }
    }

    /// Queued calls per queue level on an engine.
    fn queue_depths(&self, py: Python<'_>, engine: Uint<u32>) -> PyResult<Vec<u32>> {
        self.read(py, |s| s.queue_depths(engine.0))
    }

    /// (running, queued) calls on an engine.
    fn engine_load(&self, py: Python<'_>, engine: Uint<u32>) -> PyResult<(usize, usize)> {
        self.read(py, |s| s.engine_load(engine.0))
    }

    /// Engines that have been given calls.
    fn engines(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        self.read(py, core::Scheduler::engines)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let s = self.lock(py)?;
        Ok(format!(
            "Scheduler(policy={:?}, programs={}, live_calls={}, now={})",
            s.config().policy.as_str(),
            s.table().num_programs(),
            s.table().num_live_calls(),
            s.now()
        ))
    }
}
