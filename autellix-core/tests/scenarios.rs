//! Deterministic scenarios of the scheduling core, each a small story from the paper (sections
//! 3-6) with exact assertions. Times are in decode steps unless a test says otherwise.

// Each scenario is one story, told top to bottom.
#![allow(clippy::too_many_lines)]

use autellix_core::{
    CallId, CallSpec, CallState, Capacity, CoreError, PolicyKind, ProgramId, Scheduler,
    SchedulerConfig,
};

const HUGE: f64 = 1e9;

fn cap(max_running: u32) -> Capacity {
    Capacity {
        max_running,
        kv_tokens: u64::MAX,
    }
}

fn kv_cap(max_running: u32, kv_tokens: u64) -> Capacity {
    Capacity {
        max_running,
        kv_tokens,
    }
}

/// One queue per decode step of service (like the paper's toy figures), no anti-starvation.
fn per_step_config(policy: PolicyKind, quantum: f64) -> SchedulerConfig {
    SchedulerConfig {
        policy,
        boundaries: (1..=32).map(f64::from).collect(),
        quanta: vec![quantum; 33],
        starvation_beta: None,
        ..SchedulerConfig::default()
    }
}

/// Queues bounded by `boundaries`, quanta no call uses up, no anti-starvation: a call stays in
/// the queue it arrived in.
fn fixed_config(policy: PolicyKind, boundaries: &[f64]) -> SchedulerConfig {
    SchedulerConfig {
        policy,
        boundaries: boundaries.to_vec(),
        quanta: vec![HUGE; boundaries.len() + 1],
        starvation_beta: None,
        ..SchedulerConfig::default()
    }
}

fn sched(config: SchedulerConfig) -> Scheduler {
    Scheduler::new(config).unwrap()
}

fn submit(s: &mut Scheduler, call: CallId, program: ProgramId, now: f64) {
    s.submit(&CallSpec::new(call, program), now).unwrap();
}

fn submit_kv(s: &mut Scheduler, call: CallId, program: ProgramId, tokens: u64, now: f64) {
    let spec = CallSpec {
        prompt_tokens: tokens,
        ..CallSpec::new(call, program)
    };
    s.submit(&spec, now).unwrap();
}

fn state(s: &Scheduler, call: CallId) -> CallState {
    s.call(call).unwrap().state
}

fn level(s: &Scheduler, call: CallId) -> u8 {
    s.call(call).unwrap().level
}

/// Tick simulator in the style of `worked_example.rs`: every program arrives at t = 0 in the
/// given order; each call runs for the given number of decode steps and a program's next call
/// arrives when the previous one finishes. Returns each program's completion time.
fn completion_times(config: SchedulerConfig, programs: &[&[u32]], max_running: u32) -> Vec<f64> {
    let mut s = sched(config);
    let call_id = |p: usize, i: usize| (p * 100 + i) as CallId;
    let mut next = vec![0usize; programs.len()];
    let mut left = std::collections::HashMap::new();
    let mut done = vec![f64::NAN; programs.len()];
    for (p, calls) in programs.iter().enumerate() {
        submit(&mut s, call_id(p, 0), p as ProgramId, 0.0);
        left.insert(call_id(p, 0), calls[0]);
    }
    let mut t = 0.0;
    let mut running: Vec<CallId> = Vec::new();
    loop {
        let mut finished = Vec::new();
        for id in &running {
            let l = left.get_mut(id).unwrap();
            *l -= 1;
            if *l == 0 {
                finished.push(*id);
            }
        }
        // Finished calls are reported with the step; the next calls arrive right after it and
        // are scheduled from the next step on.
        let d = s.step(0, t, cap(max_running), &finished, &[]).unwrap();
        for id in finished {
            let p = (id / 100) as usize;
            next[p] += 1;
            if let Some(&len) = programs[p].get(next[p]) {
                let id = call_id(p, next[p]);
                submit(&mut s, id, p as ProgramId, t);
                left.insert(id, len);
            } else {
                done[p] = t;
            }
        }
        running = d.running;
        if running.is_empty() && s.table().num_live_calls() == 0 {
            break;
        }
        t += 1.0;
        assert!(t < 1000.0, "simulation does not terminate");
    }
    done
}

// ------------------------------------------------------------------------------ PLAS vs FCFS

/// One long program and four short ones, batch of one. PLAS lets every short program finish
/// before the long one (its calls drop to lower queues as it attains service); FCFS serves the
/// calls in arrival order and the long program finishes first. A finished call's successor
/// arrives right after the step that reports it (a one-step interrupt).
#[test]
fn plas_finishes_short_programs_before_a_long_one_fcfs_does_not() {
    let programs: [&[u32]; 5] = [&[4, 4], &[1, 1, 1], &[1, 1, 1], &[1, 1, 1], &[1, 1, 1]];
    let fcfs = completion_times(per_step_config(PolicyKind::Fcfs, 1.0), &programs, 1);
    let plas = completion_times(per_step_config(PolicyKind::Plas, 1.0), &programs, 1);
    let long_fcfs = fcfs[0];
    let long_plas = plas[0];
    let shorts_fcfs = &fcfs[1..];
    let shorts_plas = &plas[1..];
    assert!(
        shorts_plas.iter().all(|t| *t < long_plas),
        "PLAS: short programs {shorts_plas:?} should finish before the long one at {long_plas}"
    );
    assert!(
        shorts_fcfs.iter().all(|t| *t > long_fcfs),
        "FCFS: the long program at {long_fcfs} should finish before {shorts_fcfs:?}"
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(shorts_plas) < mean(shorts_fcfs));
    // The same total work is done either way.
    // Traced by hand: under PLAS the long program's first call is demoted after each step it
    // runs and only gets the slot when no short call is queued above it.
    assert_eq!(fcfs, vec![12.0, 17.0, 18.0, 19.0, 20.0]);
    assert_eq!(plas, vec![21.0, 12.0, 13.0, 14.0, 15.0]);
}

// ------------------------------------------------------------------------------ ATLAS

/// ATLAS: the parallel threads of a program all take the program's critical path on arrival, land
/// in the same queue and run together, ahead of an earlier call of a program with a longer
/// critical path. The critical path is the longest chain (root 2 + slowest thread 3 = 5), not the
/// summed service that PLAS would use (2 + 1 + 2 + 3 = 8).
#[test]
fn atlas_gang_schedules_a_programs_parallel_threads() {
    for policy in [PolicyKind::Atlas, PolicyKind::Plas] {
        let mut s = sched(fixed_config(policy, &[1.0, 2.0, 4.0, 8.0, 16.0]));
        let (a, b) = (1, 2);
        // Roots: A's runs for 2 steps, B's for 5.
        submit(&mut s, 10, a, 0.0);
        submit(&mut s, 20, b, 0.0);
        assert_eq!(s.schedule(0, 0.0, cap(8)).unwrap().admitted, vec![10, 20]);
        s.finish(10, 2.0).unwrap();
        s.finish(20, 5.0).unwrap();
        // B's next call arrives first, then A forks three threads off its root.
        submit(&mut s, 21, b, 6.0);
        let root: &[CallId] = &[10];
        for (call, thread) in [(11, 1), (12, 2), (13, 3)] {
            let spec = CallSpec {
                thread,
                parents: Some(root),
                ..CallSpec::new(call, a)
            };
            s.submit(&spec, 6.0).unwrap();
        }
        for call in [11, 12, 13] {
            let c = s.call(call).unwrap();
            assert_eq!(
                c.priority, 2.0,
                "{policy}: every thread of A takes A's value"
            );
            assert_eq!(c.level, 2);
            assert_eq!(c.path_start, 2.0);
        }
        assert_eq!(level(&s, 21), 3);
        assert_eq!(s.queue_depths(0), vec![0, 0, 3, 1, 0, 0]);
        let d = s.schedule(0, 6.0, cap(3)).unwrap();
        assert_eq!(
            d.running,
            vec![11, 12, 13],
            "{policy}: A's threads run together"
        );
        assert_eq!(state(&s, 21), CallState::Waiting);
        s.finish(11, 7.0).unwrap();
        s.finish(12, 8.0).unwrap();
        s.finish(13, 9.0).unwrap();
        let program = s.program(a).unwrap();
        assert_eq!(program.critical_path, 5.0);
        assert_eq!(program.attained_service, 8.0);
        assert_eq!(program.thread_count(), 4);
        // The join call starts at the end of the longest thread.
        let threads: &[CallId] = &[11, 12, 13];
        let join = CallSpec {
            parents: Some(threads),
            ..CallSpec::new(14, a)
        };
        s.submit(&join, 9.0).unwrap();
        let join = s.call(14).unwrap();
        assert_eq!(join.path_start, 5.0);
        let expected = if policy == PolicyKind::Atlas {
            5.0
        } else {
            8.0
        };
        assert_eq!(join.priority, expected, "{policy}");
    }

    // The same arrivals under FCFS: B's earlier call runs first and A's threads are split.
    let mut s = sched(fixed_config(PolicyKind::Fcfs, &[1.0]));
    submit(&mut s, 21, 2, 6.0);
    for call in [11, 12, 13] {
        submit(&mut s, call, 1, 6.0);
    }
    assert_eq!(
        s.schedule(0, 6.0, cap(3)).unwrap().running,
        vec![21, 11, 12]
    );
}

/// Implicit parents (the previous call of the same thread) and explicit ones, including parents
/// still running, finished, submitted earlier in the same batch, or none at all.
#[test]
fn implicit_thread_parents_and_explicit_parents_build_the_critical_path() {
    let mut s = sched(fixed_config(PolicyKind::Atlas, &[1.0, 2.0, 4.0, 8.0]));
    let p = 7;
    let on = |call: CallId, thread: u64, parents: Option<&'static [CallId]>| CallSpec {
        thread,
        parents,
        ..CallSpec::new(call, p)
    };
    // Thread 0: c1 runs 0..2.
    s.submit(&on(1, 0, None), 0.0).unwrap();
    s.schedule(0, 0.0, cap(8)).unwrap();
    s.finish(1, 2.0).unwrap();
    // c2 on thread 0: implicit parent c1. c3 on a new thread 1: a root.
    s.submit(&on(2, 0, None), 2.0).unwrap();
    s.submit(&on(3, 1, None), 2.0).unwrap();
    assert_eq!(s.call(2).unwrap().path_start, 2.0);
    assert_eq!(s.call(3).unwrap().path_start, 0.0);
    s.schedule(0, 2.0, cap(8)).unwrap();
    s.finish(3, 3.0).unwrap(); // c3: path 0 -> 1
    // A parent still running counts with its service so far: c2 has run 1.5 of its steps.
    s.submit(&on(4, 2, Some(&[2])), 3.5).unwrap();
    assert_eq!(s.call(4).unwrap().path_start, 3.5);
    // Explicit parents override the thread: c5 on thread 0 depends only on c3.
    s.submit(&on(5, 0, Some(&[3])), 3.5).unwrap();
    assert_eq!(s.call(5).unwrap().path_start, 1.0);
    // An explicit empty list is a root, even on a thread with history.
    s.submit(&on(6, 0, Some(&[])), 3.5).unwrap();
    assert_eq!(s.call(6).unwrap().path_start, 0.0);
    // The thread's implicit parent is now its latest call, c6 (waiting: path 0 + 0).
    s.submit(&on(7, 0, None), 3.5).unwrap();
    assert_eq!(s.call(7).unwrap().path_start, 0.0);
    // Several parents: the longest wins. c1 ended at 2, c3 at 1.
    s.submit(&on(8, 3, Some(&[3, 1])), 3.5).unwrap();
    assert_eq!(s.call(8).unwrap().path_start, 2.0);
    // A parent submitted earlier in the same batch.
    let batch = [on(9, 4, None), on(10, 5, Some(&[9])), on(11, 4, None)];
    s.submit_many(&batch, 3.5).unwrap();
    assert_eq!(s.call(10).unwrap().path_start, 0.0);
    assert_eq!(s.call(11).unwrap().path_start, 0.0);
    // c2 finishes at 5 (path 2 + 3 = 5): the program's critical path is the longest chain.
    s.finish(2, 5.0).unwrap();
    let program = s.program(p).unwrap();
    assert_eq!(program.critical_path, 5.0);
    assert_eq!(program.attained_service, 2.0 + 1.0 + 3.0);
    // A new call of the program takes the critical path as its ATLAS priority.
    s.submit(&on(12, 9, None), 6.0).unwrap();
    let c = s.call(12).unwrap();
    assert_eq!((c.priority, c.level), (5.0, 3));
}

// ------------------------------------------------------------------------------ MLFQ mechanics

/// A running call is demoted one queue each time it uses up its queue's quantum (quanta 1, 2, 4,
/// 8), and stays in the bottom queue; a long gap between steps demotes it once per quantum used.
#[test]
fn quantum_demotion_moves_a_running_call_down_one_queue_per_quantum() {
    let config = SchedulerConfig {
        policy: PolicyKind::Mlfq,
        boundaries: vec![1.0, 2.0, 3.0],
        quanta: vec![1.0, 2.0, 4.0, 8.0],
        starvation_beta: None,
        ..SchedulerConfig::default()
    };
    let mut s = sched(config.clone());
    submit(&mut s, 1, 1, 0.0);
    assert_eq!(s.schedule(0, 0.0, cap(1)).unwrap().admitted, vec![1]);
    // (time, expected level, demotions reported by that step)
    let expected = [
        (0.5, 0, 0),
        (1.0, 1, 1),
        (2.5, 1, 0),
        (3.0, 2, 1),
        (6.75, 2, 0),
        (7.0, 3, 1),
        (14.0, 3, 0),
        (15.0, 3, 0), // the bottom queue's quantum renews: not a demotion
    ];
    for (t, lvl, demoted) in expected {
        let d = s.schedule(0, t, cap(1)).unwrap();
        assert_eq!(d.running, vec![1]);
        assert_eq!((level(&s, 1), d.demoted), (lvl, demoted), "at {t}");
    }
    assert_eq!(s.call(1).unwrap().service(14.0), 14.0);

    // A gap: nothing steps between 0 and 3.5, the call used up the quanta of queues 0 and 1.
    let mut s = sched(config.clone());
    submit(&mut s, 1, 1, 0.0);
    s.schedule(0, 0.0, cap(1)).unwrap();
    let d = s.schedule(0, 3.5, cap(1)).unwrap();
    assert_eq!((level(&s, 1), d.demoted), (2, 2));

    // A preempted call keeps the rest of its quantum: 0.5 used, 0.5 left after readmission.
    let mut s = sched(config);
    submit(&mut s, 1, 1, 0.0);
    s.schedule(0, 0.0, cap(1)).unwrap();
    s.preempt(1, 0.5).unwrap();
    assert_eq!(level(&s, 1), 0);
    s.schedule(0, 3.0, cap(1)).unwrap(); // readmitted at 3
    assert_eq!(s.schedule(0, 3.25, cap(1)).unwrap().demoted, 0);
    assert_eq!(level(&s, 1), 0);
    assert_eq!(s.schedule(0, 3.5, cap(1)).unwrap().demoted, 1);
    assert_eq!(level(&s, 1), 1);
    // An engine-side preemption after the quantum ran out demotes as well.
    s.preempt(1, 10.0).unwrap();
    assert_eq!(level(&s, 1), 3);
    assert_eq!(state(&s, 1), CallState::Preempted);
}

/// MLFQ (new calls start in the top queue): a call that used up its quantum is preempted by a
/// newer top-queue call once the batch is full, and runs again when the batch has room.
#[test]
fn mlfq_time_slices_a_long_call_against_new_ones() {
    let config = SchedulerConfig {
        policy: PolicyKind::Mlfq,
        boundaries: vec![1.0],
        quanta: vec![1.0, 100.0],
        starvation_beta: None,
        ..SchedulerConfig::default()
    };
    let mut s = sched(config);
    submit(&mut s, 1, 1, 0.0);
    s.schedule(0, 0.0, cap(1)).unwrap();
    submit(&mut s, 2, 2, 0.5);
    // Before its quantum is used up the running call keeps its slot.
    assert_eq!(s.schedule(0, 0.5, cap(1)).unwrap().running, vec![1]);
    let d = s.schedule(0, 1.0, cap(1)).unwrap();
    assert_eq!((d.running, d.preempted, d.demoted), (vec![2], vec![1], 1));
    s.finish(2, 1.5).unwrap();
    let d = s.schedule(0, 1.5, cap(1)).unwrap();
    assert_eq!(d.admitted, vec![1]);
}

// ------------------------------------------------------------------------------ anti-starvation

/// PLAS with beta = 2: program L attained 4 steps of service, so its next call enters a low queue
/// and a stream of new short programs keeps the single slot busy. Once
/// `(W_p + W_c) / (max(floor, T_p) + T_c)` reaches 2, the call is promoted to the top queue and runs
/// before the short calls that arrive after its promotion. The program's own waiting `W_p` counts:
/// when L's first call waited 2 steps, the second is promoted 2 steps of its own waiting sooner.
/// Without anti-starvation the call never runs.
#[test]
fn anti_starvation_promotes_a_long_waiting_call_to_the_top_queue() {
    for (first_wait, beta) in [(0.0, Some(2.0)), (2.0, Some(2.0)), (0.0, None)] {
        let config = SchedulerConfig {
            policy: PolicyKind::Plas,
            boundaries: vec![1.0, 2.0, 4.0],
            quanta: vec![HUGE; 4],
            starvation_beta: beta,
            service_floor: 0.25,
            ..SchedulerConfig::default()
        };
        let mut s = sched(config);
        let long = 1;
        submit(&mut s, 100, long, 0.0);
        if first_wait > 0.0 {
            assert!(s.schedule(0, 0.0, cap(0)).unwrap().running.is_empty());
        }
        assert_eq!(
            s.schedule(0, first_wait, cap(1)).unwrap().admitted,
            vec![100]
        );
        let t0 = first_wait + 4.0;
        s.finish(100, t0).unwrap();
        let program = s.program(long).unwrap();
        assert_eq!(
            (program.attained_service, program.waiting_time),
            (4.0, first_wait)
        );
        submit(&mut s, 101, long, t0);
        assert_eq!(level(&s, 101), 3);
        // Deadline: W_p + W_c >= 2 * T_p, i.e. first_wait + (t - t0) >= 8.
        let due = t0 + 8.0 - first_wait;
        let mut short = 1_000;
        let mut promoted_at = None;
        let mut admitted_at = None;
        let mut running: Vec<CallId> = Vec::new();
        submit(&mut s, short, short, t0);
        short += 1;
        let mut t = t0;
        while t <= 40.0 {
            // Every step, the running short call finishes and a new short program arrives.
            let finished: Vec<CallId> = running.iter().copied().filter(|c| *c != 101).collect();
            let d = s.step(0, t, cap(1), &finished, &[]).unwrap();
            if d.promoted > 0 {
                assert_eq!(d.promoted, 1);
                promoted_at = Some(t);
            }
            if level(&s, 101) > 0 && beta.is_some() {
                assert!(
                    t < due,
                    "still in queue 3 at {t}, due at {due} ({first_wait})"
                );
            }
            if d.admitted.contains(&101) {
                admitted_at = Some(t);
                break;
            }
            running = d.running;
            submit(&mut s, short, short, t);
            short += 1;
            t += 1.0;
        }
        if beta.is_some() {
            assert_eq!(promoted_at, Some(due), "first wait {first_wait}");
            // The short call queued before the promotion goes first; then the promoted call.
            assert_eq!(admitted_at, Some(due + 1.0));
            assert_eq!(due, 12.0);
        } else {
            assert_eq!((promoted_at, admitted_at), (None, None));
            assert_eq!(level(&s, 101), 3);
        }
    }
}

// ------------------------------------------------------------------------------ preemption

/// A preempted call goes back to its FCFS position, ahead of calls that arrived after it
/// (vLLM #41951), whether the engine preempted it or the batch shrank.
#[test]
fn a_preempted_call_keeps_its_fcfs_position() {
    for policy in [PolicyKind::Fcfs, PolicyKind::Plas] {
        let mut s = sched(fixed_config(policy, &[1.0]));
        for call in 1..=4 {
            submit(&mut s, call, call, 0.0);
        }
        assert_eq!(s.schedule(0, 0.0, cap(2)).unwrap().running, vec![1, 2]);
        // The engine preempts call 2 (KV cache ran out).
        s.preempt(2, 1.0).unwrap();
        assert_eq!(state(&s, 2), CallState::Preempted);
        assert_eq!(s.engine_load(0), (1, 3));
        let d = s.schedule(0, 1.0, cap(2)).unwrap();
        assert_eq!((d.running, d.admitted), (vec![1, 2], vec![2]), "{policy}");
        // The batch shrinks to one: the later of the two running calls is preempted...
        let d = s.schedule(0, 2.0, cap(1)).unwrap();
        assert_eq!((d.running, d.preempted), (vec![1], vec![2]));
        // ...and comes back first, before calls 3 and 4 that were submitted after it.
        let d = s.schedule(0, 3.0, cap(3)).unwrap();
        assert_eq!((d.running, d.admitted), (vec![1, 2, 3], vec![2, 3]));
        let c = s.call(2).unwrap();
        // Ran 0..1 and 1..2, waited 2..3.
        assert_eq!((c.service(3.0), c.waiting_time(3.0)), (2.0, 1.0));
        // Call 4 still waits, behind everyone.
        assert_eq!(s.queue_depths(0).iter().sum::<u32>(), 1);
    }
}

/// With a full batch, a waiting call of a better queue preempts a running call of a worse one; a
/// waiting call of the same queue does not displace a running one.
#[test]
fn a_better_queue_preempts_a_running_call_but_the_same_queue_does_not() {
    let mut s = sched(fixed_config(PolicyKind::Plas, &[1.0]));
    // Program X attains 2 steps: its next call is in queue 1.
    submit(&mut s, 1, 10, 0.0);
    s.schedule(0, 0.0, cap(1)).unwrap();
    s.finish(1, 2.0).unwrap();
    submit(&mut s, 2, 10, 2.0);
    assert_eq!(level(&s, 2), 1);
    assert_eq!(s.schedule(0, 2.0, cap(1)).unwrap().running, vec![2]);
    // A new program's call (queue 0) arrives: it takes the slot.
    submit(&mut s, 3, 20, 3.0);
    let d = s.schedule(0, 3.0, cap(1)).unwrap();
    assert_eq!(
        (&d.running, &d.admitted, &d.preempted),
        (&vec![3], &vec![3], &vec![2])
    );
    assert_eq!(state(&s, 2), CallState::Preempted);
    // Another new program (queue 0 as well) waits: same queue, no preemption.
    submit(&mut s, 4, 30, 4.0);
    let d = s.schedule(0, 4.0, cap(1)).unwrap();
    assert_eq!(d.running, vec![3]);
    assert!(d.preempted.is_empty() && d.admitted.is_empty());
    // Call 2 also waits while queue 1 has a running call: same queue, later queued.
    let d = s.schedule(0, 5.0, cap(3)).unwrap();
    assert_eq!(d.running, vec![3, 4, 2]);
    submit(&mut s, 5, 10, 6.0); // program X again: queue 1, behind running call 2
    assert_eq!(level(&s, 5), 1);
    let d = s.schedule(0, 6.0, cap(3)).unwrap();
    assert_eq!(d.running, vec![3, 4, 2]);
    assert_eq!(state(&s, 5), CallState::Waiting);
}

// ------------------------------------------------------------------------------ KV budget

/// Batch formation stops at the first call that does not fit (no backfilling), skips and reports a
/// call that could never fit, and preempts a running call whose KV grew past the budget.
#[test]
fn kv_budget_stops_at_the_first_call_that_does_not_fit() {
    // 60 + 50 > 100: call 2 does not fit, and call 3 (10) is not backfilled.
    let mut s = sched(fixed_config(PolicyKind::Fcfs, &[1.0]));
    submit_kv(&mut s, 1, 1, 60, 0.0);
    submit_kv(&mut s, 2, 2, 50, 0.0);
    submit_kv(&mut s, 3, 3, 10, 0.0);
    let d = s.schedule(0, 0.0, kv_cap(10, 100)).unwrap();
    assert_eq!(d.running, vec![1]);
    assert!(d.too_large.is_empty());
    // An exact fit is admitted (60 + 40 = 100), then a zero-token call, but not one more token.
    let mut s = sched(fixed_config(PolicyKind::Fcfs, &[1.0]));
    submit_kv(&mut s, 1, 1, 60, 0.0);
    submit_kv(&mut s, 2, 2, 40, 0.0);
    submit_kv(&mut s, 3, 3, 0, 0.0);
    submit_kv(&mut s, 4, 4, 1, 0.0);
    let d = s.schedule(0, 0.0, kv_cap(10, 100)).unwrap();
    assert_eq!(d.running, vec![1, 2, 3], "a zero-token call still fits");

    // A call larger than the whole budget is reported and skipped; the walk goes on.
    let mut s = sched(fixed_config(PolicyKind::Fcfs, &[1.0]));
    submit_kv(&mut s, 1, 1, 150, 0.0);
    submit_kv(&mut s, 2, 2, 60, 0.0);
    submit_kv(&mut s, 3, 3, 30, 0.0);
    submit_kv(&mut s, 4, 4, 20, 0.0);
    let d = s.schedule(0, 0.0, kv_cap(10, 100)).unwrap();
    assert_eq!((&d.running, &d.too_large), (&vec![2, 3], &vec![1]));
    assert_eq!(state(&s, 1), CallState::Waiting);
    // Call 2 generates 15 tokens (75 + 30 > 100 now): call 3 is preempted, no backfill of 4.
    let d = s.step(0, 1.0, kv_cap(10, 100), &[], &[(2, 15)]).unwrap();
    assert_eq!((&d.running, &d.preempted), (&vec![2], &vec![3]));
    assert_eq!(s.call(2).unwrap().kv_tokens(), 75);
    // Call 2 grows past the budget itself: reported too large, preempted; 3 and 4 run.
    s.add_tokens(2, 30).unwrap();
    let d = s.step(0, 2.0, kv_cap(10, 100), &[], &[]).unwrap();
    assert_eq!(d.too_large, vec![2, 1], "running calls are visited first");
    assert_eq!((&d.running, &d.preempted), (&vec![3, 4], &vec![2]));
    // A full batch ends the walk before the too-large call is reached.
    let d = s.step(0, 3.0, kv_cap(0, 100), &[], &[]).unwrap();
    assert!(d.running.is_empty() && d.too_large.is_empty());
    assert_eq!(d.preempted.len(), 2);
    assert_eq!(s.engine_load(0), (0, 4));
}

/// The KV budget must not overflow: with an unbounded budget (`u64::MAX`) two calls of 2^63
/// tokens each do not both fit (their sum is 2^64). (Computed as `tokens + need` in u64, this
/// panicked in debug builds and admitted both in release builds.)
#[test]
fn kv_budget_arithmetic_does_not_overflow() {
    let mut s = sched(fixed_config(PolicyKind::Fcfs, &[1.0]));
    let half = 1u64 << 63;
    submit_kv(&mut s, 1, 1, half, 0.0);
    submit_kv(&mut s, 2, 2, half, 0.0);
    let d = s.schedule(0, 0.0, kv_cap(10, u64::MAX)).unwrap();
    assert_eq!(
        d.running,
        vec![1],
        "2^63 + 2^63 tokens exceed a budget of 2^64 - 1"
    );
}

// ------------------------------------------------------------------------------ program lifetime

/// A program without live calls is forgotten `program_ttl` after its last call ended (with its
/// finished calls, whose ids become free); new activity restarts the clock; a program with a live
/// call is never collected. `step` collects too.
#[test]
fn idle_programs_are_garbage_collected_after_the_ttl() {
    let config = SchedulerConfig {
        program_ttl: 10.0,
        ..fixed_config(PolicyKind::Plas, &[1.0])
    };
    let mut s = sched(config);
    submit(&mut s, 1, 1, 0.0); // program 1: one call, done at 5
    submit(&mut s, 2, 2, 0.0); // program 2: done at 5, then active again at 12
    submit(&mut s, 3, 3, 0.0); // program 3: a call that never finishes
    s.schedule(0, 0.0, cap(2)).unwrap();
    s.finish(1, 5.0).unwrap();
    s.finish(2, 5.0).unwrap();
    assert_eq!(s.program(1).unwrap().last_completion, Some(5.0));
    submit(&mut s, 4, 2, 12.0);
    assert_eq!(s.collect_garbage(14.75).unwrap(), Vec::<ProgramId>::new());
    assert_eq!(s.collect_garbage(15.0).unwrap(), vec![1]);
    assert_eq!(s.program(1).err(), Some(CoreError::UnknownProgram(1)));
    assert!(!s.table().knows_call(1));
    // The id of a forgotten finished call is free again; a new program 1 starts from scratch.
    submit(&mut s, 1, 1, 15.0);
    assert_eq!(s.program(1).unwrap().attained_service, 0.0);
    s.abort(1, 15.0).unwrap();
    s.schedule(0, 15.0, cap(3)).unwrap();
    s.finish(4, 16.0).unwrap(); // program 2 idle again from 16
    assert_eq!(s.collect_garbage(25.75).unwrap(), vec![1]);
    assert!(s.program(2).is_ok());
    let d = s.schedule(0, 26.0, cap(3)).unwrap();
    assert_eq!(d.expired_programs, vec![2]);
    assert_eq!(d.running, vec![3]);
    // Program 3 is never idle.
    assert!(
        s.schedule(0, 1e6, cap(3))
            .unwrap()
            .expired_programs
            .is_empty()
    );
    assert!(s.program(3).is_ok());
    assert_eq!(s.table().num_programs(), 1);

    // With a TTL of 0 a program goes in the very step its last call finishes.
    let config = SchedulerConfig {
        program_ttl: 0.0,
        ..fixed_config(PolicyKind::Plas, &[1.0])
    };
    let mut s = sched(config);
    submit(&mut s, 1, 9, 0.0);
    s.schedule(0, 0.0, cap(1)).unwrap();
    let d = s.step(0, 1.0, cap(1), &[1], &[]).unwrap();
    assert_eq!(d.expired_programs, vec![9]);
    assert_eq!(s.table().num_programs(), 0);
}

/// `end_program` aborts the program's live calls (returned in submission order so the engine can
/// drop them), frees the engine's slots, forgets the program and its finished calls, and leaves
/// other programs alone.
#[test]
fn end_program_aborts_its_live_calls_and_forgets_it() {
    let mut s = sched(fixed_config(PolicyKind::Plas, &[1.0]));
    submit(&mut s, 1, 1, 0.0);
    s.schedule(0, 0.0, cap(1)).unwrap();
    s.finish(1, 1.0).unwrap();
    submit(&mut s, 2, 1, 1.0);
    submit(&mut s, 3, 2, 1.0); // another program
    submit(&mut s, 4, 1, 1.0);
    let spec = CallSpec {
        engine: 1,
        thread: 1,
        ..CallSpec::new(5, 1)
    };
    s.submit(&spec, 1.0).unwrap();
    let d = s.schedule(0, 1.0, cap(1)).unwrap();
    assert_eq!(d.running, vec![3], "program 2 has attained nothing");
    let d = s.schedule(0, 2.0, cap(2)).unwrap();
    assert_eq!(d.running, vec![3, 2]);
    assert_eq!(s.end_program(1, 3.0).unwrap(), vec![2, 4, 5]);
    assert_eq!(s.program(1).err(), Some(CoreError::UnknownProgram(1)));
    for call in [1, 2, 4, 5] {
        assert_eq!(s.call(call).err(), Some(CoreError::UnknownCall(call)));
        assert!(!s.table().knows_call(call));
    }
    assert_eq!(s.engine_load(0), (1, 0));
    assert_eq!(s.engine_load(1), (0, 0));
    assert_eq!(s.schedule(0, 3.0, cap(2)).unwrap().running, vec![3]);
    assert_eq!(
        s.end_program(1, 3.0),
        Err(CoreError::UnknownProgram(1)),
        "ending twice"
    );
    // The ended program's ids are free again.
    submit(&mut s, 2, 1, 4.0);
    assert_eq!(s.program(1).unwrap().attained_service, 0.0);
}

/// Aborting a thread's latest call: the thread's next call descends from the aborted call's
/// predecessor (its `thread_prev`); a thread whose only call was aborted starts over from a root.
#[test]
fn after_an_abort_a_thread_continues_from_the_previous_call() {
    let mut s = sched(fixed_config(PolicyKind::Atlas, &[1.0]));
    let on = |call: CallId, thread: u64| CallSpec {
        thread,
        ..CallSpec::new(call, 1)
    };
    s.submit(&on(1, 0), 0.0).unwrap();
    s.schedule(0, 0.0, cap(4)).unwrap();
    s.finish(1, 2.0).unwrap(); // thread 0: c1 ends its path at 2
    s.submit(&on(2, 0), 2.0).unwrap();
    assert_eq!(s.call(2).unwrap().thread_prev, Some(1));
    s.schedule(0, 2.0, cap(4)).unwrap();
    s.abort(2, 5.0).unwrap(); // ran 3 steps, then aborted
    s.submit(&on(3, 0), 5.0).unwrap();
    let c = s.call(3).unwrap();
    assert_eq!((c.thread_prev, c.path_start), (Some(1), 2.0));
    // The aborted call's service still counts for the program (and its critical path).
    let p = s.program(1).unwrap();
    assert_eq!((p.attained_service, p.critical_path), (5.0, 5.0));
    // Thread 1's only call is aborted: its next call is a root.
    s.submit(&on(10, 1), 5.0).unwrap();
    s.abort(10, 5.0).unwrap();
    s.submit(&on(11, 1), 5.0).unwrap();
    let c = s.call(11).unwrap();
    assert_eq!((c.thread_prev, c.path_start), (None, 0.0));
}

/// An aborted call is forgotten, so its id may be used again. If the aborted call was the only
/// call of its thread (no `thread_prev`), `retire` leaves the thread's entry pointing at the
/// forgotten id; `insert_call` only checks that the id belongs to the same program
/// (`program_of`), so once the id is reused by a call of that program on *another* thread, the
/// old thread's next call takes that unrelated call as its implicit parent (wrong `thread_prev`
/// and `path_start`, hence a wrong ATLAS critical path). Expected: a root, as in
/// `after_an_abort_a_thread_continues_from_the_previous_call`.
#[test]
fn a_reused_id_never_becomes_another_threads_implicit_parent() {
    let mut s = sched(fixed_config(PolicyKind::Atlas, &[1.0]));
    let on = |call: CallId, thread: u64| CallSpec {
        thread,
        ..CallSpec::new(call, 1)
    };
    s.submit(&on(1, 0), 0.0).unwrap();
    s.submit(&on(9, 5), 0.0).unwrap(); // keeps program 1 alive
    s.abort(1, 0.0).unwrap();
    assert!(!s.table().knows_call(1));
    // Id 1 again, same program, thread 7: runs 0..3.
    s.submit(&on(1, 7), 0.0).unwrap();
    s.schedule(0, 0.0, cap(4)).unwrap();
    s.finish(1, 3.0).unwrap();
    // Thread 0's next call: thread 0 never completed a call, so it is a root.
    s.submit(&on(2, 0), 3.0).unwrap();
    let c = s.call(2).unwrap();
    assert_eq!((c.thread_prev, c.path_start), (None, 0.0));
}

/// An aborted call's service and waiting still count for its program, and it is forgotten at once.
#[test]
fn an_aborted_call_still_charges_its_program() {
    let mut s = sched(fixed_config(PolicyKind::Plas, &[1.0]));
    submit(&mut s, 1, 1, 0.0);
    s.schedule(0, 1.0, cap(1)).unwrap();
    s.abort(1, 4.0).unwrap();
    let p = s.program(1).unwrap();
    assert_eq!((p.attained_service, p.waiting_time), (3.0, 1.0));
    assert_eq!((p.active_calls, p.finished_calls), (0, 0));
    assert!(!s.table().knows_call(1));
    submit(&mut s, 2, 1, 4.0);
    assert_eq!(s.call(2).unwrap().priority, 3.0);
}

// ------------------------------------------------------------------------------ engines and time

/// Engines are independent: a step on one engine neither admits nor preempts another engine's
/// calls, and a step on an engine never given a call decides nothing.
#[test]
fn engines_are_scheduled_independently() {
    let mut s = sched(fixed_config(PolicyKind::Fcfs, &[1.0]));
    for (call, engine) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
        let spec = CallSpec {
            engine,
            ..CallSpec::new(call, call)
        };
        s.submit(&spec, 0.0).unwrap();
    }
    assert_eq!(s.engines(), vec![0, 1]);
    assert_eq!(s.schedule(0, 0.0, cap(8)).unwrap().running, vec![1, 3]);
    assert_eq!(s.engine_load(1), (0, 2));
    assert_eq!(s.schedule(1, 0.0, cap(1)).unwrap().running, vec![2]);
    assert_eq!(s.engine_load(0), (2, 0));
    let d = s.schedule(7, 1.0, cap(8)).unwrap();
    assert_eq!(d, autellix_core::Decision::default());
    assert_eq!(s.engine_load(7), (0, 0));
    assert_eq!(s.queue_depths(7), vec![0, 0]);
    assert_eq!(s.engines(), vec![0, 1]);
    // Finishing on the wrong engine is refused.
    assert!(matches!(
        s.step(1, 1.0, cap(8), &[1], &[]),
        Err(CoreError::InvalidArgument(_))
    ));
}

/// Time never goes backwards: an earlier time reads as the latest one seen; a non-finite one is
/// refused.
#[test]
fn earlier_times_read_as_the_latest_time() {
    let mut s = sched(fixed_config(PolicyKind::Plas, &[1.0]));
    submit(&mut s, 1, 1, 5.0);
    submit(&mut s, 2, 1, 3.0);
    assert_eq!(s.call(2).unwrap().arrival, 5.0);
    s.schedule(0, 4.0, cap(2)).unwrap();
    assert_eq!(s.now(), 5.0);
    s.finish(1, 2.0).unwrap();
    assert_eq!(s.program(1).unwrap().attained_service, 0.0);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            s.schedule(0, bad, cap(2)),
            Err(CoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            s.submit(&CallSpec::new(3, 1), bad),
            Err(CoreError::InvalidArgument(_))
        ));
    }
    assert_eq!(s.now(), 5.0);
    assert!(!s.table().knows_call(3));
}

// ------------------------------------------------------------------------------ errors

/// Submission errors: duplicates (live, finished, inside a batch), self and foreign parents,
/// unknown and aborted parents; a failing batch inserts nothing.
#[test]
fn submission_errors_are_reported_and_insert_nothing() {
    let mut s = sched(fixed_config(PolicyKind::Atlas, &[1.0]));
    submit(&mut s, 1, 1, 0.0);
    submit(&mut s, 2, 2, 0.0);
    s.schedule(0, 0.0, cap(8)).unwrap();
    s.finish(2, 1.0).unwrap();
    submit(&mut s, 3, 1, 1.0);
    s.abort(3, 1.0).unwrap();
    let with = |call: CallId, program: ProgramId, parents: &'static [CallId]| CallSpec {
        parents: Some(parents),
        ..CallSpec::new(call, program)
    };
    let cases: Vec<(Vec<CallSpec<'static>>, CoreError)> = vec![
        (vec![CallSpec::new(1, 5)], CoreError::DuplicateCall(1)),
        (vec![CallSpec::new(2, 2)], CoreError::DuplicateCall(2)),
        (
            vec![CallSpec::new(9, 1), CallSpec::new(9, 1)],
            CoreError::DuplicateCall(9),
        ),
        (
            vec![CallSpec::new(9, 7), CallSpec::new(1, 7)],
            CoreError::DuplicateCall(1),
        ),
        (vec![with(9, 1, &[9])], CoreError::CyclicParents(9)),
        (
            vec![with(9, 1, &[2])],
            CoreError::ForeignParent {
                call: 9,
                parent: 2,
                program: 1,
                parent_program: 2,
            },
        ),
        (
            vec![CallSpec::new(8, 3), with(9, 4, &[8])],
            CoreError::ForeignParent {
                call: 9,
                parent: 8,
                program: 4,
                parent_program: 3,
            },
        ),
        (vec![with(9, 1, &[42])], CoreError::UnknownCall(42)),
        (vec![with(9, 1, &[3])], CoreError::UnknownCall(3)),
    ];
    for (specs, expected) in cases {
        assert_eq!(s.submit_many(&specs, 2.0), Err(expected));
        assert!(!s.table().knows_call(9) && !s.table().knows_call(8));
        assert_eq!(s.table().num_programs(), 2, "no program created");
        assert_eq!(s.now(), 1.0, "the clock did not move");
    }
    // Transitions.
    submit(&mut s, 4, 1, 1.0);
    assert!(matches!(
        s.finish(4, 1.0),
        Err(CoreError::InvalidTransition {
            call: 4,
            state: CallState::Waiting,
            ..
        })
    ));
    assert!(matches!(
        s.preempt(4, 1.0),
        Err(CoreError::InvalidTransition {
            call: 4,
            state: CallState::Waiting,
            ..
        })
    ));
    assert!(matches!(
        s.step(0, 1.0, cap(8), &[4], &[]),
        Err(CoreError::InvalidTransition { call: 4, .. })
    ));
    assert!(matches!(
        s.step(0, 1.0, cap(8), &[1, 1], &[]),
        Err(CoreError::InvalidArgument(_))
    ));
    assert_eq!(s.finish(2, 1.0), Err(CoreError::UnknownCall(2)));
    assert_eq!(s.abort(3, 1.0), Err(CoreError::UnknownCall(3)));
    assert_eq!(s.add_tokens(3, 1), Err(CoreError::UnknownCall(3)));
    assert_eq!(s.end_program(99, 1.0), Err(CoreError::UnknownProgram(99)));
    assert_eq!(state(&s, 1), CallState::Running);
}

/// Parents must be submitted before their children: a parent later in the same batch is not known
/// yet and is reported as an unknown parent (only naming oneself is `CyclicParents`).
#[test]
fn a_parent_later_in_the_same_batch_is_unknown() {
    let mut s = sched(fixed_config(PolicyKind::Atlas, &[1.0]));
    let later: &[CallId] = &[2];
    let batch = [
        CallSpec {
            parents: Some(later),
            ..CallSpec::new(1, 1)
        },
        CallSpec::new(2, 1),
    ];
    assert_eq!(s.submit_many(&batch, 0.0), Err(CoreError::UnknownCall(2)));
    assert_eq!(s.table().num_programs(), 0);
}

/// Every field is validated; the scheduler refuses a config that does not pass.
#[test]
fn invalid_configs_are_refused() {
    let base = SchedulerConfig::default();
    let bad = [
        SchedulerConfig {
            quanta: vec![],
            boundaries: vec![],
            ..base.clone()
        },
        SchedulerConfig {
            quanta: vec![1.0; 256],
            boundaries: (1..=255).map(f64::from).collect(),
            ..base.clone()
        },
        SchedulerConfig {
            boundaries: vec![1.0],
            ..base.clone()
        },
        SchedulerConfig {
            boundaries: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            ..base.clone()
        },
        SchedulerConfig {
            boundaries: vec![1.0, 2.0, 2.0, 3.0, 4.0, 5.0],
            ..base.clone()
        },
        SchedulerConfig {
            boundaries: vec![2.0, 1.0, 3.0, 4.0, 5.0, 6.0],
            ..base.clone()
        },
        SchedulerConfig {
            boundaries: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            ..base.clone()
        },
        SchedulerConfig {
            boundaries: vec![1.0, 2.0, 3.0, 4.0, 5.0, f64::INFINITY],
            ..base.clone()
        },
        SchedulerConfig {
            boundaries: vec![f64::NAN, 2.0, 3.0, 4.0, 5.0, 6.0],
            ..base.clone()
        },
        SchedulerConfig {
            quanta: vec![1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0],
            ..base.clone()
        },
        SchedulerConfig {
            quanta: vec![1.0, 1.0, 1.0, f64::NAN, 1.0, 1.0, 1.0],
            ..base.clone()
        },
        SchedulerConfig {
            quanta: vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, f64::INFINITY],
            ..base.clone()
        },
        SchedulerConfig {
            starvation_beta: Some(0.0),
            ..base.clone()
        },
        SchedulerConfig {
            starvation_beta: Some(-8.0),
            ..base.clone()
        },
        SchedulerConfig {
            starvation_beta: Some(f64::INFINITY),
            ..base.clone()
        },
        SchedulerConfig {
            service_floor: -1.0,
            ..base.clone()
        },
        SchedulerConfig {
            service_floor: f64::NAN,
            ..base.clone()
        },
        SchedulerConfig {
            program_ttl: f64::NAN,
            ..base.clone()
        },
        SchedulerConfig {
            program_ttl: f64::INFINITY,
            ..base.clone()
        },
        SchedulerConfig {
            program_ttl: -0.5,
            ..base.clone()
        },
    ];
    for config in bad {
        assert!(
            matches!(
                Scheduler::new(config.clone()),
                Err(CoreError::InvalidConfig(_))
            ),
            "{config:?}"
        );
    }
    let good = [
        SchedulerConfig {
            quanta: vec![1.0],
            boundaries: vec![],
            ..base.clone()
        },
        SchedulerConfig {
            quanta: vec![1.0; 255],
            boundaries: (1..=254).map(f64::from).collect(),
            ..base.clone()
        },
        SchedulerConfig {
            starvation_beta: None,
            program_ttl: 0.0,
            ..base.clone()
        },
    ];
    for config in good {
        let s = Scheduler::new(config.clone()).unwrap();
        assert_eq!(s.config(), &config);
        assert_eq!(s.queue_depths(0).len(), config.levels());
    }
    for kind in PolicyKind::ALL {
        let s = sched(SchedulerConfig::new(kind));
        assert_eq!(s.policy().name(), kind.as_str());
    }
    assert!(matches!(
        "lifo".parse::<PolicyKind>(),
        Err(CoreError::InvalidConfig(_))
    ));
}

// ----------------------------------------------------------------------------- review regressions

fn spec_on(call: CallId, program: ProgramId, engine: u32) -> CallSpec<'static> {
    CallSpec {
        engine,
        ..CallSpec::new(call, program)
    }
}

/// An id aborted and resubmitted at the same time lands in the same slot with the same starvation
/// key; the old watch entry must not be taken for the new call (on another engine or program).
#[test]
fn a_reused_id_never_inherits_a_stale_starvation_watch() {
    for (program, engine) in [(1, 1), (2, 0)] {
        let mut s = Scheduler::new(SchedulerConfig::default()).unwrap();
        let cap = Capacity {
            max_running: 10,
            kv_tokens: u64::MAX,
        };
        for p in [1, 2] {
            s.submit(&spec_on(p * 100, p, 0), 0.0).unwrap();
        }
        s.schedule(0, 0.0, cap).unwrap();
        s.finish(100, 1.0).unwrap();
        s.finish(200, 1.0).unwrap();
        s.submit(&spec_on(3, 1, 0), 2.0).unwrap();
        s.submit(&spec_on(5, 1, 0), 2.0).unwrap();
        s.abort(5, 2.0).unwrap();
        s.submit(&spec_on(5, program, engine), 2.0).unwrap();
        s.submit(&spec_on(9, 1, 0), 3.0).unwrap();
        let none = Capacity {
            max_running: 0,
            kv_tokens: 0,
        };
        // Each program has 1 s of service: its calls starve 8 s after they arrive.
        let d = s.schedule(0, 11.0, none).unwrap();
        let expected_promotions = if engine == 0 { 3 } else { 2 };
        assert_eq!(
            d.promoted, expected_promotions,
            "every queued call on engine 0 starves"
        );
        let d = s.schedule(0, 11.0, cap).unwrap();
        let mut running = d.running.clone();
        running.sort_unstable();
        let expected: &[CallId] = if engine == 0 { &[3, 5, 9] } else { &[3, 9] };
        assert_eq!(running, expected);
        s.end_program(1, 12.0).unwrap();
        s.end_program(2, 12.0).unwrap();
        assert_eq!(s.table().num_live_calls(), 0);
    }
}

/// Near 2^54 s, `now + quantum == now`: demotion must still move the expiry forward.
#[test]
fn demotion_terminates_at_huge_times() {
    let mut s = Scheduler::new(SchedulerConfig::default()).unwrap();
    let cap = Capacity {
        max_running: 10,
        kv_tokens: u64::MAX,
    };
    let t = 1.7e18;
    s.submit(&CallSpec::new(1, 1), t).unwrap();
    s.schedule(0, t, cap).unwrap();
    let d = s.schedule(0, t + 1000.0, cap).unwrap();
    assert_eq!(d.running, vec![1]);
    assert_eq!(s.call(1).unwrap().level, 6);
}

/// Aborting a thread's calls oldest first keeps the thread's finished history as the parent.
#[test]
fn aborts_in_any_order_keep_the_threads_lineage() {
    for order in [[2, 3], [3, 2]] {
        let config = SchedulerConfig {
            starvation_beta: None,
            ..SchedulerConfig::new(PolicyKind::Atlas)
        };
        let mut s = Scheduler::new(config).unwrap();
        let cap = Capacity {
            max_running: 10,
            kv_tokens: u64::MAX,
        };
        s.submit(&CallSpec::new(1, 7), 0.0).unwrap();
        s.schedule(0, 0.0, cap).unwrap();
        s.finish(1, 5.0).unwrap();
        s.submit(&CallSpec::new(2, 7), 5.0).unwrap();
        s.submit(&CallSpec::new(3, 7), 5.0).unwrap();
        for id in order {
            s.abort(id, 5.0).unwrap();
        }
        assert_eq!(s.program(7).unwrap().thread_count(), 1, "order {order:?}");
        s.submit(&CallSpec::new(4, 7), 6.0).unwrap();
        assert_eq!(s.call(4).unwrap().path_start, 5.0, "order {order:?}");
        assert_eq!(s.call(4).unwrap().thread_prev, Some(1));
    }
}
