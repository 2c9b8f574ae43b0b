//! Scheduling policies behind one trait. A policy only says how a call is ranked; the queues,
//! demotion, promotion and batch formation are shared (see `scheduler/`).

use std::fmt;
use std::str::FromStr;

use crate::error::CoreError;
use crate::program_table::Program;

/// How calls are ranked. Lower priority values run first.
pub trait Policy: Send + Sync + fmt::Debug {
    /// The name it is selected by.
    fn name(&self) -> &'static str;
    /// Priority value of a call that arrives now for `program`; binned into a queue.
    fn arrival_priority(&self, program: &Program) -> f64;
    /// The program's service `T_p` as the anti-starvation ratio sees it.
    fn program_service(&self, program: &Program) -> f64;
    /// Multi-level: quantum demotion and anti-starvation promotion apply. Otherwise one FCFS queue.
    fn multilevel(&self) -> bool {
        true
    }
}

/// vLLM's default: one queue in arrival order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fcfs;

/// Call-level multi-level feedback queue (FastServe-like): every new call starts in the top queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mlfq;

/// Program-Level Attained Service: rank by the summed service of the program's completed calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plas;

/// Adaptive Thread-Level Attained Service: rank by the longest critical path observed in the
/// program's DAG of calls; concurrent calls of a program share it and are gang-scheduled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Atlas;

impl Policy for Fcfs {
    fn name(&self) -> &'static str {
        "fcfs"
    }
    fn arrival_priority(&self, _: &Program) -> f64 {
        0.0
    }
    fn program_service(&self, program: &Program) -> f64 {
        program.attained_service
    }
    fn multilevel(&self) -> bool {
        false
    }
}

impl Policy for Mlfq {
    fn name(&self) -> &'static str {
        "mlfq"
    }
    fn arrival_priority(&self, _: &Program) -> f64 {
        0.0
    }
    fn program_service(&self, program: &Program) -> f64 {
        program.attained_service
    }
}

impl Policy for Plas {
    fn name(&self) -> &'static str {
        "plas"
    }
    fn arrival_priority(&self, program: &Program) -> f64 {
        program.attained_service
    }
    fn program_service(&self, program: &Program) -> f64 {
        program.attained_service
    }
}

impl Policy for Atlas {
    fn name(&self) -> &'static str {
        "atlas"
    }
    fn arrival_priority(&self, program: &Program) -> f64 {
        program.critical_path
    }
    fn program_service(&self, program: &Program) -> f64 {
        program.critical_path
    }
}

/// The policies, selectable by name (`"fcfs"`, `"mlfq"`, `"plas"`, `"atlas"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyKind {
    Fcfs,
    Mlfq,
    #[default]
    Plas,
    Atlas,
}

impl PolicyKind {
    /// Every policy, in the order they are documented.
    pub const ALL: [PolicyKind; 4] = [Self::Fcfs, Self::Mlfq, Self::Plas, Self::Atlas];

    pub fn build(self) -> Box<dyn Policy> {
        match self {
            Self::Fcfs => Box::new(Fcfs),
            Self::Mlfq => Box::new(Mlfq),
            Self::Plas => Box::new(Plas),
            Self::Atlas => Box::new(Atlas),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fcfs => "fcfs",
            Self::Mlfq => "mlfq",
            Self::Plas => "plas",
            Self::Atlas => "atlas",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = CoreError;

    fn from_str(name: &str) -> Result<Self, CoreError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                CoreError::InvalidConfig(format!(
                    "unknown policy {name:?}; expected one of fcfs, mlfq, plas, atlas"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in PolicyKind::ALL {
            assert_eq!(kind.as_str().parse::<PolicyKind>().unwrap(), kind);
            assert_eq!(kind.build().name(), kind.as_str());
        }
        assert_eq!(" PLAS ".parse::<PolicyKind>().unwrap(), PolicyKind::Plas);
        assert!(matches!(
            "srpt".parse::<PolicyKind>(),
            Err(CoreError::InvalidConfig(_))
        ));
    }
}
