//! The process table: one entry per live program, one per live call, and the critical-path end of
//! each program's recent finished calls (so later calls can name them as parents).
//!
//! Calls live in a slab (`Vec` + free list) and every internal structure refers to them by slot,
//! so the hot paths index an array instead of hashing; the caller's call id is hashed once per
//! operation, at the boundary.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::error::{CoreError, Result};
use crate::types::{CallId, CallState, EngineId, ProgramId, ThreadId};

/// Finished calls a program keeps as possible parents; an older one is an unknown parent.
pub const RETAINED_FINISHED_CALLS: usize = 4096;

/// Index of a call in the slab.
pub(crate) type Slot = u32;

/// A program's entry in the process table.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub id: ProgramId,
    /// Arrival of its first call.
    pub arrival: f64,
    /// Summed service (model time) of its completed calls: the PLAS priority.
    pub attained_service: f64,
    /// Summed waiting time of its completed calls: `W_p` of the anti-starvation ratio.
    pub waiting_time: f64,
    /// Longest critical path observed through its DAG of completed calls: the ATLAS priority.
    pub critical_path: f64,
    /// Engine its latest call was placed on (the load balancer's affinity).
    pub engine: Option<EngineId>,
    /// Calls submitted and not yet finished or aborted.
    pub active_calls: u32,
    pub finished_calls: u64,
    pub last_arrival: f64,
    pub last_completion: Option<f64>,
    /// Threads with a known last call (their last calls are in `ProgramTable::threads`).
    pub(crate) threads: Vec<ThreadId>,
    /// Its live calls.
    pub(crate) live: Vec<Slot>,
    /// Its retained finished calls, oldest first.
    pub(crate) finished: VecDeque<CallId>,
    /// Engines holding a starvation watch over some of its queued calls.
    pub(crate) watched: Vec<EngineId>,
    /// When it may be garbage-collected; infinite while it has live calls.
    pub(crate) idle_deadline: f64,
}

impl Program {
    pub(crate) fn new(id: ProgramId, now: f64) -> Self {
        Self {
            id,
            arrival: now,
            attained_service: 0.0,
            waiting_time: 0.0,
            critical_path: 0.0,
            engine: None,
            active_calls: 0,
            finished_calls: 0,
            last_arrival: now,
            last_completion: None,
            threads: Vec::new(),
            live: Vec::new(),
            finished: VecDeque::new(),
            watched: Vec::new(),
            idle_deadline: f64::INFINITY,
        }
    }

    /// Number of threads with a known last call (a thread whose calls were all aborted is
    /// forgotten).
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }
}

/// A live call's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: CallId,
    /// Unique for the scheduler's lifetime (an id or a slot can be reused after an abort).
    pub(crate) uid: u64,
    pub program: ProgramId,
    pub thread: ThreadId,
    pub engine: EngineId,
    pub state: CallState,
    /// Current queue (0 = highest priority).
    pub level: u8,
    pub arrival: f64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    /// The program's priority value when the call arrived.
    pub priority: f64,
    /// Critical-path value at the call's start: the longest path through its parents.
    pub path_start: f64,
    /// The previous call of its thread, if any.
    pub thread_prev: Option<CallId>,
    /// FCFS position inside the queue (order of entry into it).
    pub(crate) seq: u64,
    /// Start of the current waiting or running interval.
    pub(crate) since: f64,
    pub(crate) wait_acc: f64,
    pub(crate) service_acc: f64,
    /// Waiting and service at the last anti-starvation promotion (the ratio counts from there).
    pub(crate) wait_reset: f64,
    pub(crate) service_reset: f64,
    /// Quantum left in the current queue, while not running.
    pub(crate) quantum_left: f64,
    /// When the running call uses up its quantum; infinite otherwise.
    pub(crate) expiry: f64,
    /// The call's own part of its promotion deadline while it is watched; infinite otherwise.
    pub(crate) starve_key: f64,
    pub(crate) live_pos: u32,
    pub(crate) running_pos: u32,
    /// Step in which batch formation last selected it.
    pub(crate) selected_in: u64,
}

impl Call {
    /// Total time spent queued (waiting or preempted) up to `now`.
    pub fn waiting_time(&self, now: f64) -> f64 {
        self.wait_acc
            + if self.state.is_queued() {
                now - self.since
            } else {
                0.0
            }
    }

    /// Total time spent running (model-executor time) up to `now`.
    pub fn service(&self, now: f64) -> f64 {
        self.service_acc
            + if self.state == CallState::Running {
                now - self.since
            } else {
                0.0
            }
    }

    /// Ends the current waiting or running interval at `now`, adding it to the matching total.
    pub(crate) fn close_interval(&mut self, now: f64) {
        self.wait_acc = self.waiting_time(now);
        self.service_acc = self.service(now);
        self.since = now;
    }

    pub(crate) fn add_tokens(&mut self, tokens: u64) {
        self.generated_tokens = self.generated_tokens.saturating_add(tokens);
    }

    /// Whether a heap entry (incarnation, quantum expiry) is this call's current one.
    pub(crate) fn expires_as(&self, uid: u64, expiry: f64) -> bool {
        self.uid == uid && self.expiry == expiry
    }

    /// Whether a heap entry (incarnation, starvation key) is this call's current one.
    pub(crate) fn watched_as(&self, uid: u64, key: f64) -> bool {
        self.uid == uid && self.starve_key == key
    }

    /// KV-cache tokens it occupies (or needs back) on its engine.
    pub fn kv_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.generated_tokens)
    }
}

/// What is kept of a finished call: enough to resolve it as a parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FinishedCall {
    pub program: ProgramId,
    pub thread: ThreadId,
    /// `path_start + service`.
    pub path_end: f64,
}

/// A known call id: live (in the slab) or a retained finished call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Known {
    Live(Slot),
    Finished(FinishedCall),
}

/// Programs, live calls and retained finished calls.
#[derive(Debug, Default, Clone)]
pub struct ProgramTable {
    pub(crate) programs: FxHashMap<ProgramId, Program>,
    /// Live calls by slot; a free slot holds a stale call in state `Finished`.
    pub(crate) slab: Vec<Call>,
    free: Vec<Slot>,
    /// Every known call id, live or finished: one probe answers both.
    index: FxHashMap<CallId, Known>,
    live_calls: usize,
    /// Last call of each (program, thread): the implicit parent of the thread's next call.
    pub(crate) threads: FxHashMap<(ProgramId, ThreadId), CallId>,
}

impl ProgramTable {
    pub fn program(&self, id: ProgramId) -> Result<&Program> {
        self.programs.get(&id).ok_or(CoreError::UnknownProgram(id))
    }

    pub fn call(&self, id: CallId) -> Result<&Call> {
        self.slot(id).map(|s| &self.slab[s as usize])
    }

    pub(crate) fn slot(&self, id: CallId) -> Result<Slot> {
        match self.index.get(&id) {
            Some(Known::Live(slot)) => Ok(*slot),
            _ => Err(CoreError::UnknownCall(id)),
        }
    }

    /// Whether the id is taken by a live call or a retained finished one.
    pub fn knows_call(&self, id: CallId) -> bool {
        self.index.contains_key(&id)
    }

    /// Program and thread of a live or retained finished call.
    pub fn thread_of(&self, call: CallId) -> Option<(ProgramId, ThreadId)> {
        match self.index.get(&call)? {
            Known::Live(s) => {
                let c = &self.slab[*s as usize];
                Some((c.program, c.thread))
            }
            Known::Finished(f) => Some((f.program, f.thread)),
        }
    }

    /// `path_start + service` of a retained finished call.
    pub(crate) fn path_end(&self, call: CallId) -> Option<f64> {
        match self.index.get(&call)? {
            Known::Finished(f) => Some(f.path_end),
            Known::Live(_) => None,
        }
    }

    pub fn num_programs(&self) -> usize {
        self.programs.len()
    }

    pub fn num_live_calls(&self) -> usize {
        self.live_calls
    }

    /// Live calls of a program.
    pub fn live_calls(&self, id: ProgramId) -> Result<Vec<CallId>> {
        let program = self.program(id)?;
        Ok(program
            .live
            .iter()
            .map(|s| self.slab[*s as usize].id)
            .collect())
    }

    pub(crate) fn at(&self, slot: Slot) -> &Call {
        &self.slab[slot as usize]
    }

    pub(crate) fn at_mut(&mut self, slot: Slot) -> &mut Call {
        &mut self.slab[slot as usize]
    }

    pub(crate) fn program_mut(&mut self, id: ProgramId) -> &mut Program {
        self.programs
            .get_mut(&id)
            .expect("invariant: a live call's program is in the table")
    }

    /// Stores a new live call and links it into its program.
    pub(crate) fn insert(&mut self, mut call: Call) -> Slot {
        let slot = self.free.pop().unwrap_or(self.slab.len() as Slot);
        let program = self
            .programs
            .get_mut(&call.program)
            .expect("program created before its calls");
        call.live_pos = program.live.len() as u32;
        program.live.push(slot);
        self.index.insert(call.id, Known::Live(slot));
        self.live_calls += 1;
        if slot as usize == self.slab.len() {
            self.slab.push(call);
        } else {
            self.slab[slot as usize] = call;
        }
        slot
    }

    /// Frees a live call's slot and unlinks it from its program; returns a copy of it.
    pub(crate) fn remove(&mut self, slot: Slot) -> Call {
        let call = self.slab[slot as usize].clone();
        self.slab[slot as usize].state = CallState::Finished;
        self.index.remove(&call.id);
        self.live_calls -= 1;
        self.free.push(slot);
        if let Some(program) = self.programs.get_mut(&call.program) {
            if let Some(moved) = swap_remove_tracked(&mut program.live, call.live_pos) {
                self.slab[moved as usize].live_pos = call.live_pos;
            }
        }
        call
    }

    /// Keeps a finished call as a possible parent, forgetting the program's oldest beyond the cap.
    pub(crate) fn retain_finished(&mut self, id: CallId, finished: FinishedCall) {
        let program = self.program_mut(finished.program);
        program.finished.push_back(id);
        let evicted = if program.finished.len() > RETAINED_FINISHED_CALLS {
            program.finished.pop_front()
        } else {
            None
        };
        if let Some(old) = evicted {
            self.index.remove(&old);
        }
        self.index.insert(id, Known::Finished(finished));
    }

    /// Forgets a program, its retained finished calls and its threads (its live calls must be
    /// gone already).
    pub(crate) fn remove_program(&mut self, id: ProgramId) {
        if let Some(program) = self.programs.remove(&id) {
            for call in program.finished {
                self.index.remove(&call);
            }
            for thread in program.threads {
                self.threads.remove(&(id, thread));
            }
        }
    }
}

/// Removes `vec[pos]` by swapping in the last element; returns the element that moved into `pos`,
/// whose stored position the caller must update.
pub(crate) fn swap_remove_tracked(vec: &mut Vec<Slot>, pos: u32) -> Option<Slot> {
    let pos = pos as usize;
    vec.swap_remove(pos);
    vec.get(pos).copied()
}
