#!/usr/bin/env python3
"""autellix._core (Rust through PyO3) against pure-Python PLAS schedulers, side by side.

Standalone script (not collected by pytest)::

    python benches/bench_binding.py                 # full sizes (about a minute or two on 2 cores)
    python benches/bench_binding.py --quick         # CI smoke run (a few seconds), with cross-checks
    python benches/bench_binding.py --json out.json # also write the results as JSON
    python benches/bench_binding.py --only steps    # one section: trivial, ops or steps

Three Python references, all plain CPython, from ``tests/reference/autellix_reference`` (their one
home; the tests there check them against the Rust core):

* ``PyPlasQueue``: the straightforward single-operation PLAS queue (heapq + dict), the "pure
  Python" of docs/baselines.md, kept as lean as the policy allows.
* ``PyPlas``: the whole policy of the Rust core; its step is Algorithm 1 of the paper: every live
  call is checked every step.
* ``PyPlasDue``: a cleverer ``PyPlas`` that keeps heaps of due times (quantum expiries and
  starvation deadlines) as the Rust core does, so its step touches only the calls something
  happens to.

What is measured (seeded workloads; the garbage collector is off inside timed regions, as
``timeit`` does, which only helps the Python side):

* trivial calls through PyO3 (``len(sched)``, ``sched.now``, ``add_tokens``) against the same
  trivial call on a Python object, net of the loop: the cost of the crossing itself;
* single operations at 1k / 10k / 100k live calls over 10k programs whose attained service puts
  them evenly in the 7 default queues: ``submit`` (256 of the live calls running), ``finish`` of
  a running call, and a ``submit + admit + finish`` cycle with nothing running (the admission is
  ``Scheduler.step(max_running=1)`` on the Rust side, a heap pop on the Python side). Both sides
  run the same operations, interleaved chunk by chunk. Median: over chunks of 64 operations of
  chunk time / 64; p99: over operations timed one by one, less the timer's own cost
  (``_binding_ops.py``);
* one engine step as one batched call, 256 running calls, over 1k / 10k / 100k waiting calls
  (one program per 10 live calls): token progress for all 256 running calls and 4 finished calls
  reported, due demotions and promotions applied, the batch formed, the decision's lists read;
  the 4 finished calls' programs submit their next calls between steps (untimed). "steady": the
  clock moves 10 ns per step (nothing falls due); "churn": it moves one decode step (25 ms) per
  step, so level-0 calls use up their quantum every step and starving calls are promoted in
  waves (64-step episodes from a fresh state). Each side runs its own copy of the workload in
  blocks of steps, the sides alternating between blocks; the decisions of the two sides are
  compared step by step and the count of identical ones is printed (``_binding_steps.py``).

In ``--quick`` mode the Python references are first cross-checked against the Rust core on
small random workloads, by the same functions ``tests/reference/test_crosscheck.py`` runs (same
batch in the same order, same admissions, preemptions, too-large skips, demotions and promotions
at every step; same admissions in submit/admit/finish cycles). A disagreement with starvation off
exits with status 1; with starvation on it is reported.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from _binding_common import FULL, QUICK, Row, timer_floor
from _binding_ops import bench_cycle, bench_finish, bench_submit, bench_trivial
from _binding_reference import Check, PyPlas, PyPlasDue, PyPlasQueue, crosscheck, crosscheck_cycle
from _binding_steps import step_breakdown, step_rows

import autellix


def run_crosschecks(first_seed: int) -> tuple[dict[str, list[str]], list[str]]:
    """The references against the Rust core on three seeds from ``first_seed``, each result printed:
    (the disagreements by check, the checks that failed). Hard checks run with starvation off; with
    it on the step paths agree too (same deadline arithmetic), reported without failing the run."""
    runs: list[tuple[str, Callable[[], Check], bool]] = []
    for seed in range(first_seed, first_seed + 3):
        for q_cls in (PyPlasQueue, PyPlas):
            check = functools.partial(crosscheck_cycle, q_cls, seed)
            runs.append((f"{q_cls.__name__} single ops, seed {seed}", check, True))
        for s_cls in (PyPlas, PyPlasDue):
            for beta in (None, 2.0):
                check = functools.partial(crosscheck, s_cls, beta, seed)
                runs.append((f"{s_cls.__name__} steps, beta={beta}, seed {seed}", check, beta is None))
    checks: dict[str, list[str]] = {}
    failed = []
    for name, run, hard in runs:
        result = run()
        errs, what = result.errors, result.summary
        checks[name] = errs
        state = "agree" if not errs else ("DISAGREE" if hard else "differ (informational)")
        print(f"cross-check autellix vs {name}: {state}" + (f" ({what})" if what else ""))
        for e in errs:
            print("   ", e)
        if errs and hard:
            failed.append(name)
    return checks, failed


def fmt_us(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:,.1f}"


def render(rows: list[Row], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 132)
    table = Table(
        title="autellix._core vs pure-Python PLAS (median / p99 per operation, µs)",
        caption=(
            f"CPython {meta['python']} · {meta['cpus']} CPUs · autellix {meta['autellix']} · "
            f"timer floor {meta['timer_floor_ns']} ns subtracted from per-op p99"
        ),
    )
    for col, just in (
        ("operation", "left"),
        ("live calls", "right"),
        ("python µs", "right"),
        ("autellix µs", "right"),
        ("ratio", "right"),
        ("goal", "center"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        met = r.met
        goal = r.goal + ("" if met is None else (" [green]✓[/]" if met else " [red]✗[/]"))
        table.add_row(
            r.operation,
            r.live,
            f"{fmt_us(r.python.median_us)} / {fmt_us(r.python.p99_us)}",
            f"{fmt_us(r.autellix.median_us)} / {fmt_us(r.autellix.p99_us)}",
            f"{r.ratio:.1f}x",
            goal,
        )
    console.print(table)
    for r in rows:
        if "identical_decisions" in r.notes:
            a = r.notes["events_per_step_autellix"]
            p = r.notes["events_per_step_python"]
            console.print(
                f"  {r.operation} [{r.live}]: per step autellix "
                f"{a['demoted']:.1f} demoted / {a['promoted']:.1f} promoted / "
                f"{a['admitted']:.1f} admitted / {a['preempted']:.1f} preempted; "
                f"{r.python_impl} {p['demoted']:.1f} / {p['promoted']:.1f} / "
                f"{p['admitted']:.1f} / {p['preempted']:.1f}; "
                f"identical decisions {r.notes['identical_decisions']}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run, < 20 s)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--seed", type=int, default=20240917, help="workload seed (default: %(default)s)")
    ap.add_argument("--no-clever", action="store_true", help="skip the due-heap Python variant of the step")
    ap.add_argument(
        "--only",
        action="append",
        choices=("trivial", "ops", "steps"),
        help="run only these sections (repeatable; default: all)",
    )
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    t_start = time.perf_counter()

    checks: dict[str, list[str]] = {}
    if plan.quick:
        checks, failed = run_crosschecks(args.seed)
        if failed:
            print(f"cross-check failed: {failed}", file=sys.stderr)
            return 1

    floor = timer_floor()
    only = set(args.only or ("trivial", "ops", "steps"))
    rows: list[Row] = []
    if "trivial" in only:
        rows += bench_trivial(plan)
    for n in plan.op_sizes if "ops" in only else ():
        for bench in (bench_submit, bench_finish, bench_cycle):
            gc.collect()
            rows.append(bench(plan, n, floor, args.seed + n))
            print(f"  {rows[-1].operation} @ {n:,}: done ({time.perf_counter() - t_start:.0f} s)")
    for n in plan.step_sizes if "steps" in only else ():
        rows += step_rows(plan, n, clever=not args.no_clever)
        print(f"  steps @ {n:,}: done ({time.perf_counter() - t_start:.0f} s)")

    breakdown = step_breakdown(plan) if "steps" in only else None

    meta = {
        "mode": "quick" if plan.quick else "full",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "autellix": autellix.__version__,
        "seed": args.seed,
        "timer_floor_ns": floor,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "plan": asdict(plan),
    }
    render(rows, meta)
    if breakdown:
        b = breakdown
        print(
            f"autellix steady step at {b['waiting']:,} waiting, seen from Python: "
            f"{b['step_full_us']:.1f} µs = {b['rest_us']:.1f} µs step without progress "
            f"(core work, finished list, GIL release, Decision) + {b['convert_progress_256_us']:.1f} µs "
            f"for progress (256 tuples converted and applied) + "
            f"{b['read_running_admitted_preempted_us']:.1f} µs reading running/admitted/preempted"
        )
    print(f"total {time.perf_counter() - t_start:.1f} s")
    if args.json:
        out = {
            "meta": meta,
            "crosscheck": checks,
            "step_breakdown": breakdown,
            "rows": [
                {
                    "operation": r.operation,
                    "live_calls": r.live,
                    "python_impl": r.python_impl,
                    "python_us": asdict(r.python),
                    "autellix_us": asdict(r.autellix),
                    "ratio": r.ratio,
                    "goal": r.goal,
                    "goal_met": r.met,
                    "notes": r.notes,
                }
                for r in rows
            ],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
