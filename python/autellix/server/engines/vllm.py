""":class:`VllmEngine`: ``autellix serve --engine vllm``, vLLM servers launched and fronted by autellix.

The engine starts ``vllm serve MODEL`` child processes on loopback ports, each with the autellix
scheduler plug-in (``--scheduler-cls autellix.adapters.vllm.AutellixScheduler``, policy and
program TTL passed in ``--additional-config``), waits until every one answers ``/health``, and
then works as an :class:`~autellix.server.upstream.UpstreamEngine` in front of them with the
program and thread ids forwarded (``vllm_xargs``): autellix's queue and program-aware balancer
decide which replica gets a call and when, the plug-in orders it inside vLLM against the KV
cache. Stopping the engine stops the children (SIGTERM to their process group, SIGKILL after
``STOP_GRACE_S``).

Why child processes rather than vLLM's ``AsyncLLM`` in this process: vLLM's own OpenAI layer
(chat templates, tokenization, tool and reasoning parsers, sampling fields) is then served
unchanged, and the scheduling runs in vLLM's EngineCore process either way. A loopback hop costs
about a millisecond (``benches/RESULTS.md``, "Serving"); users who want none run ``vllm serve``
with the plug-in directly.

Each child's output is relayed to this process's stderr, prefixed ``[vllm N]``. A child that
exits before it is ready fails :meth:`VllmEngine.start` with :class:`VllmStartError` quoting its
last lines; one that dies later makes ``/health`` answer 503 and its calls fail with 502.

**The finish hint.** ``POST /v1/programs/{id}/finish`` (and the end of an anonymous program)
reaches the plug-in through its control channel (:mod:`autellix.adapters.control`): each child
gets a unix socket path in a private (0700) temporary directory as the plug-in setting
``control`` (its ``AUTELLIX_CONTROL`` environment variable), and :meth:`VllmEngine.end_program`
writes ``{"finish": NAME}`` there for every replica that served the program, ``NAME`` being the
program id as it was forwarded (qualified by the tenant when API keys are on). The write runs in
a background task with a short timeout; a child that cannot be reached is logged and the finish
goes on (the plug-in then ends the program at its TTL, as it does for plain ``vllm serve`` users).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from autellix._core import SchedulerConfig
from autellix.adapters import control
from autellix.adapters.settings import PluginSettings
from autellix.exceptions import ConfigError, VllmStartError
from autellix.server.config import VLLM_MAX_INFLIGHT, ServerConfig
from autellix.server.engines.base import CallHandle
from autellix.server.engines.upstream import UpstreamEngine
from autellix.server.protocol import ChatCompletionRequest, CompletionRequest

_log = logging.getLogger(__name__)

#: the plug-in every child runs
SCHEDULER_CLS = "autellix.adapters.vllm.AutellixScheduler"
#: seconds a child gets to exit after SIGTERM before it is killed
STOP_GRACE_S = 30.0
#: lines of a child's output quoted when it fails to start
_TAIL_LINES = 15
#: seconds a finish hint may take to reach a child's control socket (connect + write)
CONTROL_TIMEOUT_S = 1.0


_CORE = SchedulerConfig()


@dataclass(frozen=True)
class VllmLaunch:
    """How the ``vllm`` engine starts its vLLM servers."""

    #: model path or name, as ``vllm serve`` takes it
    model: str
    #: the model name clients send (``--served-model-name``)
    served_name: str
    #: scheduling policy of the plug-in (and of autellix's queue in front)
    policy: str = _CORE.policy
    #: seconds an idle program stays in the plug-in's process table
    program_ttl: float = _CORE.program_ttl
    #: first MLFQ boundary of the ladder (``None``: the core's default ladder)
    first_boundary: float | None = None
    #: anti-starvation beta (``None``: promotion off)
    starvation_beta: float | None = _CORE.starvation_beta
    #: extra ``vllm serve`` arguments, e.g. ``("--max-num-seqs", "128")``
    args: tuple[str, ...] = ()
    #: vLLM servers started; calls are balanced over them
    replicas: int = 1
    #: GPUs per server (its ``CUDA_VISIBLE_DEVICES``, consecutive groups; only set with replicas > 1)
    gpus_per_replica: int = 1
    #: seconds a server may take to load its model and answer ``/health``
    startup_timeout: float = 900.0

    @classmethod
    def from_config(cls, config: ServerConfig) -> VllmLaunch:
        """How ``autellix serve`` started with ``config`` launches its vLLM servers."""
        if not config.vllm_model:
            raise ConfigError("the vllm engine needs a vLLM model")
        return cls(
            model=config.vllm_model,
            served_name=config.model,
            policy=config.policy,
            program_ttl=config.program_ttl,
            first_boundary=config.first_boundary,
            starvation_beta=config.starvation_beta,
            args=config.vllm_args,
            replicas=config.vllm_replicas,
            gpus_per_replica=config.vllm_gpus_per_replica,
            startup_timeout=config.vllm_startup_timeout,
        )

    def plugin_settings(self) -> PluginSettings:
        """What the plug-in is told (its ``--additional-config``)."""
        return PluginSettings(
            policy=self.policy,
            first_boundary=self.first_boundary,
            starvation_beta=self.starvation_beta,
            program_ttl=self.program_ttl,
        )

    def scheduler_config(self) -> SchedulerConfig:
        """The config of the plug-in's core, which autellix's queue in front shares."""
        return self.plugin_settings().scheduler_config()

    def argv(self, port: int) -> list[str]:
        """The ``vllm serve`` command line of the server on ``port``."""
        settings = self.plugin_settings()
        plugin = {
            "autellix": {
                "policy": settings.policy,
                "program_ttl": settings.program_ttl,
                "first_boundary": settings.first_boundary,
                "starvation_beta": settings.starvation_beta,
            }
        }
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.cli.main",
            "serve",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            self.served_name,
            "--scheduler-cls",
            SCHEDULER_CLS,
            "--additional-config",
            json.dumps(plugin),
            *self.args,
        ]

    def env(
        self, replica: int, base: Mapping[str, str] | None = None, control: str | None = None
    ) -> dict[str, str]:
        """The environment of server ``replica``: this process's, with its own GPUs when there
        are several servers (out of the GPUs ``CUDA_VISIBLE_DEVICES`` lists, else 0, 1, ...), a
        fresh ``PROMETHEUS_MULTIPROC_DIR`` unless one is set, and ``control``, the unix socket its
        plug-in listens on for finish hints, as the plug-in setting ``AUTELLIX_CONTROL``."""
        env = dict(os.environ if base is None else base)
        env.pop("AUTELLIX_CONTROL", None)  # never another server's (the front's own environment)
        if control is not None:
            env["AUTELLIX_CONTROL"] = control
        if self.replicas > 1:
            visible = env.get("CUDA_VISIBLE_DEVICES")
            gpus = (
                visible.split(",")
                if visible
                else [str(i) for i in range(self.replicas * self.gpus_per_replica)]
            )
            group = gpus[replica * self.gpus_per_replica : (replica + 1) * self.gpus_per_replica]
            if len(group) < self.gpus_per_replica:
                raise VllmStartError(
                    f"{self.replicas} replicas x {self.gpus_per_replica} GPUs need "
                    f"{self.replicas * self.gpus_per_replica} GPUs; CUDA_VISIBLE_DEVICES lists {len(gpus)}"
                )
            env["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            # The plug-in's autellix:* metrics live in vLLM's EngineCore process: prometheus_client's
            # multiprocess mode brings them to the server's /metrics (a fresh directory per launch,
            # as vLLM asks: values left from an earlier run would be read too).
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"autellix-vllm{replica}-metrics-")
        return env


class VllmProcess:
    """One ``vllm serve`` child: started, watched until healthy, stopped with its process group."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], url: str) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.url = url
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._process: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, timeout: float) -> None:
        """Start the child and wait until ``/health`` answers 200 (:class:`VllmStartError` if it
        exits first or takes longer than ``timeout`` seconds; the child is stopped then)."""
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches vLLM's workers too
        )
        self._relay = asyncio.create_task(self._relay_output(), name=f"autellix-{self.name}-output")
        try:
            await self._wait_healthy(timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_healthy(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            while True:
                if self._process.returncode is not None:
                    if self._relay is not None:  # let the last lines arrive
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(asyncio.shield(self._relay), 5)
                    raise VllmStartError(
                        f"{self.name} exited with code {self._process.returncode} before it was ready "
                        f"({' '.join(self.argv[1:5])} ...); its last output:\n" + "\n".join(self.tail)
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with client.get(self.url + "/health") as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise VllmStartError(f"{self.name} did not answer {self.url}/health within {timeout:g} s")
                await asyncio.sleep(0.5)

    async def _relay_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            print(f"[{self.name}] {line}", file=sys.stderr, flush=True)

    async def stop(self) -> None:
        """SIGTERM to the child's process group, SIGKILL after :data:`STOP_GRACE_S`."""
        process = self._process
        if process is not None and process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except asyncio.TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        if self._relay is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._relay, 5)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def free_port() -> int:
    """A TCP port free on loopback now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VllmEngine(UpstreamEngine):
    """``vllm serve`` children with the autellix plug-in, behind autellix's queue and balancer.

    ``argv`` builds a child's command line from its port (default: :meth:`VllmLaunch.argv`); tests
    on machines without a GPU pass a stand-in server's command there.
    """

    def __init__(
        self,
        launch: VllmLaunch,
        *,
        max_inflight: int = VLLM_MAX_INFLIGHT,
        max_queued: int = 1024,
        balancer: str = "program-aware",
        argv: Callable[[int], Sequence[str]] | None = None,
    ) -> None:
        ports = [free_port() for _ in range(launch.replicas)]
        super().__init__(
            [f"http://127.0.0.1:{port}" for port in ports],
            launch.scheduler_config(),
            max_inflight=max_inflight,
            max_queued=max_queued,
            balancer=balancer,
            forward_identity=True,
        )
        if argv is None and importlib.util.find_spec("vllm") is None:
            raise VllmStartError("the vllm engine needs vLLM: pip install 'autellix[vllm]'")
        self.launch = launch
        command = argv or launch.argv
        # one private directory per child (mkdtemp: 0700), its plug-in's control socket in it
        self._control_dirs = [
            tempfile.mkdtemp(prefix=f"autellix-vllm{i}-control-") for i in range(len(ports))
        ]
        #: each child's control socket (the plug-in setting ``control``)
        self.controls = [os.path.join(d, "control.sock") for d in self._control_dirs]
        self.processes = [
            VllmProcess(f"vllm {i}", command(port), launch.env(i, control=self.controls[i]), url)
            for i, (port, url) in enumerate(zip(ports, self.upstreams, strict=True))
        ]
        #: core program id -> the name its calls were forwarded under, and the replicas they reached
        self._forwarded_names: dict[int, str] = {}
        self._served: dict[int, set[int]] = {}
        self._hints: set[asyncio.Task[None]] = set()

    @property
    def healthy(self) -> bool:
        return all(process.alive for process in self.processes)

    async def start(self) -> None:
        results = await asyncio.gather(
            *(process.start(self.launch.startup_timeout) for process in self.processes),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await asyncio.gather(*(process.stop() for process in self.processes))
            raise failures[0]
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._hints:  # finish hints under way: each is bounded by CONTROL_TIMEOUT_S
            await asyncio.gather(*self._hints, return_exceptions=True)
        await asyncio.gather(*(process.stop() for process in self.processes))
        for directory in self._control_dirs:
            shutil.rmtree(directory, ignore_errors=True)

    # -- the finish hint --------------------------------------------------------------------

    def submit(
        self,
        program: int,
        prompt_tokens: int,
        max_tokens: int,
        *,
        thread: int = 0,
        parents: Sequence[int] = (),
        limit_reason: str = "length",
        body: ChatCompletionRequest | CompletionRequest | None = None,
    ) -> CallHandle:
        handle = super().submit(
            program,
            prompt_tokens,
            max_tokens,
            thread=thread,
            parents=parents,
            limit_reason=limit_reason,
            body=body,
        )
        # the name the plug-in knows the program by (Server.submit qualified it by its tenant);
        # a call without one is a program of its own there, which ends with the call
        if body is not None and body.program_id is not None:
            self._forwarded_names[program] = body.program_id
        return handle

    async def _forward(self, upstream: int, handle: CallHandle, level: int) -> None:
        if handle.program in self._forwarded_names:  # every replica it reaches (retries too)
            self._served.setdefault(handle.program, set()).add(upstream)
        await super()._forward(upstream, handle, level)

    def end_program(self, program: int) -> list[int]:
        aborted = super().end_program(program)
        name = self._forwarded_names.pop(program, None)
        served = self._served.pop(program, set())
        if name is not None and served:
            paths = [self.controls[upstream] for upstream in sorted(served)]
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a synchronous caller): nothing to spare it
                for path in paths:
                    _send_now(path, {"finish": name})
            else:
                task = loop.create_task(_send(paths, {"finish": name}), name="autellix-finish-hint")
                self._hints.add(task)
                task.add_done_callback(self._hints.discard)
        return aborted

    def _expired(self, programs: list[int]) -> None:
        # the plug-in expires them by the same TTL: nothing to send
        for program in programs:
            self._forwarded_names.pop(program, None)
            self._served.pop(program, None)
        super()._expired(programs)


async def _send(paths: Sequence[str], message: Mapping[str, object]) -> None:
    """Write ``message`` to each child's control socket (each data-parallel engine's); a child
    that cannot be reached within :data:`CONTROL_TIMEOUT_S` is logged and skipped."""
    data = control.encode([message])
    for path in paths:
        for target in control.targets(path):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_unix_connection(target), CONTROL_TIMEOUT_S)
                try:
                    writer.write(data)
                    await asyncio.wait_for(writer.drain(), CONTROL_TIMEOUT_S)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError, asyncio.TimeoutError):
                        await asyncio.wait_for(writer.wait_closed(), CONTROL_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError) as exc:
                _undelivered(target, exc)


def _send_now(path: str, message: Mapping[str, object]) -> None:
    for target in control.targets(path):
        try:
            control.send(target, [message], timeout=CONTROL_TIMEOUT_S)
        except OSError as exc:
            _undelivered(target, exc)


def _undelivered(target: str, exc: BaseException) -> None:
    _log.warning("finish hint not delivered to %s (%s): the plug-in ends the program at its TTL", target, exc)
