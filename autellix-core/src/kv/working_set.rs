//! Live programs' working sets for admission (Denning's W(t, tau)): a program counts with the
//! longest context chain it has built (what its next call needs again, wherever its contexts are
//! now, dropped ones included) while it has been active within the last `window` seconds; one
//! idle longer (a long tool wait, a user thinking) stops counting until it is active again.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::types::{ProgramId, Time};

#[derive(Debug, Clone, Copy)]
struct Entry {
    blocks: u64,
    last_active: f64,
    counted: bool,
}

#[derive(Debug, Clone)]
pub(super) struct WorkingSets {
    window: f64,
    programs: FxHashMap<ProgramId, Entry>,
    /// Counted programs by last activity, oldest first.
    active: BTreeSet<(Time, ProgramId)>,
    total: u64,
}

impl WorkingSets {
    pub(super) fn new(window: f64) -> Self {
        Self {
            window,
            programs: FxHashMap::default(),
            active: BTreeSet::new(),
            total: 0,
        }
    }

    /// `program` is active at `now`, having built a chain of `chain_blocks` (0: no new context).
    pub(super) fn touch(&mut self, program: ProgramId, chain_blocks: u64, now: f64) {
        let entry = self.programs.entry(program).or_insert(Entry {
            blocks: 0,
            last_active: now,
            counted: false,
        });
        if entry.counted {
            self.active.remove(&(Time(entry.last_active), program));
            self.total -= entry.blocks;
        }
        entry.blocks = entry.blocks.max(chain_blocks);
        entry.last_active = entry.last_active.max(now);
        entry.counted = true;
        self.total += entry.blocks;
        self.active.insert((Time(entry.last_active), program));
    }

    /// Stops counting the programs idle for longer than the window at `now`.
    pub(super) fn expire(&mut self, now: f64) {
        while let Some(&(Time(at), program)) = self.active.first() {
            if at >= now - self.window {
                break;
            }
            self.active.pop_first();
            let entry = self
                .programs
                .get_mut(&program)
                .expect("invariant: active programs are known");
            entry.counted = false;
            self.total -= entry.blocks;
        }
    }

    pub(super) fn remove(&mut self, program: ProgramId) {
        if let Some(entry) = self.programs.remove(&program)
            && entry.counted
        {
            self.active.remove(&(Time(entry.last_active), program));
            self.total -= entry.blocks;
        }
    }

    /// Blocks of the counted programs' working sets.
    pub(super) fn total(&self) -> u64 {
        self.total
    }

    /// Programs counted now.
    pub(super) fn counted(&self) -> usize {
        self.active.len()
    }
}
