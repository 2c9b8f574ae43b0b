//! Thread lineage: a call without explicit parents descends from the previous call of its thread
//! (`ProgramTable::threads` maps each thread to its latest call). An aborted call is forgotten, so
//! the thread's lineage bypasses it, whatever order its calls are aborted in.

use super::{CallSpec, Scheduler};
use crate::program_table::Call;
use crate::types::{CallId, ProgramId, ThreadId};

impl Scheduler {
    /// Makes a new call its thread's latest; returns the call it follows (its implicit parent),
    /// if any.
    pub(super) fn link_into_thread(&mut self, spec: &CallSpec<'_>) -> Option<CallId> {
        let thread = (spec.program, spec.thread);
        let thread_prev = self.table.threads.insert(thread, spec.call);
        // A stale entry (its call aborted and the id reused elsewhere) is no parent.
        thread_prev.filter(|prev| self.table.thread_of(*prev) == Some(thread))
    }

    /// Takes an aborted call (already out of the table) out of its thread's lineage.
    pub(super) fn forget_in_thread(&mut self, aborted: &Call) {
        let key = key_of(aborted);
        let thread_prev = aborted
            .thread_prev
            .filter(|p| self.table.thread_of(*p) == Some(key));
        self.bypass_in_thread(aborted);
        if self.table.threads.get(&key) == Some(&aborted.id) {
            // An aborted call is forgotten (its id may be used again); the thread's next call
            // descends from the aborted call's predecessor instead, if that is still the thread's.
            if let Some(prev) = thread_prev {
                self.table.threads.insert(key, prev);
            } else {
                self.table.threads.remove(&key);
                let program = self.table.program_mut(aborted.program);
                program.threads.retain(|t| *t != aborted.thread);
            }
        }
    }

    /// An aborted call is forgotten: the live call that followed it in its thread now follows its
    /// predecessor, so the thread keeps its lineage whatever order its calls are aborted in.
    fn bypass_in_thread(&mut self, aborted: &Call) {
        let table = &mut self.table;
        let live = &table.programs[&aborted.program].live;
        let next = live.iter().copied().find(|&s| {
            let c = &table.slab[s as usize];
            c.thread == aborted.thread && c.thread_prev == Some(aborted.id)
        });
        if let Some(next) = next {
            table.at_mut(next).thread_prev = aborted.thread_prev;
        }
    }
}

/// The (program, thread) a call belongs to.
fn key_of(call: &Call) -> (ProgramId, ThreadId) {
    (call.program, call.thread)
}
