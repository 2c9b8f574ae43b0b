"""``bench_swap.py``'s figures: GB/s per method and size, the goals, and the printed report."""

from __future__ import annotations

from typing import Any

from _output import console as wide_console
from _swap_methods import DIRECTIONS

GOAL_VS_PER_BLOCK = 5.0
GOAL_VS_LINK = 0.85

LABELS = {
    "link": "link",
    "bulk": "bulk (autellix)",
    "bulk_kernel": "bulk kernel",
    "bulk_memcpy_batch": "bulk memcpy_batch",
    "swapper": "KVSwapper",
    "per_block": "per-block loop",
    "vllm_per_block": "vLLM swap_blocks",
    "vllm_batch": "vLLM batch",
}


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per direction and method: GB/s at each size, and the largest size measured."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        cell = out.setdefault(r["direction"], {}).setdefault(r["method"], {"gbps": {}, "largest": 0})
        cell["gbps"][str(r["blocks"])] = r["gbps"]
        cell["largest"] = max(cell["largest"], r["blocks"])
    return out


def _gbps(rows: list[dict[str, Any]], method: str, direction: str, n: int) -> float | None:
    for r in rows:
        if (r["method"], r["direction"], r["blocks"]) == (method, direction, n):
            return float(r["gbps"]) if r["gbps"] else None
    return None


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Bulk vs per-block loop and vs link, per direction, at the largest size both ran; info
    ratios vs vLLM's ops where measured."""
    rows, cuda = result["rows"], result["device"]["type"] == "cuda"
    out = []
    for direction in DIRECTIONS:
        for other, goal, name in (
            ("per_block", GOAL_VS_PER_BLOCK, "bulk / per-block loop"),
            ("link", GOAL_VS_LINK, "bulk / link"),
            ("vllm_per_block", None, "bulk / vLLM per-block op"),
            ("vllm_batch", None, "bulk / vLLM batch op"),
        ):
            common = {r["blocks"] for r in rows if r["method"] == other and r["direction"] == direction} & {
                r["blocks"] for r in rows if r["method"] == "bulk" and r["direction"] == direction
            }
            if not common:
                continue
            n = max(common)
            bulk, base = _gbps(rows, "bulk", direction, n), _gbps(rows, other, direction, n)
            value = bulk / base if bulk and base else None
            if goal is None:
                verdict = "info"
            elif not cuda:
                verdict = "n/a (cpu)"
            else:
                verdict = "PASS" if value is not None and value >= goal else "FAIL"
            out.append(
                {
                    "name": name,
                    "direction": direction,
                    "blocks": n,
                    "value": value,
                    "goal": goal,
                    "verdict": verdict,
                }
            )
    return out


def report(result: dict[str, Any]) -> None:
    from rich.table import Table

    console = wide_console()
    lay, dev = result["layout"], result["device"]
    methods = result["config"]["methods"]
    pinned = "pinned" if lay["pinned"] else "not pinned"
    table = Table(
        title=f"KV swap GB/s on {dev['name']} ({dev['type']}), {lay['model']} {lay['layout']} layout: "
        f"{lay['tensors']} tensors x {lay['page_bytes'] // 1024} KiB pages = "
        f"{lay['block_bytes'] // 1024:,} KiB per block, host pool {pinned}",
        title_justify="left",
    )
    table.add_column("dir")
    table.add_column("blocks", justify="right")
    table.add_column("MiB", justify="right")
    for m in methods:
        table.add_column(LABELS[m], justify="right")
    table.add_column("bulk / per-block", justify="right")
    table.add_column("bulk / link", justify="right")
    rows = result["rows"]
    for direction in DIRECTIONS:
        for n in result["config"]["sizes"]:
            cells = [_gbps(rows, m, direction, n) for m in methods]
            bulk, per, link = (_gbps(rows, m, direction, n) for m in ("bulk", "per_block", "link"))
            table.add_row(
                direction,
                f"{n:,}",
                f"{n * lay['block_bytes'] / 2**20:,.1f}",
                *("-" if c is None else f"{c:.2f}" for c in cells),
                f"{bulk / per:.1f}x" if bulk and per else "-",
                f"{bulk / link:.0%}" if bulk and link else "-",
                end_section=n == result["config"]["sizes"][-1],
            )
    console.print(table)
    for g in result["goals"]:
        goal = (
            ""
            if g["goal"] is None
            else (f" (goal >= {g['goal']:.0%})" if g["goal"] < 1 else f" (goal >= {g['goal']:g}x)")
        )
        value = (
            "-"
            if g["value"] is None
            else (f"{g['value']:.0%}" if "link" in g["name"] else f"{g['value']:.2f}x")
        )
        console.print(
            f"{g['verdict']:>9}  {g['name']}, {g['direction']}, {g['blocks']:,} blocks: {value}{goal}"
        )
    if not result["checks_passed"]:
        console.print("[bold red]FAILED[/]: a method's copy differs from its source")
    for note in result["notes"]:
        console.print(f"note: {note}")
    costs = result["swap_costs"]
    if costs is not None:
        lat = costs["memcpy_latency"]
        console.print(
            f"fitted swap costs: link {costs['link_bandwidth'] / 1e9:.1f} GB/s, "
            f"bulk {costs['bulk_efficiency']:.0%} of it + {costs['bulk_latency'] * 1e6:.1f} us, "
            "per-block copy "
            + ("not measured" if lat is None else f"{lat * 1e6:.2f} us ({costs['per_block_method']})")
        )
    console.print(f"wall {result['wall_s']:.1f} s (setup {result['setup_s']:.1f} s)")
