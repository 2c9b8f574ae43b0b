"""KV swap costs measured on one GPU by ``benches/bench_swap.py`` (:class:`SwapCosts`).

Without them :meth:`~autellix.sim.cost_model.EnginePreset.swap_time` uses the datasheet figures
(``Hardware.pcie_bandwidth``, ``Hardware.memcpy_latency``, ``GATHER_LAUNCH_S``). The bench's JSON
is always named by the caller (``--swap-results PATH``, ``SimConfig.swap_results``): this package
has no default location for it, since it need not run from a checkout.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autellix.exceptions import ConfigError
from autellix.sim.cost_model.hardware import Hardware


@dataclass(frozen=True)
class SwapCosts:
    """Host<->device KV swap costs measured on one GPU by ``benches/bench_swap.py``.

    An :class:`EnginePreset` that carries them (:meth:`EnginePreset.with_swap_costs`) computes
    :meth:`EnginePreset.swap_time` from them instead of the datasheet figures:

    * per-block: ``copies x memcpy_latency + bytes / link_bandwidth``;
    * bulk: ``bulk_latency + bytes / (link_bandwidth x bulk_efficiency)``.

    Fitted by :func:`fit_swap_costs` from the bench's raw timings (both directions averaged).
    """

    #: The GPU measured (``torch.cuda.get_device_name()``), e.g. "NVIDIA H100 80GB HBM3".
    device: str
    #: Host<->device bandwidth of one large contiguous pinned copy, bytes/s, one direction.
    link_bandwidth: float
    #: Fixed cost of one bulk swap (launch, descriptors), seconds.
    bulk_latency: float
    #: Asymptotic bulk swap bandwidth / link_bandwidth (1.0: bulk swaps run at link speed).
    bulk_efficiency: float
    #: Fixed cost of one per-block copy, seconds; None: not measured (Hardware.memcpy_latency).
    memcpy_latency: float | None = None
    #: Which per-block copy gave memcpy_latency ("vllm_per_block": vLLM's C++ cudaMemcpyAsync
    #: loop, as in vLLM 0.6.1; "per_block": a Python ``copy_`` loop, which overstates it).
    per_block_method: str | None = None
    #: Where the figures came from (the JSON file).
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("link_bandwidth", "bulk_efficiency"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"SwapCosts.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.bulk_latency) and self.bulk_latency >= 0):
            raise ConfigError(f"SwapCosts.bulk_latency must be >= 0, got {self.bulk_latency!r}")
        if self.memcpy_latency is not None and not (
            math.isfinite(self.memcpy_latency) and self.memcpy_latency >= 0
        ):
            raise ConfigError(f"SwapCosts.memcpy_latency must be >= 0, got {self.memcpy_latency!r}")

    def matches(self, hardware: Hardware) -> bool:
        """Whether these figures were measured on ``hardware``'s GPU model (A100, H100, H200)."""
        family = hardware.name.split("-")[0].upper()
        return family in self.device.upper().replace("-", " ").split()


def _fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` (one point: the line through the origin)."""
    if len(points) == 1 or len({x for x, _ in points}) == 1:
        x, y = points[-1]
        return 0.0, y / x
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def fit_swap_costs(results: Mapping[str, Any], source: str = "") -> SwapCosts:
    """:class:`SwapCosts` from the JSON of ``benches/bench_swap.py`` (its ``device`` and ``rows``).

    Per direction (``h2d``, ``d2h``), over the swap sizes measured, fits ``seconds = a + b x
    bytes`` by least squares to the ``link`` rows (one contiguous copy: ``link_bandwidth = 1/b``)
    and the ``bulk`` rows (``bulk_latency = max(a, 0)``, ``bulk_efficiency = (1/b) /
    link_bandwidth``), and takes ``memcpy_latency = (seconds - bytes / link_bandwidth) / copies``
    of the largest per-block swap (vLLM's own per-block op when measured, else the Python copy
    loop); the two directions are averaged. ConfigError if the figures were not measured on a
    CUDA device (a CPU smoke run has no host link) or a method is missing.
    """
    device = results.get("device")
    if not isinstance(device, Mapping) or device.get("type") != "cuda":
        kind = device.get("type") if isinstance(device, Mapping) else device
        raise ConfigError(
            f"{source or 'swap results'}: measured on {kind!r}, not a CUDA device: "
            "no host link to calibrate from"
        )
    rows = results.get("rows")
    if not isinstance(rows, list):
        raise ConfigError(f"{source or 'swap results'}: no 'rows' list")

    def points(method: str, direction: str) -> list[tuple[float, float, int]]:
        out = []
        for r in rows:
            if r.get("method") == method and r.get("direction") == direction and r.get("seconds"):
                out.append((float(r["bytes"]), float(r["seconds"]), int(r.get("copies") or 0)))
        return out

    link, bulk_a, bulk_eff, latency = [], [], [], []
    per_block_method = next(
        (m for m in ("vllm_per_block", "per_block") if any(r.get("method") == m for r in rows)), None
    )
    for direction in ("h2d", "d2h"):
        lp, bp = points("link", direction), points("bulk", direction)
        if not lp or not bp:
            raise ConfigError(
                f"{source or 'swap results'}: no {'link' if not lp else 'bulk'} timings for {direction}"
            )
        _, slope = _fit_line([(x, y) for x, y, _ in lp])
        bw = 1.0 / slope if slope > 0 else max(x / y for x, y, _ in lp)
        a, b = _fit_line([(x, y) for x, y, _ in bp])
        bulk_bw = 1.0 / b if b > 0 else max(x / y for x, y, _ in bp)
        link.append(bw)
        bulk_a.append(max(a, 0.0))
        bulk_eff.append(bulk_bw / bw)
        if per_block_method is not None:
            pp = [p for p in points(per_block_method, direction) if p[2] > 0]
            if pp:
                x, y, copies = max(pp)
                latency.append(max(0.0, (y - x / bw) / copies))
    return SwapCosts(
        device=str(device.get("name", "cuda")),
        link_bandwidth=sum(link) / len(link),
        bulk_latency=sum(bulk_a) / len(bulk_a),
        bulk_efficiency=sum(bulk_eff) / len(bulk_eff),
        memcpy_latency=sum(latency) / len(latency) if latency else None,
        per_block_method=per_block_method if latency else None,
        source=source,
    )


def load_swap_costs(path: str | os.PathLike[str]) -> SwapCosts:
    """:func:`fit_swap_costs` of the JSON file ``path`` (``benches/bench_swap.py --json``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read swap results {os.fspath(path)!r}: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{os.fspath(path)}: not a JSON object")
    return fit_swap_costs(data, source=os.fspath(path))
