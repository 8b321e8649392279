"""Server-side validation of the kinds the twin serves, answered as 422 Invalid with `details.causes`.

Why it exists: a controller that builds a bad Lease, Event or migration must learn it from the twin exactly as
it would from kube-apiserver (or a CRD's OpenAPI schema / KubeVirt's webhook), not in production. The checks
are the ones a client is likely to trip over, not the full apiserver validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sim.cluster.errors import Cause, bad_request, invalid
from sim.cluster.objectmeta import name_causes
from sim.cluster.resources import ResourceType
from sim.cluster.shapes import check_types

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
Validator = Callable[[dict[str, Any]], list[Cause]]


def _req(obj: dict[str, Any], path: str) -> list[Cause]:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur in (None, "", [], {}):
        return [Cause(path, "Required value", "FieldValueRequired")]
    return []


def _node(obj: dict[str, Any]) -> list[Cause]:
    causes = []
    for i, t in enumerate((obj.get("spec") or {}).get("taints") or []):
        if not isinstance(t, dict) or not t.get("key"):
            causes.append(Cause(f"spec.taints[{i}].key", "Required value", "FieldValueRequired"))
        elif t.get("effect") not in TAINT_EFFECTS:
            causes.append(
                Cause(
                    f"spec.taints[{i}].effect",
                    f'Unsupported value: {t.get("effect")!r}: supported values: "NoSchedule", "PreferNoSchedule", '
                    '"NoExecute"',
                    "FieldValueNotSupported",
                )
            )
    return causes


def _pod(obj: dict[str, Any]) -> list[Cause]:
    containers = (obj.get("spec") or {}).get("containers")
    if not containers:
        return [Cause("spec.containers", "Required value", "FieldValueRequired")]
    return [
        Cause(f"spec.containers[{i}].name", "Required value", "FieldValueRequired")
        for i, c in enumerate(containers)
        if not isinstance(c, dict) or not c.get("name")
    ]


def _lease(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    d = spec.get("leaseDurationSeconds")
    if d is not None and (not isinstance(d, int) or d <= 0):
        return [Cause("spec.leaseDurationSeconds", f"Invalid value: {d!r}: must be greater than 0")]
    return []


def _core_event(obj: dict[str, Any]) -> list[Cause]:
    causes = _req(obj, "involvedObject.name") if "involvedObject" in obj else []
    t = obj.get("type")
    if t not in (None, "", "Normal", "Warning"):
        causes.append(
            Cause("type", f'Unsupported value: {t!r}: supported values: "Normal", "Warning"', "FieldValueNotSupported")
        )
    return causes


def _events_k8s_io(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for f in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
        causes += _req(obj, f)
    if obj.get("type") not in ("Normal", "Warning"):
        causes.append(Cause("type", f"Unsupported value: {obj.get('type')!r}", "FieldValueNotSupported"))
    return causes


def _pvc(obj: dict[str, Any]) -> list[Cause]:
    """ValidatePersistentVolumeClaimSpec's two checks a hand-written claim trips over."""
    causes: list[Cause] = []
    if not (obj.get("spec") or {}).get("accessModes"):
        message = "Required value: at least 1 access mode is required"
        causes.append(Cause("spec.accessModes", message, "FieldValueRequired"))
    if _req(obj, "spec.resources.requests.storage"):
        causes.append(Cause("spec.resources[storage]", "Required value", "FieldValueRequired"))
    return causes


def _priority_class(obj: dict[str, Any]) -> list[Cause]:
    value = obj.get("value")
    if not isinstance(value, int) or isinstance(value, bool):
        return [Cause("value", "Required value", "FieldValueRequired")]
    return []


def _pdb(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    if "minAvailable" in spec and "maxUnavailable" in spec:
        return [Cause("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set")]
    return []


def _vmim(obj: dict[str, Any]) -> list[Cause]:
    if not (obj.get("spec") or {}).get("vmiName"):
        return [Cause("spec.vmiName", "vmiName is missing", "FieldValueRequired")]
    return []


def _vmi(obj: dict[str, Any]) -> list[Cause]:
    return _req(obj, "spec.domain")


def _resource_slice(obj: dict[str, Any]) -> list[Cause]:
    causes = _req(obj, "spec.driver") + _req(obj, "spec.pool.name")
    spec = obj.get("spec") or {}
    chosen = [k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection") if spec.get(k)]
    if len(chosen) != 1:
        causes.append(
            Cause(
                "spec",
                "Invalid value: exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` "
                "is required",
            )
        )
    return causes


def _inference_pool(obj: dict[str, Any]) -> list[Cause]:
    return _req(obj, "spec.selector.matchLabels") + _req(obj, "spec.targetPorts")


VALIDATORS: dict[str, Validator] = {
    "nodes": _node,
    "pods": _pod,
    "leases.coordination.k8s.io": _lease,
    "events": _core_event,
    "events.events.k8s.io": _events_k8s_io,
    "persistentvolumeclaims": _pvc,
    "poddisruptionbudgets.policy": _pdb,
    "priorityclasses.scheduling.k8s.io": _priority_class,
    "virtualmachineinstancemigrations.kubevirt.io": _vmim,
    "virtualmachineinstances.kubevirt.io": _vmi,
    "resourceslices.resource.k8s.io": _resource_slice,
    "inferencepools.inference.networking.k8s.io": _inference_pool,
}


def check_shape(rt: ResourceType, obj: Any) -> None:
    """400 for bodies that are not objects of this kind (what the apiserver's decoder refuses)."""
    if not isinstance(obj, dict):
        raise bad_request("the body of the request must be a JSON object")
    if obj.get("kind") not in (None, "", rt.kind):
        raise bad_request(f"the kind of the provided object ({obj.get('kind')}) does not match {rt.kind}")
    if obj.get("apiVersion") not in (None, "", rt.api_version):
        raise bad_request(
            f"the apiVersion of the provided object ({obj.get('apiVersion')}) does not match {rt.api_version}"
        )
    check_types(rt.key, obj)


def validate(rt: ResourceType, obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    causes = name_causes(name, label=rt.plural == "namespaces")
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str):
            causes.append(Cause(f"metadata.labels.{key}", f"Invalid value: {value!r}: must be a string"))
    validator = VALIDATORS.get(rt.key)
    if validator:
        causes += validator(obj)
    if causes:
        raise invalid(rt.kind, rt.group, name, causes)
