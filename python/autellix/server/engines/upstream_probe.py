"""Active health checks of the ``openai`` engine's upstreams: a periodic ``GET {base}/health``.

An upstream that answers ``/health`` with 404 (a server without the route) is asked
``GET {base}/v1/models`` instead, from then on. A check **fails** when no answer comes within its
timeout (a killed, stopped or wedged server) or the answer is a 5xx; any other answer passes
(a 401 on ``/v1/models`` still says the server is up and answering). Checks run on a session of
their own, so that a busy upstream's full connection pool cannot delay them into a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import aiohttp

_log = logging.getLogger(__name__)

#: the route asked when an upstream has no ``/health``
FALLBACK_PATH = "/v1/models"


class HealthProbe:
    """Checks every upstream each ``interval`` seconds and reports ``report(upstream, ok)``."""

    def __init__(
        self,
        upstreams: Sequence[str],
        report: Callable[[int, bool], None],
        *,
        interval: float,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.upstreams = list(upstreams)
        self.paths = ["/health"] * len(self.upstreams)
        self.report = report
        self.interval = interval
        self.timeout = timeout
        self._headers = headers or {}
        self._task: asyncio.Task[None] | None = None
        self._client: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._task is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), headers=self._headers
            )
            self._task = asyncio.get_running_loop().create_task(self._run(), name="autellix-health-checks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _run(self) -> None:
        while True:  # the first round at once: an upstream down at startup is out before any call
            results = await asyncio.gather(*(self.check(i) for i in range(len(self.upstreams))))
            for upstream, ok in enumerate(results):
                try:
                    self.report(upstream, ok)
                except Exception:  # a bug in one report must not end the checks
                    _log.exception("health check report for upstream %s failed", upstream)
            await asyncio.sleep(self.interval)

    async def check(self, upstream: int) -> bool:
        """Whether ``upstream`` passes one check."""
        assert self._client is not None, "the probe is not started"
        try:
            status = await self._get(upstream)
            if status == 404 and self.paths[upstream] != FALLBACK_PATH:
                self.paths[upstream] = FALLBACK_PATH
                status = await self._get(upstream)
        except (aiohttp.ClientError, TimeoutError):
            return False
        return status < 500

    async def _get(self, upstream: int) -> int:
        assert self._client is not None
        async with self._client.get(self.upstreams[upstream] + self.paths[upstream]) as response:
            await response.read()
            return response.status
