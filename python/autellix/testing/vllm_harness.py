"""Drive vLLM's real scheduler without a GPU, the way vLLM's own scheduler tests do.

Used by the plug-in's tests and by ``benches/bench_vllm_replay.py``: a tiny local model config (a
``config.json`` only: no weights, no tokenizer, no hub; :func:`write_tiny_model` adds a tokenizer
for ``vllm serve`` on a GPU), a real ``VllmConfig`` on the CPU device,
the real scheduler and KV cache manager over ``num_blocks`` blocks, and :class:`EngineLoop`, the
EngineCore's batch-queue loop (``step_with_batch_queue``: ``schedule(N+1)`` before
``update_from_output(N)``) with a stand-in for the GPU worker: its model runner samples one token
per request and, when the scheduler has vLLM's CPU KV offloading connector
(``make_scheduler(..., kv_offload_bytes=...)``), its connector runs every load and store job the
scheduler issues and reports it done, as ``OffloadingConnectorWorker`` does on a GPU.

Set ``VLLM_CACHE_ROOT`` before the first :func:`tiny_model_config` (vLLM caches the model
inspection there, ~20 s the first time) and call it from a directory without stray Python
modules: vLLM inspects the model in a ``python -m`` subprocess, which imports from the current
directory first.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm.config import CacheConfig, DeviceConfig, KVTransferConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.common import (
    OffloadingConnectorMetadata,
    OffloadingWorkerMetadata,
)
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

BLOCK_SIZE = 16
#: the token every stand-in model step samples (no EOS is configured: only max_tokens stops)
TOKEN = 7

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 1 << 17,
    "rms_norm_eps": 1e-6,
    "torch_dtype": "float16",
}

init_none_hash(sha256)
_BLOCK_HASHER = get_request_block_hasher(BLOCK_SIZE, sha256)


def write_tiny_model(directory: Path, tokenizer: bool = False) -> Path:
    """Write the tiny LLaMA's ``config.json`` into ``directory`` and, with ``tokenizer``, a
    word-level tokenizer (``w0`` ... ``w996`` plus ``<unk> <s> </s>``, whitespace-split, a chat
    template joining the messages): enough for ``vllm serve DIR --load-format dummy`` (random
    weights), which needs no hub. Returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(TINY_LLAMA))
    if tokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        special = ["<unk>", "<s>", "</s>"]
        words = [f"w{i}" for i in range(TINY_LLAMA["vocab_size"] - len(special))]  # type: ignore[operator]
        words_only = Tokenizer(
            models.WordLevel({w: i for i, w in enumerate(special + words)}, unk_token="<unk>")
        )
        words_only.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        words_only.decoder = decoders.WordPiece()  # joins words with spaces
        fast = PreTrainedTokenizerFast(
            tokenizer_object=words_only, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
        )
        fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
        fast.save_pretrained(str(directory))
    return directory


def tiny_model_config(directory: Path, max_model_len: int = 32768) -> ModelConfig:
    """A ``ModelConfig`` for a 2-layer LLaMA described by a ``config.json`` in ``directory``."""
    write_tiny_model(directory)
    return ModelConfig(
        model=str(directory), skip_tokenizer_init=True, dtype="float16", max_model_len=max_model_len
    )


@dataclass(frozen=True)
class KVSpec:
    """The shape of the KV cache a scheduler is built for: full attention in every layer, blocks of
    :data:`BLOCK_SIZE` tokens. The scheduler only counts blocks; the shape gives the bytes a block
    moves between GPU and CPU when KV offloading is on."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    dtype: torch.dtype = torch.float16

    def attention(self) -> FullAttentionSpec:
        return FullAttentionSpec(
            block_size=BLOCK_SIZE, num_kv_heads=self.num_kv_heads, head_size=self.head_size, dtype=self.dtype
        )

    @property
    def bytes_per_block(self) -> int:
        """K and V of one block over all layers."""
        return int(self.attention().page_size_bytes) * self.num_layers

    def kv_cache_config(self, num_blocks: int) -> KVCacheConfig:
        # no tensors: the offloading connector then sizes a block as page bytes x layers
        layers = [f"model.layers.{i}.self_attn.attn" for i in range(self.num_layers)]
        return KVCacheConfig(
            num_blocks=num_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[KVCacheGroupSpec(layers, self.attention())],
        )


#: Llama-3.1-8B: 32 layers, 8 KV heads of 128, fp16: 128 KiB per token, 2 MiB per block
LLAMA31_8B_KV = KVSpec(num_layers=32, num_kv_heads=8, head_size=128)


def make_scheduler(
    cls: type[Scheduler],
    model_config: ModelConfig,
    *,
    num_blocks: int,
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 2048,
    policy: str = "fcfs",
    prefix_caching: bool = True,
    additional_config: dict[str, Any] | None = None,
    kv_offload_bytes: int | None = None,
    kv_spec: KVSpec | None = None,
    kv_offload_config: dict[str, Any] | None = None,
) -> Scheduler:
    """The real scheduler ``cls`` over ``num_blocks`` KV blocks of 16 tokens, built as EngineCore does.

    ``kv_offload_bytes``: turn on vLLM's CPU KV offloading with a host tier of that many bytes
    (what ``--kv-offloading-size`` / ``--kv-offloading-backend native`` configure, written out so
    that decode blocks are offloaded too: ``offload_prompt_only=False``; ``kv_offload_config``
    adds or overrides ``kv_connector_extra_config`` keys, e.g. ``sync_load_budget_bytes``). The
    scheduler then builds the ``OffloadingConnector``'s scheduler side; drive it with
    :class:`EngineLoop`, which plays the worker side. ``kv_spec``: the KV shape (default: a
    one-float toy without offloading, :data:`LLAMA31_8B_KV` with it, so that byte counts mean
    something).
    """
    transfer = None
    if kv_offload_bytes is not None:
        transfer = KVTransferConfig(
            kv_connector="OffloadingConnector",
            kv_role="kv_both",
            kv_connector_extra_config={
                "cpu_bytes_to_use": int(kv_offload_bytes),
                "offload_prompt_only": False,
                **(kv_offload_config or {}),
            },
        )
        kv_spec = kv_spec or LLAMA31_8B_KV
    config = VllmConfig(
        model_config=model_config,
        scheduler_config=SchedulerConfig(
            max_model_len=model_config.max_model_len,
            is_encoder_decoder=False,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_chunked_prefill=True,
            policy=policy,
            async_scheduling=True,
        ),
        cache_config=CacheConfig(
            block_size=BLOCK_SIZE, cache_dtype="auto", enable_prefix_caching=prefix_caching
        ),
        device_config=DeviceConfig(device="cpu"),
        kv_transfer_config=transfer,
        additional_config=additional_config or {},
    )
    config.cache_config.num_gpu_blocks = num_blocks  # EngineCore sets it after profiling the GPU
    if kv_spec is not None:
        kv_cache_config = kv_spec.kv_cache_config(num_blocks)
    else:
        kv_cache_config = KVCacheConfig(
            num_blocks=num_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[
                KVCacheGroupSpec(
                    ["layer"],
                    FullAttentionSpec(
                        block_size=BLOCK_SIZE, num_kv_heads=1, head_size=1, dtype=torch.float32
                    ),
                )
            ],
        )
    return cls(
        vllm_config=config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(config),
        block_size=BLOCK_SIZE,
        log_stats=True,
    )


def make_request(
    request_id: str,
    prompt: int | Sequence[int],
    max_tokens: int,
    *,
    extra_args: dict[str, Any] | None = None,
    session_id: str | None = None,
    arrival_time: float | None = None,
) -> Request:
    """A request of ``prompt`` tokens; a count gives tokens of the request's own (no prefix shared
    with other requests); give token lists to share prefixes."""
    if isinstance(prompt, int):
        start = zlib.crc32(request_id.encode())
        tokens = [1 + (start + i) % 999 for i in range(prompt)]
    else:
        tokens = list(prompt)
    return Request(
        request_id=request_id,
        prompt_token_ids=tokens,
        sampling_params=SamplingParams(max_tokens=max_tokens, extra_args=extra_args),
        pooling_params=None,
        arrival_time=time.time() if arrival_time is None else arrival_time,
        session_id=session_id,
        block_hasher=_BLOCK_HASHER,
    )


@dataclass(frozen=True)
class KVLoad:
    """One CPU -> GPU load of a request's blocks from vLLM's KV offloading tier."""

    request_id: str
    blocks: int
    bytes: int
    #: a sync load is waited for before the forward pass and the request runs in the same batch;
    #: an async one (vLLM's default) lets the request resume in a later batch
    sync: bool


@dataclass
class Iteration:
    """One step of :class:`EngineLoop`."""

    #: with ``completed``, the batch whose model output this step applied; else the batch it just
    #: scheduled (put in flight; its output comes with a later step)
    scheduled: SchedulerOutput
    completed: bool
    #: request id -> tokens sampled this step
    sampled: dict[str, int]
    #: request id -> finish reason, for requests that finished with this step's output
    finished: dict[str, str]
    #: seconds in ``schedule()`` + ``update_from_output()``
    scheduler_seconds: float
    #: with ``completed`` and a connector: the loads ``scheduled`` ran on the worker (submitted at
    #: the start of the batch, before its forward pass)
    loads: list[KVLoad] = field(default_factory=list)

    @property
    def loaded_blocks(self) -> int:
        return sum(load.blocks for load in self.loads)

    @property
    def loaded_bytes(self) -> int:
        return sum(load.bytes for load in self.loads)


@dataclass
class _OffloadWorker:
    """The worker side of vLLM's ``OffloadingConnector`` (``offloading/worker.py``) without a GPU.

    It runs each batch's ``OffloadingConnectorMetadata`` when the batch executes and reports
    every job done through ``KVConnectorOutput`` as the real worker's ``get_finished`` does:
    ``jobs_to_flush`` (stores of requests preempted in this batch) complete in the batch; stores
    are deferred to the next batch (``wait_for_save``) and complete there; sync loads complete in
    the batch; async loads ``load_delay_steps`` batches later (0: in the batch), with their
    request in ``finished_recving``. Copies take no time here: a caller charges
    :attr:`Iteration.loads` to its own clock.
    """

    bytes_per_block: int
    load_delay_steps: int = 0
    #: blocks written to the CPU tier so far (stores and flushes)
    stored_blocks: int = 0
    _step: int = 0
    _deferred: set[int] = field(default_factory=set)  # this batch's stores: submitted with the next
    _in_flight: list[tuple[int, int, str | None]] = field(
        default_factory=list
    )  # (due, job, async load's req)

    def execute(self, meta: Any) -> tuple[KVConnectorOutput, list[KVLoad]]:
        self._step += 1
        done = OffloadingWorkerMetadata()
        loads: list[KVLoad] = []
        if meta is not None:
            assert isinstance(meta, OffloadingConnectorMetadata), type(meta)
            stores = dict(meta.store_jobs)
            for job in meta.jobs_to_flush or ():  # handle_preemptions: submit and wait now
                entry = stores.pop(job, None)
                in_flight = [f for f in self._in_flight if f[1] == job]
                if entry is None and job not in self._deferred and not in_flight:
                    continue  # already reported done (the scheduler has not seen it yet)
                if entry is not None:
                    self.stored_blocks += len(entry.src_spec.block_ids)
                self._deferred.discard(job)
                self._in_flight = [f for f in self._in_flight if f[1] != job]
                done.mark_completed(job)
        else:
            stores = {}
        # start_load_kv: the previous batch's stores, then this batch's loads
        self._in_flight += [(self._step, job, None) for job in self._deferred]
        self._deferred = set()
        for job, entry in (meta.load_jobs if meta is not None else {}).items():
            blocks = len(entry.dst_spec.block_ids)
            loads.append(KVLoad(entry.req_id, blocks, blocks * self.bytes_per_block, entry.sync))
            if entry.sync:
                done.mark_completed(job)
            else:
                self._in_flight.append((self._step + self.load_delay_steps, job, entry.req_id))
        # wait_for_save: this batch's stores go with the next batch
        for job, entry in stores.items():
            self.stored_blocks += len(entry.src_spec.block_ids)
            self._deferred.add(job)
        # get_finished
        received: set[str] = set()
        pending = []
        for due, job, request in self._in_flight:
            if due <= self._step:
                done.mark_completed(job)
                if request is not None:
                    received.add(request)
            else:
                pending.append((due, job, request))
        self._in_flight = pending
        output = KVConnectorOutput(
            finished_sending=set(),
            finished_recving=received,
            kv_connector_worker_meta=done if done.completed_jobs else None,
        )
        return output, loads

    def idle(self) -> bool:
        return not self._deferred and not self._in_flight


@dataclass
class EngineLoop:
    """EngineCore's batch-queue loop (two batches deep) with a stand-in for the GPU worker.

    The stand-in samples one token per scheduled request whose prompt is complete. When the
    scheduler has a KV connector (vLLM's ``OffloadingConnector``, see :func:`make_scheduler`),
    it also plays the connector's worker side (:class:`_OffloadWorker`): each batch's load and
    store jobs are reported done in its output, async loads ``load_delay_steps`` batches late,
    and the loop keeps stepping (batches with nothing scheduled, as EngineCore does) until no
    transfer is pending. A completed :class:`Iteration` lists the batch's CPU -> GPU loads.
    """

    scheduler: Scheduler
    tokens: dict[str, int] = field(default_factory=dict)
    finish_reasons: dict[str, str] = field(default_factory=dict)
    #: with a connector: async loads complete this many batches after the one that issued them
    load_delay_steps: int = 0
    _queue: deque[tuple[SchedulerOutput, ModelRunnerOutput, list[KVLoad]]] = field(default_factory=deque)
    _worker: _OffloadWorker | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if getattr(self.scheduler, "connector", None) is not None:
            groups = self.scheduler.kv_cache_config.kv_cache_groups
            per_block = sum(int(g.kv_cache_spec.page_size_bytes) * len(g.layer_names) for g in groups)
            self._worker = _OffloadWorker(per_block, self.load_delay_steps)

    @property
    def stored_blocks(self) -> int:
        """Blocks the stand-in worker wrote to the CPU tier so far (0 without a connector)."""
        return self._worker.stored_blocks if self._worker is not None else 0

    def _transfers_pending(self) -> bool:
        return self._worker is not None and not self._worker.idle()

    def busy(self) -> bool:
        return bool(self.scheduler.has_requests() or self._queue or self._transfers_pending())

    def step(self) -> Iteration | None:
        """Schedule the next batch and finish the one in flight; ``None`` when idle."""
        started = time.perf_counter()
        if self.scheduler.has_requests() or self._transfers_pending():
            scheduled = self.scheduler.schedule()
            self._queue.appendleft((scheduled, *self._model_output(scheduled)))
            executed = scheduled.total_num_scheduled_tokens > 0
            if len(self._queue) < 2 and (executed or self.scheduler.has_requests()):
                # one batch in flight: do not wait for it yet
                spent = time.perf_counter() - started
                return Iteration(scheduled, False, {}, {}, spent)
        if not self._queue:
            return None
        scheduled, output, loads = self._queue.pop()
        outputs = self.scheduler.update_from_output(scheduled, output)
        spent = time.perf_counter() - started
        sampled: dict[str, int] = {}
        finished: dict[str, str] = {}
        for engine_outputs in outputs.values():
            for out in engine_outputs.outputs:
                sampled[out.request_id] = len(out.new_token_ids)
                self.tokens[out.request_id] = self.tokens.get(out.request_id, 0) + len(out.new_token_ids)
                if out.finish_reason is not None:
                    finished[out.request_id] = str(out.finish_reason)
        self.finish_reasons.update(finished)
        return Iteration(scheduled, True, sampled, finished, spent, loads)

    def run(self, max_steps: int = 1_000_000) -> int:
        """Step until idle; the number of steps."""
        steps = 0
        while self.busy():
            self.step()
            steps += 1
            if steps >= max_steps:
                raise RuntimeError(f"no progress after {max_steps} steps")
        return steps

    def _model_output(self, scheduled: SchedulerOutput) -> tuple[ModelRunnerOutput, list[KVLoad]]:
        # taken right after schedule(): a request samples iff this chunk completes its prompt
        ids = list(scheduled.num_scheduled_tokens)
        requests = self.scheduler.requests
        sampled = [[] if requests[r].is_prefill_chunk else [TOKEN] for r in ids]
        kv_output: KVConnectorOutput | None = None
        loads: list[KVLoad] = []
        if self._worker is not None:
            kv_output, loads = self._worker.execute(scheduled.kv_connector_metadata)
        output = ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={r: i for i, r in enumerate(ids)},
            sampled_token_ids=sampled,
            kv_connector_output=kv_output,
        )
        return output, loads
