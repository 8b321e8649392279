"""`KubeVirtMigrationActuator`: starts the live migration of one VM, the descheduler's way or directly.

Why it exists: KubeVirt offers two doors and the config picks one (`actuator:`):
- `eviction`: POST `pods/<virt-launcher>/eviction` (policy/v1), as the descheduler does (ref §2.4-2.6, §3). KubeVirt's
  webhook marks the VMI for evacuation and answers 429 `Eviction triggered evacuation of VMI "ns/name"`: that 429
  means started, not refused. `Evacuation in progress` means one is already under way; any other 429 (a PDB, a
  VMI that cannot migrate) means refused. The Eviction carries `requested-by: sigs.k8s.io/descheduler`, which
  makes KubeVirt give the evacuation `system-maintenance` priority, behind node drains (ref §3). The target is
  chosen by the scheduler, steered by the soft taints.
- `migration`: create a VirtualMachineInstanceMigration, with `spec.addedNodeSelector` naming the target's
  `kubernetes.io/hostname` when the plan chose one (KubeVirt adds it to the target pod's node selector). No
  `spec.priority`: only virt-controller may set it. The VMIM is labelled `app.kubernetes.io/managed-by:
  autonomic-controller` and annotated with the plan's reason, so a restarted controller can adopt it.
Each action also records an Event on the VMI and on its node (events.py). The client is synchronous: each call
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.actuators import EVICTED, FAILED, IN_PROGRESS, REFUSED, STARTED, ActionResult
from controller.actuators.events import EventRecorder
from controller.model import Move
from controller.sources.cluster import KUBEVIRT, ClusterSource
from controller.sources.objects import HOSTNAME_LABEL

log = logging.getLogger("autonomic.controller.actuator")
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "autonomic-controller"
REASON_ANNOTATION = "autonomic.dev/reason"
STARTED_TEXT = "Eviction triggered evacuation"
IN_PROGRESS_TEXTS = ("Evacuation in progress", "in-flight migration detected")


class KubeVirtMigrationActuator:
    def __init__(self, api: client.ApiClient, cluster: ClusterSource, events: EventRecorder, mode: str) -> None:
        if mode not in ("eviction", "migration"):
            raise ValueError(f"unknown actuator {mode!r}")
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.cluster, self.events, self.mode = cluster, events, mode

    async def migrate(self, move: Move) -> ActionResult:
        result = await asyncio.to_thread(self._migrate, move)
        await asyncio.to_thread(self._record_events, move, result)
        return result

    def _migrate(self, move: Move) -> ActionResult:
        try:
            return self._evict(move) if self.mode == "eviction" else self._create_migration(move)
        except ApiException as exc:
            return _result(move, FAILED, f"HTTP {exc.status}: {_message(exc)}")
        except Exception as exc:  # connection errors: the cycle goes on, the next one will see the cluster again
            return _result(move, FAILED, f"{type(exc).__name__}: {exc}")

    def _evict(self, move: Move) -> ActionResult:
        pod = self.cluster.launcher_pod(move.vm)
        if pod is None:
            return _result(move, FAILED, "no running virt-launcher pod for this VMI in the cache")
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        eviction: Any = eviction_body(pod, move)
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, eviction, _preload_content=False)
        except ApiException as exc:
            answer = eviction_answer(exc.status, _message(exc))
            if answer is None:
                raise
            return _result(move, *answer)
        log.warning("eviction deleted the pod: the VM was stopped, not migrated", extra={"vm": move.vm, "pod": name})
        return _result(move, EVICTED, f"pod {name} deleted: the VMI's evictionStrategy does not live-migrate")

    def _create_migration(self, move: Move) -> ActionResult:
        namespace = move.vm.split("/", 1)[0]
        hostname = self.cluster.hostname(move.target) if move.target is not None else None
        body: Any = migration_body(move, hostname)
        try:
            created: Any = self.custom.create_namespaced_custom_object(
                *KUBEVIRT, namespace, "virtualmachineinstancemigrations", body
            )
        except ApiException as exc:
            answer = migration_answer(exc.status, _message(exc))
            if answer is None:
                raise
            return _result(move, *answer)
        vmim = created["metadata"]["name"]
        where = f"to {move.target}" if move.target else "(target chosen by the scheduler)"
        return _result(move, STARTED, f"VirtualMachineInstanceMigration {vmim} created {where}", vmim)

    def _record_events(self, move: Move, result: ActionResult) -> None:
        vmi, node = self.cluster.vmi(move.vm), self.cluster.node(move.source)
        if result.result == STARTED:
            where = f" to {move.target}" if move.target else ""
            self.events.vmi(vmi, move.vm, "Migrating", f"live migration from {move.source}{where}: {move.reason}")
            self.events.node(node, move.source, "RelievingNode", f"migrating {move.vm}{where}: {move.reason}")
        elif result.result in (REFUSED, FAILED, EVICTED):
            self.events.vmi(
                vmi, move.vm, "MigrationNotStarted", f"{result.detail} (wanted: {move.reason})", warning=True
            )


def eviction_answer(status: int | None, message: str) -> tuple[str, str] | None:
    """(result, detail) of an eviction the API answered with an error, or None for an error to raise. 429 with
    KubeVirt's `Eviction triggered evacuation` is how a started live migration looks."""
    if status == 429 and STARTED_TEXT in message and "Evacuation in progress" not in message:
        return STARTED, message
    if any(text in message for text in IN_PROGRESS_TEXTS):
        return IN_PROGRESS, message
    if status in (404, 429):
        return (REFUSED if status == 429 else FAILED), f"HTTP {status}: {message}"
    return None


def migration_answer(status: int | None, message: str) -> tuple[str, str] | None:
    """(result, detail) of a VirtualMachineInstanceMigration creation the API refused, or None for an error to
    raise."""
    if any(text in message for text in IN_PROGRESS_TEXTS):
        return IN_PROGRESS, message
    if status in (400, 403, 404, 422, 429):
        return REFUSED, f"HTTP {status}: {message}"
    return None


def migration_body(move: Move, hostname: str | None) -> dict[str, Any]:
    """The VirtualMachineInstanceMigration that carries out `move` (`hostname`: the target's hostname label)."""
    namespace, name = move.vm.split("/", 1)
    spec: dict[str, Any] = {"vmiName": name}
    if hostname is not None:
        spec["addedNodeSelector"] = {HOSTNAME_LABEL: hostname}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {
            "generateName": f"{_dns_prefix(name)}-autonomic-",
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGER},
            "annotations": {REASON_ANNOTATION: move.reason},
        },
        "spec": spec,
    }


def eviction_body(pod: dict[str, Any], move: Move) -> dict[str, Any]:
    """The policy/v1 Eviction of `pod` the descheduler would send (its `requested-by` annotation included)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "annotations": {"requested-by": "sigs.k8s.io/descheduler", "reason": move.reason[:250]},
        },
    }


def _result(move: Move, result: str, detail: str, migration: str | None = None) -> ActionResult:
    return ActionResult("migrate", move.vm, result, detail, migration, move.reason)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason or "")
    except (ValueError, AttributeError):
        return str(exc.body or exc.reason or "")


def _dns_prefix(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:40].strip("-") or "vm"
