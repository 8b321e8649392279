"""The twin's metrics server: one node-exporter endpoint per node, kube-state-metrics, and the file_sd target
list that tells Prometheus about them.

Why it exists: Prometheus must see `instance` = node name on node-exporter series (the descheduler checks
that every sample's `instance` is a node name, ref §2.2). Every node is therefore served at its own path,
`/nodes/<node>/metrics`, on one port, and `targets.json` (Prometheus file_sd) lists one target per node with
the labels `instance: <node>` and `__metrics_path__: /nodes/<node>/metrics`. The file is rewritten whenever
the set of nodes changes (a node created through the API is scraped within a refresh). kube-state-metrics'
node series are at `/kube-state-metrics/metrics`.

Load and PSI advance every `tick_s` real seconds, and on a scrape that finds the last sample older than that; the
counters a scrape shows are integrated to its instant either way (telemetry_state.py). The scrape-gap fault
knob (`PUT /_twin/faults/scrape`) makes a node's endpoint answer 503 ("error") or answer only after
`stall_s`, longer than Prometheus' scrape timeout ("stall"), or answer with bad data ("nan", "inflate", "frozen":
sim/cluster/scrape_faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from sim.cluster.exposition import render_kube_state, render_node
from sim.cluster.scrape_faults import VALUE_MODES, corrupt, freeze
from sim.cluster.state_view import ClusterView
from sim.cluster.telemetry_state import LoadTelemetry

log = logging.getLogger("autonomic.cluster.exporter")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KSM_PATH = "/kube-state-metrics/metrics"


def node_path(node: str) -> str:
    return f"/nodes/{node}/metrics"


def file_sd_groups(address: str, nodes: list[str]) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: the exporter's address once per node, each with its instance and path."""
    return [{"targets": [address], "labels": {"instance": n, "__metrics_path__": node_path(n)}} for n in nodes]


class NodeExporter:
    def __init__(
        self,
        telemetry: LoadTelemetry,
        view: ClusterView,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tick_s: float = 0.25,
        stall_s: float = 10.0,
        targets_path: Path | None = None,
    ) -> None:
        self.telemetry, self.view = telemetry, view
        self.host, self.port, self.tick_s, self.stall_s = host, port, tick_s, stall_s
        self._frozen: dict[str, str] = {}  # node -> the body a "frozen" fault keeps serving
        self.targets_path = targets_path
        self._nodes: list[str] | None = None
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def start(self) -> None:
        self.telemetry.update()
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/nodes/{name}/metrics", self._node)
        app.router.add_get(KSM_PATH, self._kube_state)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        self.write_targets()
        self._task = asyncio.create_task(self._tick(), name="node-exporter-tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_targets(self) -> None:
        """Rewrite the file_sd file when the node set changed (atomically: Prometheus may read at any time)."""
        nodes = sorted(n.name for n in self.view.nodes())
        if self.targets_path is None or nodes == self._nodes:
            return
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(file_sd_groups(self.address, nodes), indent=1))
        os.replace(tmp, self.targets_path)
        self._nodes = nodes

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.telemetry.update()
                self.write_targets()
            except Exception:  # a bad tick must not stop the exporter; the next one retries
                log.exception("telemetry update failed")

    async def _index(self, request: web.Request) -> web.Response:
        nodes = sorted(n.name for n in self.view.nodes())
        links = [f"{self.url}{node_path(n)}" for n in nodes] + [f"{self.url}{KSM_PATH}"]
        return web.Response(text="\n".join(links) + "\n")

    async def _node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fault = self.view.scrape_fault(name)
        if fault == "error":
            return web.Response(status=503, text=f"scrape of {name} failed: injected fault\n")
        if fault == "stall":
            await asyncio.sleep(self.stall_s)
        sample, vms, counters = self.telemetry.for_scrape(name, self.tick_s)
        node = sample.nodes.get(name)
        if node is None:
            return web.Response(status=404, text=f"no node {name!r}\n")
        if fault != "frozen":
            self._frozen.pop(name, None)
        if fault == "frozen":
            if name not in self._frozen:
                body = render_node(node, counters, vms)
                self._frozen[name] = freeze(body, int(time.time() * 1000))
            body = self._frozen[name]
        else:
            body = render_node(node, counters, vms)
            if fault in VALUE_MODES:
                body = corrupt(body, fault)
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _kube_state(self, request: web.Request) -> web.Response:
        body = render_kube_state(self.view.nodes())
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})
