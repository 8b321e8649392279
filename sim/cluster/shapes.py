"""The JSON types of the object fields the twin reads, checked where a body enters: Go's typed decoding, in small.

Why it exists: kube-apiserver decodes a body into Go structs, so `"metadata": {"labels": [1]}` or
`"spec": {"containers": 5}` never reach its registry: the decoder answers 400 BadRequest ("json: cannot unmarshal
array into Go struct field ObjectMeta.metadata.labels of type map[string]string"). The twin keeps objects as dicts;
without this check such a body would reach code that expects a mapping and fail with a 500. Only the fields some
part of the twin reads are typed here (metadata for every kind; per kind what the scheduler, KubeVirt, the
eviction and PDB logic, the tables and the load model read); anything else passes as the client sent it.
"""

from __future__ import annotations

from typing import Any

from sim.cluster import quantity
from sim.cluster.errors import ApiError, bad_request

Schema = Any  # a type name ("string", "int", "bool", "object", "quantity", "any"), a dict (struct) or a list
STRING_MAP = {"*": "string"}
OWNER_REFERENCE = {
    "apiVersion": "string",
    "kind": "string",
    "name": "string",
    "uid": "string",
    "controller": "bool",
    "blockOwnerDeletion": "bool",
}
OBJECT_META = {
    "name": "string",
    "generateName": "string",
    "namespace": "string",
    "uid": "string",
    "resourceVersion": "string",
    "generation": "int",
    "creationTimestamp": "string",
    "deletionTimestamp": "string",
    "labels": STRING_MAP,
    "annotations": STRING_MAP,
    "finalizers": ["string"],
    "ownerReferences": [OWNER_REFERENCE],
    "managedFields": ["object"],
}
RESOURCES = {"requests": {"*": "quantity"}, "limits": {"*": "quantity"}}
TOLERATIONS = [{"key": "string", "operator": "string", "value": "string", "effect": "string"}]
TAINTS = [{"key": "string", "value": "string", "effect": "string", "timeAdded": "string"}]
CONDITIONS = [{"type": "string", "status": "string", "reason": "string", "message": "string"}]
LABEL_SELECTOR = {"matchLabels": STRING_MAP, "matchExpressions": [{"key": "string", "operator": "string"}]}
POD_SPEC = {
    "nodeName": "string",
    "nodeSelector": STRING_MAP,
    "tolerations": TOLERATIONS,
    "affinity": "object",
    "containers": [{"name": "string", "image": "string", "resources": RESOURCES}],
    "resourceClaims": ["object"],
}
VMI_SPEC = {
    "domain": {
        "cpu": {"cores": "int", "sockets": "int", "threads": "int"},
        "memory": {"guest": "quantity"},
        "resources": RESOURCES,
        "devices": {"hostDevices": ["object"], "gpus": ["object"]},
    },
    "nodeSelector": STRING_MAP,
    "tolerations": TOLERATIONS,
    "affinity": "object",
    "evictionStrategy": "string",
    "resourceClaims": ["object"],
}
# resource key -> top-level fields (metadata is added for every kind)
KINDS: dict[str, dict[str, Schema]] = {
    "pods": {
        "spec": POD_SPEC,
        "status": {"phase": "string", "podIP": "string", "conditions": CONDITIONS, "containerStatuses": ["object"]},
    },
    "nodes": {
        "spec": {"unschedulable": "bool", "taints": TAINTS},
        "status": {
            "capacity": {"*": "quantity"},
            "allocatable": {"*": "quantity"},
            "conditions": CONDITIONS,
            "addresses": [{"type": "string", "address": "string"}],
            "nodeInfo": "object",
        },
    },
    "namespaces": {"spec": "object", "status": {"phase": "string"}},
    "persistentvolumeclaims": {
        "spec": {"accessModes": ["string"], "resources": RESOURCES, "storageClassName": "string"},
        "status": {"phase": "string", "accessModes": ["string"], "capacity": {"*": "quantity"}},
    },
    "events": {"involvedObject": "object", "type": "string", "reason": "string", "message": "string"},
    "events.events.k8s.io": {"regarding": "object", "type": "string", "reason": "string", "note": "string"},
    "poddisruptionbudgets.policy": {
        "spec": {"selector": LABEL_SELECTOR, "minAvailable": "int-or-string", "maxUnavailable": "int-or-string"},
        "status": "object",
    },
    "priorityclasses.scheduling.k8s.io": {"value": "int", "globalDefault": "bool", "preemptionPolicy": "string"},
    "leases.coordination.k8s.io": {
        "spec": {"holderIdentity": "string", "leaseDurationSeconds": "int", "leaseTransitions": "int"}
    },
    "virtualmachineinstances.kubevirt.io": {"spec": VMI_SPEC, "status": "object"},
    "virtualmachines.kubevirt.io": {"spec": {"runStrategy": "string", "running": "bool", "template": "object"}},
    "virtualmachineinstancemigrations.kubevirt.io": {
        "spec": {"vmiName": "string", "priority": "string", "addedNodeSelector": STRING_MAP},
        "status": "object",
    },
    "eviction": {"deleteOptions": {"dryRun": ["string"], "gracePeriodSeconds": "int"}},  # policy/v1 Eviction body
    "resourceslices.resource.k8s.io": {"spec": {"nodeName": "string", "driver": "string", "pool": "object"}},
    "inferencepools.inference.networking.k8s.io": {
        "spec": {"selector": {"matchLabels": STRING_MAP}, "targetPorts": [{"number": "int"}]}
    },
}
_GO = {"string": "string", "int": "int64", "bool": "bool", "object": "object", "quantity": "resource.Quantity"}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"


def _fail(path: str, value: Any, want: str) -> ApiError:
    return bad_request(
        f"json: cannot unmarshal {_json_type(value)} into Go struct field {path} of type {_GO.get(want, want)}"
    )


def _check(value: Any, schema: Schema, path: str) -> None:
    if value is None or schema == "any":
        return  # null decodes to the zero value
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise _fail(path, value, "object")
        for key, item in value.items():
            sub = schema.get(key, schema.get("*"))
            if sub is not None:
                _check(item, sub, f"{path}.{key}" if path else key)
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise _fail(path, value, f"[]{schema[0] if isinstance(schema[0], str) else 'object'}")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{path}[{i}]")
        return
    ok = {
        "string": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "object": isinstance(value, dict),
        "quantity": isinstance(value, str | int | float) and not isinstance(value, bool),
        "int-or-string": isinstance(value, str | int) and not isinstance(value, bool),
    }[schema]
    if not ok:
        raise _fail(path, value, schema)
    if schema == "quantity":
        try:
            quantity.parse(value)
        except (quantity.QuantityError, ArithmeticError, ValueError):
            raise bad_request(
                f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {path}"
            ) from None


def check_types(resource_key: str, obj: dict[str, Any]) -> None:
    """400 BadRequest naming the first field whose JSON type the apiserver's decoder would refuse."""
    _check(obj, {"metadata": OBJECT_META, **KINDS.get(resource_key, {})}, "")
