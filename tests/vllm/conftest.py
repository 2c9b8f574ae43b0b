"""The real vLLM 0.33 scheduler on CPU (``autellix[vllm]``): skipped with a reason without vLLM.

The model is a ``config.json`` of a tiny LLaMA (no weights, no tokenizer, no hub); the model
runner is the harness's stand-in (one token per request per step: the only mock, for the GPU).
vLLM's model inspection cache goes to a temporary directory of the test session.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # torch and vLLM warn on import on a machine without CUDA
    warnings.simplefilter("ignore")
    pytest.importorskip("vllm", reason="vLLM is not installed: pip install 'autellix[vllm]'")
    from autellix.adapters import vllm as adapter
    from autellix.testing import vllm_harness as harness


@pytest.fixture(scope="session")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("vllm")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(root / "cache"))
    here = Path.cwd()
    os.chdir(root)  # vLLM inspects the model in a subprocess that imports from the cwd first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return harness.tiny_model_config(root / "tiny-llama")
    finally:
        os.chdir(here)


@dataclass
class Engine:
    """A scheduler, the engine loop around it, and a simulated clock: each step is ``tick`` s."""

    scheduler: Any
    loop: Any
    tick: float
    now: float = 0.0
    #: request ids in the order they finished
    finished: list[str] = field(default_factory=list)

    def add(
        self,
        request_id: str,
        prompt: int,
        max_tokens: int,
        *,
        program: str | None = None,
        session: str | None = None,
        **extra: Any,
    ) -> None:
        args = dict(extra, program_id=program) if program is not None else dict(extra)
        self.scheduler.add_request(
            harness.make_request(request_id, prompt, max_tokens, extra_args=args or None, session_id=session)
        )

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.now += self.tick
            iteration = self.loop.step()
            if iteration is not None:
                self.finished.extend(iteration.finished)

    def run(self, max_steps: int = 100_000) -> None:
        steps = 0
        while self.loop.busy():
            self.step()
            steps += 1
            assert steps < max_steps, "no progress"

    @property
    def free_blocks(self) -> int:
        return int(self.scheduler.kv_cache_manager.block_pool.get_num_free_blocks())


@pytest.fixture
def engine(model_config: Any) -> Callable[..., Engine]:
    """``engine(policy="plas", num_blocks=..., max_num_seqs=..., tick=0.03, stock=False, **settings)``:
    an :class:`AutellixScheduler` (``stock=True``: vLLM's own ``AsyncScheduler``)."""

    def make(
        policy: str = "plas",
        *,
        num_blocks: int = 256,
        max_num_seqs: int = 4,
        max_num_batched_tokens: int = 2048,
        tick: float = 0.03,
        stock: bool = False,
        **settings: Any,
    ) -> Engine:
        from vllm.v1.core.sched.async_scheduler import AsyncScheduler

        cls = AsyncScheduler if stock else adapter.AutellixScheduler
        scheduler = harness.make_scheduler(
            cls,
            model_config,
            num_blocks=num_blocks,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            additional_config={"autellix": {"policy": policy, **settings}},
        )
        e = Engine(scheduler, harness.EngineLoop(scheduler), tick)
        if not stock:
            scheduler.programs.clock = lambda: e.now
        return e

    return make


@pytest.fixture(autouse=True)
def _quiet_vllm() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
