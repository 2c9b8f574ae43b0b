//! Property tests of the scheduling core: random sequences of submit / step / finish / abort /
//! preempt / `end_program` / `collect_garbage` / `add_tokens` over several programs, threads and
//! engines, with random capacities and monotone times, under all four policies.
//!
//! Each sequence is checked after every operation in two ways:
//! - against invariants stated only through the public API (no call lost or duplicated, the batch
//!   respects the capacity and the queue order, FCFS inside a queue, the anti-starvation bound,
//!   errors change nothing), and
//! - against [`Model`], a small reference model of the documented rules (paper sections 3-5:
//!   arrival priority binned into K queues, one demotion per used-up quantum, promotion to the top
//!   queue when `(W_p + W_c) / (max(floor, T_p) + T_c) >= beta`, batch formation in (queue, running
//!   before queued, FCFS) order that stops at the first call that does not fit).
//!
//! Every time is a small multiple of [`TICK`], so every sum, difference and product that the core
//! and the checks compute is exact in `f64`, and times are compared with `==`.

// Long functions are the point here: each check reads top to bottom against the paper.
#![allow(clippy::too_many_lines)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use autellix_core::{
    Call, CallId, CallSpec, CallState, Capacity, CoreError, Decision, EngineId, PolicyKind,
    Program, ProgramId, Scheduler, SchedulerConfig, ThreadId,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// The time grain: every time and duration is a multiple of it.
const TICK: f64 = 0.25;
/// Calls go to engines `0..CALL_ENGINES`; steps also hit `CALL_ENGINES` (an engine never given a
/// call).
const CALL_ENGINES: u8 = 2;
const ENGINES: EngineId = 3;
const PROGRAMS: u8 = 4;
/// A quantum no call can use up within a test: levels are then fixed at arrival.
const HUGE_QUANTUM: f64 = 1e6;
/// A program id never used.
const NO_PROGRAM: ProgramId = 1_000;
/// A call id never used.
const NO_CALL: CallId = 1 << 40;
const BIG: Capacity = Capacity {
    max_running: u32::MAX,
    kv_tokens: u64::MAX,
};

fn ticks(n: impl Into<f64>) -> f64 {
    n.into() * TICK
}

fn is_multilevel(policy: PolicyKind) -> bool {
    policy != PolicyKind::Fcfs
}

/// `Q_i^lo <= value < Q_i^hi`, computed independently of `SchedulerConfig::level_of`.
fn reference_level(boundaries: &[f64], value: f64) -> u8 {
    boundaries.iter().filter(|b| **b <= value).count() as u8
}

fn pick<T: Copy>(items: &[T], index: Index) -> Option<T> {
    (!items.is_empty()).then(|| items[index.index(items.len())])
}

// ============================================================================== reference model

/// The model's view of a live call.
#[derive(Debug, Clone)]
struct MCall {
    program: ProgramId,
    thread: ThreadId,
    engine: EngineId,
    arrival: f64,
    prompt: u64,
    generated: u64,
    state: CallState,
    priority: f64,
    path_start: f64,
    thread_prev: Option<CallId>,
    level: u8,
    /// FCFS position in its queue: renewed on arrival, demotion and promotion.
    seq: u64,
    since: f64,
    wait_acc: f64,
    service_acc: f64,
    wait_reset: f64,
    service_reset: f64,
    quantum_left: f64,
    expiry: f64,
}

impl MCall {
    fn service(&self, now: f64) -> f64 {
        self.service_acc
            + if self.state == CallState::Running {
                now - self.since
            } else {
                0.0
            }
    }

    fn waiting(&self, now: f64) -> f64 {
        self.wait_acc
            + if self.state.is_queued() {
                now - self.since
            } else {
                0.0
            }
    }

    fn kv(&self) -> u64 {
        self.prompt.saturating_add(self.generated)
    }
}

#[derive(Debug, Clone)]
struct MProgram {
    arrival: f64,
    attained: f64,
    waiting: f64,
    critical: f64,
    engine: Option<EngineId>,
    active: u32,
    finished_calls: u64,
    last_arrival: f64,
    last_completion: Option<f64>,
    threads: BTreeMap<ThreadId, CallId>,
    idle_since: Option<f64>,
}

impl MProgram {
    fn new(now: f64) -> Self {
        Self {
            arrival: now,
            attained: 0.0,
            waiting: 0.0,
            critical: 0.0,
            engine: None,
            active: 0,
            finished_calls: 0,
            last_arrival: now,
            last_completion: None,
            threads: BTreeMap::new(),
            idle_since: None,
        }
    }
}

#[derive(Debug, Clone)]
struct MSpec {
    call: CallId,
    program: ProgramId,
    thread: ThreadId,
    engine: EngineId,
    parents: Option<Vec<CallId>>,
    prompt: u64,
}

impl MSpec {
    fn as_spec(&self) -> CallSpec<'_> {
        CallSpec {
            call: self.call,
            program: self.program,
            thread: self.thread,
            engine: self.engine,
            parents: self.parents.as_deref(),
            prompt_tokens: self.prompt,
        }
    }
}

/// A reference model of the documented scheduling rules, written from the paper and the public
/// docs: a plain sort over all live calls instead of the core's incremental queues and heaps.
#[derive(Debug)]
struct Model {
    cfg: SchedulerConfig,
    now: f64,
    seq: u64,
    calls: BTreeMap<CallId, MCall>,
    /// Finished calls kept as parents: (program, path end).
    finished: BTreeMap<CallId, (ProgramId, f64)>,
    programs: BTreeMap<ProgramId, MProgram>,
    engines: BTreeSet<EngineId>,
}

impl Model {
    fn new(cfg: SchedulerConfig) -> Self {
        Self {
            cfg,
            now: 0.0,
            seq: 0,
            calls: BTreeMap::new(),
            finished: BTreeMap::new(),
            programs: BTreeMap::new(),
            engines: BTreeSet::new(),
        }
    }

    fn multilevel(&self) -> bool {
        is_multilevel(self.cfg.policy)
    }

    fn bottom(&self) -> u8 {
        (self.cfg.quanta.len() - 1) as u8
    }

    /// Priority value of a call arriving now (PLAS: attained service, ATLAS: critical path).
    fn arrival_priority(&self, p: &MProgram) -> f64 {
        match self.cfg.policy {
            PolicyKind::Fcfs | PolicyKind::Mlfq => 0.0,
            PolicyKind::Plas => p.attained,
            PolicyKind::Atlas => p.critical,
        }
    }

    /// `T_p` of the anti-starvation ratio.
    fn program_service(&self, p: &MProgram) -> f64 {
        if self.cfg.policy == PolicyKind::Atlas {
            p.critical
        } else {
            p.attained
        }
    }

    fn clock(&mut self, t: f64) -> f64 {
        self.now = self.now.max(t);
        self.now
    }

    fn renew_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn ids(&self, keep: impl Fn(&MCall) -> bool) -> Vec<CallId> {
        self.calls
            .iter()
            .filter(|(_, c)| keep(c))
            .map(|(id, _)| *id)
            .collect()
    }

    fn program_of(&self, call: CallId) -> Option<ProgramId> {
        self.calls
            .get(&call)
            .map(|c| c.program)
            .or_else(|| self.finished.get(&call).map(|f| f.0))
    }

    /// Critical-path value reached so far by a (live or finished) parent.
    fn path_end_so_far(&self, parent: CallId, now: f64) -> f64 {
        match self.calls.get(&parent) {
            Some(c) => c.path_start + c.service(now),
            None => self.finished.get(&parent).map_or(0.0, |f| f.1),
        }
    }

    fn submit(&mut self, specs: &[MSpec], t: f64) {
        let now = self.clock(t);
        for s in specs {
            self.programs
                .entry(s.program)
                .or_insert_with(|| MProgram::new(now));
            // The thread's previous call, if the program still knows it.
            let thread_prev = self.programs[&s.program]
                .threads
                .get(&s.thread)
                .copied()
                .filter(|prev| self.program_of(*prev) == Some(s.program));
            let parents: Vec<CallId> = match &s.parents {
                Some(p) => p.clone(),
                None => thread_prev.into_iter().collect(),
            };
            let path_start = parents
                .iter()
                .map(|p| self.path_end_so_far(*p, now))
                .fold(0.0, f64::max);
            let program = self.programs.get_mut(&s.program).unwrap();
            program.threads.insert(s.thread, s.call);
            program.active += 1;
            program.last_arrival = now;
            program.engine = Some(s.engine);
            program.idle_since = None;
            let priority = self.arrival_priority(&self.programs[&s.program]);
            let level = if self.multilevel() {
                reference_level(&self.cfg.boundaries, priority)
            } else {
                0
            };
            let seq = self.renew_seq();
            let call = MCall {
                program: s.program,
                thread: s.thread,
                engine: s.engine,
                arrival: now,
                prompt: s.prompt,
                generated: 0,
                state: CallState::Waiting,
                priority,
                path_start,
                thread_prev,
                level,
                seq,
                since: now,
                wait_acc: 0.0,
                service_acc: 0.0,
                wait_reset: 0.0,
                service_reset: 0.0,
                quantum_left: self.cfg.quanta[usize::from(level)],
                expiry: f64::INFINITY,
            };
            self.calls.insert(s.call, call);
            self.engines.insert(s.engine);
        }
    }

    /// Demotes a running call one queue per quantum it used up by `now` (the bottom queue's
    /// quantum just renews); returns the number of queues it went down.
    fn settle(&mut self, id: CallId, now: f64) -> u32 {
        let bottom = self.bottom();
        let c = self.calls.get_mut(&id).unwrap();
        if c.expiry > now {
            return 0;
        }
        let before = c.level;
        while c.expiry <= now {
            c.level = (c.level + 1).min(bottom);
            c.expiry += self.cfg.quanta[usize::from(c.level)];
        }
        self.seq += 1;
        c.seq = self.seq;
        u32::from(c.level - before)
    }

    fn start_running(&mut self, id: CallId, now: f64) {
        let multilevel = self.multilevel();
        let c = self.calls.get_mut(&id).unwrap();
        c.wait_acc += now - c.since;
        c.since = now;
        c.state = CallState::Running;
        if multilevel {
            c.expiry = now + c.quantum_left;
        }
    }

    fn stop_running(&mut self, id: CallId, now: f64, to: CallState) {
        self.settle(id, now);
        let c = self.calls.get_mut(&id).unwrap();
        c.service_acc += now - c.since;
        c.since = now;
        if c.expiry.is_finite() {
            c.quantum_left = c.expiry - now;
            c.expiry = f64::INFINITY;
        }
        c.state = to;
    }

    fn promote(&mut self, id: CallId, now: f64) {
        let seq = self.renew_seq();
        let q0 = self.cfg.quanta[0];
        let c = self.calls.get_mut(&id).unwrap();
        c.wait_acc += now - c.since;
        c.since = now;
        c.wait_reset = c.wait_acc;
        c.service_reset = c.service_acc;
        c.level = 0;
        c.seq = seq;
        c.quantum_left = q0;
    }

    /// When a queued call reaches the starvation threshold (infinite if it never can).
    fn deadline(&self, id: CallId) -> f64 {
        let c = &self.calls[&id];
        match self.cfg.starvation_beta {
            Some(beta) if self.multilevel() && c.level > 0 && c.state.is_queued() => {
                // Same arithmetic as the core: the call's own key plus the program's offset.
                let p = &self.programs[&c.program];
                let key = c.since - (c.wait_acc - c.wait_reset)
                    + beta * (c.service_acc - c.service_reset);
                key + (beta * self.program_service(p).max(self.cfg.service_floor) - p.waiting)
            }
            _ => f64::INFINITY,
        }
    }

    fn retire(&mut self, id: CallId, t: f64, finished: bool) {
        let now = self.clock(t);
        if self.calls[&id].state == CallState::Running {
            self.stop_running(id, now, CallState::Finished);
        } else {
            let c = self.calls.get_mut(&id).unwrap();
            c.wait_acc += now - c.since;
            c.since = now;
        }
        let c = self.calls.remove(&id).unwrap();
        if !finished {
            // The aborted call's successor in its thread now follows its predecessor.
            for next in self.calls.values_mut() {
                if next.program == c.program
                    && next.thread == c.thread
                    && next.thread_prev == Some(id)
                {
                    next.thread_prev = c.thread_prev;
                }
            }
        }
        let path_end = c.path_start + c.service_acc;
        let p = self.programs.get_mut(&c.program).unwrap();
        p.attained += c.service_acc;
        p.waiting += c.wait_acc;
        p.critical = p.critical.max(path_end);
        p.active -= 1;
        if finished {
            p.finished_calls += 1;
            p.last_completion = Some(now);
            self.finished.insert(id, (c.program, path_end));
        } else if let Some(prev) = c.thread_prev {
            // The thread's next call descends from the aborted call's predecessor.
            if p.threads.get(&c.thread) == Some(&id) {
                p.threads.insert(c.thread, prev);
            }
        }
        if p.active == 0 {
            p.idle_since = Some(now);
        }
    }

    fn preempt(&mut self, id: CallId, t: f64) {
        let now = self.clock(t);
        self.stop_running(id, now, CallState::Preempted);
    }

    fn remove_program(&mut self, id: ProgramId) {
        self.programs.remove(&id);
        self.finished.retain(|_, f| f.0 != id);
    }

    fn end_program(&mut self, id: ProgramId, t: f64) -> Vec<CallId> {
        let now = self.clock(t);
        let live = self.ids(|c| c.program == id); // ids grow with submission order
        for &c in &live {
            self.retire(c, now, false);
        }
        self.remove_program(id);
        live
    }

    fn collect_garbage(&mut self, t: f64) -> Vec<ProgramId> {
        let now = self.clock(t);
        let ttl = self.cfg.program_ttl;
        let expired: Vec<ProgramId> = self
            .programs
            .iter()
            .filter(|(_, p)| p.active == 0 && p.idle_since.is_some_and(|s| s + ttl <= now))
            .map(|(id, _)| *id)
            .collect();
        for &p in &expired {
            self.remove_program(p);
        }
        expired
    }

    fn step(
        &mut self,
        engine: EngineId,
        t: f64,
        cap: Capacity,
        finished: &[CallId],
        progress: &[(CallId, u64)],
    ) -> Decision {
        let now = self.clock(t);
        for &(id, n) in progress {
            let c = self.calls.get_mut(&id).unwrap();
            c.generated = c.generated.saturating_add(n);
        }
        for &id in finished {
            self.retire(id, now, true);
        }
        let mut d = Decision::default();
        if self.engines.contains(&engine) {
            // Quantum demotions, in order of expiry.
            let mut due: Vec<(f64, CallId)> = self
                .calls
                .iter()
                .filter(|(_, c)| {
                    c.engine == engine && c.state == CallState::Running && c.expiry <= now
                })
                .map(|(id, c)| (c.expiry, *id))
                .collect();
            due.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (_, id) in due {
                d.demoted += self.settle(id, now);
            }
            // Anti-starvation promotions, in order of deadline.
            let mut starving: Vec<(f64, CallId)> = self
                .ids(|c| c.engine == engine)
                .into_iter()
                .map(|id| (self.deadline(id), id))
                .filter(|(deadline, _)| *deadline <= now)
                .collect();
            starving.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (_, id) in starving {
                self.promote(id, now);
                d.promoted += 1;
            }
            // Batch formation: (queue, running before queued, FCFS), stop at the first misfit.
            let mut order: Vec<(u8, bool, u64, CallId)> = self
                .calls
                .iter()
                .filter(|(_, c)| c.engine == engine)
                .map(|(id, c)| (c.level, c.state.is_queued(), c.seq, *id))
                .collect();
            order.sort_unstable();
            let mut tokens = 0u128;
            for (.., id) in order {
                if d.running.len() >= cap.max_running as usize {
                    break;
                }
                let need = self.calls[&id].kv();
                if need > cap.kv_tokens {
                    d.too_large.push(id);
                    continue;
                }
                if tokens + u128::from(need) > u128::from(cap.kv_tokens) {
                    break;
                }
                tokens += u128::from(need);
                d.running.push(id);
            }
            let selected: BTreeSet<CallId> = d.running.iter().copied().collect();
            d.preempted = self.ids(|c| c.engine == engine && c.state == CallState::Running);
            d.preempted.retain(|id| !selected.contains(id));
            for id in d.preempted.clone() {
                self.stop_running(id, now, CallState::Preempted);
            }
            for id in d.running.clone() {
                if self.calls[&id].state.is_queued() {
                    self.start_running(id, now);
                    d.admitted.push(id);
                }
            }
        }
        d.expired_programs = self.collect_garbage(now);
        d
    }
}

// ============================================================================== twin schedulers

/// The scheduler under test and, optionally, a twin that receives the same good operations but
/// none of the failing ones: it must stay indistinguishable.
struct Pair {
    a: Scheduler,
    b: Option<Scheduler>,
}

impl Pair {
    fn both<T: PartialEq + Debug>(&mut self, f: impl Fn(&mut Scheduler) -> T) -> T {
        let ra = f(&mut self.a);
        if let Some(b) = &mut self.b {
            assert_eq!(ra, f(b), "the twin that saw no failing operation diverged");
        }
        ra
    }
}

/// Everything observable through the public API.
#[derive(Debug, PartialEq)]
struct Snapshot {
    now: f64,
    programs: Vec<Result<Program, CoreError>>,
    calls: Vec<Result<Call, CoreError>>,
    known: Vec<bool>,
    loads: Vec<(usize, usize)>,
    depths: Vec<Vec<u32>>,
    engines: Vec<EngineId>,
    num_programs: usize,
    num_calls: usize,
}

fn snapshot(s: &Scheduler, call_ids: CallId) -> Snapshot {
    let ids = 0..call_ids + 4;
    Snapshot {
        now: s.now(),
        programs: (0..=ProgramId::from(PROGRAMS))
            .map(|p| s.program(p).cloned())
            .collect(),
        calls: ids.clone().map(|c| s.call(c).cloned()).collect(),
        known: ids.map(|c| s.table().knows_call(c)).collect(),
        loads: (0..=ENGINES).map(|e| s.engine_load(e)).collect(),
        depths: (0..=ENGINES).map(|e| s.queue_depths(e)).collect(),
        engines: s.engines(),
        num_programs: s.table().num_programs(),
        num_calls: s.table().num_live_calls(),
    }
}

// ============================================================================== operations

#[derive(Debug, Clone)]
struct SpecGen {
    program: u8,
    thread: u8,
    engine: u8,
    /// `None`: implicit (previous call of the thread); `Some`: picks among the program's calls.
    parents: Option<Vec<Index>>,
    prompt: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<SpecGen>),
    Step {
        engine: u8,
        max_running: u8,
        kv: u16,
        finish: Vec<Index>,
        progress: Vec<(Index, u8)>,
    },
    Finish(Index),
    Abort(Index),
    Preempt(Index),
    EndProgram(u8),
    CollectGarbage,
    AddTokens(Index, u8),
}

/// An operation that must fail and change nothing.
#[derive(Debug, Clone)]
enum Bad {
    DuplicateLive(Index, u8),
    DuplicateFinished(Index),
    DuplicateInBatch,
    DuplicateAfterGoodSpec(Index),
    SelfParent(u8),
    ForeignParent(Index),
    UnknownParent(u8),
    AbortedParent(Index),
    ForwardParent(u8),
    FinishQueued(Index),
    FinishUnknown(Index),
    PreemptQueued(Index),
    PreemptUnknown(Index),
    AbortUnknown(Index),
    EndUnknownProgram,
    AddTokensUnknown,
    NonFiniteTime(u8, u8),
    StepWrongEngineFinish(Index),
    StepWrongEngineProgress(Index),
    StepDuplicateFinished(Index),
    StepFinishQueued(Index, Index),
    StepUnknownFinished(Index),
    StepUnknownProgress,
}

#[derive(Debug, Clone)]
enum Any {
    Good(Op, u8),
    Bad(Bad, u8),
}

fn spec_gen() -> impl Strategy<Value = SpecGen> {
    (
        0..PROGRAMS,
        0..3u8,
        0..CALL_ENGINES,
        prop::option::weighted(0.3, prop::collection::vec(any::<Index>(), 0..3)),
        prop_oneof![3 => 0..40u8, 1 => 40..=u8::MAX],
    )
        .prop_map(|(program, thread, engine, parents, prompt)| SpecGen {
            program,
            thread,
            engine,
            parents,
            prompt,
        })
}

fn op_gen() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(spec_gen(), 1..4).prop_map(Op::Submit),
        7 => (
            prop_oneof![9 => 0..CALL_ENGINES, 1 => Just(CALL_ENGINES)],
            prop_oneof![1 => 0..=1u8, 4 => 1..=4u8],
            prop_oneof![3 => 0..=150u16, 1 => Just(u16::MAX)],
            prop::collection::vec(any::<Index>(), 0..3),
            prop::collection::vec((any::<Index>(), 0..16u8), 0..3),
        )
            .prop_map(|(engine, max_running, kv, finish, progress)| Op::Step {
                engine,
                max_running,
                kv,
                finish,
                progress,
            }),
        1 => any::<Index>().prop_map(Op::Finish),
        1 => any::<Index>().prop_map(Op::Abort),
        1 => any::<Index>().prop_map(Op::Preempt),
        1 => (0..=PROGRAMS).prop_map(Op::EndProgram),
        1 => Just(Op::CollectGarbage),
        1 => (any::<Index>(), 0..32u8).prop_map(|(i, n)| Op::AddTokens(i, n)),
    ]
}

fn bad_gen() -> impl Strategy<Value = Bad> {
    let i = any::<Index>;
    prop_oneof![
        (i(), 0..PROGRAMS).prop_map(|(i, p)| Bad::DuplicateLive(i, p)),
        i().prop_map(Bad::DuplicateFinished),
        Just(Bad::DuplicateInBatch),
        i().prop_map(Bad::DuplicateAfterGoodSpec),
        (0..PROGRAMS).prop_map(Bad::SelfParent),
        i().prop_map(Bad::ForeignParent),
        (0..PROGRAMS).prop_map(Bad::UnknownParent),
        i().prop_map(Bad::AbortedParent),
        (0..PROGRAMS).prop_map(Bad::ForwardParent),
        i().prop_map(Bad::FinishQueued),
        i().prop_map(Bad::FinishUnknown),
        i().prop_map(Bad::PreemptQueued),
        i().prop_map(Bad::PreemptUnknown),
        i().prop_map(Bad::AbortUnknown),
        Just(Bad::EndUnknownProgram),
        Just(Bad::AddTokensUnknown),
        (0..8u8, 0..3u8).prop_map(|(op, t)| Bad::NonFiniteTime(op, t)),
        i().prop_map(Bad::StepWrongEngineFinish),
        i().prop_map(Bad::StepWrongEngineProgress),
        i().prop_map(Bad::StepDuplicateFinished),
        (i(), i()).prop_map(|(a, b)| Bad::StepFinishQueued(a, b)),
        i().prop_map(Bad::StepUnknownFinished),
        Just(Bad::StepUnknownProgress),
    ]
}

/// Mostly small time steps, sometimes none, sometimes a long gap.
fn dt_gen() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 6 => 1..=4u8, 1 => 5..=24u8]
}

fn ops_gen(max: usize) -> impl Strategy<Value = Vec<(Op, u8)>> {
    prop::collection::vec((op_gen(), dt_gen()), 1..max)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Any policy, small quanta, starvation on or off.
    General,
    /// Huge quanta and no anti-starvation: a call's queue is fixed at arrival.
    FixedLevels,
    /// A multi-level policy with anti-starvation on.
    Starvation,
}

fn config_gen(mode: Mode) -> impl Strategy<Value = SchedulerConfig> {
    let policies = if mode == Mode::Starvation {
        vec![PolicyKind::Mlfq, PolicyKind::Plas, PolicyKind::Atlas]
    } else {
        PolicyKind::ALL.to_vec()
    };
    (
        prop::sample::select(policies),
        prop::collection::vec(1..=8u8, 0..4),
        prop::collection::vec(prop::sample::select(vec![1u8, 2, 4, 8, 16]), 4),
        prop::option::weighted(0.7, 1..=16u8),
        1..=4u8,
        prop_oneof![Just(0u16), 1..=24u16, Just(40_000u16)],
    )
        .prop_map(move |(policy, steps, quanta, beta, floor, ttl)| {
            let mut bound = 0.0;
            let boundaries: Vec<f64> = steps
                .iter()
                .map(|s| {
                    bound += ticks(*s);
                    bound
                })
                .collect();
            let levels = boundaries.len() + 1;
            let quanta = if mode == Mode::FixedLevels {
                vec![HUGE_QUANTUM; levels]
            } else {
                quanta[..levels].iter().map(|q| ticks(*q)).collect()
            };
            let starvation_beta = match mode {
                Mode::General => beta.map(ticks),
                Mode::FixedLevels => None,
                Mode::Starvation => Some(ticks(beta.unwrap_or(4))),
            };
            SchedulerConfig {
                policy,
                boundaries,
                quanta,
                starvation_beta,
                service_floor: ticks(floor),
                program_ttl: ticks(ttl),
            }
        })
}

// ============================================================================== the run

/// What the public API shows of a live call.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Obs {
    state: CallState,
    level: u8,
    engine: EngineId,
    kv: u64,
}

type Observed = BTreeMap<CallId, Obs>;

/// A failing operation, ready to run on a scheduler.
type Action = Box<dyn Fn(&mut Scheduler) -> Result<(), CoreError>>;

/// How a failing operation must fail.
#[derive(Debug)]
enum Expect {
    Exactly(CoreError),
    InvalidArgument,
    Transition(CallId, CallState),
}

struct Run {
    s: Pair,
    m: Model,
    /// The caller's clock.
    t: f64,
    next_id: CallId,
    /// Submitted and not yet finished, aborted or ended: bookkeeping independent of the model.
    live: BTreeSet<CallId>,
    aborted: Vec<CallId>,
    /// Waiting time and service of a call at its last anti-starvation promotion.
    resets: BTreeMap<CallId, (f64, f64)>,
    fixed_levels: bool,
}

impl Run {
    fn new(cfg: &SchedulerConfig, twin: bool) -> Self {
        Self {
            s: Pair {
                a: Scheduler::new(cfg.clone()).unwrap(),
                b: twin.then(|| Scheduler::new(cfg.clone()).unwrap()),
            },
            m: Model::new(cfg.clone()),
            t: 0.0,
            next_id: 0,
            live: BTreeSet::new(),
            aborted: Vec::new(),
            resets: BTreeMap::new(),
            fixed_levels: cfg.quanta.iter().all(|q| *q >= HUGE_QUANTUM)
                && cfg.starvation_beta.is_none(),
        }
    }

    fn cfg(&self) -> &SchedulerConfig {
        &self.m.cfg
    }

    fn fresh_id(&mut self) -> CallId {
        self.next_id += 1;
        self.next_id - 1
    }

    fn observe(&self) -> Observed {
        (0..self.next_id)
            .filter_map(|id| {
                self.s.a.call(id).ok().map(|c| {
                    (
                        id,
                        Obs {
                            state: c.state,
                            level: c.level,
                            engine: c.engine,
                            kv: c.kv_tokens(),
                        },
                    )
                })
            })
            .collect()
    }

    fn running(&self) -> Vec<CallId> {
        self.m.ids(|c| c.state == CallState::Running)
    }

    fn queued(&self) -> Vec<CallId> {
        self.m.ids(|c| c.state.is_queued())
    }

    /// Calls of a program that may be named as parents (live or retained finished).
    fn known_calls_of(&self, program: ProgramId) -> Vec<CallId> {
        let mut ids = self.m.ids(|c| c.program == program);
        ids.extend(
            self.m
                .finished
                .iter()
                .filter(|(_, f)| f.0 == program)
                .map(|(id, _)| *id),
        );
        ids.sort_unstable();
        ids
    }

    fn run(&mut self, op: &Any) {
        match op {
            Any::Good(op, dt) => self.apply(op, *dt),
            Any::Bad(bad, dt) => self.apply_bad(bad, *dt),
        }
    }

    // ---------------------------------------------------------------------------- good ops

    fn apply(&mut self, op: &Op, dt: u8) {
        self.t += ticks(dt);
        let t = self.t;
        let pre = self.observe();
        match op {
            Op::Submit(gens) => self.submit(gens, t),
            Op::Step {
                engine,
                max_running,
                kv,
                finish,
                progress,
            } => {
                let cap = Capacity {
                    max_running: u32::from(*max_running),
                    kv_tokens: if *kv == u16::MAX {
                        u64::MAX
                    } else {
                        u64::from(*kv)
                    },
                };
                self.step(EngineId::from(*engine), t, cap, finish, progress, &pre);
            }
            Op::Finish(i) => {
                if let Some(id) = pick(&self.running(), *i) {
                    self.s.both(|s| s.finish(id, t)).unwrap();
                    self.m.retire(id, t, true);
                    self.live.remove(&id);
                }
            }
            Op::Abort(i) => {
                if let Some(id) = pick(&self.m.ids(|_| true), *i) {
                    self.s.both(|s| s.abort(id, t)).unwrap();
                    self.m.retire(id, t, false);
                    self.live.remove(&id);
                    self.aborted.push(id);
                }
            }
            Op::Preempt(i) => {
                if let Some(id) = pick(&self.running(), *i) {
                    self.s.both(|s| s.preempt(id, t)).unwrap();
                    self.m.preempt(id, t);
                    let after = self.s.a.call(id).unwrap();
                    assert_eq!(after.state, CallState::Preempted);
                    assert!(after.level >= pre[&id].level, "preemption raised a call");
                }
            }
            Op::EndProgram(p) => {
                let p = ProgramId::from(*p);
                let result = self.s.both(|s| s.end_program(p, t));
                if self.m.programs.contains_key(&p) {
                    let mut ended = result.unwrap();
                    ended.sort_unstable();
                    let mut expected: Vec<CallId> = self
                        .live
                        .iter()
                        .copied()
                        .filter(|id| self.m.calls[id].program == p)
                        .collect();
                    expected.sort_unstable();
                    assert_eq!(ended, expected, "end_program returns the live calls");
                    for id in &ended {
                        self.live.remove(id);
                        self.aborted.push(*id);
                    }
                    assert_eq!(self.m.end_program(p, t), ended);
                    assert_eq!(
                        self.s.a.program(p).err(),
                        Some(CoreError::UnknownProgram(p))
                    );
                } else {
                    assert_eq!(result, Err(CoreError::UnknownProgram(p)));
                }
            }
            Op::CollectGarbage => {
                let mut expired = self.s.both(|s| s.collect_garbage(t)).unwrap();
                expired.sort_unstable();
                assert_eq!(expired, self.m.collect_garbage(t), "garbage collection");
            }
            Op::AddTokens(i, n) => {
                if let Some(id) = pick(&self.m.ids(|_| true), *i) {
                    self.s.both(|s| s.add_tokens(id, u64::from(*n))).unwrap();
                    let c = self.m.calls.get_mut(&id).unwrap();
                    c.generated += u64::from(*n);
                }
            }
        }
        self.check_state();
    }

    fn submit(&mut self, gens: &[SpecGen], t: f64) {
        let mut specs: Vec<MSpec> = Vec::new();
        for g in gens {
            let program = ProgramId::from(g.program);
            let parents = g.parents.as_ref().map(|picks| {
                let mut candidates = self.known_calls_of(program);
                candidates.extend(
                    specs
                        .iter()
                        .filter(|s| s.program == program)
                        .map(|s| s.call),
                );
                picks.iter().filter_map(|i| pick(&candidates, *i)).collect()
            });
            specs.push(MSpec {
                call: self.fresh_id(),
                program,
                thread: ThreadId::from(g.thread),
                engine: EngineId::from(g.engine),
                parents,
                prompt: u64::from(g.prompt),
            });
        }
        let result = self.s.both(|s| {
            let specs: Vec<CallSpec<'_>> = specs.iter().map(MSpec::as_spec).collect();
            if specs.len() == 1 {
                s.submit(&specs[0], t)
            } else {
                s.submit_many(&specs, t)
            }
        });
        result.unwrap();
        self.m.submit(&specs, t);
        for s in &specs {
            self.live.insert(s.call);
            let c = self.s.a.call(s.call).unwrap();
            assert_eq!(c.state, CallState::Waiting);
            if !is_multilevel(self.cfg().policy) {
                assert_eq!(c.level, 0, "FCFS has a single queue");
            }
        }
    }

    fn step(
        &mut self,
        engine: EngineId,
        t: f64,
        cap: Capacity,
        finish: &[Index],
        progress: &[(Index, u8)],
        pre: &Observed,
    ) {
        let running_here = self
            .m
            .ids(|c| c.engine == engine && c.state == CallState::Running);
        let mut finished: Vec<CallId> = finish
            .iter()
            .filter_map(|i| pick(&running_here, *i))
            .collect();
        finished.dedup();
        let mut seen = BTreeSet::new();
        finished.retain(|id| seen.insert(*id));
        let here = self.m.ids(|c| c.engine == engine);
        let progress: Vec<(CallId, u64)> = progress
            .iter()
            .filter_map(|(i, n)| pick(&here, *i).map(|id| (id, u64::from(*n))))
            .collect();

        let mut d = self
            .s
            .both(|s| s.step(engine, t, cap, &finished, &progress))
            .unwrap();
        for id in &finished {
            self.live.remove(id);
        }
        let mut expected = self.m.step(engine, t, cap, &finished, &progress);
        d.preempted.sort_unstable();
        d.expired_programs.sort_unstable();
        expected.preempted.sort_unstable();
        assert_eq!(d, expected, "decision differs from the reference model");

        let post = self.observe();
        self.check_step(engine, cap, &finished, pre, &post, &d);
        if self.fixed_levels {
            check_fcfs_within_queue(engine, cap, &finished, pre, &post, &d);
        }
        self.check_starvation(engine, pre, &post, &d);
    }

    // ---------------------------------------------------------------------------- bad ops

    fn apply_bad(&mut self, bad: &Bad, dt: u8) {
        // A failing operation must not move the clock either: give it a later time.
        let t = self.t + ticks(dt);
        let fresh = self.next_id + 1; // not submitted by any successful operation
        let fresh2 = self.next_id + 2;
        let live = self.m.ids(|_| true);
        let running = self.running();
        let queued = self.queued();
        let finished: Vec<CallId> = self.m.finished.keys().copied().collect();
        let unknown_pool: Vec<CallId> = {
            let mut v = finished.clone();
            v.extend(&self.aborted);
            v.push(NO_CALL);
            v
        };
        let state_of = |id: CallId| self.m.calls[&id].state;
        let engine_of = |id: CallId| self.m.calls[&id].engine;
        let spec = |call: CallId, program: u8, parents: Option<&[CallId]>| MSpec {
            call,
            program: ProgramId::from(program),
            thread: 0,
            engine: 0,
            parents: parents.map(<[CallId]>::to_vec),
            prompt: 1,
        };
        let submit = |specs: Vec<MSpec>| -> Action {
            Box::new(move |s: &mut Scheduler| {
                let specs: Vec<CallSpec<'_>> = specs.iter().map(MSpec::as_spec).collect();
                s.submit_many(&specs, t)
            })
        };
        let (action, expect): (Action, Expect) = match bad {
            Bad::DuplicateLive(i, p) => {
                let Some(id) = pick(&live, *i) else { return };
                (
                    submit(vec![spec(id, *p, None)]),
                    Expect::Exactly(CoreError::DuplicateCall(id)),
                )
            }
            Bad::DuplicateFinished(i) => {
                let Some(id) = pick(&finished, *i) else {
                    return;
                };
                let p = self.m.finished[&id].0 as u8;
                (
                    submit(vec![spec(id, p, None)]),
                    Expect::Exactly(CoreError::DuplicateCall(id)),
                )
            }
            Bad::DuplicateInBatch => (
                submit(vec![spec(fresh, 0, None), spec(fresh, 1, None)]),
                Expect::Exactly(CoreError::DuplicateCall(fresh)),
            ),
            Bad::DuplicateAfterGoodSpec(i) => {
                let Some(id) = pick(&live, *i) else { return };
                (
                    submit(vec![spec(fresh, 0, None), spec(id, 0, None)]),
                    Expect::Exactly(CoreError::DuplicateCall(id)),
                )
            }
            Bad::SelfParent(p) => (
                submit(vec![spec(fresh, *p, Some(&[fresh]))]),
                Expect::Exactly(CoreError::CyclicParents(fresh)),
            ),
            Bad::ForeignParent(i) => {
                let known: Vec<CallId> = live.iter().chain(&finished).copied().collect();
                let Some(parent) = pick(&known, *i) else {
                    return;
                };
                let parent_program = self
                    .m
                    .calls
                    .get(&parent)
                    .map_or_else(|| self.m.finished[&parent].0, |c| c.program);
                let program = (parent_program + 1) % ProgramId::from(PROGRAMS);
                (
                    submit(vec![spec(fresh, program as u8, Some(&[parent]))]),
                    Expect::Exactly(CoreError::ForeignParent {
                        call: fresh,
                        parent,
                        program,
                        parent_program,
                    }),
                )
            }
            Bad::UnknownParent(p) => (
                submit(vec![spec(fresh, *p, Some(&[NO_CALL]))]),
                Expect::Exactly(CoreError::UnknownCall(NO_CALL)),
            ),
            Bad::AbortedParent(i) => {
                let Some(parent) = pick(&self.aborted, *i) else {
                    return;
                };
                (
                    submit(vec![spec(fresh, 0, Some(&[parent]))]),
                    Expect::Exactly(CoreError::UnknownCall(parent)),
                )
            }
            Bad::ForwardParent(p) => (
                submit(vec![
                    spec(fresh, *p, Some(&[fresh2])),
                    spec(fresh2, *p, None),
                ]),
                // A later call of the same batch is not known yet: an unknown parent.
                Expect::Exactly(CoreError::UnknownCall(fresh2)),
            ),
            Bad::FinishQueued(i) => {
                let Some(id) = pick(&queued, *i) else { return };
                (
                    Box::new(move |s: &mut Scheduler| s.finish(id, t)),
                    Expect::Transition(id, state_of(id)),
                )
            }
            Bad::FinishUnknown(i) => {
                let id = pick(&unknown_pool, *i).unwrap();
                (
                    Box::new(move |s: &mut Scheduler| s.finish(id, t)),
                    Expect::Exactly(CoreError::UnknownCall(id)),
                )
            }
            Bad::PreemptQueued(i) => {
                let Some(id) = pick(&queued, *i) else { return };
                (
                    Box::new(move |s: &mut Scheduler| s.preempt(id, t)),
                    Expect::Transition(id, state_of(id)),
                )
            }
            Bad::PreemptUnknown(i) => {
                let id = pick(&unknown_pool, *i).unwrap();
                (
                    Box::new(move |s: &mut Scheduler| s.preempt(id, t)),
                    Expect::Exactly(CoreError::UnknownCall(id)),
                )
            }
            Bad::AbortUnknown(i) => {
                let id = pick(&unknown_pool, *i).unwrap();
                (
                    Box::new(move |s: &mut Scheduler| s.abort(id, t)),
                    Expect::Exactly(CoreError::UnknownCall(id)),
                )
            }
            Bad::EndUnknownProgram => (
                Box::new(move |s: &mut Scheduler| s.end_program(NO_PROGRAM, t).map(drop)),
                Expect::Exactly(CoreError::UnknownProgram(NO_PROGRAM)),
            ),
            Bad::AddTokensUnknown => (
                Box::new(|s: &mut Scheduler| s.add_tokens(NO_CALL, 3)),
                Expect::Exactly(CoreError::UnknownCall(NO_CALL)),
            ),
            Bad::NonFiniteTime(op, which) => {
                let bad_t = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][usize::from(*which)];
                // Name a call that would make the operation succeed at a good time.
                let any_running = running.first().copied();
                let any_live = live.first().copied();
                let first_program = self.m.programs.keys().next().copied();
                let action: Action = match op {
                    0 => {
                        Box::new(move |s: &mut Scheduler| s.submit(&CallSpec::new(fresh, 0), bad_t))
                    }
                    1 => Box::new(move |s: &mut Scheduler| s.schedule(0, bad_t, BIG).map(drop)),
                    2 => {
                        let Some(id) = any_running else { return };
                        Box::new(move |s: &mut Scheduler| s.finish(id, bad_t))
                    }
                    3 => {
                        let Some(id) = any_live else { return };
                        Box::new(move |s: &mut Scheduler| s.abort(id, bad_t))
                    }
                    4 => {
                        let Some(id) = any_running else { return };
                        Box::new(move |s: &mut Scheduler| s.preempt(id, bad_t))
                    }
                    5 => {
                        let Some(p) = first_program else { return };
                        Box::new(move |s: &mut Scheduler| s.end_program(p, bad_t).map(drop))
                    }
                    6 => Box::new(move |s: &mut Scheduler| s.collect_garbage(bad_t).map(drop)),
                    _ => {
                        let Some(id) = any_running else { return };
                        let e = engine_of(id);
                        Box::new(move |s: &mut Scheduler| {
                            s.step(e, bad_t, BIG, &[id], &[]).map(drop)
                        })
                    }
                };
                (action, Expect::InvalidArgument)
            }
            Bad::StepWrongEngineFinish(i) => {
                let Some(id) = pick(&running, *i) else { return };
                let other = (engine_of(id) + 1) % ENGINES;
                (
                    Box::new(move |s: &mut Scheduler| s.step(other, t, BIG, &[id], &[]).map(drop)),
                    Expect::InvalidArgument,
                )
            }
            Bad::StepWrongEngineProgress(i) => {
                let Some(id) = pick(&live, *i) else { return };
                let other = (engine_of(id) + 1) % ENGINES;
                (
                    Box::new(move |s: &mut Scheduler| {
                        s.step(other, t, BIG, &[], &[(id, 5)]).map(drop)
                    }),
                    Expect::InvalidArgument,
                )
            }
            Bad::StepDuplicateFinished(i) => {
                let Some(id) = pick(&running, *i) else { return };
                let e = engine_of(id);
                (
                    Box::new(move |s: &mut Scheduler| s.step(e, t, BIG, &[id, id], &[]).map(drop)),
                    Expect::InvalidArgument,
                )
            }
            Bad::StepFinishQueued(i, j) => {
                let Some(id) = pick(&queued, *i) else { return };
                let e = engine_of(id);
                // A good finish listed first must not be applied either.
                let good: Vec<CallId> = running
                    .iter()
                    .copied()
                    .filter(|r| engine_of(*r) == e)
                    .collect();
                let mut list: Vec<CallId> = pick(&good, *j).into_iter().collect();
                list.push(id);
                (
                    Box::new(move |s: &mut Scheduler| {
                        s.step(e, t, BIG, &list, &[(id, 1)]).map(drop)
                    }),
                    Expect::Transition(id, state_of(id)),
                )
            }
            Bad::StepUnknownFinished(i) => {
                let id = pick(&unknown_pool, *i).unwrap();
                (
                    Box::new(move |s: &mut Scheduler| s.step(0, t, BIG, &[id], &[]).map(drop)),
                    Expect::Exactly(CoreError::UnknownCall(id)),
                )
            }
            Bad::StepUnknownProgress => (
                Box::new(|s: &mut Scheduler| s.step(0, 0.0, BIG, &[], &[(NO_CALL, 1)]).map(drop)),
                Expect::Exactly(CoreError::UnknownCall(NO_CALL)),
            ),
        };
        let before = snapshot(&self.s.a, self.next_id + 2);
        let err = action(&mut self.s.a).expect_err("a bad operation succeeded");
        match expect {
            Expect::Exactly(e) => assert_eq!(err, e, "{bad:?}"),
            Expect::InvalidArgument => {
                assert!(
                    matches!(err, CoreError::InvalidArgument(_)),
                    "{bad:?}: {err:?}"
                );
            }
            Expect::Transition(id, st) => assert!(
                matches!(err, CoreError::InvalidTransition { call, state, .. } if call == id && state == st),
                "{bad:?}: {err:?}"
            ),
        }
        let after = snapshot(&self.s.a, self.next_id + 2);
        assert_eq!(before, after, "{bad:?} changed the observable state");
        if let Some(b) = &self.s.b {
            assert_eq!(after, snapshot(b, self.next_id + 2));
        }
        self.check_state();
    }

    // ---------------------------------------------------------------------------- checks

    /// Full observable state against the model and the independent bookkeeping.
    fn check_state(&self) {
        let s = &self.s.a;
        let m = &self.m;
        let now = m.now;
        assert_eq!(s.now(), now);
        assert_eq!(s.table().num_programs(), m.programs.len());
        assert_eq!(s.table().num_live_calls(), m.calls.len());
        assert_eq!(s.engines(), m.engines.iter().copied().collect::<Vec<_>>());
        for p in 0..=ProgramId::from(PROGRAMS) {
            let Some(mp) = m.programs.get(&p) else {
                assert_eq!(s.program(p).err(), Some(CoreError::UnknownProgram(p)));
                continue;
            };
            let sp = s.program(p).unwrap();
            assert_eq!(sp.id, p);
            assert_eq!(sp.arrival, mp.arrival, "program {p} arrival");
            assert_eq!(sp.attained_service, mp.attained, "program {p} T_p");
            assert_eq!(sp.waiting_time, mp.waiting, "program {p} W_p");
            assert_eq!(sp.critical_path, mp.critical, "program {p} critical path");
            assert_eq!(sp.engine, mp.engine);
            assert_eq!(sp.active_calls, mp.active);
            assert_eq!(sp.finished_calls, mp.finished_calls);
            assert_eq!(sp.last_arrival, mp.last_arrival);
            assert_eq!(sp.last_completion, mp.last_completion);
            // Threads whose latest call is still known count; an entry left pointing at an
            // aborted (forgotten) call may or may not (see
            // `scenarios::a_reused_id_never_becomes_another_threads_implicit_parent`).
            let known = mp
                .threads
                .values()
                .filter(|c| m.program_of(**c) == Some(p))
                .count();
            assert!(
                (known..=mp.threads.len()).contains(&sp.thread_count()),
                "program {p}: {} threads, {known} with a known latest call, {} entries",
                sp.thread_count(),
                mp.threads.len()
            );
            let mut live = s.table().live_calls(p).unwrap();
            live.sort_unstable();
            assert_eq!(live, m.ids(|c| c.program == p));
        }
        for id in 0..self.next_id {
            let Some(mc) = m.calls.get(&id) else {
                assert_eq!(s.call(id).err(), Some(CoreError::UnknownCall(id)));
                assert_eq!(s.table().knows_call(id), m.finished.contains_key(&id));
                continue;
            };
            let c = s.call(id).unwrap();
            assert!(s.table().knows_call(id));
            assert_eq!(c.id, id);
            assert_eq!(
                (c.program, c.thread, c.engine),
                (mc.program, mc.thread, mc.engine)
            );
            assert_eq!(c.arrival, mc.arrival);
            assert_eq!(
                (c.prompt_tokens, c.generated_tokens, c.kv_tokens()),
                (mc.prompt, mc.generated, mc.kv())
            );
            assert_eq!(c.state, mc.state, "call {id} state");
            assert_ne!(
                c.state,
                CallState::Finished,
                "a finished call is still live"
            );
            assert_eq!(c.priority, mc.priority, "call {id} priority");
            assert_eq!(c.path_start, mc.path_start, "call {id} path start");
            assert_eq!(
                c.thread_prev, mc.thread_prev,
                "call {id} thread predecessor"
            );
            assert_eq!(c.level, mc.level, "call {id} level");
            assert!(usize::from(c.level) < self.cfg().levels());
            assert_eq!(c.waiting_time(now), mc.waiting(now), "call {id} waiting");
            assert_eq!(c.service(now), mc.service(now), "call {id} service");
            // Every instant since arrival was spent either queued or running.
            assert_eq!(c.waiting_time(now) + c.service(now), now - c.arrival);
        }

        // Property 1: no call lost or duplicated, engines partition the live calls.
        let obs = self.observe();
        assert_eq!(
            obs.keys().copied().collect::<BTreeSet<_>>(),
            self.live,
            "live calls differ from submitted minus finished/aborted/ended"
        );
        let mut total = 0;
        for e in 0..=ENGINES {
            let mine = obs.values().filter(|o| o.engine == e);
            let running = mine
                .clone()
                .filter(|o| o.state == CallState::Running)
                .count();
            let queued = mine.clone().filter(|o| o.state.is_queued()).count();
            assert_eq!(s.engine_load(e), (running, queued), "engine {e} load");
            let mut depths = vec![0u32; self.cfg().levels()];
            for o in mine.filter(|o| o.state.is_queued()) {
                depths[usize::from(o.level)] += 1;
            }
            assert_eq!(s.queue_depths(e), depths, "engine {e} queue depths");
            total += running + queued;
        }
        assert_eq!(total, self.live.len());
    }

    /// Property 1 on a step, from the public API only.
    fn check_step(
        &self,
        engine: EngineId,
        cap: Capacity,
        finished: &[CallId],
        pre: &Observed,
        post: &Observed,
        d: &Decision,
    ) {
        let set = |v: &[CallId]| v.iter().copied().collect::<BTreeSet<_>>();
        let running = set(&d.running);
        assert_eq!(running.len(), d.running.len(), "duplicate in the batch");
        for id in finished {
            assert!(!post.contains_key(id), "finished call {id} still live");
        }
        // The batch is exactly the engine's running calls.
        let running_now: BTreeSet<CallId> = post
            .iter()
            .filter(|(_, o)| o.engine == engine && o.state == CallState::Running)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(running, running_now);
        // Capacity.
        assert!(d.running.len() <= cap.max_running as usize);
        let used: u128 = d.running.iter().map(|id| u128::from(post[id].kv)).sum();
        assert!(used <= u128::from(cap.kv_tokens), "KV budget exceeded");
        // Transitions.
        for id in &d.admitted {
            assert!(running.contains(id), "admitted {id} not in the batch");
            assert!(pre[id].state.is_queued(), "admitted {id} was not queued");
        }
        for id in &d.running {
            if !d.admitted.contains(id) {
                assert_eq!(
                    pre[id].state,
                    CallState::Running,
                    "{id} ran without admission"
                );
            }
        }
        assert_eq!(set(&d.preempted).len(), d.preempted.len());
        for id in &d.preempted {
            assert_eq!(pre[id].state, CallState::Running);
            assert_eq!(post[id].state, CallState::Preempted);
            assert!(!running.contains(id));
        }
        for (id, o) in pre {
            if o.engine == engine && o.state == CallState::Running && !finished.contains(id) {
                assert!(
                    running.contains(id) || d.preempted.contains(id),
                    "{id} lost"
                );
            }
            if o.engine != engine {
                assert_eq!(
                    post.get(id),
                    Some(o),
                    "a step touched another engine's call"
                );
            }
            if let Some(after) = post.get(id) {
                if o.state == CallState::Running {
                    assert!(after.level >= o.level, "a running call moved up");
                } else {
                    assert!(after.level == o.level || after.level == 0);
                }
            }
        }
        // Queue order: everything in the batch precedes every queued call the walk did not skip.
        let too_large = set(&d.too_large);
        assert_eq!(too_large.len(), d.too_large.len());
        let queued_after: Vec<CallId> = post
            .iter()
            .filter(|(_, o)| o.engine == engine && o.state.is_queued())
            .map(|(id, _)| *id)
            .collect();
        for id in &d.too_large {
            assert!(post[id].state.is_queued());
            assert!(post[id].kv > cap.kv_tokens, "{id} reported too large");
        }
        for q in queued_after.iter().filter(|q| !too_large.contains(q)) {
            for r in &d.running {
                assert!(
                    post[r].level <= post[q].level,
                    "{r} ran before {q} of a better queue"
                );
            }
        }
        // A waiting call never displaces a running one of the same queue.
        for p in d.preempted.iter().filter(|p| !too_large.contains(p)) {
            for r in &d.admitted {
                assert!(
                    post[r].level < post[p].level,
                    "{r} displaced {p} of its queue"
                );
            }
        }
        // No idle capacity while something fits, unless the walk stopped at a misfit.
        if d.running.len() < cap.max_running as usize {
            let fits: Vec<CallId> = queued_after
                .iter()
                .copied()
                .filter(|q| post[q].kv <= cap.kv_tokens)
                .collect();
            if fits.is_empty() {
                assert_eq!(too_large, set(&queued_after), "too_large incomplete");
            } else {
                assert!(
                    fits.iter()
                        .any(|q| used + u128::from(post[q].kv) > u128::from(cap.kv_tokens)),
                    "capacity left idle although every queued call fits"
                );
            }
        }
        if !is_multilevel(self.cfg().policy) {
            assert_eq!((d.demoted, d.promoted), (0, 0));
        }
        let raised: u32 = post
            .iter()
            .filter_map(|(id, o)| pre.get(id).map(|p| (p, o)))
            .filter(|(p, _)| p.state == CallState::Running)
            .map(|(p, o)| u32::from(o.level - p.level))
            .sum();
        assert_eq!(raised, d.demoted, "demotions reported");
    }

    /// Property 4: a queued call below the top queue whose ratio
    /// `(W_p + W_c) / (max(floor, T_p) + T_c)` reached beta at the step's time is in the top queue
    /// after the step, and only such calls are promoted. `W_c` and `T_c` count from the call's
    /// last promotion, which shows as its level dropping to 0. The ratio is compared
    /// multiplied out (`W >= beta * (max(floor, T_p) + T_c)`), exact on the tick grid.
    fn check_starvation(
        &mut self,
        engine: EngineId,
        pre: &Observed,
        post: &Observed,
        d: &Decision,
    ) {
        let Some(beta) = self.cfg().starvation_beta else {
            assert_eq!(d.promoted, 0);
            return;
        };
        if !is_multilevel(self.cfg().policy) {
            assert_eq!(d.promoted, 0);
            return;
        }
        let floor = self.cfg().service_floor;
        let now = self.s.a.now();
        let mut promoted = 0;
        for (id, after) in post {
            let Some(before) = pre.get(id) else { continue };
            let call = self.s.a.call(*id).unwrap();
            let program = self.s.a.program(call.program).unwrap();
            let t_p = if self.cfg().policy == PolicyKind::Atlas {
                program.critical_path
            } else {
                program.attained_service
            };
            let (w0, s0) = self.resets.get(id).copied().unwrap_or((0.0, 0.0));
            let w_c = call.waiting_time(now) - w0;
            let t_c = call.service(now) - s0;
            let starving = program.waiting_time + w_c >= beta * (t_p.max(floor) + t_c);
            let was_promoted = before.level > 0 && after.level == 0;
            if before.state.is_queued() && before.level > 0 && before.engine == engine && starving {
                assert_eq!(after.level, 0, "starving call {id} not promoted at {now}");
            }
            if was_promoted {
                assert!(before.state.is_queued(), "running call {id} promoted");
                assert!(starving, "call {id} promoted before its ratio reached beta");
                promoted += 1;
                self.resets
                    .insert(*id, (call.waiting_time(now), call.service(now)));
            }
        }
        assert_eq!(d.promoted, promoted);
    }
}

/// Property 2: with levels fixed at arrival, a queue is served in submission order (ids are
/// handed out in submission order), and the batch is the reference walk over
/// (level, running before queued, submission order).
fn check_fcfs_within_queue(
    engine: EngineId,
    cap: Capacity,
    finished: &[CallId],
    pre: &Observed,
    post: &Observed,
    d: &Decision,
) {
    for (id, o) in post {
        if let Some(p) = pre.get(id) {
            assert_eq!(o.level, p.level, "level of {id} changed");
        }
    }
    for w in d.admitted.windows(2) {
        if post[&w[0]].level == post[&w[1]].level {
            assert!(w[0] < w[1], "admitted out of submission order: {w:?}");
        }
    }
    let too_large: BTreeSet<CallId> = d.too_large.iter().copied().collect();
    for (q, o) in post {
        if o.engine != engine || !o.state.is_queued() || too_large.contains(q) {
            continue;
        }
        for r in &d.admitted {
            if post[r].level == o.level && pre[q].state.is_queued() {
                assert!(
                    r < q,
                    "{r} overtook {q}, submitted earlier in the same queue"
                );
            }
        }
    }
    let mut order: Vec<(u8, bool, CallId)> = pre
        .iter()
        .filter(|(id, o)| o.engine == engine && !finished.contains(id))
        .map(|(id, o)| (o.level, o.state.is_queued(), *id))
        .collect();
    order.sort_unstable();
    let (mut running, mut too_large, mut tokens) = (Vec::new(), Vec::new(), 0u128);
    for (.., id) in order {
        if running.len() >= cap.max_running as usize {
            break;
        }
        let need = post[&id].kv;
        if need > cap.kv_tokens {
            too_large.push(id);
            continue;
        }
        if tokens + u128::from(need) > u128::from(cap.kv_tokens) {
            break;
        }
        tokens += u128::from(need);
        running.push(id);
    }
    assert_eq!(
        d.running, running,
        "batch differs from the FCFS reference walk"
    );
    assert_eq!(d.too_large, too_large);
}

fn run_ops(cfg: &SchedulerConfig, ops: &[(Op, u8)]) {
    let mut run = Run::new(cfg, false);
    for (op, dt) in ops {
        run.apply(op, *dt);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Property 1 (+ the reference model), any policy, starvation on or off.
    #[test]
    fn no_call_is_lost_or_duplicated(cfg in config_gen(Mode::General), ops in ops_gen(90)) {
        run_ops(&cfg, &ops);
    }

    /// Property 2: levels fixed at arrival; every step checked against the FCFS reference walk.
    #[test]
    fn fcfs_inside_a_queue(cfg in config_gen(Mode::FixedLevels), ops in ops_gen(90)) {
        run_ops(&cfg, &ops);
    }

    /// Property 4: the anti-starvation bound, on multi-level policies with beta set.
    #[test]
    fn starving_calls_are_promoted(cfg in config_gen(Mode::Starvation), ops in ops_gen(90)) {
        run_ops(&cfg, &ops);
    }

    /// Property 5: failing operations return the documented error and change nothing: the
    /// scheduler equals, through every public accessor and every later decision, a twin that
    /// never saw them.
    #[test]
    fn errors_leave_the_state_unchanged(
        cfg in config_gen(Mode::General),
        ops in prop::collection::vec(
            prop_oneof![
                3 => (op_gen(), dt_gen()).prop_map(|(o, dt)| Any::Good(o, dt)),
                2 => (bad_gen(), dt_gen()).prop_map(|(b, dt)| Any::Bad(b, dt)),
            ],
            1..70,
        ),
    ) {
        let mut run = Run::new(&cfg, true);
        for op in &ops {
            run.run(op);
        }
    }
}

// ============================================================================== property 3

/// Walks calls in the given order with the stop-at-first-misfit rule: (batch, too large).
fn reference_walk(order: &[(CallId, u64)], cap: Capacity) -> (Vec<CallId>, Vec<CallId>) {
    let (mut running, mut too_large, mut tokens) = (Vec::new(), Vec::new(), 0u128);
    for &(id, need) in order {
        if running.len() >= cap.max_running as usize {
            break;
        }
        if need > cap.kv_tokens {
            too_large.push(id);
            continue;
        }
        if tokens + u128::from(need) > u128::from(cap.kv_tokens) {
            break;
        }
        tokens += u128::from(need);
        running.push(id);
    }
    (running, too_large)
}

fn boundaries_from(steps: &[u8]) -> Vec<f64> {
    let mut bound = 0.0;
    steps
        .iter()
        .map(|s| {
            bound += ticks(*s);
            bound
        })
        .collect()
}

fn ranking_config(policy: PolicyKind, steps: &[u8]) -> SchedulerConfig {
    let boundaries = boundaries_from(steps);
    SchedulerConfig {
        policy,
        quanta: vec![HUGE_QUANTUM; boundaries.len() + 1],
        boundaries,
        starvation_beta: None,
        ..SchedulerConfig::default()
    }
}

/// Submits the ranked calls (one batch or one by one), schedules once and compares with the
/// reference order sorted by (level of the program's value at arrival, submission order).
fn check_ranking(
    s: &mut Scheduler,
    t: f64,
    specs: &[MSpec],
    values: &BTreeMap<ProgramId, f64>,
    cap: Capacity,
    batched: bool,
) {
    if batched {
        let list: Vec<CallSpec<'_>> = specs.iter().map(MSpec::as_spec).collect();
        s.submit_many(&list, t).unwrap();
    } else {
        for spec in specs {
            s.submit(&spec.as_spec(), t).unwrap();
        }
    }
    let boundaries = s.config().boundaries.clone();
    let mut order: Vec<(u8, usize, CallId, u64)> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let value = values.get(&spec.program).copied().unwrap_or(0.0);
            let call = s.call(spec.call).unwrap();
            assert_eq!(call.priority, value, "priority of call {}", spec.call);
            let level = reference_level(&boundaries, value);
            assert_eq!(call.level, level);
            (level, i, spec.call, spec.prompt)
        })
        .collect();
    order.sort_unstable();
    let order: Vec<(CallId, u64)> = order.iter().map(|o| (o.2, o.3)).collect();
    let (running, too_large) = reference_walk(&order, cap);
    let d = s.schedule(0, t, cap).unwrap();
    assert_eq!(
        d.running, running,
        "batch differs from the reference ranking"
    );
    assert_eq!(d.admitted, running);
    assert_eq!(d.too_large, too_large);
    assert!(d.preempted.is_empty());
}

fn cap_gen() -> impl Strategy<Value = Capacity> {
    (0..12u32, prop_oneof![2 => 0..300u64, 1 => Just(u64::MAX)]).prop_map(
        |(max_running, kv_tokens)| Capacity {
            max_running,
            kv_tokens,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Property 3 (PLAS): programs get attained service from earlier calls (finished or
    /// aborted, after some waiting, which must not count); one schedule then admits exactly the
    /// reference order's first calls.
    #[test]
    fn plas_ranks_by_attained_service(
        steps in prop::collection::vec(1..=8u8, 0..5),
        setup in prop::collection::vec(
            prop::collection::vec((1..=12u8, 0..=4u8, prop::bool::weighted(0.2)), 0..4),
            1..6,
        ),
        arrivals in prop::collection::vec((any::<Index>(), 0..60u64), 1..16),
        cap in cap_gen(),
        batched in any::<bool>(),
    ) {
        let mut s = Scheduler::new(ranking_config(PolicyKind::Plas, &steps)).unwrap();
        let mut t = 0.0;
        let mut id = 0;
        let mut attained = BTreeMap::new();
        for (p, calls) in setup.iter().enumerate() {
            let p = p as ProgramId;
            for &(duration, wait, abort) in calls {
                s.submit(&CallSpec::new(id, p), t).unwrap();
                t += ticks(wait);
                assert_eq!(s.schedule(0, t, BIG).unwrap().admitted, vec![id]);
                t += ticks(duration);
                if abort {
                    s.abort(id, t).unwrap();
                } else {
                    s.finish(id, t).unwrap();
                }
                *attained.entry(p).or_insert(0.0) += ticks(duration);
                id += 1;
            }
        }
        for (p, value) in &attained {
            assert_eq!(s.program(*p).unwrap().attained_service, *value);
        }
        let programs = setup.len() + 1; // the last one is new
        let specs: Vec<MSpec> = arrivals
            .iter()
            .enumerate()
            .map(|(i, (program, prompt))| MSpec {
                call: id + i as CallId,
                program: program.index(programs) as ProgramId,
                thread: 0,
                engine: 0,
                parents: None,
                prompt: *prompt,
            })
            .collect();
        check_ranking(&mut s, t + TICK, &specs, &attained, cap, batched);
    }

    /// Property 3 (ATLAS): multi-threaded programs with explicit and implicit parents, calls that
    /// overlap in time (a child may start while its parent still runs). The critical path is
    /// recomputed here from the definition; every call's path start is checked, then one schedule
    /// admits exactly the reference order's first calls.
    #[test]
    fn atlas_ranks_by_critical_path(
        steps in prop::collection::vec(1..=8u8, 0..5),
        rounds in prop::collection::vec(
            (
                prop::collection::vec(
                    (
                        0..3u64,
                        0..3u64,
                        prop::option::weighted(0.6, prop::collection::vec(any::<Index>(), 0..3)),
                        1..=8u8,
                    ),
                    1..6,
                ),
                1..=8u8,
            ),
            1..5,
        ),
        arrivals in prop::collection::vec(
            (
                0..4u64,
                0..3u64,
                prop::option::weighted(0.5, prop::collection::vec(any::<Index>(), 0..3)),
                0..60u64,
            ),
            1..12,
        ),
        cap in cap_gen(),
        batched in any::<bool>(),
    ) {
        #[derive(Clone, Copy)]
        struct RefCall {
            program: ProgramId,
            path_start: f64,
            start: Option<f64>,
            end: f64,
            done: bool,
        }
        let mut s = Scheduler::new(ranking_config(PolicyKind::Atlas, &steps)).unwrap();
        let mut calls: BTreeMap<CallId, RefCall> = BTreeMap::new();
        let mut threads: BTreeMap<(ProgramId, ThreadId), CallId> = BTreeMap::new();
        let mut critical: BTreeMap<ProgramId, f64> = BTreeMap::new();
        let mut next_id: CallId = 0;

        // Reference path start of a new call: max over its parents of the path they reached.
        let path_start = |calls: &BTreeMap<CallId, RefCall>, parents: &[CallId], now: f64| {
            parents
                .iter()
                .map(|p| {
                    let c = calls[p];
                    if c.done {
                        c.path_start + (c.end - c.start.unwrap())
                    } else {
                        c.path_start + c.start.map_or(0.0, |st| now - st)
                    }
                })
                .fold(0.0, f64::max)
        };
        // Parents of a new call, as given to the scheduler and as the reference resolves them.
        let resolve = |calls: &BTreeMap<CallId, RefCall>,
                       threads: &BTreeMap<(ProgramId, ThreadId), CallId>,
                       program: ProgramId,
                       thread: ThreadId,
                       picks: &Option<Vec<Index>>| {
            let candidates: Vec<CallId> = calls
                .iter()
                .filter(|(_, c)| c.program == program)
                .map(|(id, _)| *id)
                .collect();
            match picks {
                Some(picks) => {
                    let explicit: Vec<CallId> =
                        picks.iter().filter_map(|i| pick(&candidates, *i)).collect();
                    (Some(explicit.clone()), explicit)
                }
                None => (None, threads.get(&(program, thread)).copied().into_iter().collect()),
            }
        };
        let finish_due = |s: &mut Scheduler,
                          calls: &mut BTreeMap<CallId, RefCall>,
                          critical: &mut BTreeMap<ProgramId, f64>,
                          until: f64| {
            let mut due: Vec<(f64, CallId)> = calls
                .iter()
                .filter(|(_, c)| !c.done && c.start.is_some() && c.end <= until)
                .map(|(id, c)| (c.end, *id))
                .collect();
            due.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (end, id) in due {
                s.finish(id, end).unwrap();
                let c = calls.get_mut(&id).unwrap();
                c.done = true;
                let path_end = c.path_start + (c.end - c.start.unwrap());
                let cp = critical.entry(c.program).or_insert(0.0);
                *cp = cp.max(path_end);
            }
        };

        let mut t = 0.0;
        for (round, length) in &rounds {
            let mut submitted = Vec::new();
            for (program, thread, picks, duration) in round {
                let (given, parents) = resolve(&calls, &threads, *program, *thread, picks);
                let id = next_id;
                next_id += 1;
                let spec = MSpec {
                    call: id,
                    program: *program,
                    thread: *thread,
                    engine: 0,
                    parents: given,
                    prompt: 0,
                };
                s.submit(&spec.as_spec(), t).unwrap();
                let expected = path_start(&calls, &parents, t);
                assert_eq!(s.call(id).unwrap().path_start, expected, "path start of {id}");
                calls.insert(id, RefCall {
                    program: *program,
                    path_start: expected,
                    start: None,
                    end: 0.0,
                    done: false,
                });
                threads.insert((*program, *thread), id);
                submitted.push((id, *duration));
            }
            let d = s.schedule(0, t, BIG).unwrap();
            assert_eq!(d.admitted, d.running.iter().copied().filter(|id| {
                submitted.iter().any(|(s, _)| s == id)
            }).collect::<Vec<_>>());
            for (id, duration) in submitted {
                let c = calls.get_mut(&id).unwrap();
                c.start = Some(t);
                c.end = t + ticks(duration);
            }
            t += ticks(*length);
            finish_due(&mut s, &mut calls, &mut critical, t);
        }
        finish_due(&mut s, &mut calls, &mut critical, f64::INFINITY);
        t = calls.values().map(|c| c.end).fold(t, f64::max) + TICK;
        for (p, value) in &critical {
            assert_eq!(s.program(*p).unwrap().critical_path, *value, "critical path of {p}");
        }

        let mut specs = Vec::new();
        for (program, thread, picks, prompt) in &arrivals {
            let (given, parents) = resolve(&calls, &threads, *program, *thread, picks);
            let id = next_id;
            next_id += 1;
            calls.insert(id, RefCall {
                program: *program,
                path_start: path_start(&calls, &parents, t),
                start: None,
                end: 0.0,
                done: false,
            });
            threads.insert((*program, *thread), id);
            specs.push(MSpec {
                call: id,
                program: *program,
                thread: *thread,
                engine: 0,
                parents: given,
                prompt: *prompt,
            });
        }
        check_ranking(&mut s, t, &specs, &critical, cap, batched);
        for spec in &specs {
            assert_eq!(
                s.call(spec.call).unwrap().path_start,
                calls[&spec.call].path_start,
                "path start of {}",
                spec.call
            );
        }
    }
}
