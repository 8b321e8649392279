"""What each migration step does to the VMI and pod objects, and KubeVirt's evacuation backoff rule.

Why it exists: the migration controller decides *when* a step happens; these small functions say *what* the
step writes (the fields virt-controller and virt-handler set: `status.migrationState`, `status.nodeName`,
`activePods`, the node labels), so each can be read against KubeVirt's source and tested on its own. All take
the object to change as first argument (for `Store.mutate`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sim.cluster.kv_objects import (
    EVICTION_SOURCE_ANNOTATION,
    MIGRATION_TARGET_NODE_LABEL,
    NODE_NAME_LABEL,
    scheduled_condition,
)


def vmi_target_chosen(vmi: dict[str, Any], state: dict[str, Any], target: str) -> None:
    """Scheduled: the handoff state virt-controller writes once the target pod is bound."""
    vmi.setdefault("status", {})["migrationState"] = dict(state)
    vmi["metadata"].setdefault("labels", {})[MIGRATION_TARGET_NODE_LABEL] = target


def migration_phase(migration: dict[str, Any], *, phase: str, now: str, vmi_state: dict[str, Any] | None) -> None:
    """A VMIM phase change, recorded in phaseTransitionTimestamps, with the VMI's migrationState copied over."""
    st = migration.setdefault("status", {})
    st["phase"] = phase
    st.setdefault("phaseTransitionTimestamps", []).append({"phase": phase, "phaseTransitionTimestamp": now})
    if vmi_state and vmi_state.get("migrationUid") == migration["metadata"]["uid"]:
        st["migrationState"] = dict(vmi_state)


def target_pod_creating(pod: dict[str, Any], now: str) -> None:
    """A just-bound target pod: Pending, its container still being created."""
    st = pod["status"]
    st["phase"] = "Pending"
    st["conditions"] = [scheduled_condition(now), {"type": "Ready", "status": "False", "lastTransitionTime": now}]
    st["containerStatuses"][0].update(ready=False, started=False, state={"waiting": {"reason": "ContainerCreating"}})


def target_pod_running(pod: dict[str, Any], now: str) -> None:
    st = pod["status"]
    st["phase"] = "Running"
    scheduled = next(c for c in st["conditions"] if c["type"] == "PodScheduled")
    st["conditions"] = [scheduled, {"type": "Ready", "status": "True", "lastTransitionTime": now}]
    st["containerStatuses"][0].update(ready=True, started=True, state={"running": {"startedAt": now}})


def vmi_transfer_started(vmi: dict[str, Any], now: str) -> None:
    vmi["status"]["migrationState"].update(startTimestamp=now, mode="PreCopy")


def vmi_moved(vmi: dict[str, Any], *, target: str, pod_uid: str, ip: str, mode: str, now: str) -> None:
    """Succeeded: what virt-handler's migration target writes (migration-target.go ackMigrationCompletion)."""
    st = vmi["status"]
    st["nodeName"] = target
    st.pop("evacuationNodeName", None)
    st["migrationState"].update(endTimestamp=now, completed=True, mode=mode, targetNodeDomainDetected=True)
    st["activePods"] = {pod_uid: target}
    st["interfaces"] = [{"name": "default", "ipAddress": ip, "ipAddresses": [ip]}]
    labels = vmi["metadata"].setdefault("labels", {})
    labels[NODE_NAME_LABEL] = target
    labels.pop(MIGRATION_TARGET_NODE_LABEL, None)
    (vmi["metadata"].get("annotations") or {}).pop(EVICTION_SOURCE_ANNOTATION, None)


def vmi_migration_failed(vmi: dict[str, Any], *, reason: str, now: str) -> None:
    vmi["status"]["migrationState"].update(endTimestamp=now, completed=True, failed=True, failureReason=reason)
    (vmi["metadata"].get("labels") or {}).pop(MIGRATION_TARGET_NODE_LABEL, None)


def vmi_migration_aborted(vmi: dict[str, Any], *, now: str) -> None:
    state = (vmi.get("status") or {}).get("migrationState")
    if state and not state.get("completed"):
        state.update(
            endTimestamp=now,
            completed=True,
            failed=True,
            abortStatus="Succeeded",
            failureReason="Live migration has been aborted",
        )
    (vmi["metadata"].get("labels") or {}).pop(MIGRATION_TARGET_NODE_LABEL, None)


def evacuation_backoff_until(
    earlier: Iterable[Mapping[str, Any]], failed_at: Mapping[str, float], initial: float
) -> float | None:
    """Model time before which a new evacuation migration of a VMI must wait (migration.go
    handleMigrationBackoff): `earlier` are the VMI's other evacuation migrations, newest first; each Failed one
    since the last Succeeded doubles the backoff (20 s, 40 s, ...), counted from the newest failure."""
    backoff, last_failure = 0.0, None
    for m in earlier:
        phase = (m.get("status") or {}).get("phase")
        if phase == "Succeeded":
            break
        if phase == "Failed":
            backoff = initial if backoff == 0 else backoff * 2
            if last_failure is None:
                last_failure = failed_at.get(m["metadata"]["uid"])
    if not backoff or last_failure is None:
        return None
    return last_failure + backoff
