//! One engine's queues: every live call placed on the engine in one ordered map, by
//! (queue level, running before queued, FCFS position). Batch formation reads it front to back, so a
//! step costs O(batch), whatever the number of waiting calls. Lazy min-heaps hold the times at
//! which something becomes due: a running call's quantum expiry, and per program a starvation
//! watch over its queued calls.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rustc_hash::FxHashMap;

use crate::program_table::{Call, Slot};
use crate::types::{ProgramId, Time};

/// Position of a call in its engine's order: (queue level, running before queued, FCFS position)
/// packed into one integer, most significant first. A waiting call never displaces a running one
/// of the same queue. Positions stay below 2^55 (centuries at a million calls a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct QueueKey(u64);

impl QueueKey {
    pub(crate) fn of(call: &Call) -> Self {
        debug_assert!(call.seq < 1 << 55);
        let class = u64::from(call.state.is_queued());
        Self(u64::from(call.level) << 56 | class << 55 | call.seq)
    }
}

/// A min-heap of (due time, item) whose entries go stale instead of being removed; the owner
/// checks an entry against the item's current state when it pops. Calls are named by their
/// unique incarnation number (`Call::uid`), never by their id or slot, which can be reused.
#[derive(Debug, Clone)]
pub(crate) struct DueHeap<T: Ord>(BinaryHeap<Reverse<(Time, T)>>);

impl<T: Ord> Default for DueHeap<T> {
    fn default() -> Self {
        Self(BinaryHeap::new())
    }
}

impl<T: Ord + Copy> DueHeap<T> {
    pub(crate) fn push(&mut self, due: f64, item: T) {
        if due.is_finite() {
            self.0.push(Reverse((Time(due), item)));
        }
    }

    /// The earliest entry, if due at or before `now`.
    pub(crate) fn peek_due(&self, now: f64) -> Option<(f64, T)> {
        self.0
            .peek()
            .filter(|Reverse((t, _))| t.0 <= now)
            .map(|Reverse((t, item))| (t.0, *item))
    }

    pub(crate) fn peek(&self) -> Option<(f64, T)> {
        self.0.peek().map(|Reverse((t, item))| (t.0, *item))
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }

    /// Drops stale entries once they outnumber the live ones, so memory stays O(live items).
    pub(crate) fn compact(&mut self, live: usize, is_current: impl Fn(f64, T) -> bool) {
        if self.0.len() > 2 * live + 64 {
            self.0.retain(|Reverse((t, item))| is_current(t.0, *item));
        }
    }
}

/// A program's queued calls (above the top queue) on one engine, waiting to starve. Call `c` is
/// due for promotion at `starve_key(c) + program_offset(p)`; the offset is shared, so a change of
/// the program's waiting or service moves every call at once, in O(log n).
#[derive(Debug, Default, Clone)]
pub(crate) struct Watch {
    pub calls: DueHeap<(u64, Slot)>,
    /// Calls currently watched.
    pub count: u32,
    /// Due time of the entry in `EngineQueue::starving` that is current for this program.
    pub due: f64,
}

/// The calls of one engine.
#[derive(Debug, Default, Clone)]
pub(crate) struct EngineQueue {
    pub order: BTreeMap<QueueKey, Slot>,
    pub running: Vec<Slot>,
    /// Queued calls per level (for metrics).
    pub queued_per_level: Vec<u32>,
    /// Quantum expiries of running calls.
    pub expiries: DueHeap<(u64, Slot)>,
    pub watches: FxHashMap<ProgramId, Watch>,
    /// When each watched program's first call starves.
    pub starving: DueHeap<ProgramId>,
}

impl EngineQueue {
    pub(crate) fn new(levels: usize) -> Self {
        Self {
            queued_per_level: vec![0; levels],
            ..Self::default()
        }
    }

    pub(crate) fn insert(&mut self, slot: Slot, call: &Call) {
        self.order.insert(QueueKey::of(call), slot);
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
