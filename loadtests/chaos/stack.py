"""One chaos scenario's world: a fresh cluster twin with two hot nodes, its real Prometheus, and an observer that
reads the twin's own store (never the controller's word) every 100 ms.

Why it exists: the campaign's figures must come from what happened in the cluster. `Observer` samples the store
of VirtualMachineInstanceMigrations and records the most unfinished at once (in total, per source node, per VM),
and `writes()` is the cluster state the controller could have changed (its VMIMs, evacuation marks, node taints,
its Events), compared before and after a window in which it must not act.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from controller.actuators.kubevirt import MANAGED_BY_LABEL
from loadtests.chaos.scenarios import HOT_NODES
from sim.cluster.prometheus import TwinTelemetry, start_telemetry
from sim.cluster.resources import EVENTS, LEASES, NODES, VMIMS, VMIS
from sim.cluster.scenario import Scenario as TwinScenario
from sim.cluster.scenario import parse_scenario
from sim.cluster.state_view import TelemetryOptions
from sim.cluster.twin import ClusterTwin

NODE_COUNT = 6
TIME_SCALE = 20.0
TERMINAL = ("Succeeded", "Failed")
PSI = "avg by (instance) (rate(node_pressure_cpu_waiting_seconds_total[3s]))"


def twin_scenario() -> TwinScenario:
    """Six 8-core nodes; worker-0 and worker-1 each run three 4-vCPU VMs at 95% (CPU PSI about 0.45), the others
    one light VM; a 64 MiB/s migration link, so that a 4 GiB migration lasts about 3 s at 20x."""
    hot = [
        {"name": f"hot-{n[-1]}{i}", "namespace": "vms", "cpu": 4, "memory": "4Gi", "node": n, "cpuLoad": 0.95}
        for n in HOT_NODES
        for i in range(3)
    ]
    cold = [
        {"name": f"cold-{i}", "namespace": "vms", "cpu": 2, "memory": "2Gi", "node": f"worker-{i}", "cpuLoad": 0.1}
        for i in range(len(HOT_NODES), NODE_COUNT)
    ]
    return parse_scenario(
        {
            "namespaces": ["vms"],
            "kubevirt": {"nodeLinkBandwidth": "64Mi"},
            "nodes": [{"name": f"worker-{i}"} for i in range(NODE_COUNT)],
            "vms": hot + cold,
        }
    )


def admin(twin: ClusterTwin, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{twin.api_url}/_twin/{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@dataclass
class Stack:
    twin: ClusterTwin
    telemetry: TwinTelemetry

    @classmethod
    async def start(cls) -> Stack:
        scenario = twin_scenario()
        twin = await asyncio.to_thread(ClusterTwin(scenario, time_scale=TIME_SCALE).start)
        options = TelemetryOptions(
            scrape_interval_s=1.0,
            rate_window="3s",
            smoothing_window="10s",
            cooldown_window="30s",
            rule_interval="1s",
            tick_s=0.1,
            load=scenario.load,
        )
        telemetry = await asyncio.to_thread(twin.run, start_telemetry(twin.view, options))
        stack = cls(twin, telemetry)
        await until(lambda: stack.hot_seen(), 90, "PSI of every node in Prometheus, the hot nodes above 0.3")
        return stack

    async def stop(self) -> None:
        await asyncio.to_thread(self.twin.run, self.telemetry.stop())
        await asyncio.to_thread(self.twin.stop)

    @property
    def prometheus_url(self) -> str:
        assert self.telemetry.prometheus is not None
        return self.telemetry.prometheus.url

    def query(self, promql: str) -> dict[str, float]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in body["data"]["result"]}

    def cpu_psi(self) -> dict[str, float]:
        return self.query(PSI)

    def hot_seen(self) -> bool:
        psi = self.cpu_psi()
        return len(psi) == NODE_COUNT and all(psi.get(n, 0) > 0.3 for n in HOT_NODES)

    def relieved(self) -> bool:
        psi = self.cpu_psi()
        return len(psi) == NODE_COUNT and all(math.isfinite(v) and v < 0.15 for v in psi.values())

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return admin(self.twin, method, path, body)

    def store(self, kind: Any) -> list[dict[str, Any]]:
        assert self.twin.app is not None
        store = self.twin.app.store
        return list(self.twin.call(lambda: store.peek(kind)))

    def migrations(self) -> list[dict[str, Any]]:
        return self.store(VMIMS)

    def ours(self) -> list[dict[str, Any]]:
        return [m for m in self.migrations() if (m["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL)]

    def lease_holder(self, name: str = "autonomic-controller") -> str:
        for lease in self.store(LEASES):
            if lease["metadata"]["name"] == name:
                return str((lease.get("spec") or {}).get("holderIdentity") or "")
        return ""

    def writes(self) -> Counter[str]:
        """What the controller may have written, as counts: a window's difference is its actions."""
        marked = [v for v in self.store(VMIS) if (v.get("status") or {}).get("evacuationNodeName")]
        taints = [
            f"{n['metadata']['name']}:{t['key']}"
            for n in self.store(NODES)
            for t in (n.get("spec") or {}).get("taints") or []
        ]
        events = [e for e in self.store(EVENTS) if (e.get("source") or {}).get("component") == "autonomic-controller"]
        out: Counter[str] = Counter(vmim=len(self.ours()), evacuation=len(marked), event=len(events))
        out.update(f"taint {t}" for t in taints)
        return out


@dataclass
class Observer:
    """Samples the twin's VMIMs every `interval_s`: the most unfinished at once overall, per source node and per
    VM, and the VMs that ever had two unfinished at once."""

    stack: Stack
    interval_s: float = 0.1
    max_total: int = 0
    max_per_node: int = 0
    overlapping_vms: set[str] = field(default_factory=set)
    samples: int = 0
    last_open: int = 0
    final: dict[str, Any] = field(default_factory=dict)
    # our VMIMs by name: (source, target) as first seen (source: the VMI's node before the migration ran)
    endpoints: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def sample(self) -> list[dict[str, Any]]:
        vmims = self.stack.migrations()
        where = {
            f"{v['metadata']['namespace']}/{v['metadata']['name']}": (v.get("status") or {}).get("nodeName", "?")
            for v in self.stack.store(VMIS)
        }
        self._endpoints(vmims, where)
        open_ = [m for m in vmims if (m.get("status") or {}).get("phase") not in TERMINAL]
        vms = Counter(f"{m['metadata']['namespace']}/{m['spec']['vmiName']}" for m in open_)
        nodes = Counter(
            ((m.get("status") or {}).get("migrationState") or {}).get("sourceNode") or where.get(vm, "?")
            for m, vm in zip(
                open_, (f"{m['metadata']['namespace']}/{m['spec']['vmiName']}" for m in open_), strict=True
            )
        )
        self.max_total = max(self.max_total, len(open_))
        self.max_per_node = max(self.max_per_node, *nodes.values(), 0)
        self.overlapping_vms |= {vm for vm, n in vms.items() if n > 1}
        self.samples += 1
        self.last_open = len(open_)
        return vmims

    def _endpoints(self, vmims: list[dict[str, Any]], where: dict[str, str]) -> None:
        for m in vmims:
            if not (m["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL):
                continue
            name, status = m["metadata"]["name"], m.get("status") or {}
            state = status.get("migrationState") or {}
            added = (m.get("spec") or {}).get("addedNodeSelector") or {}
            source, target = self.endpoints.get(name, (None, None))
            if source is None and status.get("phase") not in TERMINAL:
                source = state.get("sourceNode") or where.get(f"{m['metadata']['namespace']}/{m['spec']['vmiName']}")
            target = target or state.get("targetNode") or added.get("kubernetes.io/hostname")
            self.endpoints[name] = (source, target)

    def touching(self, names: set[str], node: str) -> list[str]:
        """Those of our VMIMs `names` whose source or target is `node`."""
        return sorted(name for name in names if node in self.endpoints.get(name, (None, None)))

    def sample_open(self) -> int:
        return self.last_open

    def finish(self) -> None:
        """The run's figures from the twin's store (call before the stack stops)."""
        self.sample()
        ours = sorted(self.stack.ours(), key=lambda m: m["metadata"]["creationTimestamp"])
        phases = Counter((m.get("status") or {}).get("phase", "Pending") for m in ours)
        succeeded: set[str] = set()
        again = set()
        for m in ours:
            vm = m["spec"]["vmiName"]
            if vm in succeeded:
                again.add(vm)
            if (m.get("status") or {}).get("phase") == "Succeeded":
                succeeded.add(vm)
        self.final = {
            "migrations": len(ours),
            "migration_phases": dict(phases),
            "moved_again": len(again),
            "overlapping_vms": sorted(self.overlapping_vms),
            "max_in_flight": self.max_total,
            "max_in_flight_per_node": self.max_per_node,
            "observer_samples": self.samples,
        }

    def figures(self) -> dict[str, Any]:
        return dict(self.final)

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.interval_s)


async def until(probe: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> float:
    """Poll the blocking `probe` (in a thread) until it is truthy; the seconds it took. TimeoutError names `what`."""
    start = time.monotonic()
    while True:
        try:
            if await asyncio.to_thread(probe):
                return time.monotonic() - start
        except (OSError, ValueError, KeyError):
            pass  # not yet (Prometheus restarting, a partial answer)
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)
