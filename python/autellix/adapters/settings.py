"""Policy settings of an engine plug-in, from the engine's config or the environment.

Sources, later ones winning: the defaults below, then ``AUTELLIX_*`` environment variables, then
the ``"autellix"`` entry of the engine's config (for vLLM: ``--additional-config
'{"autellix": {"policy": "atlas"}}'``). Keys and variables:

=================  ===========================  ==============================================
key                variable                     meaning (default)
=================  ===========================  ==============================================
policy             AUTELLIX_POLICY              plas | atlas | mlfq | fcfs
first_boundary     AUTELLIX_FIRST_BOUNDARY      first boundary, seconds; the 7 queues double
                                                from it (``SchedulerConfig.ladder``); not
                                                with ``quanta`` or ``boundaries``
quanta             AUTELLIX_QUANTA              seconds per queue level, comma-separated
boundaries         AUTELLIX_BOUNDARIES          service at which a program drops a level
starvation_beta    AUTELLIX_STARVATION_BETA     promote a call waiting beta x its service;
                                                ``none`` turns anti-starvation off
program_ttl        AUTELLIX_PROGRAM_TTL         seconds an idle program is kept
kv_policy          AUTELLIX_KV_POLICY           what happens to a finished call's KV: ``lru``
                                                (vLLM's prefix cache alone) | ``autellix``
                                                (the core's KV planner retains the contexts
                                                of programs that call again, and defers new
                                                programs while working sets do not fit);
                                                default ``lru``
kv_admission       AUTELLIX_KV_ADMISSION        with kv_policy ``autellix``: defer new
                                                programs while the live working sets exceed
                                                the KV cache (host tier included), at most
                                                beta x the mean program service, and only
                                                while it holds 4+ typical working sets;
                                                ``on`` | ``off``; default ``on``
control            AUTELLIX_CONTROL             a unix socket path the plug-in listens on for
                                                the front's hints (:mod:`.control`; ``autellix
                                                serve --engine vllm`` sets it); default none
=================  ===========================  ==============================================

Every scheduling default is the core's :class:`autellix.SchedulerConfig` default (plas, its
ladder, beta 8, 600 s), the same for ``autellix serve`` and the simulator. ``kv_policy`` stays
``lru`` (:data:`DEFAULT_KV_POLICY`): in the vLLM replay (benches/RESULTS.md, issue 16) the
planner's P99 is worse than stock vLLM's on lats-style loads without a host tier.

Bad values raise :class:`autellix.ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autellix._core import SchedulerConfig
from autellix.exceptions import ConfigError

_ENV = {
    "policy": "AUTELLIX_POLICY",
    "first_boundary": "AUTELLIX_FIRST_BOUNDARY",
    "quanta": "AUTELLIX_QUANTA",
    "boundaries": "AUTELLIX_BOUNDARIES",
    "starvation_beta": "AUTELLIX_STARVATION_BETA",
    "program_ttl": "AUTELLIX_PROGRAM_TTL",
    "kv_policy": "AUTELLIX_KV_POLICY",
    "kv_admission": "AUTELLIX_KV_ADMISSION",
    "control": "AUTELLIX_CONTROL",
}

#: ``lru``: vLLM's stock prefix cache; ``autellix``: the core's KV planner (retention, admission)
KV_POLICIES = ("lru", "autellix")
#: ``lru`` until ``autellix`` keeps P99 within stock vLLM's on every measured workload (not on
#: lats-style loads: benches/RESULTS.md, issue 16)
DEFAULT_KV_POLICY = "lru"
#: Program admission (kv_policy autellix). On: in the vLLM replay (benches/RESULTS.md, issue 16)
#: retention without it kept none of bfcl's and mixed's gains (vLLM 1.03x / 1.00x mean); off
#: is for loads like lats, whose deferrals cost the tail more than thrashing does.
DEFAULT_KV_ADMISSION = True


_CORE = SchedulerConfig()
_FLAGS = {"on": True, "true": True, "yes": True, "1": True}
_FLAGS.update({"off": False, "false": False, "no": False, "0": False})


@dataclass(frozen=True)
class PluginSettings:
    policy: str = _CORE.policy
    #: builds ``quanta`` and ``boundaries`` with ``SchedulerConfig.ladder`` (not with them)
    first_boundary: float | None = None
    #: ``None``: the core's default ladder
    quanta: tuple[float, ...] | None = None
    boundaries: tuple[float, ...] | None = None
    starvation_beta: float | None = _CORE.starvation_beta
    program_ttl: float = _CORE.program_ttl
    kv_policy: str = DEFAULT_KV_POLICY
    kv_admission: bool = DEFAULT_KV_ADMISSION
    #: unix socket of the control channel (``None``: no channel; TTL and ``last_call`` only)
    control: str | None = None

    def scheduler_config(self) -> SchedulerConfig:
        """The core's config (validated by the core: a bad ladder is a ConfigError)."""
        quanta: Sequence[float] | None = self.quanta
        boundaries: Sequence[float] | None = self.boundaries
        if self.first_boundary is not None:
            given = [key for key in ("quanta", "boundaries") if getattr(self, key) is not None]
            if given:
                raise ConfigError(
                    f"autellix first_boundary and {' and '.join(given)} both given: first_boundary "
                    "builds the whole ladder, give one or the other"
                )
            boundaries, quanta = SchedulerConfig.ladder(self.first_boundary)
        return SchedulerConfig(
            self.policy,
            quanta=quanta,
            boundaries=boundaries,
            starvation_beta=self.starvation_beta,
            program_ttl=self.program_ttl,
        )

    @classmethod
    def load(
        cls, config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> PluginSettings:
        """Defaults, overridden by ``environ`` (``os.environ`` by default), then by ``config``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, var in _ENV.items():
            if var in env:
                values[key] = _parse(key, env[var], f"${var}")
        for key, value in (config or {}).items():
            if key not in _ENV:
                raise ConfigError(f"unknown autellix setting {key!r}; known: {', '.join(_ENV)}")
            values[key] = _parse(key, value, f"config key {key!r}")
        settings = cls(**values)
        settings.scheduler_config()  # fail at startup, not on the first request
        return settings


def _parse(key: str, value: Any, source: str) -> Any:
    try:
        if key == "policy":
            policy = str(value).strip().lower()
            if policy not in SchedulerConfig.policies():
                raise ValueError(f"not one of {', '.join(SchedulerConfig.policies())}")
            return policy
        if key == "kv_policy":
            kv_policy = str(value).strip().lower()
            if kv_policy not in KV_POLICIES:
                raise ValueError(f"not one of {', '.join(KV_POLICIES)}")
            return kv_policy
        if key == "kv_admission":
            if isinstance(value, bool):
                return value
            flag = str(value).strip().lower()
            if flag not in _FLAGS:
                raise ValueError(f"not one of {', '.join(_FLAGS)}")
            return _FLAGS[flag]
        if key == "control":
            if value is None or str(value).strip() == "":
                return None
            if not isinstance(value, str):
                raise ValueError("must be a socket path")
            return value
        if key in ("quanta", "boundaries"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(float(v) for v in items)
        if key == "starvation_beta":
            if value is None or str(value).strip().lower() in ("none", "off", ""):
                return None
            return float(value)
        if key == "first_boundary":
            if value is None:
                return None
            first = float(value)
            if not 0 < first < float("inf"):
                raise ValueError("must be finite and > 0")
            return first
        return float(value)  # program_ttl
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid autellix {key} {value!r} from {source}: {exc}") from None
