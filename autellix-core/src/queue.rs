//! One engine's queues: every live call placed on the engine in one ordered map, by
//! (queue level, running before queued, FCFS position). Batch formation reads it front to back, so a
//! step costs O(batch), whatever the number of waiting calls. Two lazy min-heaps hold the times at
//! which something is due: a running call's quantum expiry and a queued call's promotion deadline.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::program_table::Call;
use crate::types::{CallId, Time};

/// Position of a call in its engine's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct QueueKey {
    level: u8,
    /// 0 = running, 1 = queued: a waiting call never displaces a running one of the same queue.
    class: u8,
    seq: u64,
}

impl QueueKey {
    pub(crate) fn of(call: &Call) -> Self {
        Self {
            level: call.level,
            class: u8::from(call.state.is_queued()),
            seq: call.seq,
        }
    }
}

/// A min-heap of (due time, call) whose entries go stale instead of being removed; an entry is
/// current only while the call still carries the same due time.
#[derive(Debug, Default, Clone)]
pub(crate) struct DueHeap(BinaryHeap<Reverse<(Time, CallId)>>);

impl DueHeap {
    pub(crate) fn push(&mut self, due: f64, call: CallId) {
        if due.is_finite() {
            self.0.push(Reverse((Time(due), call)));
        }
    }

    /// Pops the earliest entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: f64) -> Option<(f64, CallId)> {
        match self.0.peek() {
            Some(Reverse((t, _))) if t.0 <= now => self.0.pop().map(|Reverse((t, c))| (t.0, c)),
            _ => None,
        }
    }

    /// Drops stale entries once they outnumber the live ones, so memory stays O(live calls).
    pub(crate) fn compact(&mut self, live: usize, is_current: impl Fn(f64, CallId) -> bool) {
        if self.0.len() > 2 * live + 64 {
            self.0.retain(|Reverse((t, c))| is_current(t.0, *c));
        }
    }
}

/// The calls of one engine.
#[derive(Debug, Default, Clone)]
pub(crate) struct EngineQueue {
    pub order: BTreeMap<QueueKey, CallId>,
    pub running: Vec<CallId>,
    /// Queued calls per level (for metrics).
    pub queued_per_level: Vec<u32>,
    pub expiries: DueHeap,
    pub deadlines: DueHeap,
}

impl EngineQueue {
    pub(crate) fn new(levels: usize) -> Self {
        Self {
            queued_per_level: vec![0; levels],
            ..Self::default()
        }
    }

    pub(crate) fn insert(&mut self, call: &Call) {
        self.order.insert(QueueKey::of(call), call.id);
        if call.state.is_queued() {
            self.queued_per_level[usize::from(call.level)] += 1;
        }
    }

    pub(crate) fn remove(&mut self, call: &Call) {
        self.order.remove(&QueueKey::of(call));
        if call.state.is_queued() {
            self.queued_per_level[usize::from(call.level)] -= 1;
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.order.len() - self.running.len()
    }
}
