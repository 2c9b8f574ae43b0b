//! Identifiers and small value types shared by every module.

use std::cmp::Ordering;
use std::fmt;

/// A program (one agent run: a DAG of LLM calls), chosen by the caller.
pub type ProgramId = u64;
/// A thread inside a program (a parallel branch), chosen by the caller.
pub type ThreadId = u64;
/// One LLM call, chosen by the caller and unique while the scheduler knows it.
pub type CallId = u64;
/// One serving engine (replica).
pub type EngineId = u32;

/// Lifecycle of a call. `Waiting -> Running <-> Preempted -> Running -> Finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    Waiting,
    Running,
    Preempted,
    Finished,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Preempted => "preempted",
            Self::Finished => "finished",
        }
    }

    /// Waiting or preempted: queued for an engine slot.
    pub fn is_queued(self) -> bool {
        matches!(self, Self::Waiting | Self::Preempted)
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one engine can hold in a step: running calls and KV-cache tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub max_running: u32,
    pub kv_tokens: u64,
}

/// A finite time, totally ordered, for the heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Time(pub f64);

impl Eq for Time {}

impl PartialOrd for Time {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Time {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
