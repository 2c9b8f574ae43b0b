"""One ``Scheduler`` shared by many Python threads (in the spirit of tokenizers'
``bindings/python/tests/test_freethreaded.py``): concurrent use stays consistent, and long batch
operations release the GIL."""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from autellix import (
    CallState,
    DuplicateCallError,
    Scheduler,
    SchedulerConfig,
)

N_THREADS = 6
ITERATIONS = 120
KV = 4_000
MAX_RUNNING = 24


@contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def gil_enabled() -> bool:
    is_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


@dataclass
class Worker:
    """One thread's share: its own engine, call-id range and program-id range, and a model of
    what the scheduler must hold for them."""

    index: int
    live: dict[int, int] = field(default_factory=dict)  # call -> program
    running: set[int] = field(default_factory=set)
    finished_per_program: dict[int, int] = field(default_factory=dict)
    programs: set[int] = field(default_factory=set)
    submitted: int = 0
    finished: int = 0
    aborted: int = 0
    checks: int = 0

    @property
    def engine(self) -> int:
        return self.index

    def program_id(self, k: int) -> int:
        return self.index * 1_000_000 + k

    def owns_program(self, program: int) -> bool:
        return program // 1_000_000 == self.index

    def run(self, s: Scheduler, barrier: threading.Barrier, log: list[int]) -> None:
        rng = random.Random(self.index)
        next_call = self.index * 10_000_000
        barrier.wait()
        for it in range(ITERATIONS):
            now = it * 0.01
            # Submit: singly, or as a batch long enough to release the GIL.
            n = rng.choice([1, 3, 80])
            calls = list(range(next_call, next_call + n))
            next_call += n
            programs = [self.program_id(rng.randrange(8)) for _ in calls]
            tokens = [rng.randrange(0, 200) for _ in calls]
            if n == 1:
                s.submit(calls[0], programs[0], now, engine=self.engine, prompt_tokens=tokens[0])
            else:
                threads = [rng.randrange(3) for _ in calls]
                s.submit_many(
                    now, calls, programs, threads=threads, engines=[self.engine] * n, prompt_tokens=tokens
                )
            for c, p in zip(calls, programs, strict=True):
                self.live[c] = p
                self.programs.add(p)
            self.submitted += n

            # Step: finish some running calls, report progress on others.
            running = sorted(self.running)
            done = [c for c in running if rng.random() < 0.5]
            progress = [(c, rng.randrange(1, 4)) for c in running if c not in done]
            d = s.step(self.engine, now, MAX_RUNNING, KV, finished=done, progress=progress)
            for c in done:
                p = self.live.pop(c)
                self.finished_per_program[p] = self.finished_per_program.get(p, 0) + 1
            self.finished += len(done)
            assert set(d.running) <= set(self.live)
            assert set(d.admitted) <= set(d.running)
            assert not set(d.preempted) & set(d.running)
            assert len(d.running) <= MAX_RUNNING
            self.running = set(d.running)

            # Abort a few live calls in any state.
            for c in rng.sample(sorted(self.live), min(len(self.live), rng.randrange(0, 4))):
                s.abort(c, now)
                del self.live[c]
                self.running.discard(c)
                self.aborted += 1

            # Now and then the engine preempts a call itself, or a whole program ends.
            if self.running and rng.random() < 0.2:
                c = rng.choice(sorted(self.running))
                s.preempt(c, now)
                self.running.discard(c)
            if rng.random() < 0.05:
                p = self.program_id(rng.randrange(8))
                if p in self.programs:
                    aborted = s.end_program(p, now)
                    expected = sorted(c for c, q in self.live.items() if q == p)
                    assert sorted(aborted) == expected
                    for c in aborted:
                        del self.live[c]
                        self.running.discard(c)
                    self.aborted += len(aborted)
                    self.programs.discard(p)
                    self.finished_per_program.pop(p, None)

            self.check(s, rng)
            log.append(self.index)

    def check(self, s: Scheduler, rng: random.Random) -> None:
        """Only this thread touches its engine, so its engine's state is exactly the model."""
        queued = len(self.live) - len(self.running)
        assert s.engine_load(self.engine) == (len(self.running), queued)
        assert sum(s.queue_depths(self.engine)) == queued
        for c in rng.sample(sorted(self.live), min(3, len(self.live))):
            info = s.call(c)
            assert info.engine == self.engine
            assert info.program == self.live[c]
            assert (info.state == CallState.RUNNING) == (c in self.running)
            assert c in s
        p = rng.choice(sorted(self.programs))
        info_p = s.program(p)
        assert info_p.active_calls == sum(1 for q in self.live.values() if q == p)
        assert info_p.finished_calls == self.finished_per_program.get(p, 0)
        assert sorted(info_p.live_calls) == sorted(c for c, q in self.live.items() if q == p)
        assert self.submitted == self.finished + self.aborted + len(self.live)
        self.checks += 1


def run_workers(s: Scheduler, workers: list[Worker]) -> list[int]:
    """Runs the workers at once; returns which worker completed each iteration, in order."""
    barrier = threading.Barrier(len(workers))
    log: list[int] = []
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        futures = [pool.submit(w.run, s, barrier, log) for w in workers]
        for f in futures:
            f.result(timeout=120)  # re-raises a worker's exception
    return log


@pytest.mark.parametrize("policy", ["plas", "atlas", "mlfq", "fcfs"])
def test_concurrent_disjoint_workers(policy: str) -> None:
    s = Scheduler(SchedulerConfig(policy))
    workers = [Worker(i) for i in range(N_THREADS)]
    with switch_interval(1e-5):
        log = run_workers(s, workers)

    assert all(w.checks == ITERATIONS for w in workers)
    assert len(log) == N_THREADS * ITERATIONS
    # The threads really did interleave (not one after another).
    switches = sum(1 for a, b in itertools.pairwise(log) if a != b)
    assert switches > 2 * N_THREADS
    assert len(s) == sum(len(w.live) for w in workers)
    assert s.num_programs == sum(len(w.programs) for w in workers)
    assert s.engines() == list(range(N_THREADS))
    assert s.now == pytest.approx((ITERATIONS - 1) * 0.01)
    total_submitted = sum(w.submitted for w in workers)
    assert total_submitted == sum(w.finished + w.aborted + len(w.live) for w in workers)
    assert total_submitted > N_THREADS * ITERATIONS
    for w in workers:
        assert s.engine_load(w.engine) == (len(w.running), len(w.live) - len(w.running))
        for c, p in w.live.items():
            info = s.call(c)
            assert (info.engine, info.program) == (w.engine, p)
        for p in w.programs:
            info_p = s.program(p)
            assert info_p.finished_calls == w.finished_per_program.get(p, 0)
            assert info_p.active_calls == sum(1 for q in w.live.values() if q == p)
    # Every program can be ended and nothing is left behind.
    ended = sorted(c for w in workers for p in sorted(w.programs) for c in s.end_program(p, s.now))
    assert ended == sorted(c for w in workers for c in w.live)
    assert len(s) == 0
    assert s.num_programs == 0
    assert all(s.engine_load(w.engine) == (0, 0) for w in workers)


def test_concurrent_readers_and_writer() -> None:
    """Readers poll every query while a writer mutates: no error, no deadlock, right final state."""
    s = Scheduler()
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                running, queued = s.engine_load(0)
                depths = s.queue_depths(0)
                assert running >= 0
                assert queued >= 0
                assert len(depths) == 7
                assert len(s) >= 0
                assert s.engines() in ([], [0])
                _ = s.num_programs, s.now, repr(s), 5 in s
                reads[0] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    with switch_interval(1e-5):
        for t in threads:
            t.start()
        try:
            for i in range(300):
                base = i * 100
                s.submit_many(i * 0.01, list(range(base, base + 100)), [i % 7] * 100)
                d = s.step(0, i * 0.01, 64, 10_000)
                s.step(0, i * 0.01, 64, 10_000, finished=d.running)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    assert not errors, errors
    assert reads[0] > 0
    assert len(s) == 300 * 100 - sum(s.program(p).finished_calls for p in range(7))


def race_same_batch(s: Scheduler, n_threads: int) -> list[str]:
    """`n_threads` threads submit overlapping batches at once (calls 0..99 shared, plus 1000 + k of
    their own); returns each thread's outcome."""
    barrier = threading.Barrier(n_threads)

    def attempt(k: int) -> str:
        barrier.wait()
        try:
            s.submit_many(0.0, [*range(100), 1000 + k], [1] * 101)
        except DuplicateCallError:
            return "duplicate"
        return "ok"

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        futures = [pool.submit(attempt, k) for k in range(n_threads)]
        return [f.result(timeout=60) for f in futures]


def test_racing_duplicate_submissions_have_one_winner() -> None:
    """Threads submit the same batch at once: all-or-nothing means exactly one succeeds."""
    n_threads = 8
    for _ in range(20):
        s = Scheduler()
        outcomes = race_same_batch(s, n_threads)
        assert sorted(outcomes) == ["duplicate"] * (n_threads - 1) + ["ok"]
        assert len(s) == 101
        assert s.program(1).active_calls == 101
        assert sum(1000 + k in s for k in range(n_threads)) == 1


# ----------------------------------------------------------------------------- GIL release


def progress_during(fn: Callable[[], object]) -> int:
    """How many times a background thread ran Python code while `fn` ran in this thread.

    With a 30 s switch interval this thread never has to hand the GIL over between bytecodes, and
    the background thread gives it back after each increment (it sleeps), so the counter can only
    move while `fn` itself has released the GIL."""
    counter = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin() -> None:
        started.set()
        while not stop.is_set():
            counter[0] += 1
            time.sleep(1e-6)  # really sleeps (tens of us): this thread cannot hog the GIL

    with switch_interval(30.0):
        t = threading.Thread(target=spin)
        t.start()
        try:
            assert started.wait(timeout=30)
            before = counter[0]
            fn()
            after = counter[0]
        finally:
            stop.set()
            t.join(timeout=30)
    assert not t.is_alive()
    return after - before


def busy_python() -> None:
    x = 0
    for i in range(300_000):
        x += i


@pytest.mark.skipif(not gil_enabled(), reason="no GIL to release on a free-threaded build")
def test_long_batches_release_the_gil() -> None:
    # The harness itself: pure Python and a long GIL-holding C call let the other thread run zero
    # times. If this does not hold on some interpreter, the measurement means nothing.
    if progress_during(busy_python) != 0 or progress_during(lambda: sorted(range(3_000_000), key=int)) != 0:
        pytest.skip("cannot pin the GIL on this interpreter")

    n = 200_000
    calls = list(range(n))
    programs = [i // 4 for i in range(n)]
    s = Scheduler(SchedulerConfig("fcfs"))
    assert progress_during(lambda: s.submit_many(0.0, calls, programs)) > 0
    assert len(s) == n
    d_box: list[object] = []
    assert progress_during(lambda: d_box.append(s.step(0, 1.0, n, 1 << 40))) > 0
    assert s.engine_load(0) == (n, 0)
    assert progress_during(lambda: s.step(0, 2.0, n, 1 << 40, finished=calls[: n // 2])) > 0
    assert len(s) == n // 2
    # Single-call operations keep the GIL (they take microseconds).

    def many_single_submits() -> None:
        for i in range(2_000):
            s.submit(n + i, 0, 3.0)

    assert progress_during(many_single_submits) == 0
    assert len(s) == n // 2 + 2_000
