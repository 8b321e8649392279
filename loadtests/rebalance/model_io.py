"""The controller's cluster I/O in the model-time engine: caches that read the twin's store, an actuator that writes it.

Why it exists: the model-time engine (`model_engine.py`) drives the real controller loop (`controller.loop.Controller`:
tracker, snapshot, `plan()`, actuation results) without HTTP. The loop's cluster source takes injected caches
(`controller.sources.cluster.ClusterCaches`); `StoreCache` is one over the twin's `Store` (no copies: the store
replaces objects on write, never mutates them). `StoreActuator` carries out moves the way the real actuator does,
through the same twin code that answers the REST API: an eviction goes to the twin's eviction subresource (KubeVirt's
webhook marks the VMI for evacuation and answers 429 "Eviction triggered evacuation"), a directed move creates the
same VirtualMachineInstanceMigration body (`migration_body`), a soft taint edits the node's taints with the same
`edit_taints`; the API's answers are classified by the real actuator's `eviction_answer` / `migration_answer`.
What it records (`reasons`) stands in for the Events the real actuator writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from controller.actuators import APPLIED, EVICTED, FAILED, STARTED, UNCHANGED, ActionResult
from controller.actuators.kubevirt import eviction_answer, eviction_body, migration_answer, migration_body
from controller.actuators.taints import edit_taints
from controller.model import Move, TaintChange
from controller.sources.cluster import ClusterCaches, ClusterSource
from controller.sources.objects import HOSTNAME_LABEL
from sim.cluster import errors
from sim.cluster.eviction import EvictionHandler
from sim.cluster.kv_objects import is_launcher
from sim.cluster.resources import NODES, PDBS, PODS, RESOURCE_CLAIMS, VMIMS, VMIS, ResourceType
from sim.cluster.store import Store

Obj = dict[str, Any]


class StoreCache:
    """One resource of the store, as a synced watcher cache (`keep` filters, e.g. virt-launcher pods only)."""

    def __init__(self, store: Store, rt: ResourceType, keep: Callable[[Obj], bool] | None = None) -> None:
        self.store, self.rt, self.keep = store, rt, keep
        self.kind = rt.plural
        self.synced = threading.Event()
        self.synced.set()
        self.error: str | None = None

    def start(self) -> None:
        return None

    def stop(self, timeout: float = 5.0) -> None:
        return None

    def items(self) -> list[Obj]:
        objs = self.store.peek(self.rt)
        return objs if self.keep is None else [o for o in objs if self.keep(o)]

    def get(self, namespace: str | None, name: str) -> Obj | None:
        obj = self.store.peek_one(self.rt, namespace, name)
        return obj if obj is None or self.keep is None or self.keep(obj) else None


def store_caches(store: Store) -> ClusterCaches:
    return ClusterCaches(
        nodes=StoreCache(store, NODES),
        pods=StoreCache(store, PODS, is_launcher),
        vmis=StoreCache(store, VMIS),
        migrations=StoreCache(store, VMIMS),
        pdbs=StoreCache(store, PDBS),
        claims=StoreCache(store, RESOURCE_CLAIMS),
    )


class StoreActuator:
    """Moves and soft taints written straight into the twin's store (`mode`: the config's `actuator`)."""

    def __init__(self, store: Store, eviction: EvictionHandler, cluster: ClusterSource, mode: str) -> None:
        if mode not in ("eviction", "migration"):
            raise ValueError(f"unknown actuator {mode!r}")
        self.store, self.eviction, self.cluster, self.mode = store, eviction, cluster, mode
        self.reasons: dict[str, list[str]] = {}  # namespace/name -> why each started move was asked for

    async def migrate(self, move: Move) -> ActionResult:
        result = self._evict(move) if self.mode == "eviction" else self._create_migration(move)
        if result.result == STARTED:
            self.reasons.setdefault(move.vm, []).append(move.reason)
        return result

    def _evict(self, move: Move) -> ActionResult:
        pod = self.cluster.launcher_pod(move.vm)
        if pod is None:
            return _result(move, FAILED, "no running virt-launcher pod for this VMI in the cache")
        meta = pod["metadata"]
        try:
            self.eviction.evict(meta["namespace"], meta["name"], eviction_body(pod, move))
        except errors.ApiError as exc:
            answer = eviction_answer(exc.code, str(exc))
            return _result(move, *(answer or (FAILED, f"HTTP {exc.code}: {exc}")))
        return _result(move, EVICTED, f"pod {meta['name']} deleted: the VMI's evictionStrategy does not live-migrate")

    def _create_migration(self, move: Move) -> ActionResult:
        namespace = move.vm.split("/", 1)[0]
        hostname = None
        if move.target is not None:
            node = self.cluster.node(move.target) or {}
            hostname = (node.get("metadata", {}).get("labels") or {}).get(HOSTNAME_LABEL) or move.target
        try:
            created = self.store.create(VMIMS, migration_body(move, hostname), namespace)
        except errors.ApiError as exc:
            answer = migration_answer(exc.code, str(exc))
            return _result(move, *(answer or (FAILED, f"HTTP {exc.code}: {exc}")))
        name = created["metadata"]["name"]
        return ActionResult("migrate", move.vm, STARTED, f"VirtualMachineInstanceMigration {name} created", name)

    async def set_taint(self, change: TaintChange, why: str) -> ActionResult:
        node = self.store.peek_one(NODES, None, change.node)
        if node is None:
            return ActionResult("taint", change.node, FAILED, "node not found", reason=why)
        taints = list((node.get("spec") or {}).get("taints") or [])
        wanted = edit_taints(taints, change)
        if wanted is taints:
            return ActionResult("taint", change.node, UNCHANGED, f"{change.action} {change.key}", reason=why)

        def write(obj: Obj) -> None:
            obj.setdefault("spec", {})["taints"] = wanted

        self.store.mutate(NODES, None, change.node, write)
        return ActionResult("taint", change.node, APPLIED, f"{change.action} {change.key}", reason=why)


def _result(move: Move, result: str, detail: str) -> ActionResult:
    return ActionResult("migrate", move.vm, result, detail, None, move.reason)
