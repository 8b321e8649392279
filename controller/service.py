"""The `autonomic controller` process: wires the sources, the actuators, the loop, the lease and the HTTP server.

Why it exists: the parts are written and tested on their own; this module owns their lifecycle, in one place, for
the CLI, the demo and the integration tests (which run several controllers in one process). Start-up: Kubernetes
client, cluster watches (wait until every resource has been listed), in-flight VMIMs of an earlier run adopted,
HTTP server (`/metrics`, `/healthz`, `/readyz`, `/debug/state`), then one TaskGroup with the lease elector and the
loop. Shutdown (`stop` set, e.g. by SIGTERM): the loop finishes its cycle, the lease is released so a standby
takes over at once, the watches and the HTTP server stop. Migrations under way are KubeVirt's: they go on, and
the next leader finds them in the cluster.

Dry-run writes nothing, not even the Lease: it runs without leader election (replicas that write nothing cannot
conflict).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from controller.actuators import ActionResult, Actuator
from controller.actuators.events import EventRecorder
from controller.actuators.kubevirt import MANAGED_BY_LABEL, MANAGER, KubeVirtMigrationActuator
from controller.actuators.recording import RecordingActuator
from controller.actuators.taints import SoftTaintActuator
from controller.clock import Clock, WallClock
from controller.config import ControllerConfig
from controller.leader import LeaseElector
from controller.loop import Controller
from controller.metrics import ControllerMetrics, serve_http
from controller.model import Move, TaintChange
from controller.sources.cluster import ClusterSource
from controller.sources.prometheus import PrometheusSource
from controller.tracker import MigrationTracker

log = logging.getLogger("autonomic.controller")


class StartupError(RuntimeError):
    """The controller could not start (no cluster access, caches never synced, port taken)."""


@dataclass(frozen=True)
class ControllerOptions:
    config: ControllerConfig
    prometheus_url: str
    kubeconfig: Path | None = None  # None: in-cluster, else $KUBECONFIG / ~/.kube/config
    interval_s: float = 60.0
    min_interval_s: float = 5.0
    wake_on_events: bool | None = None  # None: on for psi-relief, off for descheduler-compatible (loop.py)
    host: str = "0.0.0.0"
    metrics_port: int = 8080  # 0: any free port
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "autonomic-controller"
    identity: str | None = None  # default: hostname_pid_random
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0
    release_on_stop: bool = True
    prometheus_token_file: Path | None = None
    prometheus_verify_tls: bool = True
    watch_timeout_s: int = 300
    sync_timeout_s: float = 60.0
    clock: Clock = field(default_factory=WallClock)


@dataclass(frozen=True)
class RunningController:
    controller: Controller
    metrics: ControllerMetrics
    identity: str
    metrics_port: int
    host: str
    elector: LeaseElector | None
    recorder: RecordingActuator | None

    def ready_line(self) -> str:
        c = self.controller.config
        lease = f"lease {self.elector.namespace}/{self.elector.name}" if self.elector else "off"
        profile = f" profile={c.descheduler_compatible.profile_version}" if c.policy == "descheduler-compatible" else ""
        return (
            f"ready: policy={c.policy}{profile} actuator={'dry-run' if c.dry_run else c.actuator} "
            f"metrics=http://{self.host}:{self.metrics_port}/metrics leader-election={lease} identity={self.identity} "
            f"nodes={len(self.controller.cluster.nodes.items())} vmis={len(self.controller.cluster.vmis.items())}"
        )


class LiveActuator:
    """The real thing: migrations through KubeVirt, taints on nodes (each with its Events)."""

    def __init__(self, migrations: KubeVirtMigrationActuator, taints: SoftTaintActuator) -> None:
        self.migrations, self.taints = migrations, taints

    async def migrate(self, move: Move) -> ActionResult:
        return await self.migrations.migrate(move)

    async def set_taint(self, change: TaintChange, why: str) -> ActionResult:
        return await self.taints.set_taint(change, why)


def kube_client(kubeconfig: Path | None) -> client.ApiClient:
    cfg = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except ConfigException:
                config.load_kube_config(client_configuration=cfg)
    except (ConfigException, OSError) as exc:
        raise StartupError(f"kubeconfig: {exc}") from None
    return client.ApiClient(cfg)


async def run_controller(
    opts: ControllerOptions, stop: asyncio.Event, on_ready: Callable[[RunningController], None] = lambda _: None
) -> None:
    """Run until `stop` is set, then shut down gracefully. Raises `StartupError` when it cannot start."""
    cfg, clock = opts.config, opts.clock
    identity = opts.identity or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    api = kube_client(opts.kubeconfig)
    metrics = ControllerMetrics()
    holder: dict[str, Controller] = {}
    cluster = ClusterSource(
        api,
        on_change=lambda why: holder["c"].wake(why) if "c" in holder else None,
        watch_timeout_s=opts.watch_timeout_s,
    )
    elector: LeaseElector | None = None
    if opts.leader_election and not cfg.dry_run:
        elector = LeaseElector(
            api,
            opts.lease_namespace,
            opts.lease_name,
            identity,
            lease_duration_s=opts.lease_duration_s,
            renew_deadline_s=opts.renew_deadline_s,
            retry_s=opts.retry_s,
            on_change=lambda leader: _leadership(metrics, holder["c"], leader),
        )
    else:
        metrics.leader.set(1)
    recorder = RecordingActuator(clock) if cfg.dry_run else None
    actuator: Actuator
    if recorder is not None:
        actuator = recorder
    else:
        events = EventRecorder(api, clock, identity)
        actuator = LiveActuator(
            KubeVirtMigrationActuator(api, cluster, events, cfg.actuator), SoftTaintActuator(api, events)
        )
    prometheus = PrometheusSource(
        opts.prometheus_url,
        cfg,
        clock,
        token_file=opts.prometheus_token_file,
        verify_tls=opts.prometheus_verify_tls,
    )
    controller = Controller(
        cfg,
        cluster,
        prometheus,
        actuator,
        metrics,
        clock,
        tracker=MigrationTracker(),
        is_leader=(lambda: elector.is_leader) if elector is not None else (lambda: True),
        interval_s=opts.interval_s,
        min_interval_s=opts.min_interval_s,
        wake_on_events=cfg.policy == "psi-relief" if opts.wake_on_events is None else opts.wake_on_events,
    )
    holder["c"] = controller
    cluster.start()
    runner = None
    try:
        if not await cluster.wait_synced(opts.sync_timeout_s):
            raise StartupError("cluster cache not synced: " + ", ".join(cluster.not_synced()))
        adopted = controller.tracker.adopt(cluster, MANAGED_BY_LABEL, MANAGER)
        if adopted:
            log.info("adopted migrations started before a restart", extra={"count": adopted})
        try:
            runner, port = await serve_http(
                metrics,
                healthy=lambda: _healthy(controller),
                ready=lambda: None if cluster.synced else "not synced: " + ", ".join(cluster.not_synced()),
                debug=lambda: _debug(controller, elector, recorder),
                host=opts.host,
                port=opts.metrics_port,
            )
        except OSError as exc:
            raise StartupError(f"metrics on {opts.host}:{opts.metrics_port}: {exc}") from None
        async with asyncio.TaskGroup() as tg:
            if elector is not None:
                tg.create_task(elector.run(stop), name="lease")
            loop_task = tg.create_task(controller.run(stop), name="loop")
            on_ready(RunningController(controller, metrics, identity, port, opts.host, elector, recorder))
            await stop.wait()
            log.info("shutting down", extra={"in_flight_requests": len(controller.tracker)})
            await loop_task
            if elector is not None and opts.release_on_stop:
                await elector.release()
    finally:
        await asyncio.to_thread(cluster.stop)
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(api.close)
    log.info("stopped")


def _leadership(metrics: ControllerMetrics, controller: Controller, leader: bool) -> None:
    metrics.leader.set(int(leader))
    controller.wake("leadership acquired" if leader else "leadership lost", always=True)


def _healthy(controller: Controller) -> str | None:
    silent = time.monotonic() - controller.heartbeat
    limit = 3 * controller.interval_s + 60
    return None if silent < limit else f"loop silent for {silent:.0f}s"


def _debug(controller: Controller, elector: LeaseElector | None, recorder: RecordingActuator | None) -> dict[str, Any]:
    return {
        "leader": elector.is_leader if elector else True,
        "lastSkip": controller.last_skip,
        "lastPlan": controller.last_plan,
        "dryRunActions": [r for r in recorder.records] if recorder else [],
    }
