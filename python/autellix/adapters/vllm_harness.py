"""Drive vLLM's real scheduler without a GPU, the way vLLM's own scheduler tests do.

Used by the plug-in's tests and by ``benches/bench_vllm_replay.py``: a tiny local model config (a
``config.json`` only: no weights, no tokenizer, no hub), a real ``VllmConfig`` on the CPU device,
the real scheduler and KV cache manager over ``num_blocks`` blocks, and :class:`EngineLoop`, the
EngineCore's batch-queue loop (``step_with_batch_queue``: ``schedule(N+1)`` before
``update_from_output(N)``) with a stand-in model runner that samples one token per request.

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
from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
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


def tiny_model_config(directory: Path, max_model_len: int = 32768) -> ModelConfig:
    """A ``ModelConfig`` for a 2-layer LLaMA described by a ``config.json`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(TINY_LLAMA))
    return ModelConfig(
        model=str(directory), skip_tokenizer_init=True, dtype="float16", max_model_len=max_model_len
    )


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
) -> Scheduler:
    """The real scheduler ``cls`` over ``num_blocks`` KV blocks of 16 tokens, built as EngineCore does."""
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
        additional_config=additional_config or {},
    )
    config.cache_config.num_gpu_blocks = num_blocks  # EngineCore sets it after profiling the GPU
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[
            KVCacheGroupSpec(
                ["layer"],
                FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=1, head_size=1, dtype=torch.float32),
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


@dataclass
class EngineLoop:
    """EngineCore's batch-queue loop (two batches deep) with a stand-in model runner."""

    scheduler: Scheduler
    tokens: dict[str, int] = field(default_factory=dict)
    finish_reasons: dict[str, str] = field(default_factory=dict)
    _queue: deque[tuple[SchedulerOutput, ModelRunnerOutput]] = field(default_factory=deque)

    def busy(self) -> bool:
        return bool(self.scheduler.has_requests() or self._queue)

    def step(self) -> Iteration | None:
        """Schedule the next batch and finish the one in flight; ``None`` when idle."""
        started = time.perf_counter()
        if self.scheduler.has_requests():
            scheduled = self.scheduler.schedule()
            self._queue.appendleft((scheduled, self._model_output(scheduled)))
            executed = scheduled.total_num_scheduled_tokens > 0
            if len(self._queue) < 2 and (executed or self.scheduler.has_requests()):
                # one batch in flight: do not wait for it yet
                spent = time.perf_counter() - started
                return Iteration(scheduled, False, {}, {}, spent)
        if not self._queue:
            return None
        scheduled, output = self._queue.pop()
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
        return Iteration(scheduled, True, sampled, finished, spent)

    def run(self, max_steps: int = 1_000_000) -> int:
        """Step until idle; the number of steps."""
        steps = 0
        while self.busy():
            self.step()
            steps += 1
            if steps >= max_steps:
                raise RuntimeError(f"no progress after {max_steps} steps")
        return steps

    def _model_output(self, scheduled: SchedulerOutput) -> ModelRunnerOutput:
        # taken right after schedule(): a request samples iff this chunk completes its prompt
        ids = list(scheduled.num_scheduled_tokens)
        requests = self.scheduler.requests
        sampled = [[] if requests[r].is_prefill_chunk else [TOKEN] for r in ids]
        return ModelRunnerOutput(
            req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)}, sampled_token_ids=sampled
        )
