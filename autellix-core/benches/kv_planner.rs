//! Criterion benchmark of the KV planner's cost per engine step, with N idle program contexts
//! (programs waiting on a tool) and 256 running calls, at N = 1k / 10k / 100k.
//!
//! Workload (built outside every measured region by [`World::build`]):
//! * N + 256 programs, one context of [`BLOCKS`] blocks each (a typical call's KV); 256 of them
//!   are in use (acquired) by running calls, the N others idle on the GPU;
//! * programs go idle and come back in FIFO order, so each waits about N / [`CALLS_PER_STEP`]
//!   steps (the prior gap is set to that, the learned gaps stay close to it); attained service
//!   differs per program (priority weights 1 to ~1.05);
//! * a host tier of N / 8 contexts' blocks, a tenth of the contexts offloaded at build time;
//! * the clock advances one decode step ([`DT`]) per engine step; two full rotations of every
//!   program are run before measuring, so the state is steady (host tier full, predictions
//!   learned, about 5-10% of the idle contexts dropped and re-prefilled on return).
//!
//! One measured step (`kv_step/N`; throughput = one step) is what a serving engine asks of the
//! planner per decode step:
//! * [`CALLS_PER_STEP`] calls finish: `release` their context, then `remove` it and `insert` the
//!   longer context the call left (the program goes on a tool wait);
//! * [`CALLS_PER_STEP`] calls start: the programs idle longest come back and `acquire` their
//!   context (loading it if it was offloaded; a program whose context was dropped `insert`s a
//!   fresh one first: a re-prefill);
//! * one `reclaim` of [`BLOCKS`] blocks (room for a typical call);
//! * one `prefetch` with room and a link budget for a few contexts.
//!
//! `cargo bench -p autellix-core --bench kv_planner` runs everything (about 15 s once compiled);
//! add `-- --quick` for a smoke run, or a filter such as `-- kv_step/10000`. Per-step event counts
//! (offloads, drops, loads, prefetches) are printed once per size on stderr. Medians:
//! `target/criterion/kv_step/<N>/new/estimates.json`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use autellix_core::{ContextId, ContextSpec, KvConfig, KvPlanner, KvStats, ProgramId};
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};

/// Idle program contexts.
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Running calls (contexts in use).
const RUNNING: usize = 256;
/// Blocks of one context (512 tokens of 16-token blocks).
const BLOCKS: u64 = 32;
/// Calls finishing, and calls starting, per engine step.
const CALLS_PER_STEP: usize = 4;
/// One decode step (seconds).
const DT: f64 = 0.025;
/// Steps whose event counts are printed.
const REPORT_STEPS: u64 = 1_024;
/// At least this many steps per sample (scaled back to `iters`).
const MIN_STEPS: u64 = 64;

/// A planner in a steady state plus the bookkeeping that keeps it steady.
struct World {
    kv: KvPlanner,
    now: f64,
    next_context: ContextId,
    /// Each program's current context (it may have been dropped since).
    context: Vec<ContextId>,
    /// Idle programs, longest idle first.
    idle: VecDeque<ProgramId>,
    /// Running programs, longest running first.
    running: VecDeque<ProgramId>,
}

fn service(program: ProgramId) -> f64 {
    (program % 7) as f64 * 0.5
}

impl World {
    fn build(n: usize) -> Self {
        let programs = n + RUNNING;
        // Each program comes back after about n / CALLS_PER_STEP steps.
        let gap = (n / CALLS_PER_STEP) as f64 * DT;
        let config = KvConfig {
            host_blocks: (n as u64 / 8) * BLOCKS,
            prior_gap: gap,
            prefetch_window: 2.0,
            // Priority weighed in (1 to ~1.05, see `service`), as this bench has always measured;
            // the default leaves it out.
            priority_scale: Some(60.0),
            ..KvConfig::default()
        };
        let mut kv = KvPlanner::new(config).unwrap();
        let mut world = Self {
            kv: KvPlanner::new(KvConfig::default()).unwrap(),
            now: 0.0,
            next_context: 0,
            context: Vec::with_capacity(programs),
            idle: VecDeque::with_capacity(programs),
            running: VecDeque::with_capacity(programs),
        };
        // Programs went idle CALLS_PER_STEP per step, in order; the last RUNNING are running.
        for p in 0..programs as ProgramId {
            let now = (p as usize / CALLS_PER_STEP) as f64 * DT;
            let context = world.next_context;
            world.next_context += 1;
            kv.insert(spec(context, p), now, service(p)).unwrap();
            world.context.push(context);
            if (p as usize) < n {
                world.idle.push_back(p);
            } else {
                kv.acquire(context, now).unwrap();
                world.running.push_back(p);
            }
            world.now = now;
        }
        // A tenth of the contexts on the host.
        kv.reclaim((n as u64 / 10) * BLOCKS, world.now).unwrap();
        world.kv = kv;
        // Two full rotations: every program has gone idle and come back twice (drops and
        // re-prefills, offloads and loads have settled).
        for _ in 0..2 * (n / CALLS_PER_STEP + RUNNING) {
            world.step();
        }
        assert_eq!((world.idle.len(), world.running.len()), (n, RUNNING));
        world
    }

    /// One engine step's planner work.
    fn step(&mut self) {
        self.now += DT;
        let now = self.now;
        for _ in 0..CALLS_PER_STEP {
            // A call finishes and leaves a longer context in place of the one it continued.
            let p = self.running.pop_front().unwrap();
            let old = self.context[p as usize];
            self.kv.release(old, now, service(p)).unwrap();
            self.kv.remove(old).unwrap();
            let context = self.next_context;
            self.next_context += 1;
            self.kv
                .insert(black_box(spec(context, p)), now, service(p))
                .unwrap();
            self.context[p as usize] = context;
            self.idle.push_back(p);
        }
        for _ in 0..CALLS_PER_STEP {
            // The program idle longest is back from its tool.
            let p = self.idle.pop_front().unwrap();
            let mut context = self.context[p as usize];
            if self.kv.tier(context).is_none() {
                // Dropped: re-prefilled into a fresh context.
                context = self.next_context;
                self.next_context += 1;
                self.kv.insert(spec(context, p), now, service(p)).unwrap();
                self.context[p as usize] = context;
            }
            black_box(self.kv.acquire(context, now).unwrap());
            self.running.push_back(p);
        }
        black_box(self.kv.reclaim(BLOCKS, now).unwrap());
        black_box(
            self.kv
                .prefetch(now, 8 * BLOCKS, CALLS_PER_STEP as u64 * BLOCKS)
                .unwrap(),
        );
    }
}

fn spec(context: ContextId, program: ProgramId) -> ContextSpec {
    ContextSpec {
        context,
        program,
        thread: 0,
        blocks: BLOCKS,
        parent: None,
    }
}

/// Per-step events over [`REPORT_STEPS`] steps, on stderr.
fn report(n: usize, world: &mut World) {
    let before: KvStats = world.kv.stats();
    let start = Instant::now();
    for _ in 0..REPORT_STEPS {
        world.step();
    }
    let elapsed = start.elapsed();
    let after = world.kv.stats();
    let per_step = |a: u64, b: u64| (a - b) as f64 / REPORT_STEPS as f64;
    eprintln!(
        "kv_step/{n}: {} contexts ({} GPU blocks, {} host blocks); per step: {:.2} offloads, \
         {:.2} drops, {:.2} loads ({:.2} prefetched); {:.2} µs/step over {REPORT_STEPS} steps",
        world.kv.len(),
        world.kv.gpu_blocks(),
        world.kv.host_blocks(),
        per_step(after.offloads, before.offloads),
        per_step(after.drops, before.drops),
        per_step(after.loads, before.loads),
        per_step(after.prefetches, before.prefetches),
        elapsed.as_secs_f64() * 1e6 / REPORT_STEPS as f64,
    );
}

fn bench_step(g: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let mut world = None;
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let w = world.get_or_insert_with(|| {
            let mut w = World::build(n);
            report(n, &mut w);
            w
        });
        b.iter_custom(|iters| {
            let steps = iters.max(MIN_STEPS);
            let start = Instant::now();
            for _ in 0..steps {
                w.step();
            }
            start.elapsed().mul_f64(iters as f64 / steps as f64)
        });
    });
}

fn kv_planner(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_step");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        bench_step(&mut g, n);
    }
    g.finish();
}

/// 3 benchmarks of ~4 s each; `--quick` caps each at ~0.5 s of measurement. Command-line flags
/// (`--measurement-time`, ...) still override these.
fn config() -> Criterion {
    let quick = std::env::args().any(|a| a == "--quick");
    Criterion::default()
        .warm_up_time(Duration::from_millis(if quick { 200 } else { 1000 }))
        .measurement_time(Duration::from_millis(if quick { 500 } else { 3000 }))
        .sample_size(20)
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = kv_planner
}
criterion_main!(benches);
