"""Server-side printing: `meta.k8s.io/v1 Table` responses for clients that ask with `Accept: ...;as=Table`.

Why it exists: `kubectl get` asks for a Table and prints the server's columns; the columns here are those of
kube-apiserver's printers (nodes, pods, events, PersistentVolumeClaims) and of the KubeVirt CRDs'
additionalPrinterColumns (VMIs, migrations), with `Name` and `Age` for everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sim.cluster.resources import ResourceType

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj, datetime], Any]]  # (name, type, priority, cell)


def wants_table(accept: str) -> bool:
    return any("as=Table" in part for part in accept.split(","))


def _age(obj: Obj, now: datetime) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    seconds = int((now - datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds())
    if seconds < 0:
        return "<invalid>"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _name(obj: Obj, now: datetime) -> str:
    return str(obj["metadata"]["name"])


def _node_status(obj: Obj, now: datetime) -> str:
    ready = next((c for c in obj.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else ("NotReady" if ready else "Unknown")
    return status + (",SchedulingDisabled" if (obj.get("spec") or {}).get("unschedulable") else "")


def _node_roles(obj: Obj, now: datetime) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in (obj["metadata"].get("labels") or {}) if k.startswith(prefix))
    return ",".join(roles) or "<none>"


def _node_ip(obj: Obj, now: datetime) -> str:
    addrs = (obj.get("status") or {}).get("addresses") or []
    return next((a.get("address", "") for a in addrs if a.get("type") == "InternalIP"), "<none>")


def _pod_ready(obj: Obj, now: datetime) -> str:
    total = len((obj.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in (obj.get("status") or {}).get("containerStatuses") or [] if c.get("ready"))
    return f"{ready}/{total}"


def _get(*path: str, default: Any = "") -> Callable[[Obj, datetime], Any]:
    def cell(obj: Obj, now: datetime) -> Any:
        cur: Any = obj
        for p in path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        return default if cur is None else cur

    return cell


def _condition(kind: str) -> Callable[[Obj, datetime], str]:
    def cell(obj: Obj, now: datetime) -> str:
        conds = (obj.get("status") or {}).get("conditions") or []
        return next((str(c.get("status")) for c in conds if c.get("type") == kind), "")

    return cell


def _access_modes(obj: Obj, now: datetime) -> str:
    """kubectl's abbreviations of status.accessModes (the modes the bound volume offers)."""
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    modes = (obj.get("status") or {}).get("accessModes") or []
    return ",".join(short.get(m, m) for m in modes)


NAME: Column = ("Name", "string", 0, _name)
AGE: Column = ("Age", "string", 0, _age)
COLUMNS: dict[str, list[Column]] = {
    "nodes": [
        NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        AGE,
        ("Version", "string", 0, _get("status", "nodeInfo", "kubeletVersion")),
        ("Internal-IP", "string", 1, _node_ip),
    ],
    "pods": [
        NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _get("status", "phase")),
        ("Restarts", "integer", 0, lambda o, n: 0),
        AGE,
        ("IP", "string", 1, _get("status", "podIP", default="<none>")),
        ("Node", "string", 1, _get("spec", "nodeName", default="<none>")),
    ],
    "events": [
        ("Last Seen", "string", 0, _age),
        ("Type", "string", 0, _get("type")),
        ("Reason", "string", 0, _get("reason")),
        (
            "Object",
            "string",
            0,
            lambda o, n: f"{_get('involvedObject', 'kind')(o, n).lower()}/{_get('involvedObject', 'name')(o, n)}",
        ),
        ("Message", "string", 0, _get("message")),
    ],
    "persistentvolumeclaims": [
        NAME,
        ("Status", "string", 0, _get("status", "phase")),
        ("Volume", "string", 0, _get("spec", "volumeName")),
        ("Capacity", "string", 0, _get("status", "capacity", "storage")),
        ("Access Modes", "string", 0, _access_modes),
        ("StorageClass", "string", 0, _get("spec", "storageClassName")),
        ("VolumeAttributesClass", "string", 0, _get("spec", "volumeAttributesClassName", default="<unset>")),
        AGE,
        ("VolumeMode", "string", 1, _get("spec", "volumeMode")),
    ],
    "virtualmachineinstances.kubevirt.io": [
        NAME,
        AGE,
        ("Phase", "string", 0, _get("status", "phase")),
        ("IP", "string", 0, lambda o, n: ((o.get("status") or {}).get("interfaces") or [{}])[0].get("ipAddress", "")),
        ("NodeName", "string", 0, _get("status", "nodeName")),
        ("Ready", "string", 0, _condition("Ready")),
        ("Live-Migratable", "string", 1, _condition("LiveMigratable")),
    ],
    "virtualmachineinstancemigrations.kubevirt.io": [
        NAME,
        ("Phase", "string", 0, _get("status", "phase")),
        ("VMI", "string", 0, _get("spec", "vmiName")),
    ],
}


def to_table(
    rt: ResourceType, items: list[Obj], now: datetime, *, resource_version: str, include: str = "Metadata"
) -> Obj:
    columns = COLUMNS.get(rt.key, [NAME, AGE])
    rows = []
    for obj in items:
        row: Obj = {"cells": [col[3](obj, now) for col in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": p}
            for n, t, p, _ in columns
        ],
        "rows": rows,
    }
