"""The `autonomic picker` process: wires the Director to its scrapers, ext_proc, the Picker API and /metrics.

Why it exists: the parts are written and tested on their own (pure core, ext_proc shell, scraper, API, metrics);
this module is the one place that owns their lifecycle. Start-up order: (with `pool`) the first lists of the
InferencePool, its pods and the DRA objects, which then keep the Director's members and the scraper's targets
current (scorer/sources/inferencepool.py); one scrape of every endpoint (so the first
requests already see load and liveness), then the gRPC server (ext_proc + `autonomic.picker.v1.Picker` + health on
one port, health also on its own port) and the metrics server, then the per-endpoint scrape loops in one TaskGroup.
Shutdown (`stop` set, e.g. by SIGTERM): health goes NOT_SERVING, the gRPC server stops accepting and gives open
streams up to `drain_s` to finish, then the scrapes stop and the metrics server closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from scorer.allocator import return_large_frees_to_os
from scorer.api import PickerApi
from scorer.config import PickerConfig
from scorer.director import Director
from scorer.extproc.body_budget import MAX_BUFFERED_BODY_BYTES
from scorer.extproc.server import ExtProcHandle, serve_extproc
from scorer.extproc.tls import CertSource
from scorer.metrics import PickerMetrics, serve_metrics
from scorer.observed import ExtProcStreamMetrics, ObservedDirector
from scorer.plugins.scorers.prefix_cache import PrefixCacheScorer
from scorer.registry import PluginRuntime
from scorer.replica_sync import ReplicaSync
from scorer.scheduler import Scheduler
from scorer.sources.inferencepool import PoolRef, follow_pool
from scorer.sources.precise_inputs import precise_inputs
from scorer.sources.scraper import MetricsScraper
from scorer.types import Endpoint

log = logging.getLogger("autonomic.picker")


class StartupError(RuntimeError):
    """The picker could not start serving (a port is taken, an address cannot be bound)."""


@dataclass(frozen=True)
class PickerOptions:
    config: PickerConfig
    endpoints: Sequence[Endpoint]
    host: str = "127.0.0.1"
    port: int = 9002  # ext_proc + Picker API + gRPC health (0: any free port)
    health_port: int = 9003  # gRPC health only, as GIE's EPP serves it
    metrics_port: int = 9090  # /metrics, /healthz, /readyz
    scrape_interval_s: float = 0.1
    scrape_timeout_s: float = 1.0
    staleness_s: float = 2.0  # GIE's MetricsStalenessThreshold
    drain_s: float = 5.0
    eject_after_errors: int = 5  # consecutive 5xx responses that take an endpoint out (0: never)
    ejection_s: float = 5.0
    health_interval_s: float = 0.5
    pool: PoolRef | None = None  # follow an InferencePool's pods instead of the fixed `endpoints`
    tls: CertSource | None = None  # serve ext_proc + Picker API over TLS (health port stays plaintext)
    # active-active replicas (scorer/replica_sync.py): peers' host:port (a DNS name: every address behind it);
    # this replica serves them on peer_port and is known to them as replica_address (default: host)
    peers: Sequence[str] = ()
    peer_port: int = 9004
    replica_address: str | None = None
    peer_batch_interval_s: float = 0.002  # a batch to the peers leaves this long after its first event
    # on SIGTERM: health NOT_SERVING (and /readyz 503) this long before the gRPC server stops taking streams, so
    # Envoy's health check (every second) moves new streams to the other replicas first (none are refused)
    shutdown_delay_s: float = 0.0
    # a worker of `autonomic picker --workers N` (scorer/workers.py): the ext_proc and health ports are bound with
    # SO_REUSEPORT (shared with the sibling workers), and the metrics and replica-sync servers listen on this address
    # (loopback) instead of `host`: only the supervisor and the siblings talk to them
    reuse_port: bool = False
    private_host: str | None = None
    # request-body bytes all ext_proc streams may hold at once; past it a body is shed with 429 (extproc/body_budget.py)
    max_buffered_body_bytes: int = MAX_BUFFERED_BODY_BYTES


@dataclass(frozen=True)
class RunningPicker:
    """What a started picker serves on (bound ports) and its parts, for the ready line and for tests."""

    director: Director
    metrics: PickerMetrics
    scraper: MetricsScraper
    extproc: ExtProcHandle
    host: str
    metrics_port: int
    tls: str = "off"  # "off", "self-signed" or the served certificate's path
    peer_port: int | None = None  # replica sync on: the port the peers send to

    def ready_line(self) -> str:
        health = f"{self.host}:{self.extproc.health_port}" if self.extproc.health_port else "-"
        return (
            (
                f"ready: ext_proc={self.host}:{self.extproc.port} health={health} "
                f"metrics={self.host}:{self.metrics_port} endpoints={len(self.director.endpoints())}"
            )
            + (f" tls={self.tls}" if self.tls != "off" else "")
            + (f" peers={self.peer_port}" if self.peer_port else "")
        )


async def run_picker(
    opts: PickerOptions, stop: asyncio.Event, on_ready: Callable[[RunningPicker], None] = lambda _: None
) -> None:
    """Serve until `stop` is set, then shut down gracefully. Raises `StartupError` if a port cannot be bound."""
    if not return_large_frees_to_os():  # the prefix index's freed tables go back to the OS (scorer.allocator)
        log.info("allocator: not glibc, the mmap threshold is left as it is")
    runtime = PluginRuntime()  # the plugins' run-time inputs, fed below (KV events, tokenizer)
    director = Director(
        Scheduler(opts.config, runtime),
        staleness_s=opts.staleness_s,
        eject_after_errors=opts.eject_after_errors,
        ejection_s=opts.ejection_s,
    )
    director.set_endpoints(list(opts.endpoints))
    metrics = PickerMetrics()
    backend = ObservedDirector(director, metrics)
    addresses = [e.address for e in opts.endpoints]
    scraper = MetricsScraper(
        director,
        addresses,
        interval_s=opts.scrape_interval_s,
        timeout_s=opts.scrape_timeout_s,
        clock=director.clock,
        on_result=metrics.observe_scrape,
    )
    async with (
        scraper,
        follow_pool(opts.pool, director, scraper),
        precise_inputs(director, backend, runtime, metrics.registry) as precise,
    ):
        metrics.watch_pool(director.endpoints, scraper.staleness, director.ejections)
        plugins = director.scheduler.plugins.items()
        indexes = {name: plugin.index for name, plugin in plugins if isinstance(plugin, PrefixCacheScorer)}
        metrics.watch_prefix_indexes(lambda: indexes)
        results = await scraper.scrape_all()
        log.info(
            "first scrape done",
            extra={"endpoints": len(results), "ok": sum(r.ok for r in results), "ready": director.ready()},
        )
        api = PickerApi(backend, metrics)
        private_host = opts.private_host or opts.host
        try:
            handle = await serve_extproc(
                backend,
                opts.host,
                opts.port,
                opts.health_port,
                health_interval=opts.health_interval_s,
                services=[api.add_to_server],
                stream_hooks=ExtProcStreamMetrics(metrics),
                tls=opts.tls,
                reuse_port=opts.reuse_port,
                max_buffered_body_bytes=opts.max_buffered_body_bytes,
            )
        except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
            raise StartupError(f"gRPC on {opts.host}:{opts.port} / health {opts.health_port}: {exc}") from None
        budget = handle.budget
        metrics.buffered_body_bytes.set_function(lambda: budget.held)
        try:
            # /readyz goes 503 once stopping, as gRPC health goes NOT_SERVING: Envoy (which may check /readyz)
            # and the kubelet stop sending new streams while open ones drain
            ready = lambda: not stop.is_set() and director.ready()  # noqa: E731
            runner, metrics_port = await serve_metrics(metrics, ready, private_host, opts.metrics_port)
        except OSError as exc:
            await handle.stop(0)
            raise StartupError(f"metrics on {private_host}:{opts.metrics_port}: {exc}") from None
        sync: ReplicaSync | None = None
        peer_runner: web.AppRunner | None = None
        peer_port = 0
        if opts.peers:
            sync = ReplicaSync(director, opts.peers, "", metrics.registry, interval_s=opts.peer_batch_interval_s)
            try:
                peer_runner, peer_port = await sync.serve(private_host, opts.peer_port)
            except OSError as exc:
                await handle.stop(0)
                await runner.cleanup()
                raise StartupError(f"replica peers on {private_host}:{opts.peer_port}: {exc}") from None
            sync.self_address = f"{opts.replica_address or opts.host}:{peer_port}"
            await sync.resolve()
            log.info("replica sync on", extra={"self": sync.self_address, "peers": list(opts.peers)})
            await sync.warm_start()
        try:
            async with asyncio.TaskGroup() as tg:
                scraping = tg.create_task(scraper.run(), name="scrapes")
                syncing = tg.create_task(sync.run(), name="replica sync") if sync else None
                following = [tg.create_task(p.source.run(), name=f"kv-events {p.plugin.name}") for p in precise]
                tls = opts.tls.current.origin if opts.tls else "off"
                bound_peer_port = peer_port if sync else None
                on_ready(
                    RunningPicker(director, metrics, scraper, handle, opts.host, metrics_port, tls, bound_peer_port)
                )
                await stop.wait()
                log.info("shutting down", extra={"drain_s": opts.drain_s, "in_flight": director.in_flight_requests()})
                await handle.not_serving()
                if opts.shutdown_delay_s:  # still answering, while the health checks move traffic elsewhere
                    await asyncio.sleep(opts.shutdown_delay_s)
                await handle.stop(opts.drain_s)
                scraping.cancel()
                if syncing is not None:
                    syncing.cancel()
                for task in following:
                    task.cancel()
        finally:
            await handle.stop(0)  # no-op after a clean stop; closes the servers if the TaskGroup failed
            await runner.cleanup()
            if peer_runner is not None:
                await peer_runner.cleanup()
    log.info("stopped")
