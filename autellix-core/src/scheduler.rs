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
use crate::program_table::{Call, FinishedCall, Program, ProgramTable, swap_remove_tracked};
use crate::queue::EngineQueue;
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
        Ok(Self {
            policy: config.policy.build(),
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
        let thread_prev = self
            .table
            .programs
            .get(&spec.program)
            .and_then(|p| p.threads.get(&spec.thread).copied())
            .filter(|prev| self.table.thread_of(*prev) == Some((spec.program, spec.thread)));
        let parents = spec.parents.unwrap_or(thread_prev.as_slice());
        let path_start = dag::path_start(&self.table, parents, now);
        let program = self
            .table
            .programs
            .entry(spec.program)
            .or_insert_with(|| Program::new(spec.program, now));
        program.threads.insert(spec.thread, spec.call);
        program.calls.push(spec.call);
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
        let call = Call {
            id: spec.call,
            program: spec.program,
            thread: spec.thread,
            engine: spec.engine,
            arrival: now,
            prompt_tokens: spec.prompt_tokens,
            generated_tokens: 0,
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
            quantum_left: self.config.quanta[usize::from(level)],
            expiry: f64::INFINITY,
            deadline: f64::INFINITY,
            queued_pos: 0,
            running_pos: 0,
            selected_in: 0,
        };
        self.table.calls.insert(spec.call, call);
        let levels = self.config.levels();
        self.engines
            .entry(spec.engine)
            .or_insert_with(|| EngineQueue::new(levels));
        self.enqueue(spec.call);
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
        self.check_on_engine(engine, progress.iter().map(|p| p.0), None)?;
        self.check_on_engine(engine, finished.iter().copied(), Some(CallState::Running))?;
        if finished.len() > 1 {
            let mut seen = FxHashSet::default();
            if let Some(dup) = finished.iter().find(|c| !seen.insert(**c)) {
                return Err(CoreError::InvalidArgument(format!(
                    "call {dup} is listed as finished twice"
                )));
            }
        }
        self.now = now;
        for &(id, tokens) in progress {
            let call = self.table.call_mut(id);
            call.generated_tokens = call.generated_tokens.saturating_add(tokens);
        }
        for &id in finished {
            self.retire(id, now, true);
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

    fn check_on_engine(
        &self,
        engine: EngineId,
        ids: impl Iterator<Item = CallId>,
        state: Option<CallState>,
    ) -> Result<()> {
        for id in ids {
            let call = self.table.call(id)?;
            if call.engine != engine {
                return Err(CoreError::InvalidArgument(format!(
                    "call {id} is on engine {}, not {engine}",
                    call.engine
                )));
            }
            if let Some(state) = state.filter(|s| *s != call.state) {
                return Err(CoreError::InvalidTransition {
                    call: id,
                    state: call.state,
                    action: if state == CallState::Running {
                        "finish (only a running call can finish)"
                    } else {
                        "change state"
                    },
                });
            }
        }
        Ok(())
    }

    fn apply_demotions(&mut self, engine: EngineId, now: f64) -> u32 {
        let mut demoted = 0;
        while let Some((due, id)) = self.engine_mut(engine).expiries.pop_due(now) {
            let current = self
                .table
                .calls
                .get(&id)
                .is_some_and(|c| c.state == CallState::Running && c.expiry == due);
            if current {
                demoted += self.settle_quantum(id, now);
            }
        }
        demoted
    }

    /// Demotes a running call one queue per quantum it has used up by `now` (in the bottom queue
    /// the quantum just renews); returns the number of queues it went down.
    fn settle_quantum(&mut self, id: CallId, now: f64) -> u32 {
        let bottom = (self.config.levels() - 1) as u8;
        let call = self.table.call_mut(id);
        if call.expiry > now {
            return 0;
        }
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("engine of a live call");
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
        let demoted = u32::from(call.level - level);
        self.next_seq += 1;
        call.seq = self.next_seq;
        engine.insert(call);
        engine.expiries.push(call.expiry, id);
        demoted
    }

    fn apply_promotions(&mut self, engine: EngineId, now: f64) -> u32 {
        let mut promoted = 0;
        while let Some((due, id)) = self.engine_mut(engine).deadlines.pop_due(now) {
            let current = self
                .table
                .calls
                .get(&id)
                .is_some_and(|c| c.state.is_queued() && c.deadline == due);
            if current {
                self.promote(id, now);
                promoted += 1;
            }
        }
        promoted
    }

    /// Moves a starving queued call to the top queue and restarts its waiting/service ratio.
    fn promote(&mut self, id: CallId, now: f64) {
        let seq = self.take_seq();
        let call = self.table.call_mut(id);
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("engine of a live call");
        engine.remove(call);
        call.wait_acc += now - call.since;
        call.since = now;
        call.wait_reset = call.wait_acc;
        call.service_reset = call.service_acc;
        call.level = 0;
        call.seq = seq;
        call.quantum_left = self.config.quanta[0];
        call.deadline = f64::INFINITY;
        engine.insert(call);
    }

    fn form_batch(&mut self, engine: EngineId, now: f64, capacity: Capacity, out: &mut Decision) {
        self.steps += 1;
        let step = self.steps;
        let queue = &self.engines[&engine];
        let mut tokens = 0u64;
        for &id in queue.order.values() {
            if out.running.len() >= capacity.max_running as usize {
                break;
            }
            let need = self.table.calls[&id].kv_tokens();
            if need > capacity.kv_tokens {
                out.too_large.push(id);
                continue;
            }
            if tokens
                .checked_add(need)
                .is_none_or(|t| t > capacity.kv_tokens)
            {
                break; // no backfilling past the first call that does not fit
            }
            tokens += need;
            out.running.push(id);
        }
        for &id in &out.running {
            self.table.call_mut(id).selected_in = step;
        }
        let evicted: Vec<CallId> = queue
            .running
            .iter()
            .copied()
            .filter(|id| self.table.calls[id].selected_in != step)
            .collect();
        for &id in &evicted {
            self.stop_running(id, now, CallState::Preempted);
        }
        out.preempted = evicted;
        for i in 0..out.running.len() {
            let id = out.running[i];
            if self.table.calls[&id].state.is_queued() {
                self.start_running(id, now);
                out.admitted.push(id);
            }
        }
    }

    fn compact(&mut self, engine: EngineId) {
        let calls = &self.table.calls;
        let queue = self.engines.get_mut(&engine).expect("engine exists");
        let (running, queued) = (queue.running.len(), queue.queued());
        queue.expiries.compact(running, |t, id| {
            calls.get(&id).is_some_and(|c| c.expiry == t)
        });
        queue.deadlines.compact(queued, |t, id| {
            calls.get(&id).is_some_and(|c| c.deadline == t)
        });
    }

    fn engine_mut(&mut self, engine: EngineId) -> &mut EngineQueue {
        self.engines.get_mut(&engine).expect("engine exists")
    }

    // ----------------------------------------------------------------------------- transitions

    /// Queued -> running.
    fn start_running(&mut self, id: CallId, now: f64) {
        self.dequeue(id);
        let multilevel = self.policy.multilevel();
        let call = self.table.call_mut(id);
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("engine of a live call");
        engine.remove(call);
        call.wait_acc += now - call.since;
        call.since = now;
        call.state = CallState::Running;
        call.running_pos = engine.running.len() as u32;
        engine.running.push(id);
        engine.insert(call);
        if multilevel {
            call.expiry = now + call.quantum_left;
            engine.expiries.push(call.expiry, id);
        }
    }

    /// Running -> preempted (back in its queue, keeping its FCFS position) or finished.
    fn stop_running(&mut self, id: CallId, now: f64, to: CallState) {
        self.settle_quantum(id, now);
        let call = self.table.call_mut(id);
        let engine = self
            .engines
            .get_mut(&call.engine)
            .expect("engine of a live call");
        engine.remove(call);
        if let Some(moved) = swap_remove_tracked(&mut engine.running, call.running_pos) {
            let pos = call.running_pos;
            self.table.call_mut(moved).running_pos = pos;
        }
        let call = self.table.call_mut(id);
        call.service_acc += now - call.since;
        call.since = now;
        if call.expiry.is_finite() {
            call.quantum_left = call.expiry - now;
            call.expiry = f64::INFINITY;
        }
        call.state = to;
        if to == CallState::Preempted {
            self.enqueue(id);
        }
    }

    /// Puts a (waiting or preempted) call into its engine's queue and its starvation watch.
    fn enqueue(&mut self, id: CallId) {
        let call = &self.table.calls[&id];
        let program = self.table.program_mut(call.program);
        let pos = program.queued.len() as u32;
        program.queued.push(id);
        let call = self.table.call_mut(id);
        call.queued_pos = pos;
        let call = &self.table.calls[&id];
        self.engines
            .get_mut(&call.engine)
            .expect("engine of a live call")
            .insert(call);
        self.refresh_deadline(id);
    }

    /// Takes a queued call out of its program's starvation watch (its engine entry is re-keyed by
    /// the caller).
    fn dequeue(&mut self, id: CallId) {
        let call = self.table.call_mut(id);
        call.deadline = f64::INFINITY;
        let (program, pos) = (call.program, call.queued_pos);
        if let Some(moved) = swap_remove_tracked(&mut self.table.program_mut(program).queued, pos) {
            self.table.call_mut(moved).queued_pos = pos;
        }
    }

    /// Recomputes when a queued call reaches `(W_p + W_c) / max(floor, T_p + T_c) >= beta`.
    fn refresh_deadline(&mut self, id: CallId) {
        let call = &self.table.calls[&id];
        let deadline = match self.config.starvation_beta {
            Some(beta) if self.policy.multilevel() && call.level > 0 => {
                let program = &self.table.programs[&call.program];
                let service =
                    self.policy.program_service(program) + (call.service_acc - call.service_reset);
                call.since + beta * service.max(self.config.service_floor)
                    - program.waiting_time
                    - (call.wait_acc - call.wait_reset)
            }
            _ => f64::INFINITY,
        };
        if deadline != call.deadline {
            let engine = call.engine;
            self.table.call_mut(id).deadline = deadline;
            self.engine_mut(engine).deadlines.push(deadline, id);
        }
    }

    /// Takes a live call off its engine and out of the table, closing its current interval.
    fn unlink(&mut self, id: CallId, now: f64) -> Call {
        if self.table.calls[&id].state == CallState::Running {
            self.stop_running(id, now, CallState::Finished);
        } else {
            self.dequeue(id);
            let call = self.table.call_mut(id);
            call.wait_acc += now - call.since;
            call.since = now;
            let call = &self.table.calls[&id];
            self.engines
                .get_mut(&call.engine)
                .expect("engine of a live call")
                .remove(call);
        }
        self.table.calls.remove(&id).expect("live call")
    }

    /// Removes a live call (finished or aborted), charging its service and waiting to its program.
    fn retire(&mut self, id: CallId, now: f64, finished: bool) {
        let call = self.unlink(id, now);
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
            self.table.finished.insert(
                id,
                FinishedCall {
                    program: call.program,
                    thread: call.thread,
                    path_end,
                },
            );
        } else {
            // Forgotten, so the id can be used again; the thread's next call descends from the
            // aborted call's predecessor instead, if that is still the thread's.
            program.calls.retain(|c| *c != id);
            if program.threads.get(&call.thread) == Some(&id) {
                match thread_prev {
                    Some(prev) => program.threads.insert(call.thread, prev),
                    None => program.threads.remove(&call.thread),
                };
            }
        }
        if program.active_calls == 0 {
            program.idle_deadline = now + self.config.program_ttl;
            self.idle
                .push(Reverse((Time(program.idle_deadline), call.program)));
        }
        // W_p and T_p changed: the program's queued calls are due at new times.
        if self.config.starvation_beta.is_some() && self.policy.multilevel() {
            let program = call.program;
            for i in 0..self.table.programs[&program].queued.len() {
                self.refresh_deadline(self.table.programs[&program].queued[i]);
            }
        }
    }

    // ----------------------------------------------------------------------------- caller events

    /// A running call completed.
    pub fn finish(&mut self, id: CallId, now: f64) -> Result<()> {
        let now = self.clock(now)?;
        let call = self.table.call(id)?;
        if call.state != CallState::Running {
            return Err(CoreError::InvalidTransition {
                call: id,
                state: call.state,
                action: "finish (only a running call can finish)",
            });
        }
        self.now = now;
        self.retire(id, now, true);
        Ok(())
    }

    /// Cancels a live call in any state; its service and waiting so far still count for its program.
    pub fn abort(&mut self, id: CallId, now: f64) -> Result<()> {
        let now = self.clock(now)?;
        self.table.call(id)?;
        self.now = now;
        self.retire(id, now, false);
        Ok(())
    }

    /// The engine preempted a running call on its own (for example when its KV cache ran out).
    pub fn preempt(&mut self, id: CallId, now: f64) -> Result<()> {
        let now = self.clock(now)?;
        let call = self.table.call(id)?;
        if call.state != CallState::Running {
            return Err(CoreError::InvalidTransition {
                call: id,
                state: call.state,
                action: "preempt (only a running call can be preempted)",
            });
        }
        self.now = now;
        self.stop_running(id, now, CallState::Preempted);
        Ok(())
    }

    /// Records tokens generated by a live call (its KV footprint grows).
    pub fn add_tokens(&mut self, id: CallId, tokens: u64) -> Result<()> {
        let call = self
            .table
            .calls
            .get_mut(&id)
            .ok_or(CoreError::UnknownCall(id))?;
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
        let live = self.table.live_calls(id).unwrap_or_default();
        for &call in &live {
            self.unlink(call, now);
        }
        if let Some(program) = self.table.programs.remove(&id) {
            for call in program.calls {
                self.table.finished.remove(&call);
            }
        }
        live
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
