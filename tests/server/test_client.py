"""``autellix.Client`` and ``autellix.AsyncClient`` against a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from autellix import AsyncClient, Client
from autellix.client import AsyncProgram, AsyncThread

from .conftest import MODEL, MSG, Running

Serve = Callable[..., Running]


def test_program_tags_calls_and_finishes_on_exit(serve: Serve) -> None:
    s = serve(policy="atlas", api_keys=("secret",))
    with Client(f"{s.url}/v1", api_key="secret", max_retries=0) as client:
        with client.program("agent") as p:
            first = p.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3)
            a, b = p.thread("a"), p.thread("b")
            with ThreadPoolExecutor(2) as pool:
                outs = list(
                    pool.map(
                        lambda t: t.chat.completions.create(
                            model=MODEL,
                            messages=MSG,
                            max_tokens=3,
                            extra_headers={"X-Autellix-Parent-Ids": first.id},
                        ),
                        (a, b),
                    )
                )
            assert all(o.usage is not None and o.usage.completion_tokens == 3 for o in outs)
            p.completions.create(model=MODEL, prompt="hi", max_tokens=2)
            entry = p.info()
            assert entry["id"] == "agent"
            assert entry["finished_calls"] == 4
            assert entry["threads"] >= 3
            assert s.program("agent")["finished_calls"] == 4
        assert p.finished
        with s.http() as h:
            assert h.get("/v1/programs/agent").status_code == 404
        # a program that never made a call finishes quietly
        with client.program() as q:
            assert q.id.startswith("program-")
        assert q.finish() == []


def test_async_program_tags_calls_and_finishes_on_exit(serve: Serve) -> None:
    s = serve(policy="atlas", api_keys=("secret",))

    async def main() -> None:
        async with AsyncClient(f"{s.url}/v1", api_key="secret", max_retries=0) as client:
            async with client.program("async-agent") as p:
                assert isinstance(p, AsyncProgram)
                first = await p.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3)
                a, b = p.thread("a"), p.thread("b")
                assert isinstance(a, AsyncThread)
                assert a.headers == {"X-Autellix-Program-Id": "async-agent", "X-Autellix-Thread-Id": "a"}
                outs = await asyncio.gather(
                    *(
                        t.chat.completions.create(
                            model=MODEL,
                            messages=MSG,
                            max_tokens=3,
                            extra_headers={"X-Autellix-Parent-Ids": first.id},
                        )
                        for t in (a, b)
                    )
                )
                assert all(o.usage is not None and o.usage.completion_tokens == 3 for o in outs)
                stream = await p.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4, stream=True)
                async with stream:
                    text = [c.choices[0].delta.content async for c in stream if c.choices]
                assert "".join(t for t in text if t)
                entry = await p.info()
                assert entry["id"] == "async-agent"
                assert entry["finished_calls"] == 4
                assert entry["threads"] >= 3
            assert p.finished
            assert await p.finish() == []
            with s.http() as h:
                assert h.get("/v1/programs/async-agent").status_code == 404
            # a program that never made a call finishes quietly
            async with client.program() as q:
                assert q.id.startswith("program-")
            assert q.finished
            assert await q.finish() == []

    asyncio.run(main())


def test_async_client_close_without_with(serve: Serve) -> None:
    s = serve()

    async def main() -> list[str]:
        client = AsyncClient(f"{s.url}/v1", max_retries=0)
        try:
            p = client.program("never-used")
            return await p.finish()
        finally:
            await client.close()

    assert asyncio.run(main()) == []


def test_import_autellix_does_not_import_openai() -> None:
    code = (
        "import sys, autellix; assert 'openai' not in sys.modules;"
        " print(autellix.Client.__name__, autellix.AsyncClient.__name__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Client AsyncClient"
