//! Anti-starvation: a queued call below the top queue is promoted to the top queue when
//! `(W_p + W_c) / (max(floor, T_p) + T_c) >= beta`. Each call's own part of that deadline is its
//! key in its program's watch; the program's part is one offset shared by all its calls, so each
//! engine keeps one due time per program (`starving` heap) and a change to the program re-times
//! all its calls at once.

use super::{Scheduler, engine_of};
use crate::program_table::{ProgramTable, Slot};
use crate::queue::Watch;
use crate::types::{CallId, EngineId, ProgramId};

impl Scheduler {
    /// `beta * max(floor, T_p) - W_p`: the program's shared part of its calls' promotion deadlines.
    fn starvation_offset(&self, program: ProgramId) -> f64 {
        let program = &self.table.programs[&program];
        let service = self.policy.program_service(program);
        self.beta.unwrap_or(f64::INFINITY) * service.max(self.config.service_floor)
            - program.waiting_time
    }

    /// Promotes every queued call on `engine` whose ratio reached beta, in order of due time.
    pub(super) fn apply_promotions(&mut self, engine: EngineId, now: f64) -> u32 {
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
            let queue = engine_of(&mut self.engines, engine);
            let watch = queue.watches.get_mut(&program).expect("checked above");
            while let Some((key, slot)) = first_watched(watch, &self.table) {
                if key + offset > now {
                    break;
                }
                watch.calls.pop();
                let call = self.table.at_mut(slot);
                call.starve_key = f64::INFINITY;
                watch.count -= 1;
                due_calls.push((key + offset, call.id, slot));
            }
            watch.due =
                first_watched(watch, &self.table).map_or(f64::INFINITY, |(key, _)| key + offset);
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
        let engine = engine_of(&mut self.engines, call.engine);
        engine.remove(call);
        call.close_interval(now);
        call.wait_reset = call.wait_acc;
        call.service_reset = call.service_acc;
        call.level = 0;
        call.seq = seq;
        call.quantum_left = self.config.quanta[0];
        engine.insert(slot, call);
    }

    /// Watches a queued call: it starves when `W_p + W_c >= beta * (max(floor, T_p) + T_c)`, i.e.
    /// at `since - W_c(since) + beta * T_c` (its own key) plus the program's offset.
    pub(super) fn watch(&mut self, slot: Slot) {
        let beta = self.beta.expect("watching only with starvation on");
        let call = &mut self.table.slab[slot as usize];
        let key = call.since - (call.wait_acc - call.wait_reset)
            + beta * (call.service_acc - call.service_reset);
        call.starve_key = key;
        let (uid, engine, program) = (call.uid, call.engine, call.program);
        let due = key + self.starvation_offset(program);
        let queue = engine_of(&mut self.engines, engine);
        let watch = queue.watches.entry(program).or_insert_with(|| {
            self.table.program_mut(program).watched.push(engine);
            Watch {
                due: f64::INFINITY,
                ..Watch::default()
            }
        });
        watch.calls.push(key, (uid, slot));
        watch.count += 1;
        let table = &self.table;
        watch
            .calls
            .compact(watch.count as usize, |key, (uid, slot)| {
                table.at(slot).watched_as(uid, key)
            });
        if due < watch.due {
            watch.due = due;
            queue.starving.push(due, program);
        }
    }

    pub(super) fn drop_watch(&mut self, engine: EngineId, program: ProgramId) {
        self.engine_mut(engine).watches.remove(&program);
        let watched = &mut self.table.program_mut(program).watched;
        watched.retain(|e| *e != engine);
    }

    /// The program's waiting or service changed: its watches fall due at new times.
    pub(super) fn rewatch(&mut self, program: ProgramId) {
        let offset = self.starvation_offset(program);
        for i in 0..self.table.programs[&program].watched.len() {
            let engine = self.table.programs[&program].watched[i];
            let queue = engine_of(&mut self.engines, engine);
            let watch = queue.watches.get_mut(&program).expect("watch exists");
            let due =
                first_watched(watch, &self.table).map_or(f64::INFINITY, |(key, _)| key + offset);
            if due != watch.due {
                watch.due = due;
                queue.starving.push(due, program);
            }
        }
    }
}

/// The earliest current entry of a watch (stale ones on top are dropped): (key, slot).
fn first_watched(watch: &mut Watch, table: &ProgramTable) -> Option<(f64, Slot)> {
    while let Some((key, (uid, slot))) = watch.calls.peek() {
        if table.at(slot).watched_as(uid, key) {
            return Some((key, slot));
        }
        watch.calls.pop();
    }
    None
}
