"""`autonomic cluster-sim` as a long-running process: the API twin plus, when part 2 provides it, the load
model, the node exporter and a real Prometheus; prints `kubeconfig: PATH` (under --tls also `ca: PATH` and
`serviceaccount: DIR (...)`) and `prometheus: URL` once ready and runs until SIGINT/SIGTERM.

Why it exists: the CLI's argument parsing stays in cli.py; this module owns start-up order and clean shutdown.

TELEMETRY HOOK (issue 4, part 2): `sim.cluster.prometheus.start_telemetry(view, options) -> Telemetry` (see
state_view.py) is awaited after the API serves and its `stop()` before the API stops. It runs the load model
and the node exporter always, and Prometheus unless --no-prometheus. Without the module, `prometheus:` prints
`disabled (telemetry not available)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.cluster.cluster_shape import describe
from sim.cluster.scenario import Scenario
from sim.cluster.state_view import Telemetry, TelemetryHook, TelemetryOptions, VmiInfo
from sim.cluster.twin import ClusterApp

log = logging.getLogger("autonomic.cluster")


def telemetry_hook() -> TelemetryHook | None:
    try:
        module = importlib.import_module("sim.cluster.prometheus")
    except ModuleNotFoundError as exc:
        if exc.name != "sim.cluster.prometheus":
            raise
        return None
    hook: Any = getattr(module, "start_telemetry", None)
    return hook if callable(hook) else None


async def serve(
    scenario: Scenario,
    *,
    port: int,
    time_scale: float,
    options: TelemetryOptions,
    kubeconfig_path: Path | None = None,
    stop: asyncio.Event | None = None,
    tls: bool = False,
    service_account_dir: Path | None = None,
) -> int:
    app = ClusterApp(
        scenario,
        port=port,
        time_scale=time_scale,
        kubeconfig_path=kubeconfig_path,
        tls=tls,
        service_account_dir=service_account_dir,
    )
    await app.start()
    telemetry: Telemetry | None = None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        hook = telemetry_hook()
        if hook is not None:
            if options.load is None:
                options = dataclasses.replace(options, load=scenario.load)
            telemetry = await hook(app.view, options)
        print(f"api: {app.api_url}", flush=True)
        print(f"kubeconfig: {app.kubeconfig_path}", flush=True)
        if app.ca_path is not None:
            print(f"ca: {app.ca_path}", flush=True)
            print(
                f"serviceaccount: {app.service_account_dir} "
                f"(KUBERNETES_SERVICE_HOST={app.host} KUBERNETES_SERVICE_PORT={app.port})",
                flush=True,
            )
        exporter_url = getattr(telemetry, "exporter_url", None)
        if exporter_url:
            print(f"metrics: {exporter_url}/nodes/<node>/metrics", flush=True)
        if telemetry is not None and telemetry.prometheus_url:
            print(f"prometheus: {telemetry.prometheus_url}", flush=True)
        elif not options.prometheus:
            print("prometheus: disabled (--no-prometheus)", flush=True)
        else:
            print("prometheus: disabled (telemetry not available)", flush=True)
        nodes, vmis = len(app.view.nodes()), len(app.view.vmis())
        print(f"cluster: {cluster_line(scenario, app.view.vmis())}", flush=True)
        print(
            f"ready: {nodes} nodes, {vmis} VMIs, time scale {time_scale}, admin {app.api_url}/_twin/state", flush=True
        )
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if telemetry is not None:
            await telemetry.stop()
        await app.stop()
    return 0


def cluster_line(scenario: Scenario, vmis: Sequence[VmiInfo]) -> str:
    """One line on what the cluster is: node shapes, flavors, memory fill of requests, VMIs not running."""
    d = describe(scenario.nodes, scenario.vms)
    shapes = ", ".join(f"{count} x {shape}" for shape, count in d["node_shapes"].items())
    pending = sum(1 for v in vmis if v.node is None or v.phase != "Running")
    fill = "n/a" if d["memory_fill"] is None else f"{100 * d['memory_fill']:.1f}%"
    return f"{shapes}; {d['vms']} VMs; memory requested {fill} of allocatable; pending_vms {pending}"
