//! Program-level admission against thrashing (Denning's working-set rule): while the live
//! programs' contexts and running calls exceed the budget, a *new* program waits (the next call of
//! a live program never does), in arrival order, and never longer than the bound
//! `beta x max(floor, mean service of ended programs)` — the anti-starvation rule `W / T >= beta`
//! with the program's unknown service taken as the typical program's. It defers only while the
//! budget holds several typical working sets (`min_programs`): when one program fills a large part
//! of the cache, a deferred program would wait for whole programs to end, which costs more than the
//! re-prefills it saves.

use std::collections::VecDeque;

use rustc_hash::FxHashSet;

use crate::types::ProgramId;

/// What admission has done, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdmissionStats {
    /// Programs that had to wait at least once.
    pub deferred: u64,
    /// Longest wait of any admitted program, and of the one waiting longest now.
    pub longest_deferral: f64,
    /// The bound in force now.
    pub bound: f64,
    /// Programs waiting now.
    pub waiting: usize,
}

#[derive(Debug, Clone)]
pub(super) struct Admission {
    beta: f64,
    floor: f64,
    min_programs: f64,
    queue: VecDeque<(ProgramId, f64)>,
    queued: FxHashSet<ProgramId>,
    /// Admitted programs that hold no context yet: each counts as a typical program.
    reserved: FxHashSet<ProgramId>,
    ended: u64,
    service_sum: f64,
    deferred: u64,
    longest: f64,
}

impl Admission {
    pub(super) fn new(beta: f64, floor: f64, min_programs: f64) -> Self {
        Self {
            beta,
            floor,
            min_programs,
            queue: VecDeque::new(),
            queued: FxHashSet::default(),
            reserved: FxHashSet::default(),
            ended: 0,
            service_sum: 0.0,
            deferred: 0,
            longest: 0.0,
        }
    }

    pub(super) fn bound(&self) -> f64 {
        let mean = if self.ended == 0 {
            0.0
        } else {
            self.service_sum / self.ended as f64
        };
        self.beta * mean.max(self.floor)
    }

    /// Would one more program fit? Programs admitted without a context yet count as the average
    /// live program's working set. Always, when the budget holds fewer than `min_programs` of
    /// those.
    fn fits(&self, used: u64, budget: Option<u64>, holding: usize) -> bool {
        let Some(budget) = budget else { return true };
        let typical = if holding == 0 {
            0
        } else {
            used / holding as u64
        };
        typical as f64 * self.min_programs > budget as f64
            || used + typical * (self.reserved.len() as u64 + 1) <= budget
    }

    pub(super) fn admit(
        &mut self,
        program: ProgramId,
        now: f64,
        used: u64,
        budget: Option<u64>,
        holding: usize,
    ) -> bool {
        if self.queued.contains(&program) {
            return false;
        }
        if self.queue.is_empty() && self.fits(used, budget, holding) {
            self.reserved.insert(program);
            return true;
        }
        self.deferred += 1;
        self.queue.push_back((program, now));
        self.queued.insert(program);
        false
    }

    pub(super) fn release(
        &mut self,
        now: f64,
        used: u64,
        budget: Option<u64>,
        holding: usize,
    ) -> Vec<ProgramId> {
        let bound = self.bound();
        let mut out = Vec::new();
        while let Some(&(program, since)) = self.queue.front() {
            let waited = now - since;
            if waited < bound && !self.fits(used, budget, holding) {
                break;
            }
            self.queue.pop_front();
            self.queued.remove(&program);
            self.reserved.insert(program);
            self.longest = self.longest.max(waited);
            out.push(program);
        }
        out
    }

    /// The program's first context exists: it is counted by its real size from now on.
    pub(super) fn started(&mut self, program: ProgramId) {
        self.reserved.remove(&program);
    }

    pub(super) fn ended(&mut self, program: ProgramId, service: f64) {
        self.reserved.remove(&program);
        if self.queued.remove(&program) {
            // Ended (cancelled) while deferred: it no longer waits. Rare, so a linear scan.
            self.queue.retain(|&(p, _)| p != program);
        }
        self.ended += 1;
        self.service_sum += service;
    }

    pub(super) fn stats(&self, now: f64) -> AdmissionStats {
        let waiting_longest = self.queue.front().map_or(0.0, |&(_, since)| now - since);
        AdmissionStats {
            deferred: self.deferred,
            longest_deferral: self.longest.max(waiting_longest),
            bound: self.bound(),
            waiting: self.queue.len(),
        }
    }
}
