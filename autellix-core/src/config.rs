//! Scheduler configuration: the policy and the multi-level queue it is discretized into.
//!
//! Times are in whatever unit the caller's clock uses; the defaults assume **seconds**. They are the
//! kungfu-team/autellix defaults (K = 7, entry thresholds 2/4/8/16/32/64 decode steps, quanta
//! 1/2/4/8/16/32/64 decode steps, beta = 8 with `W / max(1 step, T)`, idle TTL 600 s), converted
//! to seconds at [`DECODE_STEP_SECONDS`] per decode step.

use crate::error::{CoreError, Result};
use crate::policy::PolicyKind;

/// One decode step of LLaMA-3.1-8B on one A100 at moderate batch size (~25 ms), used to turn the
/// step-counted third-party defaults into seconds.
pub const DECODE_STEP_SECONDS: f64 = 0.025;

/// Everything the scheduler can be tuned with. Build with [`SchedulerConfig::new`] or
/// `SchedulerConfig { policy, ..Default::default() }` and check with [`SchedulerConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Which priority rule ranks calls.
    pub policy: PolicyKind,
    /// Upper bounds `Q_1^hi .. Q_{K-1}^hi` of the priority value of queues 1..K-1 (queue K is
    /// unbounded), strictly increasing and positive. K = `boundaries.len() + 1`.
    pub boundaries: Vec<f64>,
    /// Time quantum of each of the K queues: a running call that uses up its queue's quantum is
    /// demoted one queue.
    pub quanta: Vec<f64>,
    /// Anti-starvation threshold beta: a queued call is promoted to the top queue when
    /// `(W_program + W_call) / (max(service_floor, T_program) + T_call) >= beta`. `None` disables
    /// it. (The floor applies to the program's part so that every call of a program shares one
    /// offset and a program's change re-times all its calls at once.)
    pub starvation_beta: Option<f64>,
    /// Floor of the program's service in the starvation ratio (avoids dividing by zero on a first
    /// call).
    pub service_floor: f64,
    /// A program with no live call is forgotten this long after its last call ended.
    pub program_ttl: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let step = DECODE_STEP_SECONDS;
        Self {
            policy: PolicyKind::Plas,
            boundaries: [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
                .iter()
                .map(|s| s * step)
                .collect(),
            quanta: [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
                .iter()
                .map(|s| s * step)
                .collect(),
            starvation_beta: Some(8.0),
            service_floor: step,
            program_ttl: 600.0,
        }
    }
}

impl SchedulerConfig {
    /// The defaults with the given policy.
    pub fn new(policy: PolicyKind) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Number of queues K.
    pub fn levels(&self) -> usize {
        self.quanta.len()
    }

    /// Checks every field; the scheduler refuses a config that does not pass.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(CoreError::InvalidConfig(msg));
        if self.quanta.is_empty() || self.quanta.len() > usize::from(u8::MAX) {
            return bad(format!(
                "quanta must list between 1 and 255 queues, got {}",
                self.quanta.len()
            ));
        }
        if self.boundaries.len() + 1 != self.quanta.len() {
            return bad(format!(
                "{} quanta need {} boundaries, got {}",
                self.quanta.len(),
                self.quanta.len() - 1,
                self.boundaries.len()
            ));
        }
        if let Some(q) = self.quanta.iter().find(|q| !(q.is_finite() && **q > 0.0)) {
            return bad(format!("every quantum must be finite and > 0, got {q}"));
        }
        if let Some(b) = self
            .boundaries
            .iter()
            .find(|b| !(b.is_finite() && **b > 0.0))
        {
            return bad(format!("every boundary must be finite and > 0, got {b}"));
        }
        if self.boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!(
                "boundaries must be strictly increasing, got {:?}",
                self.boundaries
            ));
        }
        if let Some(beta) = self.starvation_beta {
            if !(beta.is_finite() && beta > 0.0) {
                return bad(format!(
                    "starvation_beta must be finite and > 0, got {beta}"
                ));
            }
        }
        if !(self.service_floor.is_finite() && self.service_floor > 0.0) {
            return bad(format!(
                "service_floor must be finite and > 0, got {}",
                self.service_floor
            ));
        }
        if !(self.program_ttl.is_finite() && self.program_ttl >= 0.0) {
            return bad(format!(
                "program_ttl must be finite and >= 0, got {}",
                self.program_ttl
            ));
        }
        Ok(())
    }

    /// Queue index (0 = highest priority) of a priority value: `Q_i^lo <= value < Q_i^hi`.
    pub fn level_of(&self, value: f64) -> u8 {
        self.boundaries.partition_point(|b| *b <= value) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_binned() {
        let c = SchedulerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.levels(), 7);
        assert_eq!(c.level_of(0.0), 0);
        assert_eq!(c.level_of(0.049), 0);
        assert_eq!(c.level_of(0.05), 1);
        assert_eq!(c.level_of(1e9), 6);
    }

    #[test]
    fn rejects_bad_configs() {
        let base = SchedulerConfig::default();
        let cases = [
            SchedulerConfig {
                quanta: vec![],
                boundaries: vec![],
                ..base.clone()
            },
            SchedulerConfig {
                boundaries: vec![1.0],
                ..base.clone()
            },
            SchedulerConfig {
                boundaries: vec![1.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                ..base.clone()
            },
            SchedulerConfig {
                quanta: vec![1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                ..base.clone()
            },
            SchedulerConfig {
                starvation_beta: Some(f64::NAN),
                ..base.clone()
            },
            SchedulerConfig {
                service_floor: 0.0,
                ..base.clone()
            },
            SchedulerConfig {
                program_ttl: -1.0,
                ..base.clone()
            },
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(CoreError::InvalidConfig(_))),
                "{c:?}"
            );
        }
    }
}
