"""``autellix.Client`` against a real server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from autellix import Client

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


def test_import_autellix_does_not_import_openai() -> None:
    code = "import sys, autellix; assert 'openai' not in sys.modules; print(autellix.Client.__name__)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Client"
