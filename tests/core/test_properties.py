"""Model-based property: a model of every call's engine, state and KV footprint stays in step with
the scheduler whatever the sequence of operations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix import CallState, InvalidTransitionError, Scheduler, SchedulerConfig, UnknownProgramError

Op = tuple[str, int, int, int]

OPS = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 3), st.integers(0, 1), st.integers(0, 60)),
    st.tuples(st.just("step"), st.integers(0, 1), st.integers(0, 4), st.integers(0, 150)),
    st.tuples(st.just("finish"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("abort"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("preempt"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("tokens"), st.integers(0, 50), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("end"), st.integers(0, 3), st.just(0), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 30), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SchedulerConfig.policies()), st.lists(OPS, max_size=60))
def test_no_call_lost(policy: str, ops: list[Op]) -> None:
    """A model of every call's engine, state and KV footprint stays in step with the scheduler:
    every submitted call is live, finished or aborted, and batches respect the capacity."""
    s = Scheduler(SchedulerConfig(policy, program_ttl=1e9))
    live: dict[int, tuple[int, int]] = {}  # call -> (program, engine)
    kv: dict[int, int] = {}
    running: set[int] = set()
    finished: dict[int, int] = {}  # program -> finished calls
    programs: set[int] = set()
    counts = {"submitted": 0, "finished": 0, "aborted": 0}
    t = 0.0
    latest = 0.0  # the latest time the scheduler was given
    next_id = 0

    def pick(k: int) -> int | None:
        ids = sorted(live)
        return ids[k % len(ids)] if ids else None

    for op, a, b, c in ops:
        if op == "submit":
            s.submit(next_id, a, t, engine=b, prompt_tokens=c, thread=next_id % 2)
            latest = t
            live[next_id] = (a, b)
            programs.add(a)
            kv[next_id] = c
            next_id += 1
            counts["submitted"] += 1
        elif op == "step":
            engine, max_running, budget = a, b, c
            done = sorted(x for x in running if live[x][1] == engine and x % 3 == 0)
            d = s.step(engine, t, max_running, budget, finished=done)
            latest = t
            for x in done:
                finished[live[x][0]] = finished.get(live[x][0], 0) + 1
                del live[x]
                running.discard(x)
            counts["finished"] += len(done)
            mine = {x for x, (_, e) in live.items() if e == engine}
            assert set(d.running) <= mine
            assert len(d.running) <= max_running
            assert sum(kv[x] for x in d.running) <= budget
            assert all(kv[x] > budget for x in d.too_large)
            assert set(d.admitted) <= set(d.running)
            assert set(d.preempted) <= running & mine
            assert set(d.admitted) == set(d.running) - running
            running = (running - mine) | set(d.running)
        elif op in ("finish", "abort", "preempt", "tokens"):
            cid = pick(a)
            if cid is None:
                continue
            if op == "tokens":
                s.add_tokens(cid, b)
                kv[cid] += b
            elif op == "abort":
                s.abort(cid, t)
                latest = t
                del live[cid]
                running.discard(cid)
                counts["aborted"] += 1
            elif cid in running:
                if op == "finish":
                    s.finish(cid, t)
                    latest = t
                    finished[live[cid][0]] = finished.get(live[cid][0], 0) + 1
                    del live[cid]
                    counts["finished"] += 1
                else:
                    s.preempt(cid, t)
                    latest = t
                running.discard(cid)
            else:
                with pytest.raises(InvalidTransitionError):
                    (s.finish if op == "finish" else s.preempt)(cid, t)
        elif op == "end":
            if a not in programs:
                with pytest.raises(UnknownProgramError):
                    s.end_program(a, t)
                continue
            aborted = s.end_program(a, t)
            latest = t
            assert sorted(aborted) == sorted(x for x, (p, _) in live.items() if p == a)
            for x in aborted:
                del live[x]
                running.discard(x)
            counts["aborted"] += len(aborted)
            finished.pop(a, None)
            programs.discard(a)
        else:
            t += a / 10

        # Invariants after every operation.
        assert counts["submitted"] == counts["finished"] + counts["aborted"] + len(live)
        assert len(s) == len(live)
        assert s.now == latest
        for x, (p, e) in live.items():
            info = s.call(x)
            assert (info.program, info.engine) == (p, e)
            assert (info.state == CallState.RUNNING) == (x in running)
            assert info.prompt_tokens + info.generated_tokens == kv[x]
        for e in (0, 1):
            n_run = sum(1 for x in running if live[x][1] == e)
            n_all = sum(1 for _, ee in live.values() if ee == e)
            assert s.engine_load(e) == (n_run, n_all - n_run)
            assert sum(s.queue_depths(e)) == n_all - n_run
        assert s.num_programs == len(programs)
        for p in programs:
            info_p = s.program(p)
            assert info_p.finished_calls == finished.get(p, 0)
            assert sorted(info_p.live_calls) == sorted(x for x, (q, _) in live.items() if q == p)
