//! Criterion microbenchmarks of the scheduling core's per-call operations at 1k / 10k / 100k live
//! calls.
//!
//! Workload (built outside every measured region by [`World::build`]):
//! * policy PLAS with the default config (K = 7 queues), everything on engine 0;
//! * one program per 10 live calls; program `p` first runs and finishes one "warm" call whose
//!   service puts the program in queue `p % 7`, so the live calls spread evenly over the 7 levels;
//! * `N` queued (waiting) calls, 10 per program, each program with 10 threads, plus — for
//!   `submit`, `complete` and `step_*` — a running batch of 256 (`max_running = 256`, KV budget
//!   large enough never to bind);
//! * the caller's clock advances deterministically: [`OP_DT`] per call operation (nothing becomes
//!   due) and, in `step_churn`, one decode step ([`DECODE_STEP_SECONDS`]) per engine step.
//!
//! Benchmarks (one criterion iteration = one call operation unless noted):
//! * `submit/N`: one `submit` into a scheduler holding N queued + 256 running calls. Measured in
//!   chunks of up to [`CHUNK`] submits (round robin over the programs, each on a fresh thread);
//!   the chunk's calls are aborted outside the measured region, so the state stays at N.
//! * `complete/N`: one `finish` of a running call. Measured in chunks of up to 64 finishes; outside
//!   the measured region each finished thread submits its next call and a `schedule` refills the
//!   batch to 256.
//! * `step_steady/N`: one `step` (iteration = one step; throughput = 256 calls in the batch) with
//!   4 calls reported finished and token progress for all 256 running calls; 4 admitted, no
//!   demotion or promotion due. The 4 finished threads resubmit outside the measured region.
//! * `step_churn/N`: the same step with the clock advancing one decode step (25 ms) per step, so
//!   every level-0 running call uses up its quantum each step (demotion + preemption + admission)
//!   and starving queued calls get promoted in waves. Measured over whole episodes of
//!   [`CHURN_EPISODE`] steps from a freshly built state; the event counts per step are printed
//!   once per size on stderr.
//! * `cycle/N`: `submit` + `schedule` (admits the head of the queue, `max_running = 1`) + `finish`
//!   of the admitted call, with N queued calls; the finished call's thread submits the next call
//!   of the next cycle. Comparable with a pure-Python heapq + dict scheduler loop.
//!
//! Finished calls stay in the program table until their program ends, so the states that finish
//! calls are rebuilt (outside the measured region) after N/2 finishes: the table never holds more
//! than N/2 retained finished calls besides the warm ones.
//!
//! `cargo bench -p autellix-core` runs everything (about 70 s on 2 cores, once compiled);
//! `cargo bench -p autellix-core -- --quick` is a smoke run of a few seconds; a name filter such
//! as `cargo bench -p autellix-core -- /100000` or `-- '^cycle/'` selects benchmarks (states are
//! built only for the selected ones). Medians: `target/criterion/<group>/<N>/new/estimates.json`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use autellix_core::{
    CallId, CallSpec, Capacity, DECODE_STEP_SECONDS, Decision, PolicyKind, ProgramId, Scheduler,
    SchedulerConfig, ThreadId,
};
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};

/// Queued calls in the scheduler.
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Live calls per program (and threads per program).
const CALLS_PER_PROGRAM: usize = 10;
/// Running batch of `submit`, `complete` and `step_*`.
const BATCH: u32 = 256;
/// KV budget that never binds.
const KV_BUDGET: u64 = 1 << 40;
/// Attained service giving a program queue 0..6 under [`bench_config`]'s boundaries
/// (2, 4, 8, 16, 32, 64 decode steps of 25 ms), each well inside its bin.
const LEVEL_SERVICE: [f64; 7] = [0.01, 0.075, 0.15, 0.3, 0.6, 1.2, 2.4];
/// PLAS on the ladder of 2, 4, ..., 64 decode steps (the third-party one, the default until issue
/// 14): programs spread over all 7 queues and, at one decode step per engine step, calls are
/// demoted and promoted every few steps. The default 0.5 s ladder would leave that work out.
fn bench_config() -> SchedulerConfig {
    let step = DECODE_STEP_SECONDS;
    let (boundaries, quanta) = SchedulerConfig::ladder(2.0 * step, 7, step).unwrap();
    SchedulerConfig {
        boundaries,
        quanta,
        ..SchedulerConfig::new(PolicyKind::Plas)
    }
}

/// Clock advance per call operation: small enough that no quantum or starvation deadline falls
/// due while a state lives.
const OP_DT: f64 = 1e-8;
/// Calls reported finished per engine step.
const FINISHED_PER_STEP: usize = 4;
/// Steps per `step_churn` episode (1.6 s of decode steps: covers the level-1 and level-2
/// starvation promotion waves).
const CHURN_EPISODE: usize = 64;
/// Upper bound on the calls measured in one timed chunk (keeps the state within ~N and the
/// `Instant` overhead negligible).
const CHUNK: u64 = 64;

fn capacity(max_running: u32) -> Capacity {
    Capacity {
        max_running,
        kv_tokens: KV_BUDGET,
    }
}

/// A scheduler in a known state plus the bookkeeping the benchmarks need to keep it steady.
struct World {
    sched: Scheduler,
    n_queued: usize,
    batch: u32,
    programs: u64,
    now: f64,
    next_call: CallId,
    /// The batch of the latest decision, in priority order.
    running: Vec<CallId>,
    /// Finished calls retained since the build.
    finished: usize,
}

impl World {
    fn build(n_queued: usize, batch: u32) -> Self {
        let live = n_queued + batch as usize;
        let programs = (live / CALLS_PER_PROGRAM).max(LEVEL_SERVICE.len()) as u64;
        let mut sched = Scheduler::new(bench_config()).unwrap();
        // Warm calls (id = program id): run all at t = 0, finish each at its level's service.
        for p in 0..programs {
            sched.submit(&CallSpec::new(p, p), 0.0).unwrap();
        }
        let d = sched.schedule(0, 0.0, capacity(programs as u32)).unwrap();
        assert_eq!(d.running.len() as u64, programs);
        for (level, &service) in LEVEL_SERVICE.iter().enumerate() {
            for p in (level as u64..programs).step_by(LEVEL_SERVICE.len()) {
                sched.finish(p, service).unwrap();
            }
        }
        let mut world = Self {
            sched,
            n_queued,
            batch,
            programs,
            now: LEVEL_SERVICE[LEVEL_SERVICE.len() - 1],
            next_call: programs,
            running: Vec::new(),
            finished: 0,
        };
        for i in 0..live as u64 {
            let spec = world.spec(i % programs, i / programs);
            world.submit(&spec);
        }
        // Admits the batch, and pops the warm calls' stale quantum expiries and compacts the
        // due-time heaps (which a state without a batch would otherwise do in its first
        // measured step).
        world.refill();
        assert_eq!(world.running.len(), batch as usize);
        let (running, queued) = world.sched.engine_load(0);
        assert_eq!((running, queued), (batch as usize, n_queued));
        world
    }

    fn tick(&mut self) -> f64 {
        self.now += OP_DT;
        self.now
    }

    /// The next call of a thread (its implicit parent is the thread's previous call).
    fn spec(&mut self, program: ProgramId, thread: ThreadId) -> CallSpec<'static> {
        let call = self.next_call;
        self.next_call += 1;
        CallSpec {
            thread,
            prompt_tokens: 512,
            ..CallSpec::new(call, program)
        }
    }

    fn submit(&mut self, spec: &CallSpec<'_>) {
        let now = self.tick();
        self.sched.submit(spec, now).unwrap();
    }

    /// (program, thread) of a live call.
    fn owner(&self, call: CallId) -> (ProgramId, ThreadId) {
        let c = self.sched.call(call).unwrap();
        (c.program, c.thread)
    }

    /// Each listed thread submits its next call.
    fn resubmit(&mut self, owners: &[(ProgramId, ThreadId)]) {
        for &(p, t) in owners {
            let spec = self.spec(p, t);
            self.submit(&spec);
        }
    }

    /// Refills the batch (admits queued calls into free slots; compacts the due-time heaps).
    fn refill(&mut self) -> Decision {
        let now = self.tick();
        let d = self.sched.schedule(0, now, capacity(self.batch)).unwrap();
        self.running.clone_from(&d.running);
        d
    }

    /// Rebuilds once too many finished calls are retained.
    fn maybe_rebuild(&mut self) {
        if self.finished > self.n_queued / 2 {
            *self = Self::build(self.n_queued, self.batch);
        }
    }
}

/// Times at least [`MIN_OPS`] operations per sample (scaled back to `iters`), so that the tiny
/// samples of `--quick` mode are not a handful of cold-cache operations.
const MIN_OPS: u64 = 512;
/// The same for engine steps.
const MIN_STEPS: u64 = 16;

/// Runs `max(iters, MIN_OPS)` operations in timed chunks of at most [`CHUNK`] (`chunk(world, k)`
/// returns the measured time of k operations) and returns the measured time scaled to `iters`.
fn chunked(
    world: &mut World,
    iters: u64,
    mut chunk: impl FnMut(&mut World, usize) -> Duration,
) -> Duration {
    let ops = iters.max(MIN_OPS);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < ops {
        let k = CHUNK.min(ops - done);
        total += chunk(world, k as usize);
        done += k;
    }
    total.mul_f64(iters as f64 / ops as f64)
}

fn bench_submit(g: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let mut world = None;
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let w = world.get_or_insert_with(|| World::build(n, BATCH));
        let mut specs = Vec::with_capacity(CHUNK as usize);
        let mut cursor = 0u64;
        b.iter_custom(|iters| {
            chunked(w, iters, |w, k| {
                // Fresh thread ids (10..) so the implicit parent lookup finds nothing and the
                // abort below leaves the programs' thread maps as they were.
                specs.clear();
                for _ in 0..k {
                    let p = cursor % w.programs;
                    let thread = CALLS_PER_PROGRAM as u64 + cursor / w.programs % 4;
                    specs.push(w.spec(p, thread));
                    cursor += 1;
                }
                let start = Instant::now();
                for spec in &specs {
                    w.now += OP_DT;
                    w.sched.submit(black_box(spec), w.now).unwrap();
                }
                let elapsed = start.elapsed();
                for spec in &specs {
                    let now = w.tick();
                    w.sched.abort(spec.call, now).unwrap();
                }
                w.refill();
                elapsed
            })
        });
    });
}

fn bench_complete(g: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let mut world = None;
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let w = world.get_or_insert_with(|| World::build(n, BATCH));
        let mut done = Vec::with_capacity(CHUNK as usize);
        b.iter_custom(|iters| {
            chunked(w, iters, |w, k| {
                w.maybe_rebuild();
                let ids: Vec<CallId> = w.running[..k].to_vec();
                done.clear();
                done.extend(ids.iter().map(|&id| w.owner(id)));
                let start = Instant::now();
                for &id in &ids {
                    w.now += OP_DT;
                    w.sched.finish(black_box(id), w.now).unwrap();
                }
                let elapsed = start.elapsed();
                w.finished += k;
                w.resubmit(&done);
                let d = w.refill();
                debug_assert_eq!(d.admitted.len(), k);
                elapsed
            })
        });
    });
}

/// One measured engine step as an engine reports it: a few finished calls and one token of
/// progress for every running call. The finished threads resubmit afterwards.
struct Stepper {
    finished: Vec<CallId>,
    progress: Vec<(CallId, u64)>,
    owners: Vec<(ProgramId, ThreadId)>,
}

impl Stepper {
    fn new() -> Self {
        Self {
            finished: Vec::new(),
            progress: Vec::new(),
            owners: Vec::new(),
        }
    }

    fn step(&mut self, w: &mut World, dt: f64) -> (Duration, Decision) {
        let stride = w.running.len() / FINISHED_PER_STEP;
        self.finished.clear();
        self.finished
            .extend((0..FINISHED_PER_STEP).map(|i| w.running[i * stride]));
        self.owners.clear();
        self.owners
            .extend(self.finished.iter().map(|&id| w.owner(id)));
        self.progress.clear();
        self.progress.extend(w.running.iter().map(|&id| (id, 1)));
        w.now += dt;
        let cap = capacity(w.batch);
        let start = Instant::now();
        let d = w
            .sched
            .step(0, w.now, cap, black_box(&self.finished), &self.progress)
            .unwrap();
        let elapsed = start.elapsed();
        w.finished += FINISHED_PER_STEP;
        w.running.clone_from(&d.running);
        w.resubmit(&self.owners);
        (elapsed, d)
    }
}

fn bench_step_steady(g: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let mut world = None;
    let mut stepper = Stepper::new();
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let w = world.get_or_insert_with(|| World::build(n, BATCH));
        b.iter_custom(|iters| {
            let steps = iters.max(MIN_STEPS);
            let mut total = Duration::ZERO;
            for _ in 0..steps {
                w.maybe_rebuild();
                let (elapsed, d) = stepper.step(w, OP_DT);
                total += elapsed;
                assert_eq!(d.running.len(), BATCH as usize);
                assert_eq!(d.admitted.len(), FINISHED_PER_STEP);
                assert_eq!((d.demoted, d.promoted), (0, 0));
            }
            total.mul_f64(iters as f64 / steps as f64)
        });
    });
}

/// Event counters over `step_churn` steps.
#[derive(Default)]
struct Events {
    steps: u64,
    demoted: u64,
    promoted: u64,
    admitted: u64,
    preempted: u64,
}

impl Events {
    fn add(&mut self, d: &Decision) {
        self.steps += 1;
        self.demoted += u64::from(d.demoted);
        self.promoted += u64::from(d.promoted);
        self.admitted += d.admitted.len() as u64;
        self.preempted += d.preempted.len() as u64;
    }
}

fn bench_step_churn(g: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let mut world = None;
    let mut stepper = Stepper::new();
    let mut reported = false;
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let w = world.get_or_insert_with(|| World::build(n, BATCH));
        b.iter_custom(|iters| {
            // Whole episodes from a fresh state, scaled to `iters` steps.
            let mut total = Duration::ZERO;
            let mut steps = 0u64;
            while steps < iters {
                let mut events = Events::default();
                for _ in 0..CHURN_EPISODE {
                    let (elapsed, d) = stepper.step(w, DECODE_STEP_SECONDS);
                    total += elapsed;
                    events.add(&d);
                }
                steps += CHURN_EPISODE as u64;
                *w = World::build(n, BATCH);
                if !reported {
                    reported = true;
                    let per_step = |x: u64| x as f64 / events.steps as f64;
                    eprintln!(
                        "step_churn/{n}: per step over a {}-step episode: {:.1} demoted, \
                         {:.1} promoted, {:.1} admitted, {:.1} preempted \
                         ({:.1} µs/step in this first, cold episode)",
                        events.steps,
                        per_step(events.demoted),
                        per_step(events.promoted),
                        per_step(events.admitted),
                        per_step(events.preempted),
                        total.as_secs_f64() * 1e6 / events.steps as f64,
                    );
                }
            }
            total.mul_f64(iters as f64 / steps as f64)
        });
    });
}

fn bench_cycle(g: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let mut world = None;
    let mut next_owner = (0, 0);
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let w = world.get_or_insert_with(|| World::build(n, 0));
        let one = capacity(1);
        let mut specs = Vec::with_capacity(CHUNK as usize);
        b.iter_custom(|iters| {
            chunked(w, iters, |w, k| {
                w.maybe_rebuild();
                // Ids are reserved up front; the owner of each call is only known in the loop
                // (the thread whose call just finished submits the next one).
                specs.clear();
                specs.extend((0..k).map(|_| w.spec(0, 0).call));
                let mut owner = next_owner;
                let start = Instant::now();
                for &call in &specs {
                    let spec = CallSpec {
                        call,
                        thread: owner.1,
                        prompt_tokens: 512,
                        ..CallSpec::new(call, owner.0)
                    };
                    w.now += OP_DT;
                    w.sched.submit(&spec, w.now).unwrap();
                    let decision = w.sched.schedule(0, w.now, one).unwrap();
                    let id = decision.admitted[0];
                    let admitted = w.sched.call(id).unwrap();
                    owner = (admitted.program, admitted.thread);
                    w.sched.finish(id, w.now).unwrap();
                }
                let elapsed = start.elapsed();
                next_owner = owner;
                w.finished += k;
                elapsed
            })
        });
    });
}

fn core_ops(c: &mut Criterion) {
    type Bench = fn(&mut BenchmarkGroup<'_, WallTime>, usize);
    let benches: [(&str, Bench, u64); 5] = [
        ("submit", bench_submit, 1),
        ("complete", bench_complete, 1),
        ("step_steady", bench_step_steady, u64::from(BATCH)),
        ("step_churn", bench_step_churn, u64::from(BATCH)),
        ("cycle", bench_cycle, 1),
    ];
    for (name, bench, elements) in benches {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(elements));
        if name == "step_churn" {
            g.sampling_mode(SamplingMode::Flat);
        }
        for n in SIZES {
            bench(&mut g, n);
        }
        g.finish();
    }
}

/// 15 benchmarks of ~4 s each (about 70 s in all, state builds included); `--quick` caps each at
/// ~0.5 s of measurement. Command-line flags (`--measurement-time`, ...) still override these.
fn config() -> Criterion {
    let quick = std::env::args().any(|a| a == "--quick");
    Criterion::default()
        .warm_up_time(Duration::from_millis(if quick { 200 } else { 1000 }))
        .measurement_time(Duration::from_millis(if quick { 500 } else { 3000 }))
        .sample_size(20)
        // The plotters backend takes seconds per benchmark on 2 cores; the numbers are in the
        // terminal output and in target/criterion/*/*/new/estimates.json.
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = core_ops
}
criterion_main!(benches);
