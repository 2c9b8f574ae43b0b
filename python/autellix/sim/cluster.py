"""The discrete-event cluster simulator: programs issue calls, a balancer places them, engines
run them, and the real scheduling core (``autellix._core.Scheduler``, the same object the
serving path drives) decides every batch.

Events, in time order (ties: finishes, then arrivals and issued calls, then engine rounds, so
a round sees everything that happened at its instant):

- a program arrives and issues its root calls (after their tool waits), unless the KV planner's
  admission defers it (kv policy ``autellix``, a program of more than one call): then it starts
  when admitted, at the latest when its deferral bound runs out (an admission event);
- a call is issued: the balancer picks an engine, the core queues it, an idle engine wakes;
- a call finishes: the core is told, the program's ready children are issued after their
  tool waits, a finished program is ended in the core;
- an engine round: one scheduler call and up to ``steps_per_schedule`` iterations; an idle
  engine whose cache a TTL hold fills (kv policy ``ttl``) wakes when the hold ends.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

from autellix._core import KvPlanner, Scheduler, SchedulerConfig
from autellix.balancer import make_balancer
from autellix.sim import cost_model
from autellix.sim.config import WORKLOADS, SimConfig
from autellix.sim.engine import CallRun, Engine, EngineStats
from autellix.sim.metrics import Distribution, ProgramOutcome, SimResult
from autellix.sim.spec import ProgramSpec

_FINISH, _ISSUE, _ARRIVE, _ROUND, _ADMIT, _WAKE = 0, 1, 2, 3, 4, 5


def load_programs(config: SimConfig) -> list[ProgramSpec]:
    """The programs a config names: generated from a workload, or read from a trace."""
    from autellix.sim import trace, workload

    if config.workload in WORKLOADS:
        return workload.generate(
            config.workload, config.programs, config.rate, config.seed, tool_wait_scale=config.tool_wait_scale
        )
    programs = trace.load_trace(config.workload)[: config.programs]
    if config.rate > 0:
        programs = trace.with_poisson_arrivals(programs, config.rate, config.seed)
    return programs


class _Program:
    __slots__ = ("base", "calls_left", "children", "finish", "spec", "waiting_on")

    def __init__(self, spec: ProgramSpec, base: int) -> None:
        self.spec = spec
        self.base = base  # global id of call 0
        self.calls_left = len(spec.calls)
        self.waiting_on = [len(c.parents) for c in spec.calls]
        self.children: list[list[int]] = [[] for _ in spec.calls]
        for call in spec.calls:
            for parent in call.parents:
                self.children[parent].append(call.index)
        self.finish = -1.0


class Cluster:
    """The simulated cluster; :func:`simulate` builds one, runs it and summarises it."""

    def __init__(
        self,
        config: SimConfig,
        programs: Sequence[ProgramSpec],
        preset: cost_model.EnginePreset | None = None,
        scheduler: SchedulerConfig | None = None,
    ) -> None:
        self.config = config
        if preset is None:
            preset = (
                cost_model.measured_preset(config.preset, config.swap_results)
                if config.swap_results
                else cost_model.preset(config.preset)
            )
        self.preset = preset
        self.core = Scheduler(scheduler or config.scheduler_config())
        host_blocks = preset.host_kv_blocks(config.host_kv_gib)
        self.engines = [
            Engine(
                i,
                preset,
                self.core,
                max_batch=config.max_batch,
                swap=config.swap,
                host_blocks=host_blocks,
                planner=self._planner(preset, host_blocks),
                **config.engine_settings(),
            )
            for i in range(config.engines)
        ]
        #: Program admission (kv policy ``autellix`` on one engine): the engine's planner. With
        #: several engines a program is admitted before the balancer places its calls, so there
        #: is no one planner to ask; each engine's planner still places its contexts.
        self.admission = self.engines[0].kv.planner if config.engines == 1 else None
        self.deferred_programs: dict[int, _Program] = {}
        self._admission_wake_pending = False
        self.balancer = make_balancer(config.balancer)
        self.programs: list[_Program] = []
        base = 0
        for spec in programs:
            self.programs.append(_Program(spec, base))
            base += len(spec.calls)
        self.events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self.now = 0.0
        self.ttft: list[float] = []
        self.calls_done = 0
        for program in self.programs:
            self._push(program.spec.arrival, _ARRIVE, program)

    def _planner(self, preset: cost_model.EnginePreset, host_blocks: int) -> KvPlanner | None:
        """The core's KV planner of one engine, for kv policy ``autellix``, with its defaults:
        priority weighting off, so the engine gives it no program's service per call."""
        if self.config.kv_policy != "autellix" or not self.config.prefix_caching:
            return None
        beta = self.core.config.starvation_beta
        return KvPlanner(
            host_blocks=host_blocks,
            admission_blocks=preset.kv_blocks + host_blocks,
            **({} if beta is None else {"deferral_beta": beta}),
        )

    def _push(self, at: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self.events, (at, kind, self._seq, payload))

    def run(self, horizon: float) -> None:
        """Process events in time order until none are left or the next is past ``horizon``."""
        events = self.events
        while events and events[0][0] <= horizon:
            at, kind, _, payload = heapq.heappop(events)
            self.now = at
            if kind == _FINISH:
                self._finished(payload)  # type: ignore[arg-type]
            elif kind == _ISSUE:
                self._issue(*payload)  # type: ignore[misc]
            elif kind == _ARRIVE:
                self._arrive(payload)  # type: ignore[arg-type]
            elif kind == _ADMIT:
                self._admission_wake_pending = False
                self._admit_deferred()
            elif kind == _WAKE:
                engine: Engine = payload  # type: ignore[assignment]
                if not engine.busy:  # else a round is due anyway
                    engine.busy = True
                    self._round(engine)
            else:
                self._round(payload)  # type: ignore[arg-type]

    def _arrive(self, program: _Program) -> None:
        admission = self.admission
        # a one-call program leaves no context to protect: never deferred (as the vLLM plug-in
        # treats a call without a program id, or with last_call on its first call)
        if (
            admission is not None
            and len(program.spec.calls) > 1
            and not admission.admit(program.spec.id, self.now, self.engines[0].kv.used)
        ):
            self.deferred_programs[program.spec.id] = program
            self._wake_for_admission()
            return
        self._start(program)

    def _admit_deferred(self) -> None:
        if self.admission is None or not self.deferred_programs:
            return
        for pid in self.admission.admissions(self.now, self.engines[0].kv.used):
            self._start(self.deferred_programs.pop(pid))
        self._wake_for_admission()

    def _wake_for_admission(self) -> None:
        """While programs are deferred, check again every quarter of the deferral bound even if
        nothing else happens, so none waits much past its bound."""
        if self.admission is None or not self.deferred_programs or self._admission_wake_pending:
            return
        self._admission_wake_pending = True
        bound = self.admission.admission_stats(self.now)["bound"]
        self._push(self.now + max(bound / 4, 1e-3), _ADMIT, None)

    def _start(self, program: _Program) -> None:
        for call in program.spec.calls:
            if not call.parents:
                self._push(self.now + call.tool_wait, _ISSUE, (program, call.index))

    def _issue(self, program: _Program, index: int) -> None:
        spec = program.spec.calls[index]
        gid = program.base + index
        engines = self.engines
        engine = engines[self.balancer.choose(program.spec.id, spec.prompt_tokens, [e.load for e in engines])]
        self.core.submit(
            gid,
            program.spec.id,
            self.now,
            thread=spec.thread,
            engine=engine.index,
            parents=[program.base + p for p in spec.parents],
            prompt_tokens=spec.prompt_tokens,
        )
        engine.add(CallRun(gid, program.spec.id, spec, self.now, owner=program))
        engine.load += 1
        if not engine.busy:
            engine.busy = True
            self._push(self.now, _ROUND, engine)

    def _round(self, engine: Engine) -> None:
        self._admit_deferred()
        result = engine.run_round(self.now)
        for at, call in result.finished:
            self._push(at, _FINISH, (engine, call))
        if not result.idle:
            self._push(result.end, _ROUND, engine)
        elif result.wake is not None:  # queued calls may fit once a TTL hold ends
            self._push(max(result.wake, self.now), _WAKE, engine)

    def _finished(self, payload: tuple[Engine, CallRun]) -> None:
        engine, call = payload
        now = self.now
        self.core.finish(call.id, now)
        engine.load -= 1
        self.calls_done += 1
        self.ttft.append(call.first_token - call.issued)
        program: _Program = call.owner  # type: ignore[assignment]
        spec = program.spec
        for child in program.children[call.spec.index]:
            program.waiting_on[child] -= 1
            if program.waiting_on[child] == 0:
                self._push(now + spec.calls[child].tool_wait, _ISSUE, (program, child))
        program.calls_left -= 1
        if program.calls_left == 0:
            program.finish = now
            for e in self.engines:
                e.end_program(spec.id)
            self.core.end_program(spec.id, now)
            self.balancer.forget(spec.id)
        self._admit_deferred()


#: A run "completes" when every program finishes within this many times the slowest program's
#: unloaded duration after the last arrival (see :func:`default_horizon`).
HORIZON_FACTOR = 10.0


def unloaded_duration(program: ProgramSpec, preset: cost_model.EnginePreset) -> float:
    """Seconds ``program`` takes alone on an idle engine: the longest chain of tool waits,
    prefills (of the new input) and batch-1 decodes through its DAG."""
    decode = preset.step_time(0, 0.0, 1, 1024)
    done: list[float] = []
    for call in program.calls:
        new = call.prompt_tokens - call.prefix_tokens
        start = max((done[p] for p in call.parents), default=0.0) + call.tool_wait
        prefill = preset.step_time(new, new * (call.prefix_tokens + new / 2), 0, 0)
        done.append(start + prefill + call.output_tokens * decode)
    return max(done, default=0.0)


def default_horizon(programs: Sequence[ProgramSpec], preset: cost_model.EnginePreset) -> float:
    """The last arrival plus :data:`HORIZON_FACTOR` x the slowest program's unloaded duration."""
    span = max((p.arrival for p in programs), default=0.0)
    slowest = max((unloaded_duration(p, preset) for p in programs), default=0.0)
    return span + HORIZON_FACTOR * max(slowest, 1.0)


def simulate(
    config: SimConfig,
    programs: Sequence[ProgramSpec] | None = None,
    *,
    preset: cost_model.EnginePreset | None = None,
    scheduler: SchedulerConfig | None = None,
) -> SimResult:
    """Run one simulation. ``programs`` overrides the config's workload (``config.programs`` and
    ``config.rate`` are then ignored), ``preset`` the config's named engine preset, ``scheduler``
    the core's config (e.g. the vLLM plug-in's, to simulate what it runs)."""
    started = time.perf_counter()
    if programs is None:
        programs = load_programs(config)
    cluster = Cluster(config, programs, preset, scheduler)
    horizon = config.horizon if config.horizon is not None else default_horizon(programs, cluster.preset)
    cluster.run(horizon)
    return _summarise(config, cluster, time.perf_counter() - started)


def _summarise(config: SimConfig, cluster: Cluster, wall: float) -> SimResult:
    outcomes = tuple(
        ProgramOutcome(p.spec.id, p.spec.workload, p.spec.arrival, p.finish, p.spec.output_tokens)
        for p in cluster.programs
    )
    done = [o for o in outcomes if o.finish >= 0]
    latency = [o.latency for o in done]
    response = [o.finish - o.arrival for o in done]
    first = min((p.spec.arrival for p in cluster.programs), default=0.0)
    makespan = max(cluster.now - first, 1e-9)
    totals = EngineStats()
    for engine in cluster.engines:
        for field in totals.__dataclass_fields__:
            setattr(totals, field, getattr(totals, field) + getattr(engine.stats, field))
    tokens = sum(o.output_tokens for o in done)
    block_gb = cluster.preset.block_size * cluster.preset.kv_bytes_per_token / 1e9
    admission = (
        cluster.admission.admission_stats(cluster.now)
        if cluster.admission is not None
        else {"deferred": 0, "longest_deferral": 0.0}
    )
    nan = float("nan")
    return SimResult(
        config=config,
        completed=len(done) == len(cluster.programs),
        programs=len(cluster.programs),
        programs_done=len(done),
        calls_done=cluster.calls_done,
        latency=Distribution.of(latency),
        response=Distribution.of(response),
        ttft=Distribution.of(cluster.ttft),
        throughput=len(done) / makespan,
        token_throughput=tokens / makespan,
        makespan=makespan,
        preemptions=totals.preemptions,
        swaps=totals.swaps,
        swap_copies=totals.swap_copies,
        swap_time=totals.swap_time,
        recomputed_tokens=totals.recomputed_tokens,
        cached_tokens=totals.cached_tokens,
        reusable_tokens=totals.reusable_tokens,
        reprefilled_tokens=totals.reprefilled_tokens,
        hit_share=1.0 - totals.reprefilled_tokens / totals.reusable_tokens if totals.reusable_tokens else nan,
        offloaded_gb=totals.offloaded_blocks * block_gb,
        loaded_gb=totals.loaded_blocks * block_gb,
        prefetched_gb=totals.prefetched_blocks * block_gb,
        deferred_programs=int(admission["deferred"]),
        longest_deferral=float(admission["longest_deferral"]),
        worst_latency=max(latency, default=nan),
        worst_response=max(response, default=nan),
        iterations=totals.iterations,
        scheduler_steps=totals.scheduler_steps,
        wall_seconds=wall,
        outcomes=outcomes,
    )
