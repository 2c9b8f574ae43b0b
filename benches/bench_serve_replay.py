#!/usr/bin/env python3
"""An agent workload replayed through ``autellix serve``: the same ordering benefit as the simulator?

Standalone script (not collected by pytest)::

    python benches/bench_serve_replay.py                   # 80 ShareGPT programs, fcfs + plas, ~1.5 min
    python benches/bench_serve_replay.py --quick           # CI smoke run: 10 small programs, ~15 s
    python benches/bench_serve_replay.py --policies fcfs,plas,atlas
    python benches/bench_serve_replay.py --workload mixed --programs 30 --rate 1
    python benches/bench_serve_replay.py --json benches/results/serve_replay.json

One workload (``autellix.sim.workload.generate``: programs, Poisson arrivals, seed) is run per
policy on the server and in the simulator, on the same simulated engine:

* **server replay**: for each policy a fresh ``python -m autellix serve`` subprocess (the ``sim``
  engine: the simulator's cost model run in real time at ``--time-scale`` wall seconds per engine
  second, scheduled by the real core) on a free loopback port; this process replays the programs
  with one ``httpx.AsyncClient``. Each program starts at its scaled arrival time and issues its
  calls as the spec's DAG allows: a call is sent ``tool_wait x time_scale`` wall seconds after its
  last parent's response arrived (after the arrival for a root), so the parallel threads of a LATS
  program run in parallel and a ShareGPT / BFCL chain runs turn after turn. Every call is a
  non-streamed chat completion tagged ``X-Autellix-Program-Id`` (``X-Autellix-Thread-Id`` for a
  program of several threads, ``X-Autellix-Parent-Ids`` with the parents' call ids), with
  ``max_tokens`` = the call's output tokens and one user message whose text the server counts as
  exactly the call's prompt tokens (``autellix.tokens.estimate_tokens`` is the server's count;
  each response's ``usage`` is checked against the spec). The program ends with
  ``POST /v1/programs/{id}/finish``. A program's latency is the wall time from its scheduled
  arrival to its last response, divided by ``time_scale`` (engine seconds);
* **simulator**: ``autellix.sim.cluster.simulate`` on the same programs, configured as the server's
  engine (below).

Reported per policy: the paper's metric, latency per token (program latency / its output tokens),
mean / P50 / P99 over programs, from each side; and the ratio FCFS / policy (> 1: the policy
beats FCFS) from each side. The claim under test: the server's ratio has the simulator's
direction and a similar size.

The default load saturates the engine: 80 ShareGPT programs at 4 programs/s into a batch of 12
calls (``--max-running``), so calls queue at the engine for minutes of engine time and the order
the core picks matters. (At 64 slots, the server's default, the same load hardly queues and every
policy gives the same latency.) The run's length is set by the slowest program (tens of calls
with think times between them), hence the time scale of 0.07.

How the simulator is set up to model the server's ``SimEngine`` (``autellix/server/engines/sim.py``):

* one engine, ``max_batch`` = the server's ``max_running``, the same preset;
* one scheduler call per iteration (``steps_per_schedule=1``), as the server steps the core once
  per iteration;
* no prefix caching (the server's engine keeps no KV between calls: every call prefills its whole
  prompt), and ``swap="recompute"`` (a call the server preempts keeps no KV: it is prefilled again,
  prompt plus tokens so far, when readmitted);
* the core's default ``SchedulerConfig`` (boundaries 0.5 ... 16 s, quanta 0.5, 0.5, 1 ... 16 s,
  starvation beta 8), which the server and, since issue 14, ``SimConfig`` use;
* no scheduler CPU time per round (the simulator's ``schedule_time``): the server's iteration is
  the cost model's ``step_time`` only.

What still differs:

* the server's engine clock is wall time / time_scale, and it paces its iterations against that
  clock: each iteration ends at a ``perf_counter`` deadline ``step_time x time_scale`` after the
  previous one's, not after a fresh sleep, so a late timer wake-up or the loop's own work is
  caught up by the next iterations (as long as the engine is at most 50 ms of wall time behind).
  Its engine time therefore follows the cost model, as the simulator's does. What remains
  different is small: the HTTP round trip between a response and the next call of a program
  (engine time the simulator does not spend, scaled up by 1 / time_scale), and the loop's own
  Python work when the machine is loaded enough that the engine falls further behind;
* the simulator schedules KV in blocks and keeps a little headroom per batch slot, the server
  counts tokens against the whole KV capacity (neither binds at the default load);
* prompt text is filler of the right token count: no context is actually shared between turns,
  which neither engine could use without prefix caching.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from autellix.sim import cost_model
from autellix.sim.config import SimConfig
from autellix.sim.spec import CallSpec, ProgramSpec
from autellix.sim.workload import WORKLOADS, generate
from autellix.tokens import estimate_tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benches/_procs.py, _replay.py, ...
from _output import console as wide_console
from _output import write_json
from _procs import autellix_serve, free_port, loopback_url, serving
from _progress import progress_bar
from _replay import BASELINE, policies_arg, policy_ratios, replay_fields, run_simulator, summary

MODEL = "autellix-sim"
#: filler text of the prompts (ASCII: the server counts ``len / 4.5`` tokens)
_FILLER = "the agent reads the tool output and plans its next step. " * 64
_ROLE_PREFIX = "user: "  # what the server puts before a message's content (``prompt_text``)

# -- the simulator, configured as the server's engine ------------------------------------------


def sim_config(args: argparse.Namespace, policy: str) -> SimConfig:
    return SimConfig(
        **replay_fields(args, policy),
        max_batch=args.max_running,
        prefix_caching=False,
        quantum=None,  # the core's default ladder, as the server's engine uses
    )


# -- the server ---------------------------------------------------------------------------------


def serve_argv(args: argparse.Namespace, policy: str, port: int) -> list[str]:
    options = ["--policy", policy, "--preset", args.preset, "--time-scale", repr(args.time_scale)]
    options += ["--max-running", str(args.max_running), "--max-queued", "1000000", "--model", MODEL]
    return autellix_serve(port, *options)


# -- the replay ---------------------------------------------------------------------------------


def prompt_text(tokens: int) -> str:
    """Message content the server counts as ``tokens`` prompt tokens (with its ``user: `` prefix)."""
    chars = max(len(_ROLE_PREFIX), round(4.5 * tokens)) - len(_ROLE_PREFIX)
    filler = _FILLER * (chars // len(_FILLER) + 1)
    content = filler[:chars]
    assert estimate_tokens(_ROLE_PREFIX + content) == tokens, tokens
    return content


class CallFailed(Exception):
    pass


@dataclass
class Replay:
    """What one policy's replay measured."""

    latency: dict[int, float] = field(default_factory=dict)  # program id -> engine seconds
    errors: list[str] = field(default_factory=list)
    calls_ok: int = 0
    token_mismatches: int = 0


async def _post_call(
    client: httpx.AsyncClient, name: str, spec: CallSpec, threads: int, parents: list[str]
) -> str:
    headers = {"X-Autellix-Program-Id": name}
    if threads > 1:
        headers["X-Autellix-Thread-Id"] = f"t{spec.thread}"
    if parents:
        headers["X-Autellix-Parent-Ids"] = ",".join(parents)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt_text(spec.prompt_tokens)}],
        "max_tokens": spec.output_tokens,
    }
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    if response.status_code != 200:
        raise CallFailed(f"{name} call {spec.index}: HTTP {response.status_code}: {response.text[:300]}")
    usage = response.json()["usage"]
    if usage["prompt_tokens"] != spec.prompt_tokens or usage["completion_tokens"] != spec.output_tokens:
        raise CallFailed(
            f"{name} call {spec.index}: usage {usage} != ({spec.prompt_tokens}, {spec.output_tokens})"
        )
    return response.headers["X-Autellix-Call-Id"]


async def _program(
    client: httpx.AsyncClient, spec: ProgramSpec, t0: float, scale: float, out: Replay
) -> None:
    loop = asyncio.get_running_loop()
    name = f"replay-{spec.id}"
    start = t0 + spec.arrival * scale
    await asyncio.sleep(max(0.0, start - loop.time()))
    done: list[asyncio.Future[float]] = [loop.create_future() for _ in spec.calls]
    ids: list[str] = [""] * len(spec.calls)
    threads = spec.threads

    async def call(c: CallSpec) -> None:
        ready = start
        for p in c.parents:
            ready = max(ready, await done[p])
        await asyncio.sleep(max(0.0, ready + c.tool_wait * scale - loop.time()))
        ids[c.index] = await _post_call(client, name, c, threads, [ids[p] for p in c.parents])
        out.calls_ok += 1
        done[c.index].set_result(loop.time())

    tasks = [asyncio.ensure_future(call(c)) for c in spec.calls]
    try:
        await asyncio.gather(*tasks)
    except (CallFailed, httpx.HTTPError, KeyError, ValueError) as exc:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out.errors.append(f"{type(exc).__name__}: {exc}")
        return
    finally:
        for t in tasks:
            t.cancel()
    end = max(f.result() for f in done)
    finished = await client.post(f"/v1/programs/{name}/finish")
    if finished.status_code != 200 or finished.json()["aborted_calls"]:
        out.errors.append(f"{name}: finish answered {finished.status_code}: {finished.text[:300]}")
        return
    out.latency[spec.id] = (end - start) / scale


async def replay(
    url: str,
    programs: Sequence[ProgramSpec],
    scale: float,
    deadline_s: float,
    on_done: Callable[[], None] = lambda: None,
) -> Replay:
    """Replay ``programs`` against the server at ``url``; programs still running ``deadline_s``
    wall seconds after the start are cancelled (counted as not done)."""
    out = Replay()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(None, connect=10.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2

        async def one(spec: ProgramSpec) -> None:
            try:
                await _program(client, spec, t0, scale, out)
            except Exception as exc:  # a bug of the replay itself: report it, do not hide it
                out.errors.append(f"replay-{spec.id}: {type(exc).__name__}: {exc}")
            on_done()

        tasks = [asyncio.ensure_future(one(p)) for p in programs]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            out.errors.append(f"{len(pending)} programs still running after the {deadline_s:.0f} s deadline")
    return out


def _preemptions(url: str) -> int | None:
    try:
        text = httpx.get(url + "/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("autellix_preemptions_total "):
            return int(float(line.split()[1]))
    return None


def run_server(
    args: argparse.Namespace,
    programs: Sequence[ProgramSpec],
    policy: str,
    deadline_s: float,
    on_done: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    port = free_port()
    url = loopback_url(port)
    with serving(serve_argv(args, policy, port), url, "autellix serve"):
        preemptions_before = _preemptions(url) or 0
        started = time.perf_counter()
        got = asyncio.run(replay(url, programs, args.time_scale, deadline_s, on_done))
        wall = time.perf_counter() - started
        preemptions = _preemptions(url)
        if preemptions is not None:
            preemptions -= preemptions_before
    latency = [got.latency.get(p.id, math.nan) for p in programs]
    ends = [p.arrival + lat for p, lat in zip(programs, latency, strict=True) if not math.isnan(lat)]
    first = min((p.arrival for p in programs), default=0.0)
    return {
        **summary(latency, programs),
        "errors": len(got.errors),
        "error_messages": got.errors[:10],
        "calls_ok": got.calls_ok,
        "preemptions": preemptions,
        "makespan_s": max(ends, default=first) - first,
        "wall_s": wall,
    }


# -- figures ------------------------------------------------------------------------------------


SIDES = {
    "server": "server replay",
    "sim": "simulator",
}


def _report(result: dict[str, Any]) -> None:
    from rich.table import Table

    console = wide_console()
    cfg = result["config"]
    table = Table(
        title=f"{cfg['programs']} {cfg['workload']} programs at {cfg['rate']:g}/s (seed {cfg['seed']}), "
        f"{cfg['preset']}, max_running {cfg['max_running']}: latency per output token, engine ms/token "
        f"(server at time scale {cfg['time_scale']:g})",
        title_justify="left",
    )
    for col in ("policy", "side", "mean", "P50", "P99", "done", "errors", "preempt", "makespan s", "wall s"):
        table.add_column(col, justify="left" if col in ("policy", "side") else "right")
    for policy in cfg["policies"]:
        for side, label in SIDES.items():
            r = result[side][policy]
            d = r["per_token_s"]
            table.add_row(
                policy if side == "server" else "",
                label,
                f"{d['mean'] * 1e3:.1f}",
                f"{d['p50'] * 1e3:.1f}",
                f"{d['p99'] * 1e3:.1f}",
                f"{r['programs_done']}/{cfg['programs']}",
                str(r["errors"]),
                "?" if r["preemptions"] is None else str(r["preemptions"]),
                f"{r['makespan_s']:.0f}",
                f"{r['wall_s']:.1f}",
                end_section=side == "sim",
            )
    console.print(table)
    ratios = Table(
        title=f"{BASELINE.upper()} / policy, per-token latency (> 1: the policy beats {BASELINE.upper()})",
        title_justify="left",
    )
    for col in ("policy", "side", "mean", "P50", "P99"):
        ratios.add_column(col, justify="left" if col in ("policy", "side") else "right")
    for policy in cfg["policies"][1:]:
        for side, label in SIDES.items():
            q = result["ratios"][side][policy]
            ratios.add_row(
                policy if side == "server" else "", label, *(f"{q[k]:.2f}" for k in ("mean", "p50", "p99"))
            )
    console.print(ratios)
    for policy in cfg["policies"]:
        errs = result["server"][policy]["error_messages"]
        if errs:
            console.print(f"[red]{policy}: {len(errs)} errors, first: {errs[0]}[/red]")
    same = result["agreement"]
    color = "green" if same else "red"
    console.print(
        f"[{color}]server ratios (mean and P99, every policy) on the same side of 1 as the "
        f"simulator's: {'yes' if same else 'no'}[/{color}]"
    )


# -- main ---------------------------------------------------------------------------------------


DEFAULTS = {  # name: (default, --quick)
    "programs": (80, 10),
    "max_running": (12, 4),
    "time_scale": (0.07, 0.02),
    "tool_wait_scale": (1.0, 0.25),
    "policies": ([BASELINE, "plas"], [BASELINE, "plas"]),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    d = {k: f"default: {v[0]}; --quick: {v[1]}" for k, v in DEFAULTS.items()}
    p.add_argument("--workload", choices=WORKLOADS, default="sharegpt", help="default: sharegpt")
    p.add_argument("--programs", type=int, default=None, help=f"agent programs ({d['programs']})")
    p.add_argument("--rate", type=float, default=4.0, help="program arrivals per second (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: 0)")
    p.add_argument(
        "--policies", type=policies_arg, default=None, help="comma-separated, with fcfs (default: fcfs,plas)"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help=f"server: wall seconds per engine second ({d['time_scale']})",
    )
    p.add_argument("--max-running", type=int, default=None, help=f"batch slots ({d['max_running']})")
    p.add_argument("--preset", default="llama3.1-8b-a100", help="engine preset (default: llama3.1-8b-a100)")
    p.add_argument(
        "--tool-wait-scale",
        type=float,
        default=None,
        help=f"multiplies the workload's tool / think waits ({d['tool_wait_scale']})",
    )
    p.add_argument("--quick", action="store_true", help="CI smoke run: 10 small programs, ~30 s")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    for name, (full, small) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    if min(args.programs, args.max_running) < 1:
        p.error("--programs and --max-running must be >= 1")
    if not (args.rate > 0 and args.time_scale > 0):
        p.error("--rate and --time-scale must be > 0")
    if not args.tool_wait_scale >= 0 or args.seed < 0:
        p.error("--tool-wait-scale and --seed must be >= 0")
    if args.preset not in cost_model.PRESETS:
        p.error(f"unknown preset {args.preset!r}; choose from {', '.join(cost_model.PRESETS)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its tables; returns the result (what ``--json`` writes)."""

    args = parse_args(argv)
    programs = generate(
        args.workload, args.programs, args.rate, args.seed, tool_wait_scale=args.tool_wait_scale
    )
    sim = {p: {**run_simulator(sim_config(args, p), programs), "errors": 0} for p in args.policies}
    # a replay gets 4x the simulator's slowest makespan (in wall seconds) plus 30 s, then gives up
    deadline = 4.0 * max(r["makespan_s"] for r in sim.values()) * args.time_scale + 30.0
    server: dict[str, dict[str, Any]] = {}
    with progress_bar(args.no_progress) as progress:
        for policy in args.policies:
            task = progress.add_task(f"replay through autellix serve --policy {policy}", total=len(programs))
            server[policy] = run_server(
                args, programs, policy, deadline, on_done=lambda t=task: progress.advance(t)
            )
    results = {"server": server, "sim": sim}
    ratios = {side: policy_ratios(r) for side, r in results.items()}
    agreement = all(
        (ratios["server"][p][k] - 1) * (ratios["sim"][p][k] - 1) > 0
        for p in ratios["sim"]
        for k in ("mean", "p99")
    )
    result: dict[str, Any] = {
        "config": {
            "workload": args.workload,
            "programs": args.programs,
            "rate": args.rate,
            "seed": args.seed,
            "policies": args.policies,
            "time_scale": args.time_scale,
            "max_running": args.max_running,
            "preset": args.preset,
            "tool_wait_scale": args.tool_wait_scale,
            "quick": args.quick,
            "sim_config": {
                **{k: v for k, v in sim_config(args, BASELINE).as_dict().items() if k != "scheduler"},
                "scheduler_cpu": False,
            },
        },
        "workload": {
            "calls": sum(len(p.calls) for p in programs),
            "output_tokens": sum(p.output_tokens for p in programs),
            "last_arrival_s": max(p.arrival for p in programs),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "units": "engine seconds; per_token_s = a program's latency / its output tokens",
        **results,
        "ratios": ratios,
        "agreement": agreement,
    }
    _report(result)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
