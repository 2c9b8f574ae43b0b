//! Scheduler configuration: the policy and the multi-level queue it is discretized into.
//!
//! Times are in whatever unit the caller's clock uses; the defaults assume **seconds**. K = 7,
//! beta = 8 with `W / max(1 decode step, T)` and the idle TTL of 600 s are the kungfu-team/autellix
//! defaults (converted at [`DECODE_STEP_SECONDS`] per decode step). The ladder is measured: the
//! doubling ladder from [`DEFAULT_FIRST_BOUNDARY`] (boundaries 0.5 s .. 16 s, every queue's quantum
//! its width, 0.5 s at the top). With the KV planner on the simulator's four workloads (1000
//! programs, LLaMA-3.1-8B / A100) it is within 1% of the best ladder tried on bfcl, lats and mixed
//! and 5-8% behind a 32 s ladder on sharegpt, where 32 s (and 4 s) let bfcl collapse at 0.8
//! programs/s (0.78 s/token against 0.13) and the third-party 50 ms ladder is 13% behind on
//! sharegpt (benches/RESULTS.md, "One scheduler default").

use crate::error::{CoreError, Result};
use crate::policy::PolicyKind;

/// One decode step of LLaMA-3.1-8B on one A100 at moderate batch size (~25 ms), used to turn the
/// step-counted third-party defaults into seconds.
pub const DECODE_STEP_SECONDS: f64 = 0.025;

/// First MLFQ boundary (and top quantum) of the default ladder, seconds of service.
pub const DEFAULT_FIRST_BOUNDARY: f64 = 0.5;

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
        let first = DEFAULT_FIRST_BOUNDARY;
        let (boundaries, quanta) =
            Self::ladder(first, 7, first).expect("invariant: the default ladder is valid");
        Self {
            policy: PolicyKind::Plas,
            boundaries,
            quanta,
            starvation_beta: Some(8.0),
            service_floor: DECODE_STEP_SECONDS,
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

    /// The doubling ladder of `levels` queues: `(boundaries, quanta)` with boundaries
    /// `b, 2b, 4b, ...` (`levels - 1` of them, from `first_boundary` = b) and each queue's quantum
    /// its width (`b, 2b, 4b, ...` for queues 1.., the bottom one as wide as the one above),
    /// except the top queue's, which is `top_quantum`.
    ///
    /// The default config is `ladder(DEFAULT_FIRST_BOUNDARY, 7, DEFAULT_FIRST_BOUNDARY)`.
    pub fn ladder(
        first_boundary: f64,
        levels: usize,
        top_quantum: f64,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let bad = |msg: String| Err(CoreError::InvalidConfig(msg));
        if !(1..=usize::from(u8::MAX)).contains(&levels) {
            return bad(format!("levels must be between 1 and 255, got {levels}"));
        }
        if !(first_boundary.is_finite() && first_boundary > 0.0) {
            return bad(format!(
                "first_boundary must be finite and > 0, got {first_boundary}"
            ));
        }
        if !(top_quantum.is_finite() && top_quantum > 0.0) {
            return bad(format!(
                "top_quantum must be finite and > 0, got {top_quantum}"
            ));
        }
        // Doubling is exact in binary floating point, so the values are exact multiples of b.
        let boundaries: Vec<f64> = std::iter::successors(Some(first_boundary), |b| Some(b * 2.0))
            .take(levels - 1)
            .collect();
        if let Some(last) = boundaries.last().filter(|b| !b.is_finite()) {
            return bad(format!(
                "{levels} levels from first_boundary {first_boundary} overflow to {last}"
            ));
        }
        let mut quanta = Vec::with_capacity(levels);
        quanta.push(top_quantum);
        quanta.extend_from_slice(&boundaries);
        Ok((boundaries, quanta))
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
        assert_eq!(c.level_of(0.499), 0);
        assert_eq!(c.level_of(0.5), 1);
        assert_eq!(c.level_of(1e9), 6);
    }

    #[test]
    fn default_is_the_half_second_ladder_exactly() {
        let c = SchedulerConfig::default();
        assert_eq!(c.boundaries, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]);
        assert_eq!(c.quanta, [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]);
        assert_eq!(c.service_floor, DECODE_STEP_SECONDS);
    }

    #[test]
    fn ladder_shapes() {
        // The simulator's ladder for quantum q: boundaries q * 2^i, quanta [q, *boundaries].
        let (b, q) = SchedulerConfig::ladder(32.0, 7, 32.0).unwrap();
        assert_eq!(b, [32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]);
        assert_eq!(q, [32.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]);
        assert_eq!(
            SchedulerConfig::ladder(0.5, 1, 3.0).unwrap(),
            (vec![], vec![3.0])
        );
        let (b, q) = SchedulerConfig::ladder(1e-300, 255, 1.0).unwrap();
        assert_eq!((b.len(), q.len()), (254, 255));
        let config = SchedulerConfig {
            boundaries: b,
            quanta: q,
            ..SchedulerConfig::default()
        };
        config.validate().unwrap();
    }

    #[test]
    fn ladder_rejects_bad_input() {
        for (first, levels, top) in [
            (1.0, 0, 1.0),
            (1.0, 256, 1.0),
            (0.0, 7, 1.0),
            (-1.0, 7, 1.0),
            (f64::NAN, 7, 1.0),
            (f64::INFINITY, 7, 1.0),
            (1.0, 7, 0.0),
            (1.0, 7, f64::NAN),
            (1e307, 7, 1.0), // 1e307 * 2^5 overflows
        ] {
            assert!(
                matches!(
                    SchedulerConfig::ladder(first, levels, top),
                    Err(CoreError::InvalidConfig(_))
                ),
                "{first} {levels} {top}"
            );
        }
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
