"""`StoreView`: the `ClusterView` (state_view.py) read from the twin's store.

Why it exists: part 2 (load, PSI, exporter) reads the cluster as plain dataclasses; this is the one place
that maps API objects to them. Snapshots are taken under the store's lock without copying whole objects. A VMI's
`VmiInfo` is kept until its resourceVersion (or the KubeVirt settings it depends on) changes: the load model reads
every VMI on every tick, and at 3,000 VMIs rebuilding them all cost ~11 ms a tick (profiled).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sim.cluster import quantity
from sim.cluster.clock import Clock
from sim.cluster.faults import FaultState
from sim.cluster.kubevirt import KubeVirt
from sim.cluster.kv_objects import LOAD_TRACE_ANNOTATION, dirty_rate, vmi_requests, vmi_vcpus
from sim.cluster.placement import node_ready
from sim.cluster.resources import NODES, VMIMS, VMIS
from sim.cluster.state_view import MigrationCallback, MigrationInfo, NodeInfo, TaintInfo, VmiInfo
from sim.cluster.store import Store

log = logging.getLogger("autonomic.cluster.view")


class StoreView:
    def __init__(self, store: Store, clock: Clock, kubevirt: KubeVirt, faults: FaultState | None = None) -> None:
        self.store, self.clock, self.kubevirt = store, clock, kubevirt
        self.faults = faults or FaultState()
        self._start_wall = clock.wall().timestamp() - clock.now()
        self._vmi_cache: dict[tuple[str, str], tuple[tuple[Any, ...], VmiInfo]] = {}
        self._vmis_out: tuple[tuple[Any, ...], list[VmiInfo]] | None = None  # the last answer, by VMI generation

    def now(self) -> float:
        return self.clock.now()

    def _model_time(self, ts: str | None) -> float | None:
        if not ts:
            return None
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - self._start_wall

    def nodes(self) -> list[NodeInfo]:
        out = []
        for n in self.store.peek(NODES):
            st = n.get("status") or {}
            cap, alloc = st.get("capacity") or {}, st.get("allocatable") or st.get("capacity") or {}
            out.append(
                NodeInfo(
                    name=n["metadata"]["name"],
                    cpu_millis=quantity.cpu_millis(cap.get("cpu", 0)),
                    memory_bytes=quantity.bytes_(cap.get("memory", 0)),
                    allocatable_cpu_millis=quantity.cpu_millis(alloc.get("cpu", 0)),
                    allocatable_memory_bytes=quantity.bytes_(alloc.get("memory", 0)),
                    ready=node_ready(n),
                    unschedulable=bool((n.get("spec") or {}).get("unschedulable")),
                    labels=dict(n["metadata"].get("labels") or {}),
                    taints=tuple(
                        TaintInfo(t.get("key", ""), t.get("value", ""), t.get("effect", ""))
                        for t in (n.get("spec") or {}).get("taints") or []
                    ),
                )
            )
        return out

    def vmis(self) -> list[VmiInfo]:
        ratio, default_dirty = self.kubevirt.config.cpu_allocation_ratio, self.kubevirt.config.default_dirty_rate
        written = (self.store.generation(VMIS), ratio, default_dirty)
        if self._vmis_out is not None and self._vmis_out[0] == written:  # no VMI written since: the same list
            return list(self._vmis_out[1])
        out = []
        cache: dict[tuple[str, str], tuple[tuple[Any, ...], VmiInfo]] = {}
        for v in self.store.peek(VMIS):
            meta = v["metadata"]
            key = (meta["namespace"], meta["name"])
            stamp = (meta.get("resourceVersion"), meta.get("uid"), ratio, default_dirty)
            cached = self._vmi_cache.get(key)
            info = cached[1] if cached is not None and cached[0] == stamp and stamp[0] else self._vmi_info(v)
            cache[key] = (stamp, info)
            out.append(info)
        self._vmi_cache = cache
        self._vmis_out = (written, out)
        return list(out)

    def _vmi_info(self, v: dict[str, Any]) -> VmiInfo:
        st = v.get("status") or {}
        state = st.get("migrationState") or {}
        in_flight = bool(state) and not state.get("completed")
        cpu, mem = vmi_requests(v, self.kubevirt.config.cpu_allocation_ratio)
        return VmiInfo(
            namespace=v["metadata"]["namespace"],
            name=v["metadata"]["name"],
            node=st.get("nodeName") or None,
            cpu_millis=cpu,
            memory_bytes=mem,
            vcpus=vmi_vcpus(v),
            phase=st.get("phase", "Pending"),
            migrating=bool(state.get("startTimestamp")) and not state.get("endTimestamp"),
            migration_target=state.get("targetNode") if in_flight else None,
            dirty_rate_bytes_per_s=dirty_rate(v, self.kubevirt.config.default_dirty_rate),
            load_trace=(v["metadata"].get("annotations") or {}).get(LOAD_TRACE_ANNOTATION),
            labels=dict(v["metadata"].get("labels") or {}),
            annotations=dict(v["metadata"].get("annotations") or {}),
        )

    def _migration(self, m: dict[str, Any], reason: str | None = None) -> MigrationInfo:
        st = m.get("status") or {}
        state = st.get("migrationState") or {}
        return MigrationInfo(
            namespace=m["metadata"]["namespace"],
            name=m["metadata"]["name"],
            vmi=(m.get("spec") or {}).get("vmiName", ""),
            phase=st.get("phase", "Pending"),
            source_node=state.get("sourceNode"),
            target_node=state.get("targetNode"),
            started_at=self._model_time(state.get("startTimestamp")),
            ended_at=self._model_time(state.get("endTimestamp")),
            failure_reason=reason or state.get("failureReason"),
        )

    def migrations(self) -> list[MigrationInfo]:
        items = sorted(
            self.store.peek(VMIMS), key=lambda m: (m["metadata"]["creationTimestamp"], m["metadata"]["name"])
        )
        return [self._migration(m) for m in items]

    def subscribe_migrations(self, callback: MigrationCallback) -> Callable[[], None]:
        def listener(migration: dict[str, Any], reason: str | None) -> None:
            callback(self._migration(migration, reason))

        return self.kubevirt.on_migration_final(listener)

    def scrape_fault(self, node: str) -> str | None:
        return self.faults.scrape_fault(node)
