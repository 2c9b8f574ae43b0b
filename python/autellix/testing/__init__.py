"""Harnesses for autellix's tests and benchmarks; nothing here is imported by the serving path.

* :mod:`autellix.testing.vllm_harness`: vLLM 0.33's real scheduler driven without a GPU (a tiny
  model config, the scheduler and KV cache manager, and EngineCore's batch-queue loop with a
  stand-in model runner).
* :mod:`autellix.testing.vllm_replay`: an agent workload replayed through that scheduler on the
  cost model's simulated clock (``benches/bench_vllm_replay.py``).
* :mod:`autellix.testing.vllm_swap`: vLLM's own KV block copies (``benches/bench_swap.py``).

The first two import vLLM (``pip install 'autellix[vllm]'``), the last torch; this package itself
imports neither.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["quiet"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Ignore warnings inside the block: torch and vLLM warn on import, and on some calls, on a
    machine without CUDA."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
