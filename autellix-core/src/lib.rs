//! autellix-core: the program-aware scheduling core of autellix.
//!
//! Every LLM call carries its program and thread identity; the [`ProgramTable`] tracks each
//! program's attained service, waiting time and critical path; a [`Policy`] (FCFS, MLFQ, PLAS or
//! ATLAS) ranks calls, discretized into a multi-level feedback queue with anti-starvation; and
//! [`Scheduler::step`] returns, per engine step, which calls run and which are preempted. The
//! [`KvPlanner`] decides where idle program contexts live across tool waits (GPU, host, dropped)
//! and which new programs are let in.
//!
//! Time is passed in by the caller (no wall clock inside), so every run is deterministic. Every
//! per-call operation is O(log n); a step costs O(batch + due events · log n).
#![forbid(unsafe_code)]

mod config;
mod dag;
mod error;
mod kv;
mod policy;
mod program_table;
mod queue;
mod scheduler;
mod types;

pub use config::{DECODE_STEP_SECONDS, DEFAULT_FIRST_BOUNDARY, SchedulerConfig};
pub use error::{CoreError, Result};
pub use kv::{
    AdmissionStats, ContextId, ContextSpec, KvAction, KvConfig, KvPlanner, KvStats, Move, Tier,
};
pub use policy::{Atlas, Fcfs, Mlfq, Plas, Policy, PolicyKind};
pub use program_table::{Call, Program, ProgramTable};
pub use scheduler::{CallSpec, Decision, Scheduler, StepReport};
pub use types::{CallId, CallState, Capacity, EngineId, ProgramId, ThreadId};
