"""A real uvicorn server on loopback, in a background thread, per test configuration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from autellix.server import ServerConfig, create_app
from autellix.server.engines import Engine
from autellix.server.engines.vllm import free_port
from autellix.server.transport import uvicorn_options

#: The simulated engine's model name, and a short prompt, shared by the server tests.
MODEL = "autellix-sim"
MSG: list[Any] = [{"role": "user", "content": "Plan a trip to Paris in three steps."}]


@dataclass
class Running:
    url: str
    config: ServerConfig
    #: the clients :meth:`client` made, closed when the test ends (an open one leaks its sockets)
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30.0)
        kw.setdefault("api_key", self.config.api_keys[0] if self.config.api_keys else "x")
        client = openai.OpenAI(base_url=f"{self.url}/v1", **kw)
        self.clients.append(client)
        return client

    def http(self, **kw: Any) -> httpx.Client:
        kw.setdefault("timeout", 30.0)
        if self.config.api_keys:
            kw.setdefault("headers", {"Authorization": f"Bearer {self.config.api_keys[0]}"})
        return httpx.Client(base_url=self.url, **kw)

    def program(self, name: str) -> dict[str, Any]:
        with self.http() as h:
            r = h.get(f"/v1/programs/{name}")
            assert r.status_code == 200, r.text
            out: dict[str, Any] = r.json()
            return out


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    started: list[tuple[uvicorn.Server, threading.Thread]] = []
    running: list[Running] = []

    def start(on_engine: Engine | None = None, **options: Any) -> Running:
        """A server of ``ServerConfig(**options)``, on ``on_engine`` if given (else the config's)."""
        options.setdefault("time_scale", 0.01)
        config = ServerConfig(**options)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config, on_engine),
                # the deadlines and protocol of `autellix serve`
                **uvicorn_options(config, host="127.0.0.1", port=port, log_level="warning", lifespan="on"),
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        wait_for(lambda: server.started, timeout=60)
        running.append(Running(f"http://127.0.0.1:{port}", config))
        return running[-1]

    yield start
    for each in running:
        for client in each.clients:
            client.close()
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=10)


def finish_time(c: openai.OpenAI, program: str, done: dict[str, float]) -> threading.Thread:
    """Start a chat call of ``program`` in a thread that records when it finished. 100 tokens: ~0.7 s
    of engine time, 7 ms wall at the tests' time scale, so that two such calls sharing one slot end
    far enough apart for the client threads to see their order."""

    def run() -> None:
        c.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=100, extra_body={"program_id": program}
        )
        done[program] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
