//! Online estimate of the gap between a context going idle and its next use (the program's next
//! LLM call), learned from what the planner observes, never from tool durations.
//!
//! Three levels, each shrunk towards the one above by [`PRIOR_WEIGHT`] pseudo-observations: the
//! workload-wide mean (itself starting at the configured prior), the program's mean, the thread's
//! mean. A program seen once is mostly the workload; one seen ten times is mostly itself.

use rustc_hash::FxHashMap;

use crate::types::{ProgramId, ThreadId};

/// Pseudo-observations of the level above that each estimate starts with.
const PRIOR_WEIGHT: f64 = 2.0;
/// Workload-wide mean: exponentially weighted, so it follows a workload that changes.
const WORKLOAD_DECAY: f64 = 0.02;

#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    n: f64,
    sum: f64,
}

impl Mean {
    fn add(&mut self, x: f64) {
        self.n += 1.0;
        self.sum += x;
    }

    fn shrunk(self, prior: f64) -> f64 {
        (self.sum + PRIOR_WEIGHT * prior) / (self.n + PRIOR_WEIGHT)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct GapEstimator {
    workload: f64,
    /// Per program: its mean and its threads' means.
    programs: FxHashMap<ProgramId, (Mean, FxHashMap<ThreadId, Mean>)>,
}

impl GapEstimator {
    pub(crate) fn new(prior: f64) -> Self {
        Self {
            workload: prior,
            programs: FxHashMap::default(),
        }
    }

    /// A context of `(program, thread)` was used again `gap` seconds after it went idle.
    pub(crate) fn observe(&mut self, program: ProgramId, thread: ThreadId, gap: f64) {
        let gap = gap.max(0.0);
        self.workload += WORKLOAD_DECAY * (gap - self.workload);
        let (mean, threads) = self.programs.entry(program).or_default();
        mean.add(gap);
        threads.entry(thread).or_default().add(gap);
    }

    /// Expected seconds from going idle to the next use.
    pub(crate) fn expected(&self, program: ProgramId, thread: ThreadId) -> f64 {
        let Some((mean, threads)) = self.programs.get(&program) else {
            return self.workload;
        };
        let program_mean = mean.shrunk(self.workload);
        threads
            .get(&thread)
            .map_or(program_mean, |m| m.shrunk(program_mean))
    }

    /// Expected seconds to the next use, with `prior` (if any) in place of the program's mean
    /// as what the thread's observed gaps are shrunk towards.
    pub(crate) fn expected_with(
        &self,
        program: ProgramId,
        thread: ThreadId,
        prior: Option<f64>,
    ) -> f64 {
        let Some(prior) = prior else {
            return self.expected(program, thread);
        };
        self.programs
            .get(&program)
            .and_then(|(_, threads)| threads.get(&thread))
            .map_or(prior, |m| m.shrunk(prior))
    }

    /// Forget a finished program's history.
    pub(crate) fn forget(&mut self, program: ProgramId) {
        self.programs.remove(&program);
    }
}
