//! `KvPlanner`: the core's KV planner behind a mutex. Every operation is microseconds, so it keeps
//! the GIL.

use std::sync::Mutex;

use autellix_core::{self as core, CoreError, KvAction, KvConfig, Move, Tier};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{InternalError, guard, to_py};
use crate::types::{Id, Uint};

/// One move as Python sees it: `(context, action, from_tier, blocks)` with `action` one of
/// `"offload"`, `"drop"`, `"load"` and `from_tier` `"gpu"` or `"host"`.
type PyAction = (u64, &'static str, &'static str, u64);

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Gpu => "gpu",
        Tier::Host => "host",
    }
}

fn action(a: KvAction) -> PyAction {
    let name = match a.action {
        Move::Offload => "offload",
        Move::Drop => "drop",
        Move::Load => "load",
    };
    (a.context, name, tier_name(a.from), a.blocks)
}

fn actions(v: Vec<KvAction>) -> Vec<PyAction> {
    v.into_iter().map(action).collect()
}

/// Program-aware KV placement: which idle program contexts stay on the GPU, go to the host tier
/// in one bulk copy, or are dropped; prefetch before a predicted return; admission of new
/// programs while the working sets fit. Blocks are the caller's KV blocks; times are seconds.
#[pyclass(module = "autellix._core", frozen)]
pub struct KvPlanner {
    inner: Mutex<core::KvPlanner>,
}

impl KvPlanner {
    fn with<R>(&self, f: impl FnOnce(&mut core::KvPlanner) -> Result<R, CoreError>) -> PyResult<R> {
        guard(|| {
            let mut planner = self.inner.lock().map_err(|_| {
                InternalError::new_err(
                    "this planner is unusable after an earlier internal error; create a new one",
                )
            })?;
            f(&mut planner).map_err(to_py)
        })
    }
}

#[pymethods]
impl KvPlanner {
    #[new]
    #[pyo3(signature = (
        *, host_blocks = Uint(0), prior_gap = 5.0, prefetch_window = 1.0, priority_scale = None,
        working_set_window = None, admission_blocks = None, deferral_beta = 8.0, deferral_floor = 1.0,
        admission_min_programs = 4.0
    ), text_signature = "(*, host_blocks=0, prior_gap=5.0, prefetch_window=1.0, priority_scale=None, working_set_window=None, admission_blocks=None, deferral_beta=8.0, deferral_floor=1.0, admission_min_programs=4.0)")]
    fn new(
        host_blocks: Uint<u64>,
        prior_gap: f64,
        prefetch_window: f64,
        priority_scale: Option<f64>,
        working_set_window: Option<f64>,
        admission_blocks: Option<Uint<u64>>,
        deferral_beta: f64,
        deferral_floor: f64,
        admission_min_programs: f64,
    ) -> PyResult<Self> {
        let config = KvConfig {
            host_blocks: host_blocks.0,
            prior_gap,
            prefetch_window,
            priority_scale,
            working_set_window: working_set_window.unwrap_or(f64::INFINITY),
            admission_blocks: admission_blocks.map(|b| b.0),
            deferral_beta,
            deferral_floor,
            admission_min_programs,
        };
        let inner = core::KvPlanner::new(config).map_err(to_py)?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    /// A finished call left `blocks` GPU blocks of context `context` (beyond `parent`'s), idle
    /// from `now`; `service` is its program's attained service (its priority); `gap_prior`: the
    /// caller's guess of the seconds until its next use (e.g. the tool's expected duration), a
    /// prior that the thread's observed gaps override.
    #[pyo3(
        signature = (context, program, now, *, blocks, thread = Uint(0), parent = None, service = 0.0, gap_prior = None),
        text_signature = "(self, /, context, program, now, *, blocks, thread=0, parent=None, service=0.0, gap_prior=None)"
    )]
    fn insert(
        &self,
        context: Id,
        program: Id,
        now: f64,
        blocks: Uint<u64>,
        thread: Id,
        parent: Option<Id>,
        service: f64,
        gap_prior: Option<f64>,
    ) -> PyResult<()> {
        let spec = core::ContextSpec {
            context: context.0,
            program: program.0,
            thread: thread.0,
            blocks: blocks.0,
            parent: parent.map(|p| p.0),
        };
        self.with(|p| p.insert_with_prior(spec, now, service, gap_prior))
    }

    /// A call starts sharing `context`: the loads that bring it (and its chain) back to the GPU.
    fn acquire(&self, context: Id, now: f64) -> PyResult<Vec<PyAction>> {
        self.with(|p| p.acquire(context.0, now).map(actions))
    }

    /// A call stopped sharing `context` at `now`.
    #[pyo3(signature = (context, now, *, service = 0.0))]
    fn release(&self, context: Id, now: f64, service: f64) -> PyResult<()> {
        self.with(|p| p.release(context.0, now, service))
    }

    /// Forget an idle context nothing extends: `(tier, blocks)` it had.
    fn remove(&self, context: Id) -> PyResult<(&'static str, u64)> {
        self.with(|p| p.remove(context.0).map(|(t, b)| (tier_name(t), b)))
    }

    /// Free at least `need` GPU blocks from idle contexts (if that many are idle).
    fn reclaim(&self, need: Uint<u64>, now: f64) -> PyResult<Vec<PyAction>> {
        self.with(|p| p.reclaim(need.0, now).map(actions))
    }

    /// Host contexts due within the prefetch window that fit `gpu_free` and `max_blocks`.
    fn prefetch(
        &self,
        now: f64,
        gpu_free: Uint<u64>,
        max_blocks: Uint<u64>,
    ) -> PyResult<Vec<PyAction>> {
        self.with(|p| p.prefetch(now, gpu_free.0, max_blocks.0).map(actions))
    }

    /// The program ended: every context it holds, freed.
    #[pyo3(signature = (program, *, service = 0.0))]
    fn end_program(&self, program: Id, service: f64) -> PyResult<Vec<PyAction>> {
        self.with(|p| Ok(actions(p.end_program(program.0, service))))
    }

    /// May a new program start now? If not it waits for :meth:`admissions`.
    #[pyo3(
        signature = (program, now, running_blocks = Uint(0)),
        text_signature = "(self, /, program, now, running_blocks=0)"
    )]
    fn admit(&self, program: Id, now: f64, running_blocks: Uint<u64>) -> PyResult<bool> {
        self.with(|p| p.admit(program.0, now, running_blocks.0))
    }

    /// Deferred programs that may start now, in arrival order.
    #[pyo3(
        signature = (now, running_blocks = Uint(0)),
        text_signature = "(self, /, now, running_blocks=0)"
    )]
    fn admissions(&self, now: f64, running_blocks: Uint<u64>) -> PyResult<Vec<u64>> {
        self.with(|p| p.admissions(now, running_blocks.0))
    }

    /// `"gpu"`, `"host"`, or `None` if the planner does not hold `context`.
    fn tier(&self, context: Id) -> PyResult<Option<&'static str>> {
        self.with(|p| Ok(p.tier(context.0).map(tier_name)))
    }

    /// Expected seconds from idle to next use for a context of `(program, thread)`.
    #[pyo3(
        signature = (program, thread = Uint(0)),
        text_signature = "(self, /, program, thread=0)"
    )]
    fn expected_gap(&self, program: Id, thread: Id) -> PyResult<f64> {
        self.with(|p| Ok(p.expected_gap(program.0, thread.0)))
    }

    #[getter]
    fn gpu_blocks(&self) -> PyResult<u64> {
        self.with(|p| Ok(p.gpu_blocks()))
    }

    #[getter]
    fn host_blocks(&self) -> PyResult<u64> {
        self.with(|p| Ok(p.host_blocks()))
    }

    #[getter]
    fn host_free(&self) -> PyResult<u64> {
        self.with(|p| Ok(p.host_free()))
    }

    fn __len__(&self) -> PyResult<usize> {
        self.with(|p| Ok(p.len()))
    }

    /// Counters: offloads, loads, prefetches and drops, with their blocks.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|p| Ok(p.stats()))?;
        let d = PyDict::new(py);
        d.set_item("offloads", s.offloads)?;
        d.set_item("offloaded_blocks", s.offloaded_blocks)?;
        d.set_item("loads", s.loads)?;
        d.set_item("loaded_blocks", s.loaded_blocks)?;
        d.set_item("prefetches", s.prefetches)?;
        d.set_item("drops", s.drops)?;
        d.set_item("dropped_blocks", s.dropped_blocks)?;
        Ok(d)
    }

    /// Admission at `now`: programs deferred, the longest deferral, the bound, programs waiting.
    fn admission_stats<'py>(&self, py: Python<'py>, now: f64) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|p| Ok(p.admission_stats(now)))?;
        let d = PyDict::new(py);
        d.set_item("deferred", s.deferred)?;
        d.set_item("longest_deferral", s.longest_deferral)?;
        d.set_item("bound", s.bound)?;
        d.set_item("waiting", s.waiting)?;
        Ok(d)
    }
}
