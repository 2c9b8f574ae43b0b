//! Batch formation and the queued <-> running transitions: the batch walks the engine's queues in
//! order (FCFS inside a queue) and stops at the first call that does not fit, without
//! backfilling; running calls left out of the batch are preempted back into their queue.

use super::{Decision, Scheduler, engine_of};
use crate::program_table::{Slot, swap_remove_tracked};
use crate::types::{CallState, Capacity, EngineId};

impl Scheduler {
    pub(super) fn form_batch(
        &mut self,
        engine: EngineId,
        now: f64,
        capacity: Capacity,
        out: &mut Decision,
    ) {
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

    // ----------------------------------------------------------------------------- transitions

    /// Queued -> running.
    pub(super) fn start_running(&mut self, slot: Slot, now: f64) {
        self.dequeue(slot);
        let multilevel = self.policy.multilevel();
        let call = &mut self.table.slab[slot as usize];
        let engine = engine_of(&mut self.engines, call.engine);
        engine.remove(call);
        call.close_interval(now);
        call.state = CallState::Running;
        call.running_pos = engine.running.len() as u32;
        engine.running.push(slot);
        engine.insert(slot, call);
        if multilevel {
            call.expiry = now + call.quantum_left;
            engine.expiries.push(call.expiry, (call.uid, slot));
        }
    }

    /// Running -> preempted (back in its queue, keeping its FCFS position) or finished.
    pub(super) fn stop_running(&mut self, slot: Slot, now: f64, to: CallState) {
        self.settle_quantum(slot, now);
        let call = &mut self.table.slab[slot as usize];
        let engine = engine_of(&mut self.engines, call.engine);
        engine.remove(call);
        if let Some(moved) = swap_remove_tracked(&mut engine.running, call.running_pos) {
            let pos = call.running_pos;
            self.table.at_mut(moved).running_pos = pos;
        }
        let call = &mut self.table.slab[slot as usize];
        call.close_interval(now);
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
    pub(super) fn enqueue(&mut self, slot: Slot) {
        let call = self.table.at(slot);
        engine_of(&mut self.engines, call.engine).insert(slot, call);
        if self.beta.is_some() && self.table.at(slot).level > 0 {
            self.watch(slot);
        }
    }

    /// Takes a queued call out of its starvation watch (its engine entry is re-keyed by the
    /// caller).
    pub(super) fn dequeue(&mut self, slot: Slot) {
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
}
