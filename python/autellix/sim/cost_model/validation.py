"""Published vLLM measurements the cost model is checked against (:data:`PUBLISHED_MEASUREMENTS`).

The figures live in ``data/published_measurements.json``, shipped in the package; each names its
source. ``docs/cost-model.md`` shows them next to the model's predictions and the tests check the
error each one is documented with, so the doc and the code cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from importlib import resources
from typing import Any

from autellix.exceptions import ConfigError
from autellix.sim.cost_model.hardware import HARDWARE, MODELS
from autellix.sim.cost_model.preset import PRESETS, EnginePreset

#: The data file of the published measurements, inside this package.
MEASUREMENTS_RESOURCE = ("data", "published_measurements.json")

#: What a :class:`Measurement` can measure (see its ``kind``).
KINDS = ("decode", "prefill", "latency", "throughput")


@dataclass(frozen=True)
class Measurement:
    """One published vLLM measurement and how to predict it with the model.

    ``kind`` says what was measured:

    * ``"decode"``: seconds per decode iteration at ``batch`` sequences whose contexts total
      ``context`` tokens; ``multi_step`` iterations share one scheduler call.
    * ``"prefill"``: seconds of one iteration prefilling ``prompts`` (token counts) from scratch.
    * ``"latency"``: end-to-end seconds of vLLM's benchmark_latency: ``batch`` prompts of
      ``input_len`` tokens, ``output_len`` tokens each, single-step scheduling.
    * ``"throughput"``: requests/s of an offline run that keeps ``batch`` sequences running:
      mean prompt ``input_len``, mean output ``output_len``, prefills batched up to
      ``max_batched_tokens`` tokens per iteration, decode with ``multi_step``.
    """

    label: str
    url: str
    conditions: str
    engine: EnginePreset
    kind: str
    measured: float
    unit: str
    #: "calibration" (a constant was set from it) or "validation" (held out).
    role: str
    #: Whether docs/cost-model.md claims |error| <= 20% for it (the tests check the claim).
    within_20pct: bool
    batch: int = 0
    context: int = 0
    multi_step: int = 1
    prompts: tuple[int, ...] = ()
    input_len: int = 0
    output_len: int = 0
    max_batched_tokens: int = 0

    def predict(self) -> float:
        e = self.engine
        if self.kind == "decode":
            return (
                e.step_time(0, 0.0, self.batch, self.context) + e.schedule_time(self.batch) / self.multi_step
            )
        if self.kind == "prefill":
            attn = sum(p * p / 2 for p in self.prompts)
            return e.step_time(sum(self.prompts), attn, 0, 0) + e.schedule_time(len(self.prompts))
        if self.kind == "latency":
            b, i = self.batch, self.input_len
            total = e.step_time(b * i, b * i * i / 2, 0, 0) + e.schedule_time(b)
            for k in range(1, self.output_len):
                total += e.step_time(0, 0.0, b, b * (i + k)) + e.schedule_time(b)
            return total
        if self.kind == "throughput":
            b, i, o = self.batch, self.input_len, self.output_len
            per_step = max(1, self.max_batched_tokens // i)  # prompts per prefill iteration
            prefill = e.step_time(per_step * i, per_step * i * i / 2, 0, 0) + e.schedule_time(b)
            # Steady state: b sequences whose contexts are spread over [i, i + o].
            decode = e.step_time(0, 0.0, b, b * (i + o // 2)) + e.schedule_time(b) / self.multi_step
            seconds_per_request = prefill / per_step + (o - 1) * decode / b
            return 1.0 / seconds_per_request
        raise ConfigError(f"unknown measurement kind {self.kind!r}")

    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predict() - self.measured) / self.measured


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_value(where: str, name: str, declared: str, value: Any) -> Any:
    """``value`` of the field ``name`` (declared type ``declared``), checked and converted from JSON
    (a float may be written as an integer, a tuple is a list)."""
    valid = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": _is_int(value),
        "float": _is_int(value) or isinstance(value, float),
        "tuple[int, ...]": isinstance(value, list) and all(map(_is_int, value)),
    }
    if not valid.get(declared, False):
        raise ConfigError(f"{where}: {name} must be {declared}, got {value!r}")
    if declared == "float":
        return float(value)
    return tuple(value) if declared == "tuple[int, ...]" else value


def _engines(data: Mapping[str, Any], source: str) -> dict[str, EnginePreset]:
    """:data:`PRESETS` and the extra engines of ``data["engines"]``, by name."""
    engines = dict(PRESETS)
    extra = data.get("engines", {})
    if not isinstance(extra, Mapping):
        raise ConfigError(f"{source}: 'engines' is not an object")
    for name, spec in extra.items():
        try:
            model, hardware, tp = MODELS[spec["model"]], HARDWARE[spec["hardware"]], spec["tensor_parallel"]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{source}: engine {name!r}: bad or missing {e}") from None
        if not _is_int(tp):
            raise ConfigError(f"{source}: engine {name!r}: tensor_parallel must be an integer, got {tp!r}")
        engines[name] = EnginePreset(name, model, hardware, tensor_parallel=tp)
    return engines


def parse_measurements(data: Mapping[str, Any], source: str = "measurements") -> tuple[Measurement, ...]:
    """:class:`Measurement` s from a JSON object laid out as ``data/published_measurements.json``.

    ``data["measurements"]`` lists one object per measurement with the fields of
    :class:`Measurement`; its ``engine`` names a preset of :data:`PRESETS` or one of
    ``data["engines"]`` (``{name: {"model", "hardware", "tensor_parallel"}}``, names from
    :data:`MODELS` and :data:`HARDWARE`). ConfigError naming the entry at fault otherwise.
    """
    engines = _engines(data, source)
    rows = data.get("measurements")
    if not isinstance(rows, list):
        raise ConfigError(f"{source}: no 'measurements' list")
    declared = {f.name: str(f.type) for f in fields(Measurement)}  # annotations are strings here
    required = {f.name for f in fields(Measurement) if f.default is MISSING}
    out = []
    for i, row in enumerate(rows):
        where = f"{source}: measurement {i}"
        if not isinstance(row, Mapping):
            raise ConfigError(f"{where} is not an object")
        where += f" ({row.get('label', '?')!r})"
        unknown, missing = sorted(set(row) - set(declared)), sorted(required - set(row))
        if unknown or missing:
            raise ConfigError(f"{where}: unknown fields {unknown}, missing fields {missing}")
        engine = row["engine"]
        if not isinstance(engine, str) or engine not in engines:
            raise ConfigError(f"{where}: unknown engine {engine!r}")
        values = {n: _field_value(where, n, declared[n], v) for n, v in row.items() if n != "engine"}
        values["engine"] = engines[engine]
        if values["kind"] not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {values['kind']!r}")
        out.append(Measurement(**values))
    return tuple(out)


def load_published_measurements() -> tuple[Measurement, ...]:
    """The measurements of the package's ``data/published_measurements.json``."""
    resource = resources.files("autellix.sim.cost_model")
    for part in MEASUREMENTS_RESOURCE:
        resource = resource / part
    data = json.loads(resource.read_text(encoding="utf-8"))
    return parse_measurements(data, source="/".join(MEASUREMENTS_RESOURCE))


#: Every published measurement of ``data/published_measurements.json``, in file order.
PUBLISHED_MEASUREMENTS: tuple[Measurement, ...] = load_published_measurements()
