"""The package's layering (docs/architecture.md), checked statically and at import time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    """import-linter's contracts in pyproject.toml: each layer imports only the layers below it,
    and the vLLM plug-in imports no web framework, HTTP client, metrics library or simulator."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports is missing: pip install '.[test]' installs import-linter")
    proc = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


# Stand-ins for the vLLM modules the plug-in imports (vLLM itself imports FastAPI and aiohttp,
# which would hide what autellix's own code pulls in). prometheus_client is allowed: the plug-in's
# KV metrics use it, and vLLM has loaded it in that process anyway.
_PLUGIN_IMPORT = textwrap.dedent(
    """
    import sys, types

    def stub(name, **attrs):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module

    class AsyncScheduler: ...
    class RequestQueue: ...
    class Request: ...
    class RequestStatus:
        FINISHED_STOPPED = FINISHED_LENGTH_CAPPED = FINISHED_REPETITION = None
    class FullAttentionSpec: ...
    class MLAAttentionSpec: ...
    class UniformTypeKVCacheSpecs: ...

    for name in ("vllm", "vllm.v1", "vllm.v1.core", "vllm.v1.core.sched"):
        stub(name)
    sys.modules["vllm"].__version__ = "0.33.0"
    stub("vllm.v1.core.sched.async_scheduler", AsyncScheduler=AsyncScheduler)
    stub("vllm.v1.core.sched.request_queue", RequestQueue=RequestQueue)
    stub("vllm.v1.request", Request=Request, RequestStatus=RequestStatus)
    stub("vllm.v1.core.kv_cache_utils", get_block_hash=lambda key: key)
    stub(
        "vllm.v1.kv_cache_interface",
        FullAttentionSpec=FullAttentionSpec,
        MLAAttentionSpec=MLAAttentionSpec,
        UniformTypeKVCacheSpecs=UniformTypeKVCacheSpecs,
    )

    import autellix.adapters.vllm

    heavy = ("fastapi", "starlette", "uvicorn", "aiohttp", "autellix.sim", "autellix.server",
             "numpy", "torch")
    print(sorted(name for name in heavy if name in sys.modules))
    """
)


def test_the_vllm_plugin_imports_only_what_it_needs() -> None:
    """Importing ``autellix.adapters.vllm`` (into vLLM's EngineCore process) loads none of the
    server's or simulator's dependencies."""
    proc = subprocess.run(
        [sys.executable, "-c", _PLUGIN_IMPORT], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
