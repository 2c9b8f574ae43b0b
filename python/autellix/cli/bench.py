"""``autellix bench``: sweeps of the cluster simulator in the shape of the paper's experiments
(:mod:`autellix.bench`)."""

from __future__ import annotations

import argparse
import textwrap

from autellix.cli._args import (
    Subparsers,
    documented,
    flat,
    int_at_least,
    names,
    non_negative_float,
    positive_float,
    positive_floats,
    preset_name,
)
from autellix.options import doc_of


def register(subparsers: Subparsers) -> None:
    import autellix.bench as bench
    from autellix.sim.config import BALANCERS, KV_POLICIES, SCHEDULERS, SWAP_MODES, WORKLOADS, SimConfig

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
        help="sweep the cluster simulator: schedulers, load balancers, swap modes, KV policies",
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
  kv          one engine; workloads x schedulers ({", ".join(bench.KV_SCHEDULERS)}) x KV policies
              ({", ".join(bench.KV_EXPERIMENT_POLICIES)}) x rates: where idle program contexts go
              (kept, offloaded to --host-kv-gib of host memory, dropped): hit share, deferrals,
              worst latency
  all         the four above

{sizes}

latency = a program's response time / the tokens it generated (s/token).
summary: per workload, baseline / autellix mean and P99 latency at the highest rate where FCFS
still completed every program, and the largest such ratio over the rates where both
completed. Throughput at a latency target = the highest rate whose mean latency meets the
target, walking the rates upwards until one misses it (or does not complete), interpolated
linearly between the last rate that met it and that miss (a '+' marks sweeps that never
missed: a lower bound). The default target is {bench.LATENCY_TARGET_FACTOR:g}x the lowest mean latency
seen for the workload at its lowest rate (per experiment). kv: per workload x scheduler x KV
policy, throughput at the target, the mean, P99 and worst latency, hit share and longest
deferral at the highest rate that met it, and the throughput relative to {bench.KV_LIMIT} (same
scheduler) and to {"+".join(bench.KV_BASELINE)}.

writes into --out: results.csv, results.json (one row per run: the experiment, the run's
config, its metrics; sorted by experiment, workload, rate, scheduler, balancer, swap mode,
KV policy), summary.json, and PNG figures (unless --no-plots).""",
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
        type=names("workload", WORKLOADS, allow_paths=True),
        metavar="W",
        help=f"workloads ({', '.join(WORKLOADS)} or JSONL trace files; a trace needs --rates); "
        "default: the experiment's",
    )
    p.add_argument(
        "--schedulers",
        nargs="+",
        type=names("scheduler", SCHEDULERS),
        metavar="S",
        help=f"schedulers ({', '.join(SCHEDULERS)}); default: all for schedulers, autellix's choice "
        f"for balancers, {', '.join(bench.SWAP_SCHEDULERS)} for swap, "
        f"{', '.join(bench.KV_SCHEDULERS)} for kv",
    )
    p.add_argument(
        "--balancers",
        nargs="+",
        type=names("balancer", BALANCERS),
        metavar="B",
        help=f"load balancers of the balancers experiment ({', '.join(BALANCERS)}; default: all)",
    )
    p.add_argument(
        "--swap-modes",
        nargs="+",
        type=names("swap mode", SWAP_MODES),
        metavar="M",
        help=f"swap modes of the swap experiment ({', '.join(SWAP_MODES)}; default: "
        f"{', '.join(bench.SWAP_EXPERIMENT_MODES)}); the other experiments use bulk",
    )
    p.add_argument(
        "--kv-policies",
        nargs="+",
        type=names("kv policy", KV_POLICIES),
        metavar="K",
        help=f"KV policies of the kv experiment ({', '.join(KV_POLICIES)}; default: "
        f"{', '.join(bench.KV_EXPERIMENT_POLICIES)}); the other experiments use {SimConfig.kv_policy}",
    )
    p.add_argument(
        "--rates",
        nargs="+",
        type=positive_floats("rate"),
        metavar="R",
        help="arrival rates (programs/s) for every workload, used as given in every experiment "
        "(not scaled by --engines); default: the sweep's per-workload rates",
    )
    p.add_argument(
        "--programs",
        type=int_at_least(1, "programs"),
        metavar="N",
        help=f"programs per run (default: {quick.programs}, {full.programs} with --full)",
    )
    p.add_argument("--seed", type=int_at_least(0, "seed"), default=0, help="workload seed (default: 0)")
    documented(p, SimConfig, "preset", "--preset", type=preset_name, default=None, metavar="NAME")
    documented(p, SimConfig, "swap_results", "--swap-results", metavar="JSON")
    documented(
        p, SimConfig, "host_kv_gib", "--host-kv-gib", type=non_negative_float("host KV size"), metavar="GIB"
    )
    documented(
        p,
        SimConfig,
        "tool_wait_scale",
        "--tool-wait-scale",
        type=non_negative_float("tool wait scale"),
        default=None,
        metavar="X",
    )
    p.add_argument(
        "--engines",
        type=int_at_least(1, "engines"),
        default=bench.DEFAULT_ENGINES,
        metavar="N",
        help=f"engines of the balancers experiment (default: {bench.DEFAULT_ENGINES}); the others use one",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int_at_least(1, "jobs"),
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
        type=positive_float("latency target"),
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
        type=positive_float("quantum"),
        metavar="SECONDS",
        help=f"{doc_of(SimConfig, 'quantum')} (default: the core's ladder)",
    )
    p.set_defaults(handler=run, bench_parser=p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    import autellix.bench as bench
    from autellix.exceptions import AutellixError

    parser: argparse.ArgumentParser = args.bench_parser
    experiments = bench.EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    workloads = flat(args.workloads)
    rates = flat(args.rates)
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
        schedulers=flat(args.schedulers),
        balancers=flat(args.balancers),
        swap_modes=flat(args.swap_modes),
        kv_policies=flat(args.kv_policies),
        rates=rates,
        programs=args.programs,
        seed=args.seed,
        preset=args.preset,
        swap_results=args.swap_results,
        host_kv_gib=args.host_kv_gib,
        tool_wait_scale=args.tool_wait_scale,
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
