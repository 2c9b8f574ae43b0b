"""Cross-checks of the Python references against the Rust core on small random workloads: the two
sides run the same operations and must decide the same at every step. Run by the tests beside this
package and by ``benches/bench_binding.py --quick``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from autellix import DECODE_STEP_SECONDS, Scheduler, SchedulerConfig
from autellix_reference.plas import PyPlas
from autellix_reference.plas_queue import PyPlasQueue

# Admissions in the single-operation check are never limited by KV.
_NO_KV_LIMIT = 1 << 40


@dataclass
class Check:
    """One cross-check: the disagreements (none: identical decisions throughout), a summary of what
    the workload exercised, and the same as counts (so a test can tell the check was not vacuous)."""

    errors: list[str]
    summary: str
    counts: dict[str, int] = field(default_factory=dict)


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def crosscheck(py_cls: type[PyPlas], beta: float | None, seed: int) -> Check:
    """Engine steps: identical batch (same order), admissions, preemptions, too-large skips,
    demotions and promotions at every step of a random workload with stalls, oversized calls and
    finishes. Stops at the first disagreement."""
    rng = random.Random(seed)
    cfg = SchedulerConfig("plas", starvation_beta=beta)
    rs = Scheduler(cfg)
    py = py_cls.from_config(cfg)
    errors: list[str] = []
    now = 0.0
    next_id = 0
    programs = 30
    kv = 40_000
    max_running = 24

    def submit(n: int) -> None:
        nonlocal next_id
        for _ in range(n):
            next_id += 1
            p = rng.randrange(programs)
            tokens = 50_000 if rng.random() < 0.01 else rng.randrange(1, 3_000)
            rs.submit(next_id, p, now, prompt_tokens=tokens)
            py.submit(next_id, p, now, prompt_tokens=tokens)

    submit(150)
    running: list[int] = []
    counts = dict.fromkeys(("steps", "demoted", "promoted", "admitted", "preempted", "too_large"), 0)
    for i in range(120):
        now += DECODE_STEP_SECONDS * rng.choice((0.3, 1.0, 1.0, 2.0, 3.5))
        if rng.random() < 0.04:  # a stall: running calls sink several queues, some to the bottom
            now += rng.uniform(2.0, 6.0)
        finished = rng.sample(running, min(len(running), rng.randrange(0, 5)))
        progress = [(c, rng.randrange(0, 40)) for c in running]
        d = rs.step(0, now, max_running, kv, finished=finished, progress=progress)
        b, adm, pre, big, dem, pro = py.step(now, max_running, kv, finished, progress)
        got = (b, adm, sorted(pre), big, dem, pro)
        want = (d.running, d.admitted, sorted(d.preempted), d.too_large, d.demoted, d.promoted)
        if got != want:
            names = ("running", "admitted", "preempted", "too_large", "demoted", "promoted")
            diff = [
                f"{n}: autellix {_short(w)} python {_short(g)}"
                for n, w, g in zip(names, want, got, strict=True)
                if w != g
            ]
            errors.append(f"step {i} (beta={beta}): " + "; ".join(diff))
            break
        running = d.running
        counts["steps"] += 1
        counts["demoted"] += d.demoted
        counts["promoted"] += d.promoted
        counts["admitted"] += len(d.admitted)
        counts["preempted"] += len(d.preempted)
        counts["too_large"] += len(d.too_large)
        submit(rng.randrange(0, 6))
    summary = (
        f"{counts['steps']} steps: {counts['demoted']} demotions, {counts['promoted']} promotions, "
        f"{counts['admitted']} admissions, {counts['preempted']} preemptions, "
        f"{counts['too_large']} too-large skips"
    )
    return Check(errors, summary, counts)


def crosscheck_cycle(py_cls: type[PyPlasQueue | PyPlas], seed: int, cycles: int = 400) -> Check:
    """Single operations: submit, admit the best call, finish it after a random service time, so
    programs climb the levels. The Rust side admits with ``step(max_running=1)`` (starvation off:
    the Python single-operation path has none)."""
    rng = random.Random(seed)
    cfg = SchedulerConfig("plas", starvation_beta=None)
    rs = Scheduler(cfg)
    py = py_cls.from_config(cfg)
    now = 0.0
    next_id = 0
    queued = 0
    levels: set[int] = set()
    for i in range(cycles):
        for _ in range(rng.choice((0, 1, 1, 2))):
            next_id += 1
            program = rng.randrange(20)
            rs.submit(next_id, program, now, prompt_tokens=100)
            py.submit(next_id, program, now, prompt_tokens=100)
            levels.add(rs.call(next_id).level)
            queued += 1
        if not queued:
            continue
        a = rs.step(0, now, 1, _NO_KV_LIMIT).admitted
        b = py.admit(now)
        if a != [b]:
            return Check([f"cycle {i}: autellix admitted {a}, {py_cls.__name__} {b}"], "")
        assert b is not None  # a == [b]: the core admitted a call
        queued -= 1
        now += rng.random() * 4 * cfg.boundaries[0]  # services on the ladder's scale
        rs.finish(b, now)
        py.complete(b, now)
    summary = f"{cycles} cycles, calls entered levels {sorted(levels)}"
    return Check([], summary, {"cycles": cycles, "levels": len(levels)})
