//! The KV planner: where each idle program context lives while its program waits on a tool (GPU,
//! host memory, nowhere), and which new programs are let in.
//!
//! A *context* is the KV of a finished call that a later call of its program may continue (the
//! caller's prefix-cache entry). It may extend a `parent` context (a prefix shared by several
//! threads); a context never leaves the GPU before the contexts that extend it there, and is never
//! dropped while anything extends it, so every stored context stays usable.
//!
//! Held contexts are *soft*: the caller asks [`KvPlanner::reclaim`] for blocks whenever a running
//! call needs memory, and gets every idle GPU block if it must. The planner picks the victims by
//! predicted next use (Belady, `KVFlow`: the context needed last goes first), optionally stretched
//! by the program's PLAS/ATLAS priority ([`KvConfig::priority_scale`]: a program with more
//! attained service waits longer in the scheduler's queues when it returns; off by default, as it
//! measured worse), offloads them to the host tier in one bulk copy while the host has room, and
//! drops what the host cannot hold, again the latest first. [`KvPlanner::prefetch`] brings host
//! contexts back before their predicted return.
//!
//! The gap until a context's next use is learned online ([`gap`]). A context not used by its
//! predicted time is re-predicted as "as long again as it has already waited" (heavy-tailed
//! gaps), so an abandoned context sinks to the back in O(log n) amortized work.
//!
//! Admission ([`admission`]) defers new programs while the live working sets exceed a budget, in
//! arrival order, never longer than a beta-derived bound.
//!
//! Every operation is O(log n) in the contexts held (plus the contexts it moves).

mod admission;
mod gap;
mod working_set;

use std::cmp::Reverse;
use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{CoreError, Result};
use crate::types::{ProgramId, ThreadId, Time};

use admission::Admission;
pub use admission::AdmissionStats;
use gap::GapEstimator;
use working_set::WorkingSets;

/// A context, chosen by the caller (the simulator uses the id of the call that produced it).
pub type ContextId = u64;

/// Where a context's KV is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Gpu,
    Host,
}

/// What the caller must do to one context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Move {
    /// Copy GPU -> host in one bulk transfer, then free its GPU blocks.
    Offload,
    /// Free it (from the tier given with the action); a later call re-prefills it.
    Drop,
    /// Copy host -> GPU (a prefetch or a call that needs it now), then free its host blocks.
    Load,
}

/// One step of a plan: `context` (of `blocks` blocks, on `from` before the move) gets `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvAction {
    pub context: ContextId,
    pub action: Move,
    pub from: Tier,
    pub blocks: u64,
}

/// A context as [`KvPlanner::insert`] receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextSpec {
    pub context: ContextId,
    pub program: ProgramId,
    pub thread: ThreadId,
    /// Blocks it holds beyond its parent's.
    pub blocks: u64,
    /// The context it extends (which must be on the GPU, of the same program).
    pub parent: Option<ContextId>,
}

/// How the planner trades memory for reuse. Times are in the caller's clock unit (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct KvConfig {
    /// Blocks of the host tier (0: no host tier, evicted contexts are dropped).
    pub host_blocks: u64,
    /// Gap (idle -> next use) assumed before anything is observed.
    pub prior_gap: f64,
    /// A host context is prefetched once its predicted next use is this close.
    pub prefetch_window: f64,
    /// Attained service (seconds) that doubles a context's predicted next use: how strongly the
    /// program's PLAS/ATLAS priority weighs in retention. `None` (the default) leaves priority
    /// out: measured in the simulator, every scale tried lowered throughput and raised the tail
    /// (a low-priority program loses its context, re-prefills, falls further behind).
    pub priority_scale: Option<f64>,
    /// A program counts in the admission working set while it was active (a context made or
    /// used) within this many seconds. Infinite by default: under load a program's next call
    /// can wait in the scheduler's queue for minutes, and a finite window then stops counting
    /// programs that are about to need their contexts (measured: twice the programs unfinished
    /// on bfcl past the cliff with 10 or 60 s).
    pub working_set_window: f64,
    /// Working-set budget in blocks (live programs' working sets + running calls) above which new
    /// programs are deferred; `None` admits every program at once.
    pub admission_blocks: Option<u64>,
    /// Deferral bound = `deferral_beta` x max(`deferral_floor`, mean service of ended programs):
    /// the anti-starvation rule `W / T >= beta` applied to a program not yet admitted.
    pub deferral_beta: f64,
    pub deferral_floor: f64,
    /// Admission defers only while the budget holds at least this many typical working sets
    /// (the live programs' mean); with fewer, every program is admitted. With room for `m`
    /// programs, a deferred program waits about `1 / m` of a whole program for one to end: when
    /// a single program fills a quarter of the cache or more, that wait costs more than the
    /// re-prefills it saves (measured on lats, where one tree search fills half of it). 0:
    /// always defer by the budget.
    pub admission_min_programs: f64,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            host_blocks: 0,
            prior_gap: 5.0,
            prefetch_window: 1.0,
            priority_scale: None,
            working_set_window: f64::INFINITY,
            admission_blocks: None,
            deferral_beta: 8.0,
            deferral_floor: 1.0,
            admission_min_programs: 4.0,
        }
    }
}

impl KvConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("prior_gap", self.prior_gap),
            ("priority_scale", self.priority_scale.unwrap_or(1.0)),
            ("deferral_beta", self.deferral_beta),
            ("deferral_floor", self.deferral_floor),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(CoreError::InvalidConfig(format!(
                    "{name} must be finite and > 0, got {value}"
                )));
            }
        }
        if !(self.admission_min_programs.is_finite() && self.admission_min_programs >= 0.0) {
            return Err(CoreError::InvalidConfig(format!(
                "admission_min_programs must be finite and >= 0, got {}",
                self.admission_min_programs
            )));
        }
        if self.working_set_window.is_nan() || self.working_set_window <= 0.0 {
            return Err(CoreError::InvalidConfig(format!(
                "working_set_window must be > 0 (inf: never expire), got {}",
                self.working_set_window
            )));
        }
        if !(self.prefetch_window.is_finite() && self.prefetch_window >= 0.0) {
            return Err(CoreError::InvalidConfig(format!(
                "prefetch_window must be finite and >= 0, got {}",
                self.prefetch_window
            )));
        }
        Ok(())
    }
}

/// What the planner has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KvStats {
    pub offloads: u64,
    pub offloaded_blocks: u64,
    pub loads: u64,
    pub loaded_blocks: u64,
    pub prefetches: u64,
    pub drops: u64,
    pub dropped_blocks: u64,
}

#[derive(Debug, Clone)]
struct Context {
    program: ProgramId,
    thread: ThreadId,
    blocks: u64,
    tier: Tier,
    parent: Option<ContextId>,
    /// Contexts extending this one, and how many of them are on the GPU.
    children: u32,
    gpu_children: u32,
    /// Running calls sharing it (it is idle at 0).
    users: u32,
    idle_since: f64,
    /// Blocks of it and of every context it extends.
    chain_blocks: u64,
    /// `1 + service / priority_scale`: stretches every predicted gap of the program.
    weight: f64,
    /// Predicted next use, priority-weighted: the key of every index.
    due: Time,
    /// The caller's guess of the gap (e.g. the tool's expected duration), the prior of its
    /// thread's observed gaps for this context ([`KvPlanner::insert_with_prior`]).
    gap_prior: Option<f64>,
}

type Key = (Time, ContextId);

/// The planner. See the module documentation.
#[derive(Debug, Clone)]
pub struct KvPlanner {
    config: KvConfig,
    contexts: FxHashMap<ContextId, Context>,
    by_program: FxHashMap<ProgramId, FxHashSet<ContextId>>,
    working_sets: WorkingSets,
    /// Idle GPU contexts nothing on the GPU extends: offload / drop candidates, latest due first.
    gpu_victims: BTreeSet<Reverse<Key>>,
    /// Host contexts nothing extends: drop candidates, latest due first.
    host_victims: BTreeSet<Reverse<Key>>,
    /// Every host context, earliest due first: prefetch candidates.
    host_due: BTreeSet<Key>,
    /// Every idle context, earliest due first: re-predicted once overdue.
    idle_due: BTreeSet<Key>,
    gpu_used: u64,
    host_used: u64,
    gaps: GapEstimator,
    admission: Admission,
    stats: KvStats,
}

impl KvPlanner {
    pub fn new(config: KvConfig) -> Result<Self> {
        config.validate()?;
        let window = config.working_set_window;
        Ok(Self {
            gaps: GapEstimator::new(config.prior_gap),
            admission: Admission::new(
                config.deferral_beta,
                config.deferral_floor,
                config.admission_min_programs,
            ),
            config,
            contexts: FxHashMap::default(),
            by_program: FxHashMap::default(),
            working_sets: WorkingSets::new(window),
            gpu_victims: BTreeSet::new(),
            host_victims: BTreeSet::new(),
            host_due: BTreeSet::new(),
            idle_due: BTreeSet::new(),
            gpu_used: 0,
            host_used: 0,
            stats: KvStats::default(),
        })
    }

    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    pub fn stats(&self) -> KvStats {
        self.stats
    }

    /// Blocks the contexts hold on the GPU (idle or shared by running calls) and on the host.
    pub fn gpu_blocks(&self) -> u64 {
        self.gpu_used
    }

    pub fn host_blocks(&self) -> u64 {
        self.host_used
    }

    pub fn host_free(&self) -> u64 {
        self.config.host_blocks - self.host_used
    }

    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// Where `context` is, `None` if the planner does not hold it.
    pub fn tier(&self, context: ContextId) -> Option<Tier> {
        self.contexts.get(&context).map(|c| c.tier)
    }

    /// Expected seconds from idle to next use for a context of `(program, thread)`.
    pub fn expected_gap(&self, program: ProgramId, thread: ThreadId) -> f64 {
        self.gaps.expected(program, thread)
    }

    /// A finished call left `spec.blocks` GPU blocks of context `spec.context` (beyond its
    /// parent's), idle from `now`; `service` is its program's attained service (its priority).
    pub fn insert(&mut self, spec: ContextSpec, now: f64, service: f64) -> Result<()> {
        self.insert_with_prior(spec, now, service, None)
    }

    /// [`KvPlanner::insert`] with the caller's guess of the gap until the context's next use
    /// (seconds; e.g. the duration of the tool the call started): it takes the place of the
    /// program's mean as the prior of the thread's observed gaps, so what is observed still
    /// overrides it (the gap to predict is until the program's next LLM call, which a tool's
    /// duration only approximates).
    pub fn insert_with_prior(
        &mut self,
        spec: ContextSpec,
        now: f64,
        service: f64,
        gap_prior: Option<f64>,
    ) -> Result<()> {
        if let Some(prior) = gap_prior {
            if !(prior.is_finite() && prior >= 0.0) {
                return Err(invalid(format!(
                    "gap_prior must be finite and >= 0, got {prior}"
                )));
            }
        }
        let ContextSpec {
            context,
            program,
            thread,
            blocks,
            parent,
        } = spec;
        check_time("now", now)?;
        check_service(service)?;
        if self.contexts.contains_key(&context) {
            return Err(invalid(format!("context {context} already exists")));
        }
        let mut chain_blocks = blocks;
        if let Some(p) = parent {
            let Some(parent_ctx) = self.contexts.get(&p) else {
                return Err(invalid(format!("parent context {p} is not held")));
            };
            if parent_ctx.tier != Tier::Gpu {
                return Err(invalid(format!("parent context {p} is not on the GPU")));
            }
            if parent_ctx.program != program {
                return Err(invalid(format!(
                    "parent context {p} belongs to program {}, not {program}",
                    parent_ctx.program
                )));
            }
            chain_blocks += parent_ctx.chain_blocks;
            self.update(p, |c| {
                c.children += 1;
                c.gpu_children += 1;
            });
        }
        let weight = self.weight(service);
        let gap = self.gaps.expected_with(program, thread, gap_prior);
        self.contexts.insert(
            context,
            Context {
                program,
                thread,
                blocks,
                tier: Tier::Gpu,
                parent,
                children: 0,
                gpu_children: 0,
                users: 0,
                idle_since: now,
                chain_blocks,
                weight,
                due: Time(now + gap * weight),
                gap_prior,
            },
        );
        self.gpu_used += blocks;
        self.by_program.entry(program).or_default().insert(context);
        self.working_sets.touch(program, chain_blocks, now);
        self.admission.started(program);
        self.index(context);
        Ok(())
    }

    /// A call that arrived at `now` starts sharing `context` (the gap from the context going idle
    /// to that arrival trains the estimate). Returns the loads that bring it (and any part
    /// of its chain on the host) back to the GPU first; the caller then reclaims whatever GPU
    /// blocks it is short of.
    pub fn acquire(&mut self, context: ContextId, now: f64) -> Result<Vec<KvAction>> {
        check_time("now", now)?;
        let Some(ctx) = self.contexts.get(&context) else {
            return Err(invalid(format!("context {context} is not held")));
        };
        self.working_sets.touch(ctx.program, 0, now);
        if ctx.users == 0 {
            let gap = now - ctx.idle_since;
            self.gaps.observe(ctx.program, ctx.thread, gap);
        }
        let mut loads = Vec::new();
        self.load_chain(context, &mut loads);
        self.update(context, |c| c.users += 1);
        Ok(loads)
    }

    /// A call that shared `context` stopped sharing it at `now` (finished or preempted).
    pub fn release(&mut self, context: ContextId, now: f64, service: f64) -> Result<()> {
        check_time("now", now)?;
        check_service(service)?;
        match self.contexts.get(&context) {
            None => return Err(invalid(format!("context {context} is not held"))),
            Some(c) if c.users == 0 => {
                return Err(invalid(format!("context {context} has no users")));
            }
            Some(_) => {}
        }
        let weight = self.weight(service);
        let gap = {
            let c = &self.contexts[&context];
            self.gaps.expected_with(c.program, c.thread, c.gap_prior)
        };
        self.update(context, |c| {
            c.users -= 1;
            if c.users == 0 {
                c.idle_since = now;
                c.weight = weight;
                c.due = Time(now + gap * weight);
            }
        });
        Ok(())
    }

    /// Forget `context` (the caller merged it into a longer one, or lost it); returns where it was
    /// and its blocks. It must be idle and nothing may extend it.
    pub fn remove(&mut self, context: ContextId) -> Result<(Tier, u64)> {
        match self.contexts.get(&context) {
            None => Err(invalid(format!("context {context} is not held"))),
            Some(c) if c.users > 0 || c.children > 0 => Err(invalid(format!(
                "context {context} is in use or extended; it cannot be removed"
            ))),
            Some(c) => {
                let out = (c.tier, c.blocks);
                self.forget(context);
                Ok(out)
            }
        }
    }

    /// Free at least `need` GPU blocks from idle contexts if there are that many: each victim (the
    /// latest predicted use first) is offloaded while the host has room (dropping host contexts
    /// due later than it to make room), else dropped. Returns the moves, in order.
    pub fn reclaim(&mut self, need: u64, now: f64) -> Result<Vec<KvAction>> {
        check_time("now", now)?;
        self.repredict(now);
        let mut plan = Vec::new();
        let mut passed = Vec::new();
        let mut forced = 0;
        let mut freed = 0;
        while freed < need {
            if let Some(&Reverse((due, victim))) = self.gpu_victims.first() {
                let c = &self.contexts[&victim];
                let (blocks, children) = (c.blocks, c.children);
                if self.make_host_room(blocks, due, &mut plan) {
                    self.offload(victim, &mut plan);
                } else if children == 0 {
                    self.drop_context(victim, &mut plan);
                } else {
                    // Host contexts extend it, so it cannot be dropped alone, and the host is full
                    // of contexts due sooner: try the next victim first.
                    self.gpu_victims.remove(&Reverse((due, victim)));
                    passed.push(victim);
                    continue;
                }
                freed += blocks;
                continue;
            }
            // Still short with no victim left: the running call comes first, so the contexts
            // passed over go too (latest due first), to the host if it can make room whatever
            // the due, else with their host descendants. What that exposes is tried in order.
            let Some(&victim) = passed.get(forced) else {
                break;
            };
            forced += 1;
            let Some(c) = self.contexts.get(&victim) else {
                continue;
            };
            if c.tier != Tier::Gpu || c.gpu_children > 0 || c.users > 0 {
                continue;
            }
            let blocks = c.blocks;
            if self.force_host_room(blocks, &mut plan) {
                self.offload(victim, &mut plan);
                freed += blocks;
            } else {
                freed += self.drop_with_descendants(victim, &mut plan);
            }
        }
        for id in passed {
            if self.contexts.contains_key(&id) {
                self.update(id, |_| {});
            }
        }
        Ok(plan)
    }

    /// Loads of host contexts whose predicted use is within the prefetch window, earliest first,
    /// while they fit in `gpu_free` blocks (and `max_blocks`, the link's budget this step).
    pub fn prefetch(&mut self, now: f64, gpu_free: u64, max_blocks: u64) -> Result<Vec<KvAction>> {
        check_time("now", now)?;
        self.repredict(now);
        let budget = gpu_free.min(max_blocks);
        let horizon = Time(now + self.config.prefetch_window);
        let mut plan = Vec::new();
        let mut moved = 0;
        while let Some(&(due, context)) = self.host_due.first() {
            if due > horizon {
                break;
            }
            let chain = self.host_chain_blocks(context);
            if moved + chain > budget {
                break;
            }
            moved += chain;
            let start = plan.len();
            self.load_chain(context, &mut plan);
            self.stats.prefetches += (plan.len() - start) as u64;
        }
        Ok(plan)
    }

    /// The program ended: every context it holds is freed. Returns them with their tier and
    /// blocks; `service` (its attained service) trains the deferral bound.
    pub fn end_program(&mut self, program: ProgramId, service: f64) -> Vec<KvAction> {
        self.working_sets.remove(program);
        let ids: Vec<ContextId> = self
            .by_program
            .remove(&program)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default();
        let mut freed = Vec::with_capacity(ids.len());
        for id in &ids {
            let c = &self.contexts[id];
            freed.push(KvAction {
                context: *id,
                action: Move::Drop,
                from: c.tier,
                blocks: c.blocks,
            });
        }
        for id in ids {
            self.unindex(id);
            let c = self
                .contexts
                .remove(&id)
                .expect("invariant: listed by program");
            match c.tier {
                Tier::Gpu => self.gpu_used -= c.blocks,
                Tier::Host => self.host_used -= c.blocks,
            }
        }
        self.gaps.forget(program);
        if service.is_finite() && service >= 0.0 {
            self.admission.ended(program, service);
        } else {
            self.admission.ended(program, 0.0);
        }
        freed
    }

    // ------------------------------------------------------------------------------ admission

    /// Sum of the working sets of the programs active within the window (blocks), wherever
    /// their contexts are now.
    pub fn working_sets(&self) -> u64 {
        self.working_sets.total()
    }

    /// A new program asks to start at `now` while running calls hold `running_blocks`: `true` if
    /// it may (then it counts as live), else it waits in the deferral queue. Active programs'
    /// working sets count whole, dropped contexts included: they will be needed again.
    pub fn admit(&mut self, program: ProgramId, now: f64, running_blocks: u64) -> Result<bool> {
        check_time("now", now)?;
        self.working_sets.expire(now);
        let used = self.working_sets.total() + running_blocks;
        Ok(self.admission.admit(
            program,
            now,
            used,
            self.config.admission_blocks,
            self.working_sets.counted(),
        ))
    }

    /// Deferred programs that may start now, in arrival order: those that fit the budget, and
    /// every one that has waited its bound.
    pub fn admissions(&mut self, now: f64, running_blocks: u64) -> Result<Vec<ProgramId>> {
        check_time("now", now)?;
        self.working_sets.expire(now);
        let used = self.working_sets.total() + running_blocks;
        Ok(self.admission.release(
            now,
            used,
            self.config.admission_blocks,
            self.working_sets.counted(),
        ))
    }

    /// Programs deferred, the longest deferral so far, the bound in force and the queue length.
    pub fn admission_stats(&self, now: f64) -> AdmissionStats {
        self.admission.stats(now)
    }

    // ------------------------------------------------------------------------------ internals

    fn make_host_room(&mut self, blocks: u64, due: Time, plan: &mut Vec<KvAction>) -> bool {
        // No host tier: not even a context of 0 blocks goes there (it would pin its parent).
        if self.config.host_blocks == 0 || blocks > self.config.host_blocks {
            return false;
        }
        // Only host contexts due later than the newcomer make way for it; count before dropping.
        let mut candidates = Vec::new();
        let mut room = self.host_free();
        for &Reverse((d, id)) in &self.host_victims {
            if room >= blocks || d <= due {
                break;
            }
            room += self.contexts[&id].blocks;
            candidates.push(id);
        }
        if room < blocks {
            return false;
        }
        for id in candidates {
            self.drop_context(id, plan);
        }
        true
    }

    /// Drops host contexts, latest due first, until `blocks` fit; false if they cannot.
    fn force_host_room(&mut self, blocks: u64, plan: &mut Vec<KvAction>) -> bool {
        if self.config.host_blocks == 0 || blocks > self.config.host_blocks {
            return false;
        }
        while self.host_free() < blocks {
            let Some(&Reverse((_, id))) = self.host_victims.first() else {
                return false;
            };
            self.drop_context(id, plan);
        }
        true
    }

    fn offload(&mut self, context: ContextId, plan: &mut Vec<KvAction>) {
        self.move_to(context, Tier::Host, plan);
    }

    /// Moves `context` and the part of its chain on the host to the GPU, root first.
    fn load_chain(&mut self, context: ContextId, plan: &mut Vec<KvAction>) {
        let mut chain = Vec::new();
        let mut at = Some(context);
        while let Some(id) = at {
            let c = &self.contexts[&id];
            if c.tier == Tier::Gpu {
                break;
            }
            chain.push(id);
            at = c.parent;
        }
        for &id in chain.iter().rev() {
            self.move_to(id, Tier::Gpu, plan);
        }
    }

    /// One bulk copy of `context` to the other tier: the plan, the counters, the tier totals and
    /// its parent's count of GPU children.
    fn move_to(&mut self, context: ContextId, to: Tier, plan: &mut Vec<KvAction>) {
        let (blocks, parent) = {
            let c = &self.contexts[&context];
            (c.blocks, c.parent)
        };
        let (action, from) = match to {
            Tier::Host => {
                self.stats.offloads += 1;
                self.stats.offloaded_blocks += blocks;
                self.gpu_used -= blocks;
                self.host_used += blocks;
                (Move::Offload, Tier::Gpu)
            }
            Tier::Gpu => {
                self.stats.loads += 1;
                self.stats.loaded_blocks += blocks;
                self.host_used -= blocks;
                self.gpu_used += blocks;
                (Move::Load, Tier::Host)
            }
        };
        plan.push(KvAction {
            context,
            action,
            from,
            blocks,
        });
        self.update(context, |c| c.tier = to);
        if let Some(p) = parent {
            self.update(p, |c| match to {
                Tier::Gpu => c.gpu_children += 1,
                Tier::Host => c.gpu_children -= 1,
            });
        }
    }

    fn host_chain_blocks(&self, context: ContextId) -> u64 {
        let mut blocks = 0;
        let mut at = Some(context);
        while let Some(id) = at {
            let c = &self.contexts[&id];
            if c.tier == Tier::Gpu {
                break;
            }
            blocks += c.blocks;
            at = c.parent;
        }
        blocks
    }

    /// Drops an idle GPU context that nothing on the GPU extends, after the (host) contexts
    /// extending it, deepest first; returns its blocks. O(contexts of its program x depth).
    fn drop_with_descendants(&mut self, context: ContextId, plan: &mut Vec<KvAction>) -> u64 {
        let c = &self.contexts[&context];
        let blocks = c.blocks;
        let mut descendants = Vec::new();
        if c.children > 0 {
            for &id in &self.by_program[&c.program] {
                let mut depth = 0u32;
                let mut at = self.contexts[&id].parent;
                while let Some(p) = at {
                    depth += 1;
                    if p == context {
                        descendants.push((Reverse(depth), id));
                        break;
                    }
                    at = self.contexts[&p].parent;
                }
            }
            descendants.sort_unstable();
        }
        for (_, id) in descendants {
            self.drop_context(id, plan);
        }
        self.drop_context(context, plan);
        blocks
    }

    fn drop_context(&mut self, context: ContextId, plan: &mut Vec<KvAction>) {
        let c = &self.contexts[&context];
        plan.push(KvAction {
            context,
            action: Move::Drop,
            from: c.tier,
            blocks: c.blocks,
        });
        self.stats.drops += 1;
        self.stats.dropped_blocks += c.blocks;
        self.forget(context);
    }

    /// Removes a context nothing extends and nobody uses, fixing its parent's counts.
    fn forget(&mut self, context: ContextId) {
        self.unindex(context);
        let c = self
            .contexts
            .remove(&context)
            .expect("invariant: caller checked it is held");
        match c.tier {
            Tier::Gpu => self.gpu_used -= c.blocks,
            Tier::Host => self.host_used -= c.blocks,
        }
        if let Some(set) = self.by_program.get_mut(&c.program) {
            set.remove(&context);
        }
        if let Some(p) = c.parent {
            let on_gpu = c.tier == Tier::Gpu;
            self.update(p, |pc| {
                pc.children -= 1;
                if on_gpu {
                    pc.gpu_children -= 1;
                }
            });
        }
    }

    /// Re-predicts every idle context whose predicted use has passed: it will come, if at all,
    /// about as long from now as it has waited already.
    fn repredict(&mut self, now: f64) {
        while let Some(&(due, id)) = self.idle_due.first() {
            if due.0 >= now {
                break;
            }
            let expected = {
                let c = &self.contexts[&id];
                self.gaps.expected_with(c.program, c.thread, c.gap_prior)
            };
            self.update(id, |c| {
                let waited = (now - c.idle_since).max(expected);
                c.due = Time(now + waited * c.weight);
            });
        }
    }

    /// `1 + service / priority_scale`, or 1 when priority is left out.
    fn weight(&self, service: f64) -> f64 {
        self.config
            .priority_scale
            .map_or(1.0, |scale| 1.0 + service / scale)
    }

    /// Applies `f` to a held context, keeping every index in step with it.
    fn update(&mut self, context: ContextId, f: impl FnOnce(&mut Context)) {
        self.unindex(context);
        f(self
            .contexts
            .get_mut(&context)
            .expect("invariant: caller checked it is held"));
        self.index(context);
    }

    fn index(&mut self, id: ContextId) {
        let c = &self.contexts[&id];
        let key = (c.due, id);
        if c.users > 0 {
            return;
        }
        self.idle_due.insert(key);
        match c.tier {
            Tier::Gpu => {
                if c.gpu_children == 0 {
                    self.gpu_victims.insert(Reverse(key));
                }
            }
            Tier::Host => {
                self.host_due.insert(key);
                if c.children == 0 {
                    self.host_victims.insert(Reverse(key));
                }
            }
        }
    }

    fn unindex(&mut self, id: ContextId) {
        let c = &self.contexts[&id];
        let key = (c.due, id);
        self.idle_due.remove(&key);
        self.gpu_victims.remove(&Reverse(key));
        self.host_victims.remove(&Reverse(key));
        self.host_due.remove(&key);
    }
}

fn invalid(msg: String) -> CoreError {
    CoreError::InvalidArgument(msg)
}

fn check_time(name: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(invalid(format!("{name} must be finite, got {value}")))
    }
}

fn check_service(service: f64) -> Result<()> {
    if service.is_finite() && service >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "service must be finite and >= 0, got {service}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(context: ContextId, thread: ThreadId) -> ContextSpec {
        ContextSpec {
            context,
            program: 1,
            thread,
            blocks: 1,
            parent: None,
        }
    }

    /// The victim of a one-block reclaim at `now`: the context predicted to be needed last.
    fn victim(planner: &mut KvPlanner, now: f64) -> ContextId {
        planner.reclaim(1, now).unwrap()[0].context
    }

    #[test]
    fn a_gap_prior_orders_fresh_contexts_and_observed_gaps_override_it() {
        // Nothing observed: the workload prior (5 s) for context 1, the caller's 60 s for 2.
        let mut planner = KvPlanner::new(KvConfig::default()).unwrap();
        planner.insert(spec(1, 1), 0.0, 0.0).unwrap();
        planner
            .insert_with_prior(spec(2, 2), 0.0, 0.0, Some(60.0))
            .unwrap();
        planner
            .insert_with_prior(spec(3, 3), 0.0, 0.0, Some(0.5))
            .unwrap();
        assert_eq!(victim(&mut planner, 0.0), 2);
        assert_eq!(victim(&mut planner, 0.0), 1);

        // Thread 2's gaps are observed at 1 s: they outweigh its 60 s prior (2 pseudo-gaps).
        let mut planner = KvPlanner::new(KvConfig::default()).unwrap();
        let mut now = 0.0;
        for i in 0..40 {
            planner
                .insert_with_prior(spec(10 + i, 2), now, 0.0, Some(60.0))
                .unwrap();
            now += 1.0;
            planner.acquire(10 + i, now).unwrap();
            planner.release(10 + i, now, 0.0).unwrap();
            planner.remove(10 + i).unwrap();
        }
        let expected = planner.gaps.expected_with(1, 2, Some(60.0));
        assert!((expected - (40.0 + 2.0 * 60.0) / 42.0).abs() < 1e-9);
        planner
            .insert_with_prior(spec(1, 2), now, 0.0, Some(60.0))
            .unwrap();
        assert!(planner.contexts[&1].due.0 - now < 4.0);
    }

    #[test]
    fn a_bad_gap_prior_is_refused() {
        let mut planner = KvPlanner::new(KvConfig::default()).unwrap();
        for prior in [f64::NAN, -1.0, f64::INFINITY] {
            assert!(
                planner
                    .insert_with_prior(spec(1, 0), 0.0, 0.0, Some(prior))
                    .is_err()
            );
        }
        assert!(planner.is_empty());
    }
}
