"""``gpu_vllm_e2e.py``'s servers and client: stock ``vllm serve``, or ``autellix serve --engine
vllm`` (which starts ``vllm serve`` with the plug-in), and a BFCL-style chat replay with the
official ``openai`` client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _procs import autellix_serve, free_port, loopback_url

from autellix.sim.spec import ProgramSpec

SERVED = "e2e"
#: side -> the plug-in's kv_policy (None: stock vLLM, no plug-in, no front)
SIDES: dict[str, str | None] = {"stock": None, "lru": "lru", "autellix": "autellix"}


# -- servers ---------------------------------------------------------------------------------------


def engine_args(args: argparse.Namespace) -> list[str]:
    """The ``vllm serve`` engine settings every side shares."""
    return [
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        *("--num-gpu-blocks-override", str(args.num_gpu_blocks)),
        *("--max-num-seqs", str(args.max_num_seqs)),
        *("--max-model-len", str(args.max_model_len)),
    ]


def stock_argv(model: str, port: int, args: argparse.Namespace) -> list[str]:
    """Stock ``vllm serve``: vLLM's own scheduler."""
    argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model, "--host", "127.0.0.1"]
    return [*argv, "--port", str(port), "--served-model-name", SERVED, *engine_args(args)]


def front_argv(model: str, port: int, args: argparse.Namespace) -> list[str]:
    """``autellix serve --engine vllm``: it starts ``vllm serve`` with the plug-in (PLAS) and sends
    it each program's finish hint; ``kv_policy`` goes in the environment (``AUTELLIX_KV_POLICY``)."""
    argv = autellix_serve(port, "--engine", "vllm", "--vllm-model", model, "--model", SERVED)
    startup = str(args.startup_timeout)
    return [
        *argv,
        "--policy",
        "plas",
        "--vllm-startup-timeout",
        startup,
        f"--vllm-args={shlex.join(engine_args(args))}",
    ]


@contextlib.contextmanager
def launched(
    argv: list[str], url: str, log: Path, timeout: float, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running (its output in ``log``) once ``url``/health answers 200; stopped after
    (its whole process group: ``autellix serve`` stops its vLLM children itself on SIGTERM)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"{argv[2:5]} exited with status {proc.returncode}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=2.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url} did not answer /health within {timeout:.0f} s (log: {log})")
                time.sleep(1.0)
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()


def prefix_cache_counters(url: str) -> dict[str, float] | None:
    """vLLM's prefix-cache queries and hits so far (tokens), from its Prometheus ``/metrics``
    (None where the server shows no such counters)."""
    text = httpx.get(url + "/metrics", timeout=10.0).text
    out = {"queries": 0.0, "hits": 0.0}
    found = False
    for key in out:
        for m in re.finditer(rf"^vllm:prefix_cache_{key}_total(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M):
            out[key] += float(m.group(1))
            found = True
    return out if found else None


# -- the replay ------------------------------------------------------------------------------------


def filler(rng: np.random.Generator, words: int) -> str:
    return " ".join(f"w{n}" for n in rng.integers(0, 5000, size=max(1, words)))


async def run_program(
    client: Any, http: httpx.AsyncClient | None, spec: ProgramSpec, start: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One program as a chat: each call continues its first parent's conversation."""
    await asyncio.sleep(max(0.0, start + spec.arrival - time.perf_counter()))
    arrived = time.perf_counter()
    chats: dict[int, list[dict[str, str]]] = {}
    context: dict[int, int] = {}  # call -> its prompt + completion tokens
    history = hits = generated = 0
    headers = {"X-Autellix-Program-Id": f"prog-{spec.id}"} if http is not None else {}
    done: dict[int, asyncio.Event] = {c.index: asyncio.Event() for c in spec.calls}

    async def call(index: int) -> None:
        nonlocal history, hits, generated
        c = spec.calls[index]
        for parent in c.parents:
            await done[parent].wait()
        await asyncio.sleep(c.tool_wait)
        rng = np.random.default_rng([args.seed, spec.id, index])
        base = list(chats[c.parents[0]]) if c.parents else []
        text = filler(rng, int((c.prompt_tokens - c.prefix_tokens) * args.token_scale))
        messages = [*base, {"role": "user", "content": text}]
        r = await client.chat.completions.create(
            model=SERVED,
            messages=messages,
            max_tokens=c.output_tokens,
            temperature=0.0,
            extra_headers=headers,
            extra_body={"ignore_eos": True, "min_tokens": c.output_tokens},
        )
        usage = r.usage
        chats[index] = [*messages, {"role": "assistant", "content": r.choices[0].message.content or ""}]
        context[index] = usage.prompt_tokens + usage.completion_tokens
        generated += usage.completion_tokens
        if c.parents:
            details = usage.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details is not None else 0
            reusable = context[c.parents[0]]
            history += reusable
            hits += min(cached, reusable)
        done[index].set()

    await asyncio.gather(*(call(c.index) for c in spec.calls))
    if http is not None:  # the finish hint: the front passes it to the plug-in, which frees the holds
        (await http.post(f"/v1/programs/prog-{spec.id}/finish")).raise_for_status()
    latency = time.perf_counter() - arrived
    return {"latency_s": latency, "output_tokens": generated, "history_tokens": history, "hit_tokens": hits}


async def replay(
    url: str, programs: list[ProgramSpec], args: argparse.Namespace, front: bool
) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="e2e", timeout=3600.0, max_retries=0)
    http = httpx.AsyncClient(base_url=url, timeout=60.0) if front else None
    start = time.perf_counter()
    try:
        outcomes = await asyncio.gather(*(run_program(client, http, p, start, args) for p in programs))
    finally:
        await client.close()
        if http is not None:
            await http.aclose()
    per_token = [o["latency_s"] / max(1, o["output_tokens"]) for o in outcomes]
    history = sum(o["history_tokens"] for o in outcomes)
    hits = sum(o["hit_tokens"] for o in outcomes)
    return {
        "per_token_s": {
            "mean": float(np.mean(per_token)),
            "p50": float(np.percentile(per_token, 50)),
            "p99": float(np.percentile(per_token, 99)),
            "worst": float(np.max(per_token)),
        },
        "history_tokens": history,
        "history_hit_tokens": hits,
        "history_hit_share": hits / history if history else math.nan,
        "wall_s": time.perf_counter() - start,
    }


def run_side(
    side: str, model: str, programs: list[ProgramSpec], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """One side on a fresh server: the replay's figures, and vLLM's own prefix-cache hit rate over
    all prompt tokens where the server's ``/metrics`` shows it."""
    kv_policy = SIDES[side]
    port = free_port()
    url = loopback_url(port)
    if kv_policy is None:
        argv, env = stock_argv(model, port, args), None
    else:
        argv, env = front_argv(model, port, args), {**os.environ, "AUTELLIX_KV_POLICY": kv_policy}
    with launched(argv, url, out / f"{side}.log", args.startup_timeout + 60.0, env):
        before = prefix_cache_counters(url)
        result = asyncio.run(replay(url, programs, args, front=kv_policy is not None))
        after = prefix_cache_counters(url)
    rate = math.nan
    if before is not None and after is not None and after["queries"] > before["queries"]:
        rate = (after["hits"] - before["hits"]) / (after["queries"] - before["queries"])
    result["prefix_cache_hit_rate"] = rate
    return result
