//! Multi-level feedback queue: a running call that uses up its queue's quantum is demoted one queue
//! (in the bottom queue the quantum just renews). Each running call's quantum expiry sits in its
//! engine's `expiries` heap, so a step only visits the calls that are due.

use super::{Scheduler, engine_of};
use crate::program_table::Slot;
use crate::types::EngineId;

impl Scheduler {
    pub(super) fn apply_demotions(&mut self, engine: EngineId, now: f64) -> u32 {
        let mut demoted = 0;
        while let Some((due, (uid, slot))) = self.engine_mut(engine).expiries.peek_due(now) {
            self.engine_mut(engine).expiries.pop();
            if self.table.at(slot).expires_as(uid, due) {
                demoted += self.settle_quantum(slot, now);
            }
        }
        demoted
    }

    /// Demotes a running call one queue per quantum it has used up by `now` (in the bottom queue
    /// the quantum just renews); returns the number of queues it went down.
    pub(super) fn settle_quantum(&mut self, slot: Slot, now: f64) -> u32 {
        if self.table.at(slot).expiry > now {
            return 0;
        }
        let bottom = (self.config.levels() - 1) as u8;
        let seq = self.take_seq();
        let call = &mut self.table.slab[slot as usize];
        let engine = engine_of(&mut self.engines, call.engine);
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
                // Float spacing at huge times: the next representable time still moves forward.
                call.expiry = (now + quantum).max(now.next_up());
            }
        }
        call.seq = seq;
        engine.insert(slot, call);
        engine.expiries.push(call.expiry, (call.uid, slot));
        u32::from(call.level - level)
    }
}
