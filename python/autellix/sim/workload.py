"""Synthetic agent workloads: the paper's ShareGPT, BFCL and LATS programs (and a mix).

:func:`generate` draws ``programs`` agent programs (:class:`~autellix.sim.spec.ProgramSpec`)
with Poisson arrivals. Each workload reproduces the per-workload statistics of the paper's
workload table (:data:`TARGETS`); everything the paper leaves open is a module constant below,
marked **[inference]** with its rationale, and listed in ``docs/trace-format.md``.

Token semantics (shared with trace files, see ``docs/trace-format.md``):

- ``prompt_tokens`` is a call's whole prompt, history included; ``prefix_tokens`` is its leading
  part equal to the full context (prompt + output) of its first parent, reusable from a prefix
  cache; ``prompt_tokens - prefix_tokens`` is the call's *new input*.
- The paper's "prefill tokens per call" is read as the mean new input per call, pooled over
  all calls (total new input / total calls); "decode tokens per call" likewise for outputs.
- A prompt never exceeds :data:`MAX_CONTEXT_TOKENS`: when history plus new input would, the
  history is cut to its first ``MAX_CONTEXT_TOKENS - new_input`` tokens, which remain a prefix
  of the parent's context (so ``prefix_tokens`` shrinks and stays consistent).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from autellix.exceptions import ConfigError
from autellix.sim.spec import CallSpec, ProgramSpec

__all__ = [
    "MAX_CONTEXT_TOKENS",
    "MAX_OUTPUT_TOKENS",
    "TARGETS",
    "WORKLOADS",
    "WorkloadStats",
    "arrival_times",
    "chain",
    "generate",
    "measure",
]

#: Workloads :func:`generate` knows.
WORKLOADS = ("sharegpt", "bfcl", "lats", "mixed")

#: Longest prompt of any call, history included (LLaMA-3.1 serves 128k; 32k keeps one call's KV
#: well inside one engine's cache) [inference].
MAX_CONTEXT_TOKENS = 32_768
#: Longest output of any call (clips the long tail of the lognormal output draws) [inference].
MAX_OUTPUT_TOKENS = 4_096


@dataclass(frozen=True, slots=True)
class WorkloadStats:
    """Per-workload statistics: the paper's targets, or what :func:`measure` finds."""

    #: Mean LLM calls per program.
    calls_mean: float
    #: Most calls in one program (``None``: not stated by the paper).
    calls_max: int | None
    #: New input tokens per call (prompt - prefix), pooled over all calls.
    new_input_mean: float
    #: Output (decode) tokens per call, pooled over all calls.
    output_mean: float


#: The paper's workload table (paper.md section 8), per generator.
TARGETS: dict[str, WorkloadStats] = {
    "sharegpt": WorkloadStats(calls_mean=6.66, calls_max=80, new_input_mean=255.65, output_mean=276.81),
    "bfcl": WorkloadStats(calls_mean=10.75, calls_max=70, new_input_mean=735.06, output_mean=34.14),
    "lats": WorkloadStats(calls_mean=159.71, calls_max=None, new_input_mean=467.24, output_mean=72.64),
}

# --- ShareGPT: single-threaded chat, one conversation = one program ------------------------------
#: Calls per program: ceil(lognormal), clipped to [1, 80], mu solved for mean 6.66. sigma 1.3 fits
#: the bundled ShareGPT dump (median 3, p99 63 calls per conversation) [inference].
SHAREGPT_CALLS_SIGMA = 1.3
#: Log-space spread of new input / output per call, near the bundled dump's (1.59 / 1.07 with
#: the LLaMA-3 tokenizer) [inference].
SHAREGPT_INPUT_SIGMA = 1.5
SHAREGPT_OUTPUT_SIGMA = 1.0
#: Think time between a reply and the user's next turn (lognormal). The paper gives none. Real
#: human think times (tens of seconds) would dominate program latency and hide scheduling, and
#: the paper's large gains suggest its replay sent turns almost back to back; a short 2 s mean
#: still leaves each program idle between calls (no engine, KV evictable) [inference].
SHAREGPT_THINK_MEAN_S = 2.0
SHAREGPT_THINK_SIGMA = 1.0

# --- BFCL: multi-turn ReAct tool use, single-threaded ---------------------------------------------
#: Calls per program: ceil(lognormal), clipped to [1, 70], mu solved for mean 10.75 [inference].
BFCL_CALLS_SIGMA = 0.6
#: New input of calls after the first: a tool result or the next user turn [inference].
BFCL_TURN_INPUT_MEAN = 200.0
BFCL_TURN_INPUT_SIGMA = 1.0
#: The first call's new input (system prompt + tool signatures) has the mean that makes the
#: pooled per-call mean 735.06 given the later calls' (about 5,950 tokens) [inference].
BFCL_SYSTEM_INPUT_MEAN = TARGETS["bfcl"].new_input_mean * TARGETS[
    "bfcl"
].calls_mean - BFCL_TURN_INPUT_MEAN * (TARGETS["bfcl"].calls_mean - 1.0)
BFCL_SYSTEM_INPUT_SIGMA = 0.35
#: Outputs are short function calls, sometimes a text answer [inference].
BFCL_OUTPUT_SIGMA = 0.7
#: Tool execution (or the next user turn) before every call but the first (lognormal) [inference].
BFCL_TOOL_MEAN_S = 0.5
BFCL_TOOL_SIGMA = 1.0

# --- LATS: Monte-Carlo tree search on HotpotQA, multi-threaded ------------------------------------
#: Samples per expansion and per rollout step (LATS ``n_generate_sample``): parallel threads.
LATS_CHILDREN = 5
#: Tree depth limit (LATS ``max_depth``): rollouts stop there.
LATS_MAX_DEPTH = 7
#: Search iterations at most (LATS ``iterations``).
LATS_MAX_ITERATIONS = 50
#: Reflection calls per program at most (LATS reflects while it has fewer than 4 unique failed
#: trajectories) [inference].
LATS_MAX_REFLECTIONS = 3
#: Chance that a rollout step samples a terminal ``Finish[...]`` action [inference].
LATS_TERMINAL_PROB = 0.25
#: Chance that an iteration's trajectory is correct, ending the program. Tuned so that calls per
#: program average about 159.71 [inference].
LATS_SUCCESS_PROB = 0.23
LATS_INPUT_SIGMA = 0.8
LATS_OUTPUT_SIGMA = 0.8
#: The environment step (a Wikipedia search / lookup) that executes a generate call's action,
#: paid before that child's value call (lognormal) [inference].
LATS_TOOL_MEAN_S = 0.7
LATS_TOOL_SIGMA = 0.8

#: Uniform draws reserved per LATS iteration (success, selection, best child, 2 per rollout step).
_LATS_SLOTS = 3 + 2 * LATS_MAX_DEPTH

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def generate(
    workload: str, programs: int, rate: float, seed: int, *, tool_wait_scale: float = 1.0
) -> list[ProgramSpec]:
    """Draw ``programs`` programs of ``workload`` arriving as a Poisson process of ``rate``/s.

    Program ids are ``0..programs-1`` in arrival order; arrivals come from
    :func:`arrival_times` (the same for every workload at the same seed). ``rate = inf`` puts
    every arrival at t=0 (an offline batch). ``tool_wait_scale`` multiplies every tool wait
    (0 removes them). The same arguments always give the same programs.
    """
    if workload not in WORKLOADS:
        raise ConfigError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    _check_count("programs", programs)
    _check_rate(rate)
    _check_seed(seed)
    if not (isinstance(tool_wait_scale, (int, float)) and 0 <= tool_wait_scale < math.inf):
        raise ConfigError(f"tool_wait_scale must be a finite number >= 0, got {tool_wait_scale!r}")
    streams = np.random.default_rng(seed).spawn(5)
    arrivals = _poisson(programs, rate, streams[0])
    sources: list[str]
    if workload == "mixed":
        pick = streams[1].integers(0, 3, size=programs)
        sources = [_SOURCES[int(k)] for k in pick]
    else:
        sources = [workload] * programs
    bodies: dict[str, list[tuple[CallSpec, ...]]] = {}
    for k, name in enumerate(_SOURCES):
        count = sources.count(name)
        if count:
            bodies[name] = _GENERATORS[name](streams[2 + k], count, float(tool_wait_scale))
    taken = dict.fromkeys(bodies, 0)
    out: list[ProgramSpec] = []
    for pid, name in enumerate(sources):
        calls = bodies[name][taken[name]]
        taken[name] += 1
        out.append(ProgramSpec(id=pid, arrival=float(arrivals[pid]), calls=calls, workload=name))
    return out


def arrival_times(programs: int, rate: float, seed: int) -> list[float]:
    """Arrival times of a Poisson process of ``rate`` per second, starting at t=0.

    The first arrival comes one exponential gap after t=0 (not at t=0 itself), so the times are
    exactly a Poisson process observed from t=0. ``rate = inf`` gives all zeros. These are the
    arrivals :func:`generate` uses for the same ``(programs, rate, seed)``.
    """
    _check_count("programs", programs, minimum=0)
    _check_rate(rate)
    _check_seed(seed)
    return [float(t) for t in _poisson(programs, rate, np.random.default_rng(seed).spawn(1)[0])]


def measure(programs: Sequence[ProgramSpec]) -> WorkloadStats:
    """The :class:`WorkloadStats` of some programs, comparable with :data:`TARGETS`."""
    if not programs:
        raise ConfigError("measure() needs at least one program")
    calls = sum(len(p.calls) for p in programs)
    new_input = sum(c.prompt_tokens - c.prefix_tokens for p in programs for c in p.calls)
    output = sum(c.output_tokens for p in programs for c in p.calls)
    return WorkloadStats(
        calls_mean=calls / len(programs),
        calls_max=max(len(p.calls) for p in programs),
        new_input_mean=new_input / calls,
        output_mean=output / calls,
    )


# ---------------------------------------------------------------------------------------------------
# Argument checks and shared draws
# ---------------------------------------------------------------------------------------------------


def _check_count(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_rate(rate: object) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise ConfigError(f"rate must be a number > 0 programs/s (inf: all at t=0), got {rate!r}")


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")


def _poisson(n: int, rate: float, rng: np.random.Generator) -> FloatArray:
    if math.isinf(rate):
        return np.zeros(n)
    return np.cumsum(rng.exponential(1.0 / rate, size=n))


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _clipped_lognormal_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[clip(X, lo, hi)] for X ~ lognormal(mu, sigma)."""
    a = (math.log(lo) - mu) / sigma
    b = (math.log(hi) - mu) / sigma
    body = math.exp(mu + sigma * sigma / 2.0) * (_norm_cdf(b - sigma) - _norm_cdf(a - sigma))
    return lo * _norm_cdf(a) + body + hi * (1.0 - _norm_cdf(b))


def _ceil_lognormal_mean(mu: float, sigma: float, hi: int) -> float:
    """E[clip(ceil(X), 1, hi)] for X ~ lognormal(mu, sigma)."""
    total = 0.0
    below = 0.0
    for k in range(1, hi):
        at_most_k = _norm_cdf((math.log(k) - mu) / sigma)
        total += k * (at_most_k - below)
        below = at_most_k
    return total + hi * (1.0 - below)


@functools.cache
def _solve_mu(kind: str, mean: float, sigma: float, hi: float) -> float:
    """The lognormal ``mu`` whose clipped (``kind='tokens'``) or ceiled count (``'calls'``) draws
    have the given mean (bisection: the mean grows with mu)."""
    lo_mu, hi_mu = -20.0, math.log(hi) + 10.0
    for _ in range(100):
        mid = (lo_mu + hi_mu) / 2.0
        if kind == "calls":
            got = _ceil_lognormal_mean(mid, sigma, int(hi))
        else:
            got = _clipped_lognormal_mean(mid, sigma, 1.0, hi)
        if got < mean:
            lo_mu = mid
        else:
            hi_mu = mid
    return (lo_mu + hi_mu) / 2.0


def _tokens(rng: np.random.Generator, n: int, mean: float, sigma: float, hi: int) -> IntArray:
    """``n`` token counts, lognormal, rounded and clipped to [1, hi], with mean ``mean``."""
    mu = _solve_mu("tokens", mean, sigma, float(hi))
    draws = np.rint(rng.lognormal(mu, sigma, size=n))
    return np.clip(draws, 1, hi).astype(np.int64)


def _calls(rng: np.random.Generator, n: int, mean: float, sigma: float, hi: int) -> IntArray:
    """``n`` call counts: ceil(lognormal) clipped to [1, hi], with mean ``mean``."""
    mu = _solve_mu("calls", mean, sigma, float(hi))
    return np.clip(np.ceil(rng.lognormal(mu, sigma, size=n)), 1, hi).astype(np.int64)


def _waits(rng: np.random.Generator, n: int, mean: float, sigma: float, scale: float) -> FloatArray:
    """``n`` lognormal waits in seconds with mean ``mean * scale``."""
    if scale == 0.0:
        return np.zeros(n)
    return rng.lognormal(math.log(mean) - sigma * sigma / 2.0, sigma, size=n) * scale


def chain(new_input: Sequence[int], output: Sequence[int], waits: Sequence[float]) -> tuple[CallSpec, ...]:
    """The calls of a single-threaded program (chat, ReAct): call ``j`` continues call ``j-1``.

    Call ``j`` sends the previous call's whole context plus ``new_input[j]`` tokens (cut to fit
    :data:`MAX_CONTEXT_TOKENS`, see the module doc), generates ``output[j]`` tokens and is issued
    ``waits[j]`` seconds after call ``j-1`` finished (``waits[0]`` is ignored: the first call is
    issued at the program's arrival). ``new_input`` values must be in ``[1, MAX_CONTEXT_TOKENS]``
    (0 is allowed after the first call) and outputs >= 1.
    """
    first = list(range(-1, len(new_input) - 1))
    parents = [(i - 1,) if i else () for i in range(len(new_input))]
    return _assemble(first, parents, [0] * len(new_input), new_input, output, [0.0, *waits[1:]])


def _assemble(
    first: Sequence[int],
    parents: Sequence[tuple[int, ...]],
    threads: Sequence[int],
    new_input: Sequence[int],
    output: Sequence[int],
    waits: Sequence[float],
) -> tuple[CallSpec, ...]:
    """Build one program's calls. ``first[i]`` is the parent whose context call ``i`` continues
    (-1: a root); its prompt is that context (cut to fit :data:`MAX_CONTEXT_TOKENS`) plus
    ``new_input[i]`` (which is already at most the cap)."""
    context = [0] * len(first)
    calls: list[CallSpec] = []
    for i, parent in enumerate(first):
        fresh = new_input[i]
        prefix = min(context[parent], MAX_CONTEXT_TOKENS - fresh) if parent >= 0 else 0
        prompt = prefix + fresh
        context[i] = prompt + output[i]
        calls.append(CallSpec(i, threads[i], parents[i], prompt, output[i], prefix, waits[i]))
    return tuple(calls)


def _chains(
    counts: IntArray, new_input: IntArray, output: IntArray, waits: FloatArray
) -> list[tuple[CallSpec, ...]]:
    """Single-threaded programs from flat per-call arrays (``counts`` calls per program)."""
    new_l = new_input.tolist()
    out_l = output.tolist()
    wait_l = waits.tolist()
    programs: list[tuple[CallSpec, ...]] = []
    start = 0
    for count in counts.tolist():
        end = start + count
        programs.append(chain(new_l[start:end], out_l[start:end], wait_l[start:end]))
        start = end
    return programs


# ---------------------------------------------------------------------------------------------------
# Generators: each returns the call tuples of ``n`` programs
# ---------------------------------------------------------------------------------------------------


def _sharegpt(rng: np.random.Generator, n: int, wait_scale: float) -> list[tuple[CallSpec, ...]]:
    target = TARGETS["sharegpt"]
    assert target.calls_max is not None
    counts = _calls(rng, n, target.calls_mean, SHAREGPT_CALLS_SIGMA, target.calls_max)
    total = int(counts.sum())
    new_input = _tokens(rng, total, target.new_input_mean, SHAREGPT_INPUT_SIGMA, MAX_CONTEXT_TOKENS)
    output = _tokens(rng, total, target.output_mean, SHAREGPT_OUTPUT_SIGMA, MAX_OUTPUT_TOKENS)
    waits = _waits(rng, total, SHAREGPT_THINK_MEAN_S, SHAREGPT_THINK_SIGMA, wait_scale)
    return _chains(counts, new_input, output, waits)


def _bfcl(rng: np.random.Generator, n: int, wait_scale: float) -> list[tuple[CallSpec, ...]]:
    target = TARGETS["bfcl"]
    assert target.calls_max is not None
    counts = _calls(rng, n, target.calls_mean, BFCL_CALLS_SIGMA, target.calls_max)
    total = int(counts.sum())
    new_input = _tokens(rng, total, BFCL_TURN_INPUT_MEAN, BFCL_TURN_INPUT_SIGMA, MAX_CONTEXT_TOKENS)
    firsts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    new_input[firsts] = _tokens(rng, n, BFCL_SYSTEM_INPUT_MEAN, BFCL_SYSTEM_INPUT_SIGMA, MAX_CONTEXT_TOKENS)
    output = _tokens(rng, total, target.output_mean, BFCL_OUTPUT_SIGMA, MAX_OUTPUT_TOKENS)
    waits = _waits(rng, total, BFCL_TOOL_MEAN_S, BFCL_TOOL_SIGMA, wait_scale)
    return _chains(counts, new_input, output, waits)


@dataclass(slots=True)
class _LatsShape:
    """One LATS program's DAG before token counts: per call, the parent it continues (-1: a
    root), all its parents, its thread, the call whose new-input draw it shares (siblings of one
    expansion send the same prompt) and whether an environment step precedes it."""

    first: list[int]
    parents: list[tuple[int, ...]]
    threads: list[int]
    share: list[int]
    stepped: list[bool]

    def add(self, first: int, join: tuple[int, ...], thread: int, share: int, stepped: bool) -> int:
        index = len(self.first)
        self.first.append(first)
        if first >= 0:
            self.parents.append((first, *(p for p in join if p != first)))
        else:
            self.parents.append(join)
        self.threads.append(thread)
        self.share.append(index if share < 0 else share)
        self.stepped.append(stepped)
        return index


def _lats_shape(u: list[float]) -> _LatsShape:
    """The call DAG of one LATS search; ``u`` holds ``_LATS_SLOTS`` uniforms per iteration.

    Iteration: [reflection if the last trajectory failed] -> select the shallowest unexpanded
    tree node (a random one among equals: UCT prefers unvisited nodes) -> expand it into 5
    parallel generate calls, each followed (after its environment step) by its child's value
    call -> roll out from the best child: 5 generate calls per step (joined on the previous
    step's value calls), then 5 value calls, until a sample is terminal or the depth limit.
    A correct terminal trajectory ends the program.
    """
    shape = _LatsShape([], [], [], [], [])
    k_children = LATS_CHILDREN
    levels: list[list[int]] = [[-1]] + [[] for _ in range(LATS_MAX_DEPTH)]
    join: tuple[int, ...] = ()
    failed_tail = -1
    reflections = 0
    for it in range(LATS_MAX_ITERATIONS):
        base = it * _LATS_SLOTS
        success = u[base] < LATS_SUCCESS_PROB
        if failed_tail >= 0 and reflections < LATS_MAX_REFLECTIONS:
            join = (shape.add(failed_tail, join, 0, -1, False),)
            reflections += 1
        depth = next((d for d, level in enumerate(levels) if level), -1)
        if depth < 0:
            break  # every node is expanded or at the depth limit: LATS gives up
        level = levels[depth]
        pick = int(u[base + 1] * len(level))
        node = level[pick]
        level[pick] = level[-1]
        level.pop()
        # Expansion: parallel generate calls, then one value call per child.
        first = len(shape.first)
        gens = [shape.add(node, join, k, first, False) for k in range(k_children)]
        join = tuple(shape.add(g, (), k, -1, True) for k, g in enumerate(gens))
        if depth + 1 < LATS_MAX_DEPTH:
            levels[depth + 1].extend(gens)
        current = gens[int(u[base + 2] * k_children)]
        # Rollout from the best child.
        depth += 1
        step = 0
        terminal = False
        while depth < LATS_MAX_DEPTH:
            slot = base + 3 + 2 * step
            first = len(shape.first)
            gens = [shape.add(current, join, k, first, False) for k in range(k_children)]
            current = gens[int(u[slot + 1] * k_children)]
            terminal = u[slot] < LATS_TERMINAL_PROB or (success and depth == LATS_MAX_DEPTH - 1)
            if terminal:
                join = tuple(gens)
                break
            join = tuple(shape.add(g, (), k, -1, True) for k, g in enumerate(gens))
            depth += 1
            step += 1
        if success:
            break
        failed_tail = current
    return shape


def _lats(rng: np.random.Generator, n: int, wait_scale: float) -> list[tuple[CallSpec, ...]]:
    target = TARGETS["lats"]
    uniforms = rng.random((n, LATS_MAX_ITERATIONS * _LATS_SLOTS)).tolist()
    shapes = [_lats_shape(u) for u in uniforms]
    sizes = [len(s.first) for s in shapes]
    total = sum(sizes)
    new_input = _tokens(rng, total, target.new_input_mean, LATS_INPUT_SIGMA, MAX_CONTEXT_TOKENS).tolist()
    output = _tokens(rng, total, target.output_mean, LATS_OUTPUT_SIGMA, MAX_OUTPUT_TOKENS).tolist()
    waits = _waits(rng, total, LATS_TOOL_MEAN_S, LATS_TOOL_SIGMA, wait_scale).tolist()
    programs: list[tuple[CallSpec, ...]] = []
    start = 0
    for shape, size in zip(shapes, sizes, strict=True):
        fresh = [new_input[start + j] for j in shape.share]
        wait = [
            w if stepped else 0.0
            for w, stepped in zip(waits[start : start + size], shape.stepped, strict=True)
        ]
        programs.append(
            _assemble(shape.first, shape.parents, shape.threads, fresh, output[start : start + size], wait)
        )
        start += size
    return programs


_SOURCES = ("sharegpt", "bfcl", "lats")
_GENERATORS = {"sharegpt": _sharegpt, "bfcl": _bfcl, "lats": _lats}
