//! The scheduler: process table + policy + per-engine queues, driven by the caller's clock.
//!
//! Algorithm 1 of the paper, made incremental: an arriving call takes its program's priority value
//! and enters the matching queue; a running call that uses up its queue's quantum is demoted one
//! queue; a queued call whose program-level waiting/service ratio reaches beta is promoted to the
//! top queue; batch formation walks the queues in order, FCFS inside a queue, and stops at the
//! first call that does not fit. Running calls that fall outside the batch are preempted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::SchedulerConfig;
use crate::dag;
use crate::error::{CoreError, Result};
use crate::policy::Policy;
use crate::program_table::{Call, FinishedCall, Program, ProgramTable, Slot, swap_remove_tracked};
use crate::queue::{EngineQueue, Watch};
use crate::types::{CallId, CallState, Capacity, EngineId, ProgramId, ThreadId, Time};

/// A call to submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSpec<'a> {
    pub call: CallId,
    pub program: ProgramId,
    pub thread: ThreadId,
    pub engine: EngineId,
    /// Explicit parents; `None` means the previous call of the same thread (if any).
    pub parents: Option<&'a [CallId]>,
    pub prompt_tokens: u64,
}

impl CallSpec<'_> {
    /// A call of thread 0 with an implicit parent, on engine 0.
    pub fn new(call: CallId, program: ProgramId) -> CallSpec<'static> {
        CallSpec {
            call,
            program,
            thread: 0,
            engine: 0,
            parents: None,
            prompt_tokens: 0,
        }
    }
}

/// What one engine runs after a step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The batch, in priority order.
    pub running: Vec<CallId>,
    /// Calls that were queued and now run.
    pub admitted: Vec<CallId>,
    /// Calls that were running and are now preempted (their KV must be freed or swapped out).
    pub preempted: Vec<CallId>,
    /// Queued calls whose KV footprint alone exceeds the engine's budget; skipped, still queued.
    pub too_large: Vec<CallId>,
    /// Quantum demotions applied in this step.
    pub demoted: u32,
    /// Anti-starvation promotions applied in this step.
    pub promoted: u32,
    /// Programs garbage-collected in this step (idle past the TTL).
    pub expired_programs: Vec<ProgramId>,
}

/// The program-aware scheduling core. Not internally synchronized: wrap it in a lock to share it.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    policy: Box<dyn Policy>,
    /// Anti-starvation beta, when promotion applies (a multi-level policy with beta set).
    beta: Option<f64>,
    table: ProgramTable,
    engines: FxHashMap<EngineId, EngineQueue>,
    /// (idle deadline, program) of programs without live calls.
    idle: BinaryHeap<Reverse<(Time, ProgramId)>>,
    now: f64,
    next_seq: u64,
    steps: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.validate()?;
        let policy = config.policy.build();
        Ok(Self {
            beta: config.starvation_beta.filter(|_| policy.multilevel()),
            policy,
            config,
            table: ProgramTable::default(),
            engines: FxHashMap::default(),
            idle: BinaryHeap::new(),
            now: 0.0,
            next_seq: 0,
            steps: 0,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    pub fn table(&self) -> &ProgramTable {
        &self.table
    }

    /// Latest time seen.
    pub fn now(&self) -> f64 {
        self.now
    }

    pub fn program(&self, id: ProgramId) -> Result<&Program> {
        self.table.program(id)
    }

    pub fn call(&self, id: CallId) -> Result<&Call> {
        self.table.call(id)
    }

    /// Queued calls per queue level on an engine (all zero for an engine never seen).
    pub fn queue_depths(&self, engine: EngineId) -> Vec<u32> {
        self.engines.get(&engine).map_or_else(
            || vec![0; self.config.levels()],
            |e| e.queued_per_level.clone(),
        )
    }

    /// (running, queued) calls on an engine.
    pub fn engine_load(&self, engine: EngineId) -> (usize, usize) {
        self.engines
            .get(&engine)
            .map_or((0, 0), |e| (e.running.len(), e.queued()))
    }

    /// Engines that have been given calls.
    pub fn engines(&self) -> Vec<EngineId> {
        let mut ids: Vec<EngineId> = self.engines.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Validates a caller's time; time never goes backwards, so an earlier time reads as the latest.
    fn clock(&self, now: f64) -> Result<f64> {
        if now.is_finite() {
            Ok(now.max(self.now))
        } else {
            Err(CoreError::InvalidArgument(format!(
                "time must be finite, got {now}"
            )))
        }
    }

    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn engine_mut(&mut self, engine: EngineId) -> &mut EngineQueue {
        self.engines
            .get_mut(&engine)
            .expect("invariant: the engine of a live call exists")
    }

    // ----------------------------------------------------------------------------- submission

    /// Registers a new waiting call (creating its program on first sight).
    pub fn submit(&mut self, spec: &CallSpec<'_>, now: f64) -> Result<()> {
        self.submit_many(std::slice::from_ref(spec), now)
    }

    /// Registers several calls at once; all or none are accepted. A parent may be an earlier call
    /// of the same batch.
    pub fn submit_many(&mut self, specs: &[CallSpec<'_>], now: f64) -> Result<()> {
        let now = self.clock(now)?;
        let mut batch = FxHashMap::default();
        for spec in specs {
            if self.table.knows_call(spec.call) || batch.contains_key(&spec.call) {
                return Err(CoreError::DuplicateCall(spec.call));
            }
            if let Some(parents) = spec.parents {
                dag::check_parents(&self.table, &batch, spec.call, spec.program, parents)?;
            }
            if specs.len() > 1 {
                batch.insert(spec.call, spec.program);
            }
        }
        self.now = now;
        for spec in specs {
            self.insert_call(spec, now);
        }
        Ok(())
    }

    fn insert_call(&mut self, spec: &CallSpec<'_>, now: f64) {
        let thread = (spec.program, spec.thread);
        let thread_prev = self.table.threads.insert(thread, spec.call);
        // A stale entry (its call aborted and the id reused elsewhere) is no parent.
        let thread_prev = thread_prev.filter(|prev| self.table.thread_of(*prev) == Some(thread));
        let parents = spec.parents.unwrap_or(thread_prev.as_slice());
        let path_start = dag::path_start(&self.table, parents, now);
        let program = self
            .table
            .programs
            .entry(spec.program)
            .or_insert_with(|| Program::new(spec.program, now));
        if thread_prev.is_none() && !program.threads.contains(&spec.thread) {
            program.threads.push(spec.thread);
        }
        program.active_calls += 1;
        program.last_arrival = now;
        program.engine = Some(spec.engine);
        program.idle_deadline = f64::INFINITY;
        let priority = self.policy.arrival_priority(program);
        let level = if self.policy.multilevel() {
            self.config.level_of(priority)
        } else {
            0
        };
        let seq = self.take_seq();
        let slot = self.table.insert(Call {
            id: spec.call,
            program: spec.program,
            thread: spec.thread,
            engine: spec.engine,
            state: CallState::Waiting,
            level,
            arrival: now,
            prompt_tokens: spec.prompt_tokens,
            generated_tokens: 0,
            priority,
            path_start,
            thread_prev,
            seq,
            since: now,
            wait_acc: 0.0,
            service_acc: 0.0,
            wait_reset: 0.0,
            service_reset: 0.0,
            quantum_left: self.config.quanta[usize::from(level)],
            expiry: f64::INFINITY,
            starve_key: f64::INFINITY,
            live_pos: 0,
            running_pos: 0,
            selected_in: 0,
        });
        let levels = self.config.levels();
        self.engines
            .entry(spec.engine)
            .or_insert_with(|| EngineQueue::new(levels));
        self.enqueue(slot);
    }

    // ----------------------------------------------------------------------------- engine step

    /// One engine step: records token progress and finished calls, applies due quantum demotions
    /// and starvation promotions, forms the batch, and garbage-collects idle programs. Validates
    /// everything first: on error nothing changed.
    pub fn step(
        &mut self,
        engine: EngineId,
        now: f64,
        capacity: Capacity,
        finished: &[CallId],
        progress: &[(CallId, u64)],
    ) -> Result<Decision> {
        let now = self.clock(now)?;
        let progress: Vec<(Slot, u64)> = progress
            .iter()
            .map(|&(id, tokens)| Ok((self.slot_on(engine, id, None)?, tokens)))
            .collect::<Result<_>>()?;
        let finished: Vec<Slot> = finished
            .iter()
            .map(|&id| self.slot_on(engine, id, Some(CallState::Running)))
            .collect::<Result<_>>()?;
        if finished.len() > 1 {
            let mut seen = FxHashSet::default();
            if let Some(dup) = finished.iter().find(|s| !seen.insert(**s)) {
                return Err(CoreError::InvalidArgument(format!(
                    "call {} is listed as finished twice",
                    self.table.at(*dup).id
                )));
            }
        }
        self.now = now;
        for (slot, tokens) in progress {
            let call = self.table.at_mut(slot);
            call.generated_tokens = call.generated_tokens.saturating_add(tokens);
        }
        for slot in finished {
            self.retire(slot, now, true);
        }
        let mut decision = Decision::default();
        if self.engines.contains_key(&engine) {
            decision.demoted = self.apply_demotions(engine, now);
            decision.promoted = self.apply_promotions(engine, now);
            self.form_batch(engine, now, capacity, &mut decision);
            self.compact(engine);
        }
        decision.expired_programs = self.collect_garbage_at(now);
        Ok(decision)
    }

    /// [`Scheduler::step`] with nothing to report.
    pub fn schedule(&mut self, engine: EngineId, now: f64, capacity: Capacity) -> Result<Decision> {
        self.step(engine, now, capacity, &[], &[])
    }

    /// The slot of a live call on `engine` (in `state`, if given).
    fn slot_on(&self, engine: EngineId, id: CallId, state: Option<CallState>) -> Result<Slot> {
        let slot = self.table.slot(id)?;
        let call = self.table.at(slot);
        if call.engine != engine {
            return Err(CoreError::InvalidArgument(format!(
                "call {id} is on engine {}, not {engine}",
                call.engine
            )));
        }
        match state {
            Some(state) if state != call.state => Err(CoreError::InvalidTransition {
                call: id,
                state: call.state,
                action: "finish (only a running call can finish)",
            }),
            _ => Ok(slot),
        }
    }

    fn apply_demotions(&mut self, engine: EngineId, now: f64) -> u32 {
        let mut demoted = 0;
        while let Some((due, (id, slot))) = self.engine_mut(engine).expiries.peek_due(now) {
            self.engine_mut(engine).expiries.pop();
            let call = self.table.at(slot);
            if call.id == id && call.state == CallState::Running && call.expiry == due {
                demoted += self.settle_quantum(slot, now);
            }
        }
        demoted
    }

    /// Demotes a running call one queue per quantum it has used up by `now` (in the bottom queue
    /// the quantum just renews); returns the number of queues it went down.
    fn settle_quantum(&mut self, slot: Slot, now: f64) -> u32 {
        let bottom = (self.config.levels() - 1) as u8;
        let call = &mut self.table.slab[slot as usize];
        if call.expiry > now {
            return 0;
        }
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("invariant: the engine of a live call exists");
        engine.remove(call);
        let level = call.level;
        while call.expiry <= now && call.level < bottom {
            call.level += 1;
            call.expiry += self.config.quanta[usize::from(call.level)];
        }
        if call.expiry <= now {
            // Bottom queue: skip the renewals that elapsed in one go.
            let quantum = self.config.quanta[usize::from(bottom)];
            call.expiry += ((now - call.expiry) / quantum)
                .floor()
                .mul_add(quantum, quantum);
            if call.expiry <= now {
                call.expiry = now + quantum; // float spacing at large times
            }
        }
        self.next_seq += 1;
        call.seq = self.next_seq;
        engine.insert(slot, call);
        engine.expiries.push(call.expiry, (call.id, slot));
        u32::from(call.level - level)
    }

    /// `beta * max(floor, T_p) - W_p`: the program's shared part of its calls' promotion deadlines.
    fn starvation_offset(&self, program: ProgramId) -> f64 {
        let program = &self.table.programs[&program];
        let service = self.policy.program_service(program);
        self.beta.unwrap_or(f64::INFINITY) * service.max(self.config.service_floor)
            - program.waiting_time
    }

    /// Promotes every queued call on `engine` whose ratio reached beta, in order of due time.
    fn apply_promotions(&mut self, engine: EngineId, now: f64) -> u32 {
        let mut due_calls: Vec<(f64, CallId, Slot)> = Vec::new();
        loop {
            let queue = self.engine_mut(engine);
            let Some((due, program)) = queue.starving.peek_due(now) else {
                break;
            };
            queue.starving.pop();
            if queue.watches.get(&program).is_none_or(|w| w.due != due) {
                continue; // stale
            }
            let offset = self.starvation_offset(program);
            let queue = self.engines.get_mut(&engine).expect("engine exists");
            let watch = queue.watches.get_mut(&program).expect("checked above");
            while let Some((key, (id, slot))) = watch.calls.peek() {
                let call = &mut self.table.slab[slot as usize];
                if call.id != id || call.starve_key != key {
                    watch.calls.pop(); // stale
                    continue;
                }
                if key + offset > now {
                    break;
                }
                watch.calls.pop();
                call.starve_key = f64::INFINITY;
                watch.count -= 1;
                due_calls.push((key + offset, id, slot));
            }
            watch.due = watch
                .calls
                .peek()
                .map_or(f64::INFINITY, |(key, _)| key + offset);
            queue.starving.push(watch.due, program);
            if watch.count == 0 {
                self.drop_watch(engine, program);
            }
        }
        due_calls.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, _, slot) in &due_calls {
            self.promote(slot, now);
        }
        due_calls.len() as u32
    }

    /// Moves a starving queued call to the top queue and restarts its waiting/service ratio.
    fn promote(&mut self, slot: Slot, now: f64) {
        let seq = self.take_seq();
        let call = &mut self.table.slab[slot as usize];
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("invariant: the engine of a live call exists");
        engine.remove(call);
        call.wait_acc += now - call.since;
        call.since = now;
        call.wait_reset = call.wait_acc;
        call.service_reset = call.service_acc;
        call.level = 0;
        call.seq = seq;
        call.quantum_left = self.config.quanta[0];
        engine.insert(slot, call);
    }

    fn form_batch(&mut self, engine: EngineId, now: f64, capacity: Capacity, out: &mut Decision) {
        self.steps += 1;
        let step = self.steps;
        let queue = &self.engines[&engine];
        let mut batch: Vec<Slot> = Vec::with_capacity(capacity.max_running.min(4096) as usize);
        let mut tokens = 0u64;
        for &slot in queue.order.values() {
            if batch.len() >= capacity.max_running as usize {
                break;
            }
            let call = self.table.at(slot);
            let need = call.kv_tokens();
            if need > capacity.kv_tokens {
                out.too_large.push(call.id);
                continue;
            }
            if tokens
                .checked_add(need)
                .is_none_or(|t| t > capacity.kv_tokens)
            {
                break; // no backfilling past the first call that does not fit
            }
            tokens += need;
            batch.push(slot);
        }
        for &slot in &batch {
            self.table.at_mut(slot).selected_in = step;
        }
        let evicted: Vec<Slot> = queue
            .running
            .iter()
            .copied()
            .filter(|s| self.table.at(*s).selected_in != step)
            .collect();
        for &slot in &evicted {
            self.stop_running(slot, now, CallState::Preempted);
            out.preempted.push(self.table.at(slot).id);
        }
        for &slot in &batch {
            let call = self.table.at(slot);
            out.running.push(call.id);
            if call.state.is_queued() {
                out.admitted.push(call.id);
                self.start_running(slot, now);
            }
        }
    }

    fn compact(&mut self, engine: EngineId) {
        let table = &self.table;
        let queue = self.engines.get_mut(&engine).expect("engine exists");
        queue
            .expiries
            .compact(queue.running.len(), |t, (id, slot)| {
                let c = table.at(slot);
                c.id == id && c.expiry == t
            });
        let watches = &queue.watches;
        queue.starving.compact(watches.len(), |due, program| {
            watches.get(&program).is_some_and(|w| w.due == due)
        });
    }

    // ----------------------------------------------------------------------------- transitions

    /// Queued -> running.
    fn start_running(&mut self, slot: Slot, now: f64) {
        self.dequeue(slot);
        let multilevel = self.policy.multilevel();
        let call = &mut self.table.slab[slot as usize];
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("invariant: the engine of a live call exists");
        engine.remove(call);
        call.wait_acc += now - call.since;
        call.since = now;
        call.state = CallState::Running;
        call.running_pos = engine.running.len() as u32;
        engine.running.push(slot);
        engine.insert(slot, call);
        if multilevel {
            call.expiry = now + call.quantum_left;
            engine.expiries.push(call.expiry, (call.id, slot));
        }
    }

    /// Running -> preempted (back in its queue, keeping its FCFS position) or finished.
    fn stop_running(&mut self, slot: Slot, now: f64, to: CallState) {
        self.settle_quantum(slot, now);
        let call = &mut self.table.slab[slot as usize];
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("invariant: the engine of a live call exists");
        engine.remove(call);
        if let Some(moved) = swap_remove_tracked(&mut engine.running, call.running_pos) {
            let pos = call.running_pos;
            self.table.at_mut(moved).running_pos = pos;
        }
        let call = &mut self.table.slab[slot as usize];
        call.service_acc += now - call.since;
        call.since = now;
        if call.expiry.is_finite() {
            call.quantum_left = call.expiry - now;
            call.expiry = f64::INFINITY;
        }
        call.state = to;
        if to == CallState::Preempted {
            self.enqueue(slot);
        }
    }

    /// Puts a (waiting or preempted) call into its engine's queue and, below the top queue, under
    /// its program's starvation watch.
    fn enqueue(&mut self, slot: Slot) {
        let call = self.table.at(slot);
        self.engines
            .get_mut(&call.engine)
            .expect("invariant: the engine of a live call exists")
            .insert(slot, call);
        if self.beta.is_some() && self.table.at(slot).level > 0 {
            self.watch(slot);
        }
    }

    /// Takes a queued call out of its starvation watch (its engine entry is re-keyed by the
    /// caller).
    fn dequeue(&mut self, slot: Slot) {
        let call = &mut self.table.slab[slot as usize];
        if call.starve_key.is_finite() {
            call.starve_key = f64::INFINITY;
            let (engine, program) = (call.engine, call.program);
            let watch = self
                .engine_mut(engine)
                .watches
                .get_mut(&program)
                .expect("invariant: a watched call's watch exists");
            watch.count -= 1;
            if watch.count == 0 {
                self.drop_watch(engine, program);
            }
        }
    }

    /// Watches a queued call: it starves when `W_p + W_c >= beta * (max(floor, T_p) + T_c)`, i.e.
    /// at `since - W_c(since) + beta * T_c` (its own key) plus the program's offset.
    fn watch(&mut self, slot: Slot) {
        let beta = self.beta.expect("watching only with starvation on");
        let call = &mut self.table.slab[slot as usize];
        let key = call.since - (call.wait_acc - call.wait_reset)
            + beta * (call.service_acc - call.service_reset);
        call.starve_key = key;
        let (id, engine, program) = (call.id, call.engine, call.program);
        let due = key + self.starvation_offset(program);
        let queue = self
            .engines
            .get_mut(&engine)
            .expect("invariant: the engine of a live call exists");
        let watch = queue.watches.entry(program).or_insert_with(|| {
            self.table.program_mut(program).watched.push(engine);
            Watch {
                due: f64::INFINITY,
                ..Watch::default()
            }
        });
        watch.calls.push(key, (id, slot));
        watch.count += 1;
        let table = &self.table;
        watch
            .calls
            .compact(watch.count as usize, |key, (id, slot)| {
                let c = table.at(slot);
                c.id == id && c.starve_key == key
            });
        if due < watch.due {
            watch.due = due;
            queue.starving.push(due, program);
        }
    }

    fn drop_watch(&mut self, engine: EngineId, program: ProgramId) {
        self.engine_mut(engine).watches.remove(&program);
        let watched = &mut self.table.program_mut(program).watched;
        watched.retain(|e| *e != engine);
    }

    /// The program's waiting or service changed: its watches fall due at new times.
    fn rewatch(&mut self, program: ProgramId) {
        let offset = self.starvation_offset(program);
        for i in 0..self.table.programs[&program].watched.len() {
            let engine = self.table.programs[&program].watched[i];
            let queue = self
                .engines
                .get_mut(&engine)
                .expect("watched engine exists");
            let watch = queue.watches.get_mut(&program).expect("watch exists");
            while let Some((key, (id, slot))) = watch.calls.peek() {
                let call = self.table.at(slot);
                if call.id == id && call.starve_key == key {
                    break;
                }
                watch.calls.pop();
            }
            let due = watch
                .calls
                .peek()
                .map_or(f64::INFINITY, |(key, _)| key + offset);
            if due != watch.due {
                watch.due = due;
                queue.starving.push(due, program);
            }
        }
    }

    /// Takes a live call off its engine and out of the table, closing its current interval.
    fn unlink(&mut self, slot: Slot, now: f64) -> Call {
        if self.table.at(slot).state == CallState::Running {
            self.stop_running(slot, now, CallState::Finished);
        } else {
            self.dequeue(slot);
            let call = &mut self.table.slab[slot as usize];
            call.wait_acc += now - call.since;
            call.since = now;
            self.engines
                .get_mut(&call.engine)
                .expect("invariant: the engine of a live call exists")
                .remove(call);
        }
        self.table.remove(slot)
    }

    /// Removes a live call (finished or aborted), charging its service and waiting to its program.
    fn retire(&mut self, slot: Slot, now: f64, finished: bool) {
        let call = self.unlink(slot, now);
        let key = Some((call.program, call.thread));
        let thread_prev = call
            .thread_prev
            .filter(|p| !finished && self.table.thread_of(*p) == key);
        let program = self
            .table
            .programs
            .get_mut(&call.program)
            .expect("invariant: a live call's program is in the table");
        let path_end = call.path_start + call.service_acc;
        program.attained_service += call.service_acc;
        program.waiting_time += call.wait_acc;
        program.critical_path = program.critical_path.max(path_end);
        program.active_calls -= 1;
        if finished {
            program.finished_calls += 1;
            program.last_completion = Some(now);
        } else if self.table.threads.get(&key_of(&call)) == Some(&call.id) {
            // An aborted call is forgotten (its id may be used again); the thread's next call
            // descends from the aborted call's predecessor instead, if that is still the thread's.
            if let Some(prev) = thread_prev {
                self.table.threads.insert(key_of(&call), prev);
            } else {
                self.table.threads.remove(&key_of(&call));
                program.threads.retain(|t| *t != call.thread);
            }
        }
        if program.active_calls == 0 {
            program.idle_deadline = now + self.config.program_ttl;
            self.idle
                .push(Reverse((Time(program.idle_deadline), call.program)));
        }
        if finished {
            self.table.retain_finished(
                call.id,
                FinishedCall {
                    program: call.program,
                    thread: call.thread,
                    path_end,
                },
            );
        }
        if self.beta.is_some() {
            self.rewatch(call.program);
        }
    }

    // ----------------------------------------------------------------------------- caller events

    /// A running call completed.
    pub fn finish(&mut self, id: CallId, now: f64) -> Result<()> {
        let now = self.clock(now)?;
        let slot = self.table.slot(id)?;
        let state = self.table.at(slot).state;
        if state != CallState::Running {
            return Err(CoreError::InvalidTransition {
                call: id,
                state,
                action: "finish (only a running call can finish)",
            });
        }
        self.now = now;
        self.retire(slot, now, true);
        Ok(())
    }

    /// Cancels a live call in any state; its service and waiting so far still count for its program.
    pub fn abort(&mut self, id: CallId, now: f64) -> Result<()> {
        let now = self.clock(now)?;
        let slot = self.table.slot(id)?;
        self.now = now;
        self.retire(slot, now, false);
        Ok(())
    }

    /// The engine preempted a running call on its own (for example when its KV cache ran out).
    pub fn preempt(&mut self, id: CallId, now: f64) -> Result<()> {
        let now = self.clock(now)?;
        let slot = self.table.slot(id)?;
        let state = self.table.at(slot).state;
        if state != CallState::Running {
            return Err(CoreError::InvalidTransition {
                call: id,
                state,
                action: "preempt (only a running call can be preempted)",
            });
        }
        self.now = now;
        self.stop_running(slot, now, CallState::Preempted);
        Ok(())
    }

    /// Records tokens generated by a live call (its KV footprint grows).
    pub fn add_tokens(&mut self, id: CallId, tokens: u64) -> Result<()> {
        let slot = self.table.slot(id)?;
        let call = self.table.at_mut(slot);
        call.generated_tokens = call.generated_tokens.saturating_add(tokens);
        Ok(())
    }

    /// Ends a program: aborts its live calls (returned, so the engine can drop them) and forgets it.
    pub fn end_program(&mut self, id: ProgramId, now: f64) -> Result<Vec<CallId>> {
        let now = self.clock(now)?;
        self.table.program(id)?;
        self.now = now;
        Ok(self.remove_program(id, now))
    }

    fn remove_program(&mut self, id: ProgramId, now: f64) -> Vec<CallId> {
        let live = self.table.programs[&id].live.clone();
        let ids = live.iter().map(|&slot| self.unlink(slot, now).id).collect();
        self.table.remove_program(id);
        ids
    }

    /// Forgets programs idle (no live call) for longer than the TTL; returns their ids.
    pub fn collect_garbage(&mut self, now: f64) -> Result<Vec<ProgramId>> {
        let now = self.clock(now)?;
        self.now = now;
        Ok(self.collect_garbage_at(now))
    }

    fn collect_garbage_at(&mut self, now: f64) -> Vec<ProgramId> {
        let mut expired = Vec::new();
        while let Some(Reverse((Time(due), id))) = self.idle.peek().copied() {
            if due > now {
                break;
            }
            self.idle.pop();
            let idle = self
                .table
                .programs
                .get(&id)
                .is_some_and(|p| p.active_calls == 0 && p.idle_deadline == due);
            if idle {
                self.remove_program(id, now);
                expired.push(id);
            }
        }
        expired
    }
}

/// The (program, thread) a call belongs to.
fn key_of(call: &Call) -> (ProgramId, ThreadId) {
    (call.program, call.thread)
}
