"""One simulated engine: iteration-level continuous batching over a paged KV cache.

An engine works in *rounds* (vLLM multi-step scheduling): one scheduler call, then up to
``steps_per_schedule`` forward iterations with that batch. The first iteration also prefills
the calls just admitted; every iteration generates one token for every call in the batch.
Calls that finish mid-round leave the batch at their own iteration; their slot refills at
the next scheduler call. Preempted calls' KV is swapped to host memory (per-block or in
bulk) or dropped and recomputed on resume; swaps are synchronous, as in the paper.

Per round the work is O(calls that start, stop or grow a block) · log n, never O(batch):
finish and block-growth iterations are kept in heaps.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autellix.exceptions import ConfigError
from autellix.sim.kv_cache import KVCache, blocks_for

if TYPE_CHECKING:
    from autellix._core import KvPlanner, Scheduler
    from autellix.sim.cost_model import EnginePreset
    from autellix.sim.spec import CallSpec

# Where a call's KV is.
NEW, GPU, HOST, DROPPED = 0, 1, 2, 3


class CallRun:
    """A call's life in the simulator (the scheduling core tracks the rest)."""

    __slots__ = (
        "admit_it",
        "first_token",
        "generated",
        "host_blocks",
        "id",
        "issued",
        "kv",
        "owner",
        "program",
        "prompt",
        "shared",
        "shared_key",
        "spec",
        "stint",
    )

    def __init__(self, id: int, program: int, spec: CallSpec, issued: float, owner: object = None) -> None:
        self.id = id
        self.program = program
        #: The simulator's record of the call's program.
        self.owner = owner
        self.spec = spec
        self.prompt = spec.prompt_tokens
        self.issued = issued
        self.first_token = -1.0
        #: Tokens generated before the current stint in the batch.
        self.generated = 0
        #: Engine iteration counter when the current stint began.
        self.admit_it = 0
        #: Counts stints, so heap entries of an earlier stint are recognised as stale.
        self.stint = 0
        self.kv = NEW
        #: Blocks it holds in host memory while swapped out.
        self.host_blocks = 0
        #: Leading tokens it shares from the prefix-cache entry ``shared_key`` while on the GPU.
        self.shared = 0
        self.shared_key: Hashable | None = None


@dataclass
class EngineStats:
    iterations: int = 0
    scheduler_steps: int = 0
    preemptions: int = 0
    swaps: int = 0
    swap_copies: int = 0
    swap_time: float = 0.0
    recomputed_tokens: int = 0
    cached_tokens: int = 0
    #: Prompt tokens a call could have continued from its parent's context, and of those the
    #: ones prefilled again because the context was gone.
    reusable_tokens: int = 0
    reprefilled_tokens: int = 0
    #: Idle contexts moved GPU -> host, host -> GPU on demand, and prefetched (blocks).
    offloaded_blocks: int = 0
    loaded_blocks: int = 0
    prefetched_blocks: int = 0


@dataclass(frozen=True, slots=True)
class Round:
    """What one round did: when it ends, and which calls finished when."""

    end: float
    finished: list[tuple[float, CallRun]]
    #: The batch was empty: nothing to run until a new call arrives.
    idle: bool
    #: Idle, but memory held by a TTL frees then (``ttl``): run a round at that time.
    wake: float | None = None


class Engine:
    def __init__(
        self,
        index: int,
        preset: EnginePreset,
        scheduler: Scheduler,
        *,
        max_batch: int,
        steps_per_schedule: int,
        swap: str,
        prefix_caching: bool,
        kv_policy: str = "lru",
        host_blocks: int = 0,
        planner: KvPlanner | None = None,
    ) -> None:
        self.index = index
        self.preset = preset
        self.scheduler = scheduler
        self.max_batch = max_batch
        self.steps = steps_per_schedule
        self.swap = swap
        self.prefix_caching = prefix_caching
        self.kv = KVCache(
            preset.kv_blocks,
            preset.block_size,
            policy=kv_policy,
            host_capacity=host_blocks,
            planner=planner,
            prefill_seconds=lambda tokens: preset.step_time(tokens, tokens * tokens / 2, 0, 0),
        )
        # A program's service as the anti-starvation rule counts it (trains the deferral bound).
        self._critical_path = scheduler.config.policy == "atlas"
        self._host_link = preset.swap_time(1024, True) / 1024  # seconds per block, bulk
        self._last_compute = 0.0  # seconds the last round's iterations ran
        # Headroom for what the core's token count does not see: each call's last partial block,
        # a shared prefix entry's partial block, and the tokens it generates during the round.
        headroom = max_batch * (2 + blocks_for(steps_per_schedule, preset.block_size))
        if headroom >= self.kv.capacity:
            raise ConfigError(
                f"{preset.name}: {self.kv.capacity} KV blocks cannot hold a batch of {max_batch}"
            )
        self._headroom = headroom
        self.kv_budget = (self.kv.capacity - headroom) * preset.block_size
        self.stats = EngineStats()
        self.busy = False
        #: Calls submitted to this engine and not yet finished (the balancer's load); the
        #: cluster keeps it, so it changes at the moment a call is issued or finishes.
        self.load = 0
        self._it = 0  # iterations run so far
        self._decoded = 0  # iterations since the last scheduler call (tokens per running call)
        self._batch: dict[int, CallRun] = {}
        self._context = 0  # tokens in KV of the batch at iteration self._it
        self._shared = 0  # of which shared from prefix-cache entries
        self._finish_at: list[tuple[int, int, int, CallRun]] = []  # (iteration, stint, id, call)
        self._grow_at: list[tuple[int, int, int, CallRun]] = []
        self._calls: dict[int, CallRun] = {}

    def add(self, call: CallRun) -> None:
        self._calls[call.id] = call

    # ------------------------------------------------------------------------------ one round

    def run_round(self, now: float) -> Round:
        """Ask the scheduler for a batch at ``now`` and run up to ``steps`` iterations of it."""
        stats = self.stats
        kv = self.kv
        kv.expire(now)
        # The core counts every call's whole context; shared prefixes are stored once, so the
        # budget gets back what the batch double counts. Contexts held by a TTL are not free.
        budget = max(0, self.kv_budget + self._shared - (kv.pinned + kv.retained) * kv.block_size)
        decision = self.scheduler.step(self.index, now, self.max_batch, budget, decoded=self._decoded)
        self._decoded = 0
        stats.scheduler_steps += 1
        for cid in decision.too_large:  # too large for now (shared prefixes pinned), or ever?
            call = self._calls[cid]
            if call.prompt + call.generated > self.kv_budget:
                raise ConfigError(
                    f"a call of program {call.program} needs {call.prompt + call.generated} KV tokens "
                    f"but a {self.preset.name} engine schedules at most {self.kv_budget}: "
                    "use a larger preset or cap the workload's context"
                )
        swap_out = sum(self._preempt(self._calls[c]) for c in decision.preempted)
        stats.preemptions += len(decision.preempted)
        prefill = attention = 0.0
        prefill_context = prefilling = swap_in = 0
        fresh: list[CallRun] = []
        for cid in decision.admitted:
            call = self._calls[cid]
            context = call.prompt + call.generated
            if not self._fits(call, context):
                # The core's count took back tokens for prefixes the batch shared when the step
                # began; a call preempted in this step no longer shares them. It waits for the
                # next step rather than overflowing the cache.
                self.scheduler.preempt(cid, now)
                continue
            if call.kv == NEW:  # the queueing an eviction would add again (the ttl policy's B)
                kv.queueing += 0.05 * (now - call.issued - kv.queueing)
            if call.kv == HOST:
                swap_in += call.host_blocks
                stats.swaps += 1
            else:
                hit = self._share_prefix(call)
                todo = context - hit
                prefill += todo
                attention += todo * (hit + todo / 2)
                prefill_context += context
                prefilling += 1
                stats.cached_tokens += hit
                if call.kv == DROPPED:
                    stats.recomputed_tokens += todo
                if call.first_token < 0:
                    fresh.append(call)
            self._start(call, context)
        self._grow_blocks()
        # The engine's own scheduling work (vLLM's CPU time per scheduler call) and synchronous
        # swaps (preemptions, and idle contexts moved to make room or loaded for a call) come
        # before the batch runs.
        t = now + self.preset.schedule_time(len(decision.running))
        t += self._swap_seconds(swap_out) + self._swap_seconds(swap_in)
        offload, load = self._context_moves()
        t += max(0.0, offload - self._last_compute)
        compute_start = t
        finished: list[tuple[float, CallRun]] = []
        for step in range(self.steps):
            n = len(self._batch)
            if n == 0:
                break
            if step == 0:
                t += self.preset.step_time(
                    int(prefill), attention, n - prefilling, self._context - prefill_context
                )
                for call in fresh:
                    call.first_token = t
            else:
                t += self.preset.step_time(0, 0.0, n, self._context)
            self._it += 1
            self._decoded += 1
            self._context += n
            self._pop_finished(t, finished)
        stats.iterations += self._decoded
        self._last_compute = t - compute_start
        t += max(0.0, load - self._last_compute)
        # Prefetches ride the host link while the batch computes (a separate copy stream).
        stats.prefetched_blocks += kv.prefetch(int(self._last_compute / self._host_link))
        idle = not decision.running
        self.busy = not idle
        return Round(t, finished, idle, kv.next_expiry() if idle else None)

    # ----------------------------------------------------------------------------- transitions

    def _start(self, call: CallRun, context: int) -> None:
        call.kv = GPU
        call.admit_it = self._it
        call.stint += 1
        self._batch[call.id] = call
        self._context += context
        self._shared += call.shared
        # The call's blocks cover it through this round; _grow_at says when it needs more.
        self.kv.grow(call.id, context - call.shared)
        heapq.heappush(
            self._finish_at,
            (self._it + call.spec.output_tokens - call.generated, call.stint, call.id, call),
        )
        heapq.heappush(self._grow_at, (self._it, call.stint, call.id, call))

    def _stop(self, call: CallRun) -> int:
        """Remove ``call`` from the batch; returns its context tokens."""
        del self._batch[call.id]
        call.generated += self._it - call.admit_it
        context = call.prompt + call.generated
        self._context -= context
        self._shared -= call.shared
        return context

    def _unshare(self, call: CallRun) -> None:
        if call.shared_key is not None:
            self.kv.unpin(call.shared_key)
        call.shared, call.shared_key = 0, None

    def _preempt(self, call: CallRun) -> int:
        """Take a running call off the GPU; returns the blocks to swap out."""
        context = self._stop(call)
        self.kv.release(call.id)
        self._unshare(call)
        if self.swap == "recompute":
            call.kv = DROPPED
            return 0
        # Its whole context goes to host memory, shared prefix included, and comes back whole.
        call.kv = HOST
        self.stats.swaps += 1
        call.host_blocks = blocks_for(context, self.kv.block_size)
        return call.host_blocks

    def finish(self, call: CallRun) -> None:
        """``call`` generated its last token: free its blocks, keep its context as a prefix."""
        context = self._stop(call)
        if self.prefix_caching:
            self.kv.remember(
                (call.program, call.spec.index),
                context,
                call.id,
                call.shared_key,
                program=call.program,
                thread=call.spec.thread,
            )
        else:
            self.kv.release(call.id)
        self._unshare(call)
        del self._calls[call.id]

    def end_program(self, program: int) -> None:
        """Every call of ``program`` finished: the planner frees its contexts. Its service as the
        anti-starvation rule counts it (ATLAS: critical path, else attained service) trains the
        deferral bound."""
        if self.kv.planner is not None:
            info = self.scheduler.program(program)
            self.kv.end_program(program, info.critical_path if self._critical_path else info.attained_service)

    def _context_moves(self) -> tuple[float, float]:
        """Seconds of the idle-context moves made since the last round (bulk copies), offloads
        then loads. Both run on copy streams beside the batch (vLLM's offloading connector and
        LMCache store and load asynchronously; the two PCIe directions do not compete), so only
        what exceeds the compute they overlap stalls the batch: an offload overlaps the last
        round, a load this round (a loaded call's first token still comes after its load)."""
        kv, stats = self.kv, self.stats
        stats.offloaded_blocks += kv.offloaded
        stats.loaded_blocks += kv.loaded
        moves = self._swap_seconds(kv.offloaded, bulk=True), self._swap_seconds(kv.loaded, bulk=True)
        kv.offloaded = kv.loaded = 0
        return moves

    def _pop_finished(self, t: float, out: list[tuple[float, CallRun]]) -> None:
        heap = self._finish_at
        while heap and heap[0][0] <= self._it:
            _, stint, cid, call = heapq.heappop(heap)
            if call.stint == stint and call.kv == GPU and cid in self._batch:
                self.finish(call)
                out.append((t, call))

    def _grow_blocks(self) -> None:
        """Give every batch call whose blocks run out this round the blocks for the round."""
        heap = self._grow_at
        end = self._it + self.steps
        size = self.kv.block_size
        while heap and heap[0][0] < end:
            _, stint, cid, call = heapq.heappop(heap)
            if call.stint != stint or cid not in self._batch:
                continue
            tokens = min(
                call.prompt + call.generated + (end - call.admit_it),
                call.prompt + call.spec.output_tokens,
            )
            self.kv.grow(cid, tokens - call.shared)
            if tokens < call.prompt + call.spec.output_tokens:
                # next iteration at which the held blocks (after the shared prefix) are full
                full = self.kv.held[cid] * size + call.shared - call.prompt - call.generated + call.admit_it
                heapq.heappush(heap, (full, stint, cid, call))

    def _fits(self, call: CallRun, context: int) -> bool:
        """Whether ``call`` fits in the blocks no running call holds, pins or has retained, less
        the headroom its batch grows into this round (a prefix it shares that is pinned already
        costs nothing more)."""
        kv = self.kv
        free = kv.capacity - kv.used - kv.pinned - kv.retained - self._headroom
        spec = call.spec
        shared = 0
        if call.kv != HOST and self.prefix_caching and spec.prefix_tokens and spec.parents:
            shared = kv.pinned_hit((call.program, spec.parents[0]), spec.prefix_tokens)
        return blocks_for(context - shared, kv.block_size) <= free

    def _share_prefix(self, call: CallRun) -> int:
        """Tokens of the call's prompt found in the prefix cache, which it now shares."""
        spec = call.spec
        if not (self.prefix_caching and spec.prefix_tokens and spec.parents):
            return 0
        key = (call.program, spec.parents[0])
        hit = self.kv.lookup(key, spec.prefix_tokens)
        if call.generated == 0 and call.kv == NEW:
            self.stats.reusable_tokens += spec.prefix_tokens
            self.stats.reprefilled_tokens += spec.prefix_tokens - hit
        if hit:
            self.kv.pin(key, call.issued)
            call.shared, call.shared_key = hit, key
        return hit

    def _swap_seconds(self, blocks: int, bulk: bool | None = None) -> float:
        if blocks == 0 or (bulk is None and self.swap == "recompute"):
            return 0.0
        bulk = self.swap == "bulk" if bulk is None else bulk
        seconds = self.preset.swap_time(blocks, bulk)
        self.stats.swap_time += seconds
        self.stats.swap_copies += self.preset.swap_copies(blocks, bulk)
        return seconds
