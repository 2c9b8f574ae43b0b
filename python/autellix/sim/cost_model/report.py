"""The tables of ``docs/cost-model.md`` and the ``python -m autellix.sim.cost_model`` command that
prints them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from autellix.exceptions import ConfigError
from autellix.sim.cost_model.preset import PRESETS, EnginePreset
from autellix.sim.cost_model.swap import load_swap_costs
from autellix.sim.cost_model.validation import PUBLISHED_MEASUREMENTS


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _copies(engine: EnginePreset, blocks: int, bulk: bool) -> str:
    n = engine.swap_copies(blocks, bulk)
    return f"{n:,} cop{'y' if n == 1 else 'ies'}"


def typical_table() -> str:
    """Markdown table of the model's outputs for typical cases, one column per preset."""
    names = list(PRESETS)
    lines = ["| case | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(case: str, values: list[str]) -> None:
        lines.append(f"| {case} | " + " | ".join(values) + " |")

    row("KV capacity (tokens)", [f"{PRESETS[n].kv_tokens:,}" for n in names])
    for b in (1, 32, 128, 256):
        row(
            f"decode step, batch {b}, 512-token contexts",
            [_ms(PRESETS[n].step_time(0, 0.0, b, 512 * b)) for n in names],
        )
    for p in (512, 2048):
        row(
            f"prefill step, one {p}-token prompt",
            [_ms(PRESETS[n].step_time(p, p * p / 2, 0, 0)) for n in names],
        )
    for b in (1, 256):
        row(f"scheduler call, {b} running", [_ms(PRESETS[n].schedule_time(b)) for n in names])
    for blocks in (16, 128, 512):
        for bulk in (False, True):
            kind = "bulk" if bulk else "per-block"
            row(
                f"swap {blocks} blocks, {kind}",
                [
                    f"{_ms(PRESETS[n].swap_time(blocks, bulk))} ({_copies(PRESETS[n], blocks, bulk)})"
                    for n in names
                ],
            )
        row(
            f"swap {blocks} blocks, per-block / bulk",
            [
                f"{PRESETS[n].swap_time(blocks, False) / PRESETS[n].swap_time(blocks, True):.1f}x"
                for n in names
            ],
        )
    return "\n".join(lines)


def validation_table() -> str:
    """Markdown table: published measurement vs the model's prediction."""
    lines = [
        "| published measurement | conditions | measured | predicted | error | role |",
        "|---|---|---|---|---|---|",
    ]
    for m in PUBLISHED_MEASUREMENTS:
        if m.unit == "requests/s":
            measured, predicted = f"{m.measured:.2f} req/s", f"{m.predict():.2f} req/s"
        else:
            measured, predicted = _ms(m.measured), _ms(m.predict())
        lines.append(
            f"| [{m.label}]({m.url}) | {m.conditions} | {measured} | {predicted} | "
            f"{m.error() * 100:+.1f}% | {m.role} |"
        )
    return "\n".join(lines)


def swap_table(presets: Sequence[EnginePreset], blocks: Sequence[int] = (16, 128, 512)) -> str:
    """Markdown table of swap times, datasheet vs measured, for presets with :attr:`swap_costs`."""
    lines = [
        "| preset | measured on | blocks | per-block datasheet | per-block measured | bulk datasheet "
        "| bulk measured | per-block / bulk measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in presets:
        if p.swap_costs is None:
            continue
        sheet = p.with_swap_costs(None)
        for b in blocks:
            lines.append(
                f"| {p.name} | {p.swap_costs.device} | {b} | {_ms(sheet.swap_time(b, False))} | "
                f"{_ms(p.swap_time(b, False))} | {_ms(sheet.swap_time(b, True))} | "
                f"{_ms(p.swap_time(b, True))} | {p.swap_time(b, False) / p.swap_time(b, True):.1f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the typical-case table and the validation table (the tables of docs/cost-model.md);
    with ``--swap-results PATH`` (``benches/bench_swap.py --json``), also the swap times of every
    preset on the measured GPU model, datasheet vs measured."""
    parser = argparse.ArgumentParser(prog="python -m autellix.sim.cost_model", description=main.__doc__)
    parser.add_argument(
        "--swap-results",
        metavar="PATH",
        help="JSON of benches/bench_swap.py (e.g. benches/results/swap.json) to calibrate swap times from",
    )
    args = parser.parse_args(argv)
    sys.stdout.write("## Model outputs for typical cases\n\n" + typical_table() + "\n\n")
    sys.stdout.write("## Validation against published measurements\n\n" + validation_table() + "\n")
    if args.swap_results is not None:
        try:
            costs = load_swap_costs(args.swap_results)
        except ConfigError as e:
            sys.stderr.write(f"error: {e}\n")
            return 2
        matching = [p.with_swap_costs(costs) for p in PRESETS.values() if costs.matches(p.hardware)]
        sys.stdout.write(
            f"\n## Swap times with costs measured on {costs.device}\n\n"
            f"link {costs.link_bandwidth / 1e9:.1f} GB/s, bulk {costs.bulk_efficiency:.0%} of it + "
            f"{costs.bulk_latency * 1e6:.1f} us, per-block copy "
            + (
                f"{costs.memcpy_latency * 1e6:.1f} us ({costs.per_block_method})"
                if costs.memcpy_latency is not None
                else "not measured (datasheet)"
            )
            + "\n\n"
        )
        if matching:
            sys.stdout.write(swap_table(matching) + "\n")
        else:
            sys.stdout.write("(no preset runs on that GPU model)\n")
    return 0
