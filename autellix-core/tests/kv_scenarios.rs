//! Deterministic scenarios of the KV planner (`autellix_core::KvPlanner`), each a small story with
//! a known outcome and exact assertions.
//!
//! Predicted next use (`due`) is `idle_since + expected_gap x (1 + service / priority_scale)`
//! (weight 1 without a `priority_scale`, the default); before anything is observed `expected_gap`
//! is the configured `prior_gap`, so most scenarios set `prior_gap = 1`, `priority_scale = 1` and
//! steer `due = now + 1 + service` through `service`.

// Each scenario is one story, told top to bottom.
#![allow(clippy::too_many_lines)]

use autellix_core::{
    ContextId, ContextSpec, CoreError, KvAction, KvConfig, KvPlanner, Move, ProgramId, Tier,
};

fn planner(config: KvConfig) -> KvPlanner {
    KvPlanner::new(config).unwrap()
}

/// `due = now + 1 + service` for every context until a gap is observed.
fn steered(host_blocks: u64) -> KvConfig {
    KvConfig {
        host_blocks,
        prior_gap: 1.0,
        priority_scale: Some(1.0),
        prefetch_window: 2.0,
        ..KvConfig::default()
    }
}

fn spec(context: ContextId, program: ProgramId, blocks: u64) -> ContextSpec {
    ContextSpec {
        context,
        program,
        thread: 0,
        blocks,
        parent: None,
    }
}

fn child(context: ContextId, program: ProgramId, blocks: u64, parent: ContextId) -> ContextSpec {
    ContextSpec {
        parent: Some(parent),
        ..spec(context, program, blocks)
    }
}

fn offload(context: ContextId, blocks: u64) -> KvAction {
    KvAction {
        context,
        action: Move::Offload,
        from: Tier::Gpu,
        blocks,
    }
}

fn drop_from(context: ContextId, from: Tier, blocks: u64) -> KvAction {
    KvAction {
        context,
        action: Move::Drop,
        from,
        blocks,
    }
}

fn load(context: ContextId, blocks: u64) -> KvAction {
    KvAction {
        context,
        action: Move::Load,
        from: Tier::Host,
        blocks,
    }
}

/// Blocks a plan frees on the GPU.
fn gpu_freed(plan: &[KvAction]) -> u64 {
    plan.iter()
        .filter(|a| a.from == Tier::Gpu && a.action != Move::Load)
        .map(|a| a.blocks)
        .sum()
}

// ================================================================ retention by predicted use

/// The story: two programs idle on the GPU, A's tool calls return in half a second, B's
/// take half a minute. The planner learns the gaps from what it observes and, asked for one
/// context's blocks, offloads B (due later); A stays on the GPU.
#[test]
fn long_tool_wait_is_offloaded_short_one_stays() {
    const A: ContextId = 10;
    const B: ContextId = 20;
    let mut kv = planner(KvConfig {
        host_blocks: 100,
        ..KvConfig::default()
    });
    kv.insert(spec(A, 1, 4), 0.0, 0.0).unwrap();
    kv.insert(spec(B, 2, 4), 0.0, 0.0).unwrap();
    // Four rounds of 40 s: A makes 40 calls, each after a 0.5 s tool wait; B makes one call after
    // a 30 s tool wait. Calls take 0.5 s (A) and 10 s (B). Attained service stays 0 so only the
    // learned gaps matter.
    for round in 0..4 {
        let t0 = f64::from(round) * 40.0;
        for k in 0..40 {
            let t = t0 + f64::from(k);
            assert!(kv.acquire(A, t + 0.5).unwrap().is_empty());
            kv.release(A, t + 1.0, 0.0).unwrap();
            if k == 29 {
                assert!(kv.acquire(B, t0 + 30.0).unwrap().is_empty());
            }
        }
        kv.release(B, t0 + 40.0, 0.0).unwrap();
    }
    let (gap_a, gap_b) = (kv.expected_gap(1, 0), kv.expected_gap(2, 0));
    assert!(gap_a < 1.0, "A's gap {gap_a}");
    assert!(gap_b > 15.0, "B's gap {gap_b}");
    // Both idle since t = 160; a running call needs 4 blocks.
    let plan = kv.reclaim(4, 160.0).unwrap();
    assert_eq!(plan, vec![offload(B, 4)]);
    assert_eq!(kv.tier(A), Some(Tier::Gpu));
    assert_eq!(kv.tier(B), Some(Tier::Host));
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (4, 4));
    let stats = kv.stats();
    assert_eq!((stats.offloads, stats.offloaded_blocks), (1, 4));
    // A second ask takes A as well, now the only idle GPU context.
    assert_eq!(kv.reclaim(1, 160.0).unwrap(), vec![offload(A, 4)]);
}

/// With equal gaps, the program with more attained service (lower PLAS/ATLAS priority: it will
/// wait longer in the scheduler's queues when it returns) is evicted first.
#[test]
fn priority_breaks_equal_gaps() {
    let mut kv = planner(KvConfig {
        host_blocks: 100,
        priority_scale: Some(60.0),
        ..KvConfig::default()
    });
    // priority_scale 60: 120 s of service triples the predicted gap.
    kv.insert(spec(1, 1, 3), 0.0, 0.0).unwrap();
    kv.insert(spec(2, 2, 3), 0.0, 120.0).unwrap();
    kv.insert(spec(3, 3, 3), 0.0, 30.0).unwrap();
    assert_eq!(kv.reclaim(3, 0.0).unwrap(), vec![offload(2, 3)]);
    assert_eq!(kv.reclaim(3, 0.0).unwrap(), vec![offload(3, 3)]);
    assert_eq!(kv.tier(1), Some(Tier::Gpu));
}

/// Without a `priority_scale` (the default) every weight is 1: attained service does not change
/// the order, only the predicted gaps do. With a scale, the same service reverses it.
#[test]
fn no_priority_scale_leaves_service_out() {
    for (priority_scale, first) in [(None, 2), (Some(1.0), 1)] {
        let mut kv = planner(KvConfig {
            host_blocks: 100,
            prior_gap: 1.0,
            priority_scale,
            ..KvConfig::default()
        });
        assert_eq!(KvConfig::default().priority_scale, None);
        // 1 went idle first with a lot of service, 2 later with none: due 1 and 1.5 with equal
        // weights, 1001 and 1.5 with a scale of 1.
        kv.insert(spec(1, 1, 2), 0.0, 1_000.0).unwrap();
        kv.insert(spec(2, 2, 2), 0.5, 0.0).unwrap();
        assert_eq!(
            kv.reclaim(2, 0.5).unwrap(),
            vec![offload(first, 2)],
            "priority_scale {priority_scale:?}"
        );
    }
}

/// Reclaim stops as soon as it has freed `need` blocks, latest due first, and frees every idle
/// block if it must (and no more: in-use contexts stay).
#[test]
fn reclaim_takes_latest_due_first_and_no_more_than_needed() {
    let mut kv = planner(steered(100));
    // due = 1 + service: context i is due at 1 + 10 i.
    for i in 1..=4u64 {
        kv.insert(spec(i, i, 2), 0.0, 10.0 * i as f64).unwrap();
    }
    // 3 blocks: the latest (4) alone is not enough, so 3 goes too.
    assert_eq!(
        kv.reclaim(3, 0.0).unwrap(),
        vec![offload(4, 2), offload(3, 2)]
    );
    assert!(kv.reclaim(0, 0.0).unwrap().is_empty());
    // Context 2 is in use: asking for everything takes only 1.
    assert!(kv.acquire(2, 0.0).unwrap().is_empty());
    assert_eq!(kv.reclaim(1_000, 0.0).unwrap(), vec![offload(1, 2)]);
    assert_eq!(kv.tier(2), Some(Tier::Gpu));
    assert!(kv.reclaim(1_000, 0.0).unwrap().is_empty());
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (2, 6));
}

/// A context predicted soon but not used by then is re-predicted as "as long again as it has
/// already waited", and sinks behind a context that went idle later but is not yet overdue.
#[test]
fn overdue_context_sinks_behind_fresh_one() {
    let mut kv = planner(KvConfig {
        host_blocks: 100,
        prior_gap: 5.0,
        ..KvConfig::default()
    });
    kv.insert(spec(1, 1, 2), 0.0, 0.0).unwrap(); // due 5
    kv.insert(spec(2, 2, 2), 9.0, 0.0).unwrap(); // due 14
    // Had nothing been re-predicted, 2 (due 14) would go first. At t = 10, 1 has waited 10 s:
    // re-predicted due 10 + 10 = 20, after 2.
    assert_eq!(kv.reclaim(2, 10.0).unwrap(), vec![offload(1, 2)]);
    assert_eq!(kv.tier(2), Some(Tier::Gpu));
}

// ==================================================================== host tier and drops

/// No host tier: evicted contexts are dropped (latest due first), never offloaded.
#[test]
fn no_host_tier_drops_instead_of_offloading() {
    let mut kv = planner(steered(0));
    kv.insert(spec(1, 1, 2), 0.0, 5.0).unwrap();
    kv.insert(spec(2, 2, 3), 0.0, 9.0).unwrap();
    // A context holding no block of its own (it extends its parent by less than a block) is
    // dropped too: there is no host tier to put it in.
    kv.insert(child(3, 1, 0, 1), 0.0, 1.0).unwrap();
    assert_eq!(
        kv.reclaim(1, 0.0).unwrap(),
        vec![drop_from(2, Tier::Gpu, 3)]
    );
    assert_eq!(kv.tier(2), None);
    assert_eq!(
        kv.reclaim(2, 0.0).unwrap(),
        vec![drop_from(3, Tier::Gpu, 0), drop_from(1, Tier::Gpu, 2)]
    );
    assert!(kv.is_empty());
    assert_eq!(
        (kv.gpu_blocks(), kv.host_blocks(), kv.host_free()),
        (0, 0, 0)
    );
    let stats = kv.stats();
    assert_eq!(
        (stats.offloads, stats.drops, stats.dropped_blocks),
        (0, 3, 5)
    );
}

/// The host is full of contexts due sooner than the newcomer: the newcomer is dropped and the
/// host keeps what it has. A newcomer due sooner than a host context takes its place.
#[test]
fn full_host_keeps_sooner_contexts() {
    let mut kv = planner(steered(4));
    kv.insert(spec(1, 1, 2), 0.0, 10.0).unwrap(); // due 11
    kv.insert(spec(2, 2, 2), 0.0, 20.0).unwrap(); // due 21
    assert_eq!(
        kv.reclaim(4, 0.0).unwrap(),
        vec![offload(2, 2), offload(1, 2)]
    );
    assert_eq!((kv.host_blocks(), kv.host_free()), (4, 0));
    // Due 31, later than both host contexts: dropped.
    kv.insert(spec(3, 3, 2), 0.0, 30.0).unwrap();
    assert_eq!(
        kv.reclaim(2, 0.0).unwrap(),
        vec![drop_from(3, Tier::Gpu, 2)]
    );
    assert_eq!(kv.tier(1), Some(Tier::Host));
    assert_eq!(kv.tier(2), Some(Tier::Host));
    // Due 6, sooner than 2 (due 21): 2 makes way (dropped from the host), 4 is offloaded.
    kv.insert(spec(4, 4, 2), 0.0, 5.0).unwrap();
    assert_eq!(
        kv.reclaim(2, 0.0).unwrap(),
        vec![drop_from(2, Tier::Host, 2), offload(4, 2)]
    );
    assert_eq!(kv.tier(2), None);
    assert_eq!(kv.tier(4), Some(Tier::Host));
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (0, 4));
    // Bigger than the whole host tier: dropped.
    kv.insert(spec(5, 5, 5), 0.0, 0.0).unwrap();
    assert_eq!(
        kv.reclaim(1, 0.0).unwrap(),
        vec![drop_from(5, Tier::Gpu, 5)]
    );
}

// ================================================================================= prefetch

/// Prefetch brings back the host context whose predicted use falls within the window, not the
/// one beyond it, and only within the GPU room and the link budget given.
#[test]
fn prefetch_loads_only_what_is_due_within_the_window() {
    let mut kv = planner(steered(100)); // prefetch_window 2
    kv.insert(spec(1, 1, 3), 0.0, 2.0).unwrap(); // due 3
    kv.insert(spec(2, 2, 3), 0.0, 10.0).unwrap(); // due 11
    assert_eq!(kv.reclaim(6, 0.0).unwrap().len(), 2);
    // Horizon 2.5: nothing due yet.
    assert!(kv.prefetch(0.5, 100, 100).unwrap().is_empty());
    // Horizon 3.5: 1 is, but it does not fit the GPU room, then the link budget.
    assert!(kv.prefetch(1.5, 2, 100).unwrap().is_empty());
    assert!(kv.prefetch(1.5, 100, 2).unwrap().is_empty());
    assert_eq!(kv.prefetch(1.5, 100, 100).unwrap(), vec![load(1, 3)]);
    assert_eq!(kv.tier(1), Some(Tier::Gpu));
    assert_eq!(kv.tier(2), Some(Tier::Host));
    assert_eq!(kv.stats().prefetches, 1);
    // Prefetched but not used: it is idle on the GPU again, and the latest due there.
    assert_eq!(kv.reclaim(1, 1.5).unwrap(), vec![offload(1, 3)]);
}

/// Prefetching a context whose parent is on the host loads the parent first (and counts it
/// against the budget).
#[test]
fn prefetch_loads_the_chain_root_first() {
    let mut kv = planner(steered(100));
    kv.insert(spec(1, 1, 4), 0.0, 50.0).unwrap(); // due 51
    kv.insert(child(2, 1, 1, 1), 0.0, 0.0).unwrap(); // due 1
    assert_eq!(
        kv.reclaim(5, 0.0).unwrap(),
        vec![offload(2, 1), offload(1, 4)]
    );
    // 2 is due within the window, but its chain (5 blocks) does not fit 4.
    assert!(kv.prefetch(0.0, 4, 100).unwrap().is_empty());
    assert_eq!(
        kv.prefetch(0.0, 5, 100).unwrap(),
        vec![load(1, 4), load(2, 1)]
    );
    assert_eq!(kv.stats().prefetches, 2);
}

// =================================================================================== chains

/// A parent stays on the GPU while a child is there, goes once its children are on the host, is
/// never dropped while extended; acquiring a child on the host loads its chain, root first.
#[test]
fn chains_move_leaves_first_and_load_root_first() {
    let mut kv = planner(steered(100));
    kv.insert(spec(1, 1, 3), 0.0, 100.0).unwrap(); // the shared prefix, due 101
    kv.insert(child(2, 1, 1, 1), 0.0, 10.0).unwrap(); // due 11
    kv.insert(child(3, 1, 1, 1), 0.0, 20.0).unwrap(); // due 21
    // The parent is due latest, but its children are on the GPU.
    assert_eq!(kv.reclaim(1, 0.0).unwrap(), vec![offload(3, 1)]);
    assert_eq!(
        kv.reclaim(4, 0.0).unwrap(),
        vec![offload(2, 1), offload(1, 3)]
    );
    assert!(matches!(kv.remove(1), Err(CoreError::InvalidArgument(_))));
    assert_eq!(kv.acquire(3, 1.0).unwrap(), vec![load(1, 3), load(3, 1)]);
    assert_eq!(kv.tier(2), Some(Tier::Host));
    // 1 is pinned by 3 (in use); 2 is on the host already: nothing to reclaim.
    assert!(kv.reclaim(100, 1.0).unwrap().is_empty());
    // A child can only be added on the GPU parent of the same program.
    assert!(matches!(
        kv.insert(child(4, 1, 1, 2), 1.0, 0.0),
        Err(CoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        kv.insert(child(4, 2, 1, 1), 1.0, 0.0),
        Err(CoreError::InvalidArgument(_))
    ));
    kv.release(3, 2.0, 0.0).unwrap();
    assert_eq!(kv.remove(3).unwrap(), (Tier::Gpu, 1));
    assert_eq!(kv.remove(2).unwrap(), (Tier::Host, 1));
    assert_eq!(kv.remove(1).unwrap(), (Tier::Gpu, 3));
    assert!(kv.is_empty());
}

/// A context in use (acquired, not released) is never offloaded or dropped, however much is
/// asked; its parent stays with it.
#[test]
fn in_use_contexts_never_move() {
    let mut kv = planner(steered(0));
    kv.insert(spec(1, 1, 2), 0.0, 0.0).unwrap();
    kv.insert(child(2, 1, 2, 1), 0.0, 0.0).unwrap();
    kv.insert(spec(3, 2, 2), 0.0, 0.0).unwrap();
    kv.acquire(2, 0.5).unwrap();
    kv.acquire(2, 0.5).unwrap(); // two calls share it
    assert_eq!(
        kv.reclaim(100, 1.0).unwrap(),
        vec![drop_from(3, Tier::Gpu, 2)]
    );
    kv.release(2, 2.0, 0.0).unwrap();
    assert!(kv.reclaim(100, 2.0).unwrap().is_empty());
    assert!(matches!(kv.remove(2), Err(CoreError::InvalidArgument(_))));
    kv.release(2, 3.0, 0.0).unwrap();
    assert!(matches!(
        kv.release(2, 3.0, 0.0),
        Err(CoreError::InvalidArgument(_))
    ));
    assert_eq!(
        kv.reclaim(100, 3.0).unwrap(),
        vec![drop_from(2, Tier::Gpu, 2), drop_from(1, Tier::Gpu, 2)]
    );
}

/// The host is full of contexts due sooner than a shared prefix that host contexts extend: the
/// prefix can be neither offloaded by the usual rule (only later-due host contexts make way) nor
/// dropped while extended, so the other idle contexts are tried first.
#[test]
fn prefix_extended_from_the_host_is_passed_over_first() {
    let mut kv = planner(steered(2));
    kv.insert(spec(3, 2, 1), 0.0, 29.0).unwrap(); // due 30
    assert_eq!(kv.reclaim(1, 0.0).unwrap(), vec![offload(3, 1)]);
    kv.insert(spec(1, 1, 2), 0.0, 100.0).unwrap(); // prefix, due 101
    kv.insert(child(2, 1, 1, 1), 0.0, 50.0).unwrap(); // due 51
    kv.insert(spec(4, 3, 1), 0.0, 0.0).unwrap(); // due 1
    // The prefix is not a victim while 2 is on the GPU: 2 goes, the host is full.
    assert_eq!(kv.reclaim(1, 0.0).unwrap(), vec![offload(2, 1)]);
    // The prefix is due latest but host context 2 extends it and the host is full of contexts
    // due sooner: it is passed over. 4 goes to the host, pushing out 2 (due later than 4); the
    // prefix, no longer extended, is then an ordinary victim, and with the host full of
    // contexts due sooner it is dropped.
    assert_eq!(
        kv.reclaim(2, 0.0).unwrap(),
        vec![
            drop_from(2, Tier::Host, 1),
            offload(4, 1),
            drop_from(1, Tier::Gpu, 2)
        ]
    );
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (0, 2));
    assert_eq!(kv.tier(4), Some(Tier::Host));
}

/// A prefix bigger than the whole host tier, extended by a host context: it can neither be
/// offloaded nor dropped while extended. Other idle contexts go first; once nothing else is
/// left, a running call still gets its blocks: the prefix is dropped with the host contexts
/// extending it (deepest first).
#[test]
fn prefix_bigger_than_the_host_is_freed_when_it_must() {
    let mut kv = planner(steered(1));
    kv.insert(spec(1, 1, 2), 0.0, 100.0).unwrap(); // prefix, due 101
    kv.insert(child(2, 1, 1, 1), 0.0, 50.0).unwrap(); // due 51
    kv.insert(child(3, 1, 0, 2), 0.0, 60.0).unwrap(); // due 61, no block of its own
    kv.insert(spec(4, 2, 1), 0.0, 0.0).unwrap(); // due 1
    // 3 (no block) then 2 go to the host, which is then full; the prefix (now the latest) is
    // passed over; 4 is due sooner than 3 and 2, but 3 holds no block and 2 is extended by 3
    // (not a drop candidate): no room for 4, which is dropped.
    assert_eq!(
        kv.reclaim(2, 0.0).unwrap(),
        vec![offload(3, 0), offload(2, 1), drop_from(4, Tier::Gpu, 1)]
    );
    assert_eq!(kv.tier(1), Some(Tier::Gpu));
    // The prefix is the only idle GPU context left: it must go, and 3 and 2 with it.
    assert_eq!(
        kv.reclaim(2, 0.0).unwrap(),
        vec![
            drop_from(3, Tier::Host, 0),
            drop_from(2, Tier::Host, 1),
            drop_from(1, Tier::Gpu, 2)
        ]
    );
    assert!(kv.is_empty());
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (0, 0));
}

/// Regression: a prefix passed over in one `reclaim` whose host child is then dropped to make
/// room for a later victim, and which is then itself dropped in the same `reclaim`, must not stay
/// listed as a victim (the next `reclaim` used to panic on it).
#[test]
fn prefix_passed_over_then_dropped_in_the_same_reclaim() {
    let mut kv = planner(steered(1));
    kv.insert(spec(1, 1, 2), 0.0, 100.0).unwrap(); // K, bigger than the host tier, due 101
    kv.insert(child(2, 1, 1, 1), 0.0, 50.0).unwrap(); // C, due 51
    assert_eq!(kv.reclaim(1, 0.0).unwrap(), vec![offload(2, 1)]);
    // V, due 11: K is passed over (bigger than the host, extended by C); C (due later than V)
    // makes way for V; K, now extended by nothing, is dropped.
    kv.insert(spec(3, 2, 1), 0.0, 10.0).unwrap();
    let plan = kv.reclaim(10, 0.0).unwrap();
    assert_eq!(
        plan,
        vec![
            drop_from(2, Tier::Host, 1),
            offload(3, 1),
            drop_from(1, Tier::Gpu, 2)
        ]
    );
    assert_eq!(gpu_freed(&plan), 3);
    assert_eq!(kv.tier(1), None);
    // The next reclaim finds nothing left on the GPU (and does not trip over K).
    assert!(kv.reclaim(10, 0.0).unwrap().is_empty());
    kv.insert(spec(4, 3, 1), 0.0, 200.0).unwrap(); // due 201, later than V
    assert_eq!(
        kv.reclaim(1, 0.0).unwrap(),
        vec![drop_from(4, Tier::Gpu, 1)]
    );
    assert_eq!((kv.gpu_blocks(), kv.host_blocks(), kv.len()), (0, 1, 1));
}

// ============================================================================ program end

/// A finished program frees every context it holds, on either tier, at once; other programs'
/// contexts are untouched.
#[test]
fn finished_program_frees_everything_at_once() {
    let mut kv = planner(steered(100));
    kv.insert(spec(1, 1, 4), 0.0, 50.0).unwrap();
    kv.insert(child(2, 1, 2, 1), 0.0, 10.0).unwrap();
    kv.insert(child(3, 1, 1, 1), 0.0, 0.0).unwrap();
    kv.insert(spec(4, 2, 5), 0.0, 0.0).unwrap();
    assert_eq!(kv.reclaim(2, 0.0).unwrap(), vec![offload(2, 2)]);
    kv.acquire(3, 0.5).unwrap(); // a call of program 1 is even running
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (10, 2));
    let mut freed = kv.end_program(1, 3.0);
    freed.sort_by_key(|a| a.context);
    assert_eq!(
        freed,
        vec![
            drop_from(1, Tier::Gpu, 4),
            drop_from(2, Tier::Host, 2),
            drop_from(3, Tier::Gpu, 1)
        ]
    );
    for c in 1..=3 {
        assert_eq!(kv.tier(c), None);
    }
    assert_eq!(kv.tier(4), Some(Tier::Gpu));
    assert_eq!((kv.gpu_blocks(), kv.host_blocks(), kv.len()), (5, 0, 1));
    // Dropping a finished program's contexts is not an eviction.
    assert_eq!(kv.stats().drops, 0);
    assert!(kv.end_program(1, 3.0).is_empty());
    assert!(kv.end_program(99, 0.0).is_empty());
    // Its ids are free again.
    kv.insert(spec(1, 1, 1), 1.0, 0.0).unwrap();
}

// =============================================================================== admission

/// A new program that does not fit the working-set budget waits, in arrival order, and is let in
/// once it has waited its bound even though it still does not fit; one that fits once memory is
/// freed is let in before its bound.
#[test]
fn deferred_program_is_admitted_at_its_bound() {
    let mut kv = planner(KvConfig {
        admission_blocks: Some(10),
        admission_min_programs: 0.0, // programs here fill most of the budget
        deferral_beta: 2.0,
        deferral_floor: 1.0,
        ..KvConfig::default()
    });
    // Nothing held: program 1 is admitted, and holds 8 blocks.
    assert!(kv.admit(1, 0.0, 0).unwrap());
    kv.insert(spec(1, 1, 8), 0.0, 0.0).unwrap();
    // A typical program holds 8: 8 + 8 > 10.
    assert!(!kv.admit(2, 0.0, 0).unwrap());
    assert!(!kv.admit(2, 0.5, 0).unwrap()); // already queued: still waits, counted once
    assert!(!kv.admit(3, 1.0, 0).unwrap());
    let s = kv.admission_stats(1.0);
    assert_eq!((s.deferred, s.waiting, s.bound), (2, 2, 2.0));
    assert_eq!(s.longest_deferral, 1.0);
    assert!(kv.admissions(1.5, 0).unwrap().is_empty());
    // Program 2 has waited its bound (2 s): admitted though 16 > 10. Program 3 has not.
    assert_eq!(kv.admissions(2.0, 0).unwrap(), vec![2]);
    let s = kv.admission_stats(2.0);
    assert_eq!((s.deferred, s.waiting, s.longest_deferral), (2, 1, 2.0));
    // Even with program 2 admitted (and counted as a typical program), the queue keeps its order:
    // a newcomer waits behind 3.
    assert!(!kv.admit(4, 2.5, 0).unwrap());
    // Program 1 ends (8 s of service: the bound becomes 2 x 8 = 16 s) and frees its blocks:
    // everything fits, 3 and 4 start before their bound.
    kv.end_program(1, 8.0);
    kv.insert(spec(2, 2, 1), 2.5, 0.0).unwrap();
    assert_eq!(kv.admission_stats(3.0).bound, 16.0);
    assert_eq!(kv.admissions(3.0, 0).unwrap(), vec![3, 4]);
    let s = kv.admission_stats(3.0);
    assert_eq!((s.deferred, s.waiting, s.longest_deferral), (3, 0, 2.0));
}

/// Without a budget every program is admitted at once.
#[test]
fn no_budget_admits_everything() {
    let mut kv = planner(KvConfig::default());
    kv.insert(spec(1, 1, 1_000_000), 0.0, 0.0).unwrap();
    for p in 2..10 {
        assert!(kv.admit(p, 0.0, u64::MAX / 4).unwrap());
    }
    assert_eq!(kv.admission_stats(0.0).deferred, 0);
}

/// Admission defers only while the budget holds at least `admission_min_programs` typical working
/// sets: when one program fills half the cache, a second one is let in at once (it would otherwise
/// wait for a whole program to end), and deferral resumes once the programs are small again.
#[test]
fn programs_too_large_to_share_the_budget_are_not_deferred() {
    let mut kv = planner(KvConfig {
        admission_blocks: Some(100),
        ..KvConfig::default()
    });
    assert_eq!(kv.config().admission_min_programs, 4.0);
    assert!(kv.admit(1, 0.0, 0).unwrap());
    kv.insert(spec(1, 1, 50), 0.0, 0.0).unwrap();
    // A typical program holds 50: the budget holds 2 < 4 of them, so no one is deferred even
    // though 50 + 50 + 50 > 100.
    assert!(kv.admit(2, 1.0, 0).unwrap());
    kv.insert(spec(2, 2, 50), 1.0, 0.0).unwrap();
    assert!(kv.admit(3, 2.0, 0).unwrap());
    assert_eq!(kv.admission_stats(2.0).deferred, 0);
    // Programs 1 and 2 end; program 3 holds 20 (room for 5 typical ones): the budget rule is back
    // in force, and once 5 programs fill the budget the next one waits (100 + 20 > 100).
    kv.end_program(1, 1.0);
    kv.end_program(2, 1.0);
    kv.insert(spec(3, 3, 20), 3.0, 0.0).unwrap();
    for p in 4..=7 {
        assert!(kv.admit(p, 3.0, 0).unwrap());
        kv.insert(spec(p + 10, p, 20), 3.0, 0.0).unwrap();
    }
    assert!(!kv.admit(8, 3.0, 0).unwrap());
    assert_eq!(kv.admission_stats(3.0).deferred, 1);
}

/// Admission only gates new programs: a live program's next call (a new context, or a held one
/// acquired again) goes through `insert` / `acquire`, which never consult the queue, and it does
/// not jump or disturb the queue of deferred programs.
#[test]
fn live_programs_continue_while_new_ones_wait() {
    let mut kv = planner(KvConfig {
        admission_blocks: Some(4),
        admission_min_programs: 0.0, // programs here fill most of the budget
        deferral_beta: 10.0,
        ..KvConfig::default()
    });
    assert!(kv.admit(1, 0.0, 0).unwrap());
    kv.insert(spec(1, 1, 4), 0.0, 0.0).unwrap();
    assert!(!kv.admit(2, 0.0, 0).unwrap());
    // Program 1 keeps going, well over budget.
    kv.acquire(1, 1.0).unwrap();
    kv.insert(child(2, 1, 4, 1), 2.0, 0.0).unwrap();
    kv.release(1, 2.0, 1.0).unwrap();
    assert!(kv.admissions(2.0, 4).unwrap().is_empty());
    let s = kv.admission_stats(2.0);
    assert_eq!((s.deferred, s.waiting), (1, 1));
    // At the bound (10 s), program 2 is let in regardless.
    assert_eq!(kv.admissions(10.0, 4).unwrap(), vec![2]);
}

/// A program cancelled (ended) while deferred leaves the queue: it is never let in, and the program
/// behind it no longer waits behind it.
#[test]
fn program_ended_while_deferred_leaves_the_queue() {
    let mut kv = planner(KvConfig {
        admission_blocks: Some(10),
        admission_min_programs: 0.0, // programs here fill most of the budget
        deferral_beta: 2.0,
        deferral_floor: 1.0,
        ..KvConfig::default()
    });
    assert!(kv.admit(1, 0.0, 0).unwrap());
    kv.insert(spec(1, 1, 8), 0.0, 0.0).unwrap();
    assert!(!kv.admit(2, 0.0, 0).unwrap());
    assert!(!kv.admit(3, 0.5, 0).unwrap());
    assert_eq!(kv.admission_stats(0.5).waiting, 2);
    // Program 2's client goes away before it starts: nothing to free, and it stops waiting.
    assert!(kv.end_program(2, 0.0).is_empty());
    let s = kv.admission_stats(1.0);
    assert_eq!((s.deferred, s.waiting, s.bound), (2, 1, 2.0));
    // Program 3 heads the queue now: the longest wait is its own.
    assert_eq!(s.longest_deferral, 0.5);
    // At 2.0 program 2 would have been let in at its bound; program 3 has not waited its own.
    assert!(kv.admissions(2.0, 0).unwrap().is_empty());
    assert_eq!(kv.admissions(2.5, 0).unwrap(), vec![3]);
    assert!(kv.admissions(100.0, 0).unwrap().is_empty());
    let s = kv.admission_stats(100.0);
    assert_eq!((s.waiting, s.longest_deferral), (0, 2.0));
    // Should program 2 ask again, it is a new arrival (queued behind nobody, deferred again).
    assert!(!kv.admit(2, 100.0, 0).unwrap());
    assert_eq!(kv.admissions(102.0, 0).unwrap(), vec![2]);
}

// ======================================================================== working-set window

/// A program idle (no context inserted or acquired for it) for longer than the working-set window
/// stops counting toward admission: a new program that would not fit beside it is let in. Once
/// the idle program is active again, it counts whole again (its longest chain).
#[test]
fn idle_program_stops_counting_after_the_window() {
    let config = KvConfig {
        admission_blocks: Some(10),
        admission_min_programs: 0.0, // programs here fill most of the budget
        working_set_window: 5.0,
        deferral_beta: 100.0,
        ..KvConfig::default()
    };
    let mut kv = planner(config.clone());
    let mut forever = planner(KvConfig {
        working_set_window: f64::INFINITY,
        ..config
    });
    for kv in [&mut kv, &mut forever] {
        assert!(kv.admit(1, 0.0, 0).unwrap());
        kv.insert(spec(1, 1, 4), 0.0, 0.0).unwrap();
        kv.insert(child(2, 1, 4, 1), 1.0, 0.0).unwrap(); // a chain of 8, last active at 1
        assert_eq!(kv.working_sets(), 8);
        // A typical program holds 8: 8 + 8 > 10.
        assert!(!kv.admit(2, 5.0, 0).unwrap());
        // Idle for exactly the window: it still counts.
        assert!(kv.admissions(6.0, 0).unwrap().is_empty());
        assert_eq!(kv.working_sets(), 8);
    }
    // Idle for longer: program 1 no longer counts and program 2 is let in.
    assert_eq!(kv.admissions(6.25, 0).unwrap(), vec![2]);
    assert_eq!(kv.working_sets(), 0);
    // With an infinite window it keeps counting, and program 2 keeps waiting.
    assert!(forever.admissions(6.25, 0).unwrap().is_empty());
    assert!(forever.admissions(50.0, 0).unwrap().is_empty());
    assert_eq!(forever.working_sets(), 8);
    // Still idle, program 1 would let a third program in as well...
    assert!(kv.clone().admit(3, 7.0, 0).unwrap());
    // ...but its next call arrives (acquiring its context): it counts whole again, and a third
    // program no longer fits beside it and program 2 (admitted, no context yet: a typical one),
    // 8 + 8 x 2 > 10.
    assert!(kv.acquire(2, 7.0).unwrap().is_empty());
    assert_eq!(kv.working_sets(), 8);
    assert!(!kv.admit(3, 7.0, 0).unwrap());
    // A new context counts it again too.
    kv.release(2, 8.0, 1.0).unwrap();
    assert_eq!(kv.admissions(13.25, 0).unwrap(), vec![3]);
    assert_eq!(kv.working_sets(), 0);
    kv.insert(spec(3, 1, 1), 14.0, 1.0).unwrap();
    assert_eq!(kv.working_sets(), 8);
    // Once it ends it is gone for good.
    kv.end_program(1, 1.0);
    assert_eq!(kv.working_sets(), 0);
}

/// The typical program (what an admitted program without a context yet is assumed to hold) is
/// the mean over the programs counted now, not over every live program.
#[test]
fn typical_program_is_the_mean_of_the_counted_ones() {
    let mut kv = planner(KvConfig {
        admission_blocks: Some(3),
        admission_min_programs: 0.0, // programs here fill most of the budget
        working_set_window: 5.0,
        ..KvConfig::default()
    });
    kv.insert(spec(1, 1, 8), 0.0, 0.0).unwrap();
    kv.insert(spec(2, 2, 2), 10.0, 0.0).unwrap();
    // Program 1 has been idle 10 s: only program 2 counts, 2 blocks, typical 2: 2 + 2 > 3 (over
    // both live programs the mean would be 1, and 2 + 1 <= 3 would let program 3 in).
    assert!(!kv.admit(3, 10.0, 0).unwrap());
    assert_eq!(kv.working_sets(), 2);
}

/// When nothing else is idle, a prefix extended from the host still makes way for a running
/// call: host contexts make room for it whatever their due, latest first.
#[test]
fn prefix_extended_from_the_host_forces_host_room_as_a_last_resort() {
    let mut kv = planner(steered(2));
    kv.insert(spec(3, 2, 1), 0.0, 29.0).unwrap(); // due 30
    assert_eq!(kv.reclaim(1, 0.0).unwrap(), vec![offload(3, 1)]);
    kv.insert(spec(1, 1, 2), 0.0, 100.0).unwrap(); // prefix, due 101
    kv.insert(child(2, 1, 1, 1), 0.0, 50.0).unwrap(); // due 51
    assert_eq!(kv.reclaim(1, 0.0).unwrap(), vec![offload(2, 1)]);
    assert_eq!(
        kv.reclaim(2, 0.0).unwrap(),
        vec![
            drop_from(2, Tier::Host, 1),
            drop_from(3, Tier::Host, 1),
            offload(1, 2)
        ]
    );
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (0, 2));
}

/// A context passed over and then forced off the GPU (the host makes room for it whatever the due)
/// exposes the prefix it extends, which is then a victim like any other: a running call still gets
/// every idle block it asks for.
#[test]
fn forced_context_exposes_its_prefix_to_the_same_reclaim() {
    let mut kv = planner(steered(1));
    kv.insert(spec(1, 1, 2), 0.0, 100.0).unwrap(); // prefix, due 101, bigger than the host
    kv.insert(child(2, 1, 1, 1), 0.0, 50.0).unwrap(); // due 51
    kv.insert(child(3, 1, 1, 2), 0.0, 10.0).unwrap(); // due 11
    assert_eq!(kv.reclaim(1, 0.0).unwrap(), vec![offload(3, 1)]);
    // 2 is the only victim; 3 extends it from a host full of a context due sooner: passed over,
    // then forced (3 makes way). That exposes the prefix, which the host cannot take: it goes
    // with its host descendants. All 3 idle GPU blocks are freed.
    let plan = kv.reclaim(3, 0.0).unwrap();
    assert_eq!(gpu_freed(&plan), 3, "{plan:?}");
    assert_eq!(plan.first(), Some(&drop_from(3, Tier::Host, 1)));
    assert_eq!(plan.last(), Some(&drop_from(1, Tier::Gpu, 2)));
    assert!(kv.is_empty());
    assert_eq!((kv.gpu_blocks(), kv.host_blocks()), (0, 0));
}
