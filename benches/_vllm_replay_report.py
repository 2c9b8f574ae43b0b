"""``bench_vllm_replay.py``'s tables: latency per side and policy, the FCFS / policy ratios and
fractions, the recompute / offload comparison, the KV placement comparison and the overhead
measurement."""

from __future__ import annotations

from typing import Any

from _replay import BASELINE
from _vllm_replay_compare import GOAL_FRACTION, OFFLOAD_SIDES, SIDES
from _vllm_replay_kv import HOST_SIDES, KV_SIDES
from _vllm_replay_overhead import GOAL_OVERHEAD


def report(result: dict[str, Any]) -> None:
    """Print the tables of every part ``result`` holds."""
    from rich.console import Console

    console = Console(width=max(Console().width, 132))
    if "vllm" in result:
        _latency_table(console, result)
        _ratio_table(console, result)
    if "offload" in result:
        _offload_table(console, result["offload"], result["config"])
    for workload, r in result.get("kv", {}).items():
        _kv_table(console, workload, r, result["config"])
    if "overhead" in result:
        _overhead_table(console, result["overhead"])


def _latency_table(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    cfg = result["config"]
    table = Table(
        title=f"{cfg['programs']} {cfg['workload']} programs at {cfg['rate']:g}/s (seed {cfg['seed']}), "
        f"{cfg['preset']}, max_num_seqs {cfg['max_num_seqs']}, {cfg['num_blocks']} blocks, "
        f"max_num_batched_tokens {cfg['max_num_batched_tokens']}: latency per output token, "
        "simulated ms/token",
        title_justify="left",
    )
    for col in (
        "policy",
        "side",
        "mean",
        "P50",
        "P99",
        "done",
        "preempt",
        "cached Mtok",
        "steps",
        "makespan s",
        "wall s",
    ):
        table.add_column(col, justify="left" if col in ("policy", "side") else "right")
    for policy in cfg["policies"]:
        for side, label in SIDES.items():
            r = result[side][policy]
            d = r["per_token_s"]
            name = "fcfs (vLLM stock)" if policy == BASELINE else f"{policy} (autellix)"
            table.add_row(
                name if side == "vllm" else "",
                label,
                f"{d['mean'] * 1e3:.1f}",
                f"{d['p50'] * 1e3:.1f}",
                f"{d['p99'] * 1e3:.1f}",
                f"{r['programs_done']}/{cfg['programs']}",
                str(r["preemptions"]),
                f"{r['cached_tokens'] / 1e6:.2f}",
                str(r["steps"]),
                f"{r['makespan_s']:.0f}",
                f"{r['wall_s']:.1f}",
                end_section=side == "sim",
            )
    console.print(table)


def _ratio_table(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    cfg = result["config"]
    ratios = Table(
        title=f"{BASELINE.upper()} / policy, per-token latency (> 1: the policy beats "
        f"{BASELINE.upper()}); fraction = (vLLM ratio - 1) / (simulator ratio - 1), "
        f"goal >= {GOAL_FRACTION:.0%}",
        title_justify="left",
    )
    for col in ("policy", "side", "mean", "P50", "P99", "fraction mean", "fraction P99"):
        ratios.add_column(col, justify="left" if col in ("policy", "side") else "right")
    for policy in cfg["policies"][1:]:
        for side, label in SIDES.items():
            q = result["ratios"][side][policy]
            cells = [""] * 2
            if side == "vllm":
                cells = [_verdict(result["fractions"][policy][k]) for k in ("mean", "p99")]
            ratios.add_row(
                policy if side == "vllm" else "",
                label,
                *(f"{q[k]:.2f}" for k in ("mean", "p50", "p99")),
                *cells,
            )
    console.print(ratios)
    for policy in cfg["policies"]:
        r = result["vllm"][policy]
        if r["token_mismatches"] or r["calls_done"] != r["calls"]:
            console.print(
                f"[red]{policy}: {r['calls_done']}/{r['calls']} calls done, "
                f"{r['token_mismatches']} with the wrong number of tokens[/red]"
            )


def _offload_table(console: Any, o: dict[str, Any], cfg: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title="preempted KV: recompute (vLLM's default) vs CPU KV offload "
        f"({o['cpu_gib']:g} GiB host tier), "
        f"{o['policy']} (autellix), {o['num_blocks']} blocks; loads charged at "
        f"{o['host_link_bytes_per_s'] / 1e9:.1f} GB/s; per-token latency in simulated ms/token",
        title_justify="left",
    )
    for col in (
        "side",
        "mean",
        "P50",
        "P99",
        "done",
        "preempt",
        "lost",
        "GPU hit",
        "loaded",
        "recomp.",
        "history",
        "load s",
        "makespan s",
    ):
        table.add_column(col, justify="left" if col == "side" else "right", no_wrap=col == "side")
    for side, label in OFFLOAD_SIDES.items():
        r = o[side]
        d, kv = r["per_token_s"], r["kv"]
        table.add_row(
            label,
            f"{d['mean'] * 1e3:.1f}",
            f"{d['p50'] * 1e3:.1f}",
            f"{d['p99'] * 1e3:.1f}",
            f"{r['programs_done']}/{cfg['programs']}",
            str(r["preemptions"]),
            f"{kv['preempted_tokens'] / 1e3:.1f}",
            f"{kv['gpu_hit_tokens'] / 1e3:.1f}",
            f"{kv['loaded_tokens'] / 1e3:.1f}",
            f"{kv['recomputed_tokens'] / 1e3:.1f}",
            f"{kv['prefix_loaded_tokens'] / 1e3:.1f}",
            f"{kv.get('load_s', 0.0):.2f}",
            f"{r['makespan_s']:.0f}",
        )
    console.print(table)
    console.print(
        "lost: thousands of tokens preempted requests had in KV, back as a GPU prefix-cache hit, "
        "loaded from the CPU tier or recomputed; history: thousands of tokens of new calls' prefixes "
        "loaded from the CPU tier"
    )
    for side, q in o["ratio"].items():
        console.print(
            f"recompute / {OFFLOAD_SIDES[side]}, per-token latency (> 1: faster than recompute): "
            f"mean {q['mean']:.2f}, P50 {q['p50']:.2f}, P99 {q['p99']:.2f}"
        )


def _overhead_table(console: Any, o: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title="vLLM scheduler CPU time per step (schedule + update_from_output), "
        f"{o['running']} running / {o['waiting']:,} waiting, {o['steps_measured']} steps each, "
        "sides stepped in turn",
        title_justify="left",
    )
    for col in ("scheduler", "median µs", "mean µs", "P90 µs", "of which core step µs", "preempt"):
        table.add_column(col, justify="left" if col == "scheduler" else "right")
    labels = {
        "stock": "AsyncScheduler (stock)",
        "autellix": "AutellixScheduler (plas, kv lru)",
        "autellix_kv": "AutellixScheduler (plas, kv autellix)",
    }
    for name, label in labels.items():
        if name not in o:
            continue
        s = o[name]
        table.add_row(
            label,
            f"{s['median_us']:.0f}",
            f"{s['mean_us']:.0f}",
            f"{s['p90_us']:.0f}",
            f"{s['core_step_median_us']:.0f}" if "core_step_median_us" in s else "",
            str(s["preemptions"]),
        )
    console.print(table)
    for name, a in o["sides"].items():
        color = "green" if a["pass"] else "red"
        console.print(
            f"[{color}]added by {labels[name]}: {a['added_us']:+.0f} µs per step "
            f"({a['added_fraction']:+.1%}, "
            "the median of paired step differences; difference of the medians "
            f"{a['medians_difference_us']:+.0f} µs), of which the core's step "
            f"{o[name]['core_step_median_us']:.0f} µs ({a['core_step_fraction']:.1%}); "
            f"goal <= {GOAL_OVERHEAD:.0%}: {'PASS' if a['pass'] else 'MISS'}[/{color}]"
        )


def _kv_table(console: Any, workload: str, r: dict[str, Any], cfg: dict[str, Any]) -> None:
    from rich.table import Table

    c = r["config"]
    table = Table(
        title=f"KV placement, {c['programs']} {workload} programs at {c['rate']:g}/s (seed {cfg['seed']}, "
        f"tool waits x{c['tool_wait_scale']:g}), {cfg['preset']}, {c['num_blocks']} blocks "
        f"({c['kv_tokens'] / 1e3:.0f}k tokens), max_num_seqs {c['max_num_seqs']}, {c['policy']}: "
        "per-token latency in simulated ms/token; history = prompt tokens an earlier call of the "
        "program had in KV; re-prefilled: thousands of its tokens computed again",
        title_justify="left",
    )
    cols = (
        "side",
        "engine",
        "mean",
        "P99",
        "worst",
        "done",
        "preempt",
        "re-prefilled",
        "hit share",
        "deferred",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("side", "engine") else "right", no_wrap=col == "side")
    for side, (_, label) in {**KV_SIDES, **HOST_SIDES}.items():
        if side not in r["vllm"]:
            continue
        for engine, name in (("vllm", "vLLM"), ("sim", "sim")):
            x = r[engine][side]
            d, h = x["per_token_s"], x["history"]
            stats = x.get("plugin_stats", {})
            deferred = x.get("deferred_programs", stats.get("programs_deferred_total"))
            table.add_row(
                label if engine == "vllm" else "",
                name,
                f"{d['mean'] * 1e3:.1f}",
                f"{d['p99'] * 1e3:.1f}",
                f"{x['worst_per_token_s'] * 1e3:.1f}",
                f"{x['programs_done']}/{c['programs']}",
                str(x["preemptions"]),
                f"{h['reprefilled_tokens'] / 1e3:.1f}",
                f"{h['hit_share']:.3f}",
                "" if deferred is None else f"{deferred:.0f}",
                end_section=engine == "sim",
            )
    console.print(table)
    g, q = r["goals"], r["ratios"]
    cells = " ".join(f"{k} {_verdict(r['fractions'][k])}" for k in ("mean", "p99"))
    console.print(
        f"kv lru / kv autellix (> 1: the planner is faster): vLLM mean {q['vllm']['mean']:.2f}, "
        f"P99 {q['vllm']['p99']:.2f}, worst {q['vllm']['worst']:.2f}; simulator {q['sim']['mean']:.2f} / "
        f"{q['sim']['p99']:.2f} / {q['sim']['worst']:.2f}; kept (goal >= {GOAL_FRACTION:.0%}): {cells}; "
        f"P99 vs stock vLLM {g['p99_over_stock']:.2f}x: {g['p99_vs_stock']}"
    )
    if "host" in r:
        h = r["host"]["ratios"]
        console.print(
            f"with a host tier of {c['kv_host_blocks']} blocks, kv lru / kv autellix: vLLM mean "
            f"{h['vllm']['mean']:.2f}, P99 {h['vllm']['p99']:.2f}; simulator {h['sim']['mean']:.2f} / "
            f"{h['sim']['p99']:.2f}; P99 vs stock vLLM {r['host']['p99_over_stock']:.2f}x: "
            f"{r['host']['p99_vs_stock']}"
        )


def _verdict(cell: dict[str, Any]) -> str:
    if cell["fraction"] is None:
        return "n/a"
    if cell["verdict"] == "n/a":  # a simulator loss: nothing to keep
        return f"n/a (simulator: a loss; {cell['fraction']:.0%})"
    color = "green" if cell["verdict"] == "PASS" else "red"
    return f"[{color}]{cell['fraction']:.0%} {cell['verdict']}[/{color}]"
