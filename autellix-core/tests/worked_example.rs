//! The paper's worked example (section 11): max batch 2, all programs arrive at t = 0, each call of
//! a program arrives when the previous one finishes, time counted in decode steps.
//! Total waiting: FCFS 18, MLFQ 18, PLAS 12.

use autellix_core::{CallSpec, Capacity, PolicyKind, Scheduler, SchedulerConfig};

const PROGRAMS: [&[u32]; 4] = [&[4, 3, 1, 1], &[3, 3, 4], &[1, 2], &[4]];

fn total_waiting(policy: PolicyKind, quantum: f64) -> f64 {
    // One queue per decode step of attained service, the same quantum in every queue, no
    // anti-starvation: the paper's toy setting.
    let config = SchedulerConfig {
        policy,
        boundaries: (1..=32).map(f64::from).collect(),
        quanta: vec![quantum; 33],
        starvation_beta: None,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(config).unwrap();
    let cap = Capacity {
        max_running: 2,
        kv_tokens: 1 << 40,
    };
    let mut next = [0usize; 4]; // next call index per program
    let mut remaining = std::collections::HashMap::new(); // call -> steps left
    let call_id = |p: usize, i: usize| (p * 100 + i) as u64;
    for (p, calls) in PROGRAMS.iter().enumerate() {
        s.submit(&CallSpec::new(call_id(p, 0), p as u64), 0.0)
            .unwrap();
        remaining.insert(call_id(p, 0), calls[0]);
    }
    let mut waiting = 0.0;
    let mut t = 0.0;
    let mut running: Vec<u64> = Vec::new();
    loop {
        let mut finished = Vec::new();
        for id in &running {
            let left = remaining.get_mut(id).unwrap();
            *left -= 1;
            if *left == 0 {
                finished.push(*id);
            }
        }
        for &id in &finished {
            let c = s.call(id).unwrap();
            waiting += c.waiting_time(t);
            let p = c.program as usize;
            s.finish(id, t).unwrap();
            next[p] += 1;
            if let Some(&len) = PROGRAMS[p].get(next[p]) {
                let id = call_id(p, next[p]);
                s.submit(&CallSpec::new(id, p as u64), t).unwrap();
                remaining.insert(id, len);
            }
        }
        let d = s.schedule(0, t, cap).unwrap();
        running = d.running;
        if running.is_empty() {
            break;
        }
        t += 1.0;
    }
    waiting
}

#[test]
fn fcfs_waits_18() {
    assert_eq!(total_waiting(PolicyKind::Fcfs, 1.0), 18.0);
}

/// PLAS with quantum = queue width (one step): a call is re-ranked after every step by its
/// program's attained service, as in the paper's figure.
#[test]
fn plas_waits_12() {
    assert_eq!(total_waiting(PolicyKind::Plas, 1.0), 12.0);
}

/// The figure's MLFQ never time-slices a call (quantum >= the longest call): every new call
/// re-enters Q1 and FCFS order inside Q1 delays D, as in FCFS.
#[test]
fn mlfq_waits_18() {
    assert_eq!(total_waiting(PolicyKind::Mlfq, 4.0), 18.0);
}

/// With a one-step quantum MLFQ becomes call-level least-attained-service instead.
#[test]
fn mlfq_with_unit_quantum_time_slices() {
    assert_eq!(total_waiting(PolicyKind::Mlfq, 1.0), 11.0);
}
