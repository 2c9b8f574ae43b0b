"""End to end on a GPU: ``vllm serve`` with the autellix plug-in, and ``autellix serve --engine vllm``.

The model is the tiny LLaMA of :func:`autellix.testing.vllm_harness.write_tiny_model` with a
word-level tokenizer and random weights (``--load-format dummy``): no hub, no download. One
sequence runs at a time (``--max-num-seqs 1``), so the order in which calls finish is the order
the scheduler chose:

1. program A's long call runs to its end: A has seconds of service (the lowest queue level);
2. program C's call starts (the test waits for its first token), so the next calls queue;
3. A's second call arrives, then program B's first call;
4. under PLAS, B (no service yet) goes before A's second call, which arrived first; under FCFS
   (the control, same server with ``AUTELLIX_POLICY=fcfs``) arrival order wins.

Run with ``python -m pytest -m gpu tests/gpu``; skipped with a reason without CUDA or vLLM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(1200)]

torch = pytest.importorskip("torch", reason="needs torch: pip install 'autellix[vllm]'")
pytest.importorskip("vllm", reason="needs vLLM: pip install 'autellix[vllm]'")
openai = pytest.importorskip("openai", reason="needs the openai client: pip install 'autellix[client]'")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from autellix.server.engines.vllm import SCHEDULER_CLS, free_port  # noqa: E402
from autellix.testing.vllm_harness import write_tiny_model  # noqa: E402

MODEL = "tiny-llama"
#: random weights, one sequence at a time, no CUDA graphs (a faster start)
VLLM_ARGS = ["--load-format", "dummy", "--max-model-len", "4096", "--max-num-seqs", "1", "--enforce-eager"]
VLLM_ARGS += ["--gpu-memory-utilization", "0.3", "--served-model-name", MODEL]
#: tokens of A's first call: seconds of decoding, so that the other calls queue behind it
LONG = 3000
SHORT = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("gpu") / MODEL, tokenizer=True)


@contextmanager
def server(argv: list[str], url: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until ``url``/health answers (10 min at most), then SIGINT it on exit."""
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"{argv[:4]} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{url}/health did not answer in 10 minutes"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def finish_order(url: str, identity: Callable[[str], dict[str, Any]]) -> list[str]:
    """Run A1 (long) alone, then C1 (half as long) and A2, B1 (short) behind it; the call names in
    the order they ended."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
    done: list[str] = []
    started = threading.Event()

    def call(name: str, program: str, tokens: int) -> None:
        extra = {"ignore_eos": True, "min_tokens": tokens, **identity(program)}
        stream = client.completions.create(
            model=MODEL, prompt="w1 w2 w3 w4", max_tokens=tokens, stream=True, extra_body=extra
        )
        for _ in stream:
            started.set()
        done.append(name)

    call("A1", "A", LONG)
    started.clear()
    threads = [threading.Thread(target=call, args=("C1", "C", LONG // 2))]
    threads[0].start()
    assert started.wait(120), "C's call produced no token"
    for name, program in (("A2", "A"), ("B1", "B")):
        threads.append(threading.Thread(target=call, args=(name, program, SHORT)))
        threads[-1].start()
        time.sleep(0.3)  # A2 arrives before B1
    for thread in threads:
        thread.join(timeout=600)
    assert sorted(done) == ["A1", "A2", "B1", "C1"], done
    return done


def vllm_xargs(program: str) -> dict[str, Any]:
    return {"vllm_xargs": {"program_id": program}}


@pytest.mark.parametrize("policy", ["plas", "fcfs"])
def test_vllm_serve_with_the_plugin_orders_programs(model_dir: Path, policy: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir), "--port", str(port)]
    with server([*argv, "--scheduler-cls", SCHEDULER_CLS, *VLLM_ARGS], url, {"AUTELLIX_POLICY": policy}):
        order = finish_order(url, vllm_xargs)
    if policy == "plas":
        assert order.index("B1") < order.index("A2"), order  # the program with less service first
    else:
        assert order.index("A2") < order.index("B1"), order  # arrival order


def test_autellix_serve_engine_vllm_end_to_end(model_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "autellix", "serve", "--engine", "vllm", "--vllm-model", str(model_dir)]
    argv += ["--model", MODEL, "--port", str(port), "--policy", "plas"]
    argv += ["--vllm-args=" + " ".join(a for a in VLLM_ARGS if a not in ("--served-model-name", MODEL))]
    with server(argv, url) as front:
        order = finish_order(url, lambda program: {"program_id": program})
        assert order.index("B1") < order.index("A2"), order
        entry = httpx.get(f"{url}/v1/programs/A").json()
        assert entry["finished_calls"] == 2 and entry["attained_service"] > 0
        metrics = httpx.get(f"{url}/metrics").text
        assert 'autellix_calls_total{finish_reason="length"} 4.0' in metrics
        # the vLLM server: a child of the front, in a process group of its own with vLLM's workers
        children = subprocess.run(
            ["pgrep", "-P", str(front.pid)], capture_output=True, text=True
        ).stdout.split()
        assert children, "the front started no vLLM server"
    # the front stopped its vLLM server with it: nothing of its process group is left
    time.sleep(1)
    for child in children:
        assert subprocess.run(["pgrep", "-g", child], capture_output=True).returncode == 1
