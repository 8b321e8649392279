"""`autonomic picker --workers N`: N picker processes on one ext_proc port, supervised by the process that started them.

Why it exists: one picker process uses one core at most (its decisions run on one asyncio loop), and the ext_proc
protocol's own cost per request is mostly gRPC's Python machinery, so a multi-core pod gains capacity only from
more processes. The supervisor (this module, no gRPC in it):

- reserves the shared ports first: it binds each one alone (so a port another process holds, an unrelated picker
  included, is an error: exit 1), then keeps a bound, non-listening socket with SO_REUSEPORT for as long as it runs.
  Its workers bind the same ports with SO_REUSEPORT (`--worker-index`); a picker started without workers binds
  without it and is refused. The kernel spreads *connections* over the workers' listening sockets: a gateway
  multiplexes many ext_proc streams on one HTTP/2 connection, so it must open several (docs/picker.md, "Workers").
- starts the workers (scorer/worker_plan.py: the same command line plus the worker flags), each a full picker that
  scrapes the model servers itself and shares what it routes with its siblings over loopback (replica sync), and
  prints its own `ready:` line once every worker printed theirs;
- serves the pod's one `/metrics` (every worker's series with a `worker` label, scorer/metrics_merge.py, plus its
  own), `/healthz` and `/readyz` (200 while a worker is ready) on `--metrics-port`;
- starts a worker that exits again (logged at error level, counted, with the backoff of `RestartBackoff`);
- on SIGTERM/SIGINT goes unready, sends SIGTERM to every worker (each drains as a single picker does: shutdown delay,
  then `--drain-seconds`) and waits for them, killing one that outlives the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric

from scorer.metrics_merge import merge_expositions
from scorer.worker_plan import LOOPBACK, RestartBackoff, WorkerPorts, ready_endpoints, worker_argv

log = logging.getLogger("autonomic.picker.workers")


class StartupError(RuntimeError):
    """A port cannot be reserved, or a worker exited before it was ready."""


@dataclass(frozen=True)
class WorkersOptions:
    workers: int
    argv: Sequence[str]  # the parent's `autonomic ...` arguments; each worker gets them plus its own flags
    host: str = "127.0.0.1"
    port: int = 9002
    health_port: int = 9003
    metrics_port: int = 9090
    shutdown_delay_s: float = 0.0
    drain_s: float = 5.0
    ready_timeout_s: float = 120.0  # a worker's first scrape of every endpoint comes before its ready line
    backoff: RestartBackoff = field(default_factory=RestartBackoff)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port) with SO_REUSEPORT, not listening, after checking that nothing
    else holds the port. Raises OSError if something does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as alone:  # no SO_REUSEPORT: fails if anyone holds the port
        alone.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        alone.bind((host, port))
        port = alone.getsockname()[1]
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, port))
    except OSError:
        held.close()
        raise
    return held


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class _Worker:
    index: int
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ready_line: str = ""
    deaths_in_a_row: int = 0
    reader: asyncio.Task[None] | None = None  # drains its stdout; held here (the loop keeps only weak references)

    async def start(self) -> None:
        self.ready = asyncio.Event()
        self.started_at = time.monotonic()
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "autonomic", *self.argv, stdout=pipe, stdin=devnull
        )
        self.reader = asyncio.create_task(self._read_stdout(self.proc), name=f"worker {self.index} stdout")

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:  # read to the end, so a chatty worker never blocks on a full pipe
            line = raw.decode(errors="replace").rstrip()
            if line.startswith("ready:") and proc is self.proc:
                self.ready_line = line
                self.ready.set()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class Supervisor:
    """The workers and the pod's metrics server; `run` until `stop` is set."""

    def __init__(
        self,
        opts: WorkersOptions,
        ports: Sequence[WorkerPorts],
        port: int,
        health_port: int,
        stop: asyncio.Event | None = None,
    ):
        self.opts = opts
        self.stop = stop or asyncio.Event()  # set (SIGTERM/SIGINT): a worker that exits now is not started again
        self.ports = list(ports)
        self.workers = [
            _Worker(i, worker_argv(opts.argv, i, port, health_port, self.ports)) for i in range(opts.workers)
        ]
        self.stopping = False
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "autonomic_picker_worker_restarts",
            "Picker workers started again after they exited.",
            ["worker"],
            registry=self.registry,
        )
        running = Gauge("autonomic_picker_workers_running", "Picker worker processes alive.", registry=self.registry)
        running.set_function(lambda: sum(w.proc is not None and w.proc.returncode is None for w in self.workers))
        Gauge("autonomic_picker_workers", "Picker workers configured (--workers).", registry=self.registry).set(
            opts.workers
        )
        self._http: aiohttp.ClientSession | None = None

    # ---- the pod's metrics port -----------------------------------------------------------------------------
    async def _get(self, worker: WorkerPorts, path: str) -> tuple[int, str]:
        assert self._http is not None
        async with self._http.get(f"http://{LOOPBACK}:{worker.metrics_port}{path}") as r:
            return r.status, await r.text()

    async def metrics(self, _: web.Request) -> web.Response:
        answers = await asyncio.gather(*(self._get(p, "/metrics") for p in self.ports), return_exceptions=True)
        texts = {str(i): a[1] for i, a in enumerate(answers) if isinstance(a, tuple) and a[0] == 200}
        try:
            families = merge_expositions(texts)
        except ValueError as exc:  # a worker's exposition did not parse: serve what is ours
            log.warning("a worker's metrics did not parse", extra={"error": str(exc)})
            families = []
        registry = CollectorRegistry()
        registry.register(_Families(families))
        body = generate_latest(registry) + generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(self, _: web.Request) -> web.Response:
        if not self.stopping:
            answers = await asyncio.gather(*(self._get(p, "/readyz") for p in self.ports), return_exceptions=True)
            ready = sum(isinstance(a, tuple) and a[0] == 200 for a in answers)
            if ready:
                return web.Response(text=f"ready: {ready} of {len(self.ports)} workers\n")
        return web.Response(status=503, text="not ready\n")

    async def serve_metrics(self) -> tuple[web.AppRunner, int]:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/healthz", _ok)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.opts.host, self.opts.metrics_port).start()
        except OSError:
            await runner.cleanup()
            await self._http.close()
            raise
        return runner, int(runner.addresses[0][1]) if runner.addresses else self.opts.metrics_port

    # ---- the workers ----------------------------------------------------------------------------------------
    async def start_all(self) -> None:
        """Start every worker and wait until each printed its ready line; raises StartupError if one exits first."""
        for worker in self.workers:
            await worker.start()
        for worker in self.workers:
            await self._until_ready(worker, self.opts.ready_timeout_s)

    async def _until_ready(self, worker: _Worker, timeout_s: float) -> None:
        assert worker.proc is not None
        ready = asyncio.ensure_future(worker.ready.wait())
        exited = asyncio.ensure_future(worker.proc.wait())
        await asyncio.wait({ready, exited}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        if not worker.ready.is_set():
            code = worker.proc.returncode
            raise StartupError(
                f"worker {worker.index} exited with code {code} before it was ready"
                if code is not None
                else f"worker {worker.index} not ready in {timeout_s:g} s"
            )

    async def watch(self, worker: _Worker) -> None:
        """Start `worker` again whenever it exits, until stopping."""
        while not self.stopping:
            assert worker.proc is not None
            code = await worker.proc.wait()
            if self.stopping or self.stop.is_set():  # e.g. Ctrl-C: the workers got SIGINT with the supervisor
                return
            lived = time.monotonic() - worker.started_at
            delay, worker.deaths_in_a_row = self.opts.backoff.next_delay(worker.deaths_in_a_row, lived)
            log.error(
                "picker worker exited; starting it again",
                extra={
                    "worker": worker.index,
                    "pid": worker.pid,
                    "exit_code": code,
                    "signal": signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None,
                    "lived_s": round(lived, 3),
                    "restart_in_s": delay,
                },
            )
            await asyncio.sleep(delay)
            if self.stopping or self.stop.is_set():
                return
            self.restarts.labels(str(worker.index)).inc()
            await worker.start()
            with contextlib.suppress(StartupError):
                await self._until_ready(worker, self.opts.ready_timeout_s)
            if worker.ready.is_set():
                log.info("picker worker ready again", extra={"worker": worker.index, "pid": worker.pid})

    async def stop_all(self) -> None:
        """SIGTERM to every worker, then wait for them (SIGKILL to one that outlives the grace)."""
        self.stopping = True
        alive = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        grace = self.opts.shutdown_delay_s + self.opts.drain_s + 10.0
        waits = [asyncio.ensure_future(p.wait()) for p in alive]
        if waits:
            _, late = await asyncio.wait(waits, timeout=grace)
            for proc in alive:
                if proc.returncode is None:
                    log.error("picker worker did not stop in time; killed", extra={"pid": proc.pid})
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.wait(late)
        if self._http is not None:
            await self._http.close()


class _Families:
    """A collector that yields families already built (the workers' merged series)."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def run_workers(opts: WorkersOptions, stop: asyncio.Event, on_ready: Callable[[str], None]) -> None:
    """Reserve the ports, start the workers, serve the pod's metrics; on `stop`, stop everything. Raises
    StartupError if a port is taken or a worker cannot start."""
    held: list[socket.socket] = []
    try:
        try:
            held.append(reserve_port(opts.host, opts.port))
            held.append(reserve_port(opts.host, opts.health_port))
        except OSError as exc:
            raise StartupError(f"ports {opts.host}:{opts.port} / health {opts.health_port}: {exc}") from None
        port, health_port = held[0].getsockname()[1], held[1].getsockname()[1]
        ports = [WorkerPorts(_free_loopback_port(), _free_loopback_port()) for _ in range(opts.workers)]
        supervisor = Supervisor(opts, ports, port, health_port, stop)
        try:
            runner, metrics_port = await supervisor.serve_metrics()
        except OSError as exc:
            raise StartupError(f"metrics on {opts.host}:{opts.metrics_port}: {exc}") from None
        try:
            try:
                await supervisor.start_all()
            except StartupError:
                await supervisor.stop_all()
                raise
            endpoints = ready_endpoints(supervisor.workers[0].ready_line)
            pids = [w.pid for w in supervisor.workers]
            log.info("picker workers ready", extra={"workers": opts.workers, "pids": pids})
            on_ready(
                f"ready: ext_proc={opts.host}:{port} health={opts.host}:{health_port} "
                f"metrics={opts.host}:{metrics_port} endpoints={endpoints} workers={opts.workers}"
            )
            async with asyncio.TaskGroup() as tg:
                watchers = [tg.create_task(supervisor.watch(w), name=f"worker {w.index}") for w in supervisor.workers]
                await stop.wait()
                log.info("shutting down workers", extra={"workers": opts.workers})
                await supervisor.stop_all()
                for task in watchers:
                    task.cancel()
        finally:
            await runner.cleanup()
    finally:
        for sock in held:
            sock.close()
    log.info("stopped")
