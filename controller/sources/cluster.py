"""Cluster state for the controller: six watched resources in a local cache, and the snapshot built from them.

Why it exists: the planner needs nodes, VMIs, their virt-launcher pods, migrations, PodDisruptionBudgets and DRA
resource claims at every cycle, and the loop should wake when something that matters changes rather than only on
its timer. One `ResourceWatcher` thread per resource keeps the cache (common/kube_watch.py); `snapshot()` turns
the cache plus a Prometheus reading into the planner's `ClusterSnapshot` (objects.py). Anything that keeps the six
resources can stand in for the watchers (`ObjectCache`, passed as `caches=`): the rebalancing benchmark's model-time
engine reads the cluster twin's store directly that way, and drives the same loop, tracker and planner.

Wake-ups (`on_change(reason)`, called on a watcher thread): a migration reached Succeeded or Failed (the budget
has room again and the nodes' load changed), a VMI's evacuation mark was cleared, a node was added, removed,
became (un)ready or was (un)cordoned. Pod and PDB churn does not wake the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from common.kube_watch import Obj, ResourceWatcher
from controller.model import TERMINAL_MIGRATION_PHASES, ClusterSnapshot, MigrationState
from controller.sources.objects import CREATED_BY_LABEL, HOSTNAME_LABEL, ClusterObjects, build_snapshot
from controller.sources.prometheus import PressureReading

KUBEVIRT = ("kubevirt.io", "v1")
LAUNCHER_SELECTOR = "kubevirt.io=virt-launcher"
WATCH_LOG = logging.getLogger("autonomic.controller.watch")


class ObjectCache(Protocol):
    """What the source needs of one resource's cache (`ResourceWatcher` is one)."""

    kind: str
    synced: threading.Event
    error: str | None

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def items(self) -> list[Obj]: ...

    def get(self, namespace: str | None, name: str) -> Obj | None: ...


@dataclass(frozen=True)
class ClusterCaches:
    """The six caches, for a source that does not watch an API server itself."""

    nodes: ObjectCache
    pods: ObjectCache  # virt-launcher pods only
    vmis: ObjectCache
    migrations: ObjectCache
    pdbs: ObjectCache
    claims: ObjectCache


class ClusterSource:
    def __init__(
        self,
        api: client.ApiClient | None,
        *,
        on_change: Callable[[str], None] | None = None,
        watch_timeout_s: int = 300,
        caches: ClusterCaches | None = None,
    ) -> None:
        """Watch the API server behind `api`, or read `caches` (then `on_change` is the caches' owner's to call)."""
        self.on_change = on_change
        self.nodes: ObjectCache
        self.pods: ObjectCache
        self.vmis: ObjectCache
        self.migrations: ObjectCache
        self.pdbs: ObjectCache
        self.claims: ObjectCache
        if caches is not None:
            self.nodes, self.pods, self.vmis = caches.nodes, caches.pods, caches.vmis
            self.migrations, self.pdbs, self.claims = caches.migrations, caches.pdbs, caches.claims
            self.watchers: tuple[ObjectCache, ...] = (
                self.nodes,
                self.pods,
                self.vmis,
                self.migrations,
                self.pdbs,
                self.claims,
            )
            return
        if api is None:
            raise ValueError("ClusterSource needs an API client or caches")
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        common: dict[str, Any] = {"watch_timeout_s": watch_timeout_s, "log": WATCH_LOG, "thread_prefix": "watch"}
        self.nodes = ResourceWatcher("nodes", core.list_node, on_event=self._node_event, **common)
        self.pods = ResourceWatcher(
            "pods", core.list_pod_for_all_namespaces, label_selector=LAUNCHER_SELECTOR, **common
        )
        self.vmis = ResourceWatcher(
            "virtualmachineinstances",
            custom.list_cluster_custom_object,
            *KUBEVIRT,
            "virtualmachineinstances",
            on_event=self._vmi_event,
            **common,
        )
        self.migrations = ResourceWatcher(
            "virtualmachineinstancemigrations",
            custom.list_cluster_custom_object,
            *KUBEVIRT,
            "virtualmachineinstancemigrations",
            on_event=self._migration_event,
            **common,
        )
        self.pdbs = ResourceWatcher(
            "poddisruptionbudgets", client.PolicyV1Api(api).list_pod_disruption_budget_for_all_namespaces, **common
        )
        self.claims = ResourceWatcher(
            "resourceclaims",
            client.ResourceV1Api(api).list_resource_claim_for_all_namespaces,
            optional=True,
            **common,
        )
        self.watchers = (self.nodes, self.pods, self.vmis, self.migrations, self.pdbs, self.claims)

    def start(self) -> None:
        for w in self.watchers:
            w.start()

    def stop(self) -> None:
        for w in self.watchers:
            w.stop(timeout=0)
        for w in self.watchers:
            w.stop()

    @property
    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self.watchers)

    def not_synced(self) -> list[str]:
        return [f"{w.kind} ({w.error})" if w.error else w.kind for w in self.watchers if not w.synced.is_set()]

    async def wait_synced(self, within_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not self.synced:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def objects(self) -> ClusterObjects:
        return ClusterObjects(
            nodes=self.nodes.items(),
            vmis=self.vmis.items(),
            pods=self.pods.items(),
            migrations=self.migrations.items(),
            pdbs=self.pdbs.items(),
            claims=self.claims.items(),
        )

    def snapshot(
        self,
        reading: PressureReading,
        *,
        taken_at: float,
        cluster_eviction_strategy: str | None,
        extra: Iterable[MigrationState] = (),
    ) -> ClusterSnapshot:
        return build_snapshot(
            self.objects(),
            reading,
            taken_at=taken_at,
            cluster_eviction_strategy=cluster_eviction_strategy,
            extra=extra,
        )

    # ---- lookups for the actuators -----------------------------------------------------------------------------
    def vmi(self, vm: str) -> Obj | None:
        namespace, name = vm.split("/", 1)
        return self.vmis.get(namespace, name)

    def launcher_pod(self, vm: str) -> Obj | None:
        """The running virt-launcher pod of `vm` on the node the VMI runs on."""
        vmi = self.vmi(vm)
        if vmi is None:
            return None
        uid, node = vmi["metadata"].get("uid"), (vmi.get("status") or {}).get("nodeName")
        for pod in self.pods.items():
            meta = pod["metadata"]
            if (
                meta.get("namespace") == vmi["metadata"].get("namespace")
                and (meta.get("labels") or {}).get(CREATED_BY_LABEL) == uid
                and (pod.get("spec") or {}).get("nodeName") == node
                and (pod.get("status") or {}).get("phase") == "Running"
            ):
                return pod
        return None

    def node(self, name: str) -> Obj | None:
        return self.nodes.get(None, name)

    def hostname(self, node: str) -> str:
        obj = self.node(node)
        return ((obj or {}).get("metadata", {}).get("labels") or {}).get(HOSTNAME_LABEL) or node

    def migrations_of(self, vm: str) -> list[Obj]:
        namespace, name = vm.split("/", 1)
        return [
            m
            for m in self.migrations.items()
            if m["metadata"].get("namespace") == namespace and (m.get("spec") or {}).get("vmiName") == name
        ]

    # ---- wake-ups ------------------------------------------------------------------------------------------------
    def observe(self, resource: str, kind: str, old: Obj | None, new: Obj | None) -> None:
        """A change to `resource` (its plural, e.g. `nodes`) that the owner of injected caches saw: wake the loop
        as the watchers would (`kind` is the watch event type, ADDED/MODIFIED/DELETED)."""
        handlers = {
            "nodes": self._node_event,
            "virtualmachineinstances": self._vmi_event,
            "virtualmachineinstancemigrations": self._migration_event,
        }
        handler = handlers.get(resource)
        if handler is not None:
            handler(kind, old, new)

    def _wake(self, reason: str) -> None:
        if self.on_change is not None:
            self.on_change(reason)

    def _migration_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if new is None or kind == "RELIST":
            return
        was = ((old or {}).get("status") or {}).get("phase")
        now = (new.get("status") or {}).get("phase")
        if now in TERMINAL_MIGRATION_PHASES and was not in TERMINAL_MIGRATION_PHASES:
            self._wake(f"migration {new['metadata'].get('name')} {now}")

    def _vmi_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if old is None or new is None:
            return
        if (old.get("status") or {}).get("evacuationNodeName") and not (new.get("status") or {}).get(
            "evacuationNodeName"
        ):
            self._wake(f"evacuation of {new['metadata'].get('name')} ended")

    def _node_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if kind == "RELIST":
            return
        if old is None or new is None or _node_shape(old) != _node_shape(new):
            obj = new or old or {}
            self._wake(f"node {obj.get('metadata', {}).get('name')} {kind.lower()}")


def _node_shape(node: Obj) -> tuple[bool, bool]:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )
    return ready, bool((node.get("spec") or {}).get("unschedulable"))
