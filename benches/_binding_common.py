"""What every section of ``bench_binding.py`` shares: the workload constants, the measurement
helpers, the result rows, the run plans and :class:`Pair` (the Rust scheduler and a Python
reference in the same state)."""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autellix import DECODE_STEP_SECONDS, Scheduler, SchedulerConfig

pc = time.perf_counter_ns

INF = math.inf
# Queue-placement constants shared by both implementations.
KV_BUDGET = 1 << 40  # never binds in the timed workloads
PROMPT = 512
BATCH = 256
# The ladder the benches measure: boundaries of 2, 4, 8, 16, 32, 64 decode steps of 25 ms (the
# third-party one, the core's default until issue 14), so that programs spread over all 7 queues
# and, one decode step per engine step, calls are demoted and promoted every few steps. The
# default 0.5 s ladder would leave most of that work out of a 1.6 s episode.
BENCH_LADDER = SchedulerConfig.ladder(2 * DECODE_STEP_SECONDS, top_quantum=DECODE_STEP_SECONDS)
# Attained service putting a program in queue 0..6 under BENCH_LADDER, each well inside its bin.
LEVEL_SERVICE = (0.01, 0.075, 0.15, 0.3, 0.6, 1.2, 2.4)
# Clock advance per single operation: nothing falls due while a state is measured.
OP_DT = 1e-8
FINISHED_PER_STEP = 4


def timer_floor() -> int:
    """Median cost of an empty ``perf_counter_ns`` pair (subtracted from per-op samples)."""
    samples = []
    for _ in range(20_000):
        t0 = pc()
        samples.append(pc() - t0)
    return int(statistics.median(samples))


def pctl(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


@dataclass
class Stat:
    """Per-operation times in microseconds."""

    median_us: float
    p99_us: float
    samples: int

    @staticmethod
    def of(chunk_means_ns: Sequence[float], per_op_ns: Sequence[float], floor_ns: int) -> Stat:
        per_op = [max(0.0, x - floor_ns) for x in per_op_ns]
        return Stat(
            median_us=statistics.median(chunk_means_ns) / 1e3,
            p99_us=pctl(per_op, 0.99) / 1e3 if per_op else pctl(chunk_means_ns, 0.99) / 1e3,
            samples=len(per_op) or len(chunk_means_ns),
        )


@dataclass
class Row:
    operation: str
    live: str
    python: Stat
    autellix: Stat
    goal: str = ""
    goal_ratio: float | None = None  # python / autellix must reach this
    goal_abs_us: float | None = None  # autellix median must stay at or below this
    python_impl: str = "PyPlas"
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.python.median_us / self.autellix.median_us if self.autellix.median_us else INF

    @property
    def met(self) -> bool | None:
        if self.goal_ratio is not None:
            return self.ratio >= self.goal_ratio
        if self.goal_abs_us is not None:
            return self.autellix.median_us <= self.goal_abs_us
        return None


class NoGC:
    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


@dataclass
class Plan:
    quick: bool
    programs: int
    op_sizes: tuple[int, ...]
    chunks: int
    chunk: int
    step_sizes: tuple[int, ...]
    steady_steps: int
    churn_episodes: int
    churn_steps: int
    trivial_reps: int


FULL = Plan(
    quick=False,
    programs=10_000,
    op_sizes=(1_000, 10_000, 100_000),
    chunks=600,
    chunk=64,
    step_sizes=(1_000, 10_000, 100_000),
    steady_steps=300,
    churn_episodes=4,
    churn_steps=64,
    trivial_reps=40,
)
QUICK = Plan(
    quick=True,
    programs=1_000,
    op_sizes=(1_000, 5_000),
    chunks=40,
    chunk=32,
    step_sizes=(1_000, 5_000),
    steady_steps=20,
    churn_episodes=1,
    churn_steps=24,
    trivial_reps=5,
)


def retain_cap(plan: Plan, live: int) -> int:
    """The Rust core keeps each finished call (as a possible parent) until its program ends, so
    the finish benches rebuild their state (untimed) once they have finished this many calls
    (the core's own criterion bench does the same)."""
    return max(live, plan.programs)


class Pair:
    """The Rust scheduler and a Python one in the same state, plus the bench's own bookkeeping
    (which program each call belongs to, the latest batch of each side, the clock)."""

    def __init__(self, py_cls: type[Any], programs: int, live: int, running: int) -> None:
        boundaries, quanta = BENCH_LADDER
        cfg = SchedulerConfig("plas", boundaries=boundaries, quanta=quanta)  # default beta
        self.rs = Scheduler(cfg)
        self.py = py_cls.from_config(cfg)
        self.programs = programs
        self.running = running
        self.owner: dict[int, int] = {}
        # Warm calls (id = program id): all run from t = 0, each finishes at its level's service.
        ids = list(range(programs))
        self.rs.submit_many(0.0, ids, ids)
        for p in ids:
            self.py.submit(p, p, 0.0)
        self.rs.step(0, 0.0, programs, KV_BUDGET)
        for _ in ids:  # all in queue 0, FCFS: the same calls run on both sides
            self.py.admit(0.0)
        for level, service in enumerate(LEVEL_SERVICE):
            for p in range(level, programs, len(LEVEL_SERVICE)):
                self.rs.finish(p, service)
                self.py.complete(p, service)
        self.now = LEVEL_SERVICE[-1]
        self.next_id = programs
        calls = [self.new_id() for _ in range(live)]
        progs = [i % programs for i in range(live)]
        self.rs.submit_many(self.now, calls, progs, prompt_tokens=[PROMPT] * live)
        for c, p in zip(calls, progs, strict=True):
            self.py.submit(c, p, self.now, prompt_tokens=PROMPT)
            self.owner[c] = p
        self.rs_batch: list[int] = []
        self.py_batch: list[int] = []
        if running:
            self.refill()
            assert self.rs_batch == self.py_batch, "the two sides admitted different calls"
        assert len(self.rs) == len(self.py) == live

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def tick(self, dt: float = OP_DT) -> float:
        self.now += dt
        return self.now

    def refill(self) -> None:
        """Both sides back to ``running`` running calls (outside timed regions): a step on the
        Rust side, a heap pop per free slot on the Python side (the same calls unless a new call
        outranks a running one, which the Rust step then preempts)."""
        now = self.tick()
        self.rs_batch = self.rs.step(0, now, self.running, KV_BUDGET).running
        missing = self.running - len(self.py_batch)
        self.py_batch += [self.py.admit(now) for _ in range(missing)]

    def fresh(self, k: int, rng: random.Random) -> list[tuple[int, int]]:
        items = [(self.new_id(), rng.randrange(self.programs)) for _ in range(k)]
        for c, p in items:
            self.owner[c] = p
        return items
