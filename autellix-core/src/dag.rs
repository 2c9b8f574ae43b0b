//! Critical paths through a program's DAG of calls. A call's parents are given explicitly, or are
//! the previous call of the same thread. Since a parent must be known before its child, the graph
//! is acyclic by construction; naming yourself is the only cycle and is refused.

use rustc_hash::FxHashMap;

use crate::error::{CoreError, Result};
use crate::program_table::ProgramTable;
use crate::types::{CallId, ProgramId};

/// Checks the parents of a call about to be submitted. `batch` maps the ids submitted earlier in
/// the same batch to their programs (they are not in the table yet).
pub(crate) fn check_parents(
    table: &ProgramTable,
    batch: &FxHashMap<CallId, ProgramId>,
    call: CallId,
    program: ProgramId,
    parents: &[CallId],
) -> Result<()> {
    for &parent in parents {
        if parent == call {
            return Err(CoreError::CyclicParents(call));
        }
        let parent_program = if let Some((p, _)) = table.thread_of(parent) {
            p
        } else if let Some(&p) = batch.get(&parent) {
            p
        } else {
            return Err(CoreError::UnknownCall(parent));
        };
        if parent_program != program {
            return Err(CoreError::ForeignParent {
                call,
                parent,
                program,
                parent_program,
            });
        }
    }
    Ok(())
}

/// Critical-path value at the start of a call: `max(parent.path_start + parent.service)` over its
/// (already checked) parents, 0 for a root. A parent still running counts with its service so far.
pub(crate) fn path_start(table: &ProgramTable, parents: &[CallId], now: f64) -> f64 {
    parents
        .iter()
        .map(|p| match table.call(*p) {
            Ok(c) => c.path_start + c.service(now),
            Err(_) => table.path_end(*p).unwrap_or(0.0),
        })
        .fold(0.0, f64::max)
}
