"""ObjectMeta bookkeeping the apiserver does on every write: names (and generateName), uid,
creationTimestamp, generation, and the rules for which parts of an object a write may change.

Why it exists: the store stays a store (versions, events, concurrency); what a create or an update does to
metadata and to spec/status lives here, small and table-testable.
"""

from __future__ import annotations

import copy
import random
import re
import uuid
from typing import Any

from sim.cluster.errors import Cause
from sim.cluster.resources import ResourceType

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# the alphabet apimachinery's utilrand.String uses for generateName suffixes (no vowels, no confusables)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_rng = random.Random()

IMMUTABLE_META = ("uid", "creationTimestamp", "name", "namespace", "generation")


def random_suffix(n: int = 5) -> str:
    return "".join(_rng.choice(_SUFFIX_ALPHABET) for _ in range(n))


def name_causes(name: str, *, label: bool = False) -> list[Cause]:
    if not name:
        return [Cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired")]
    pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
    if len(name) > limit:
        return [Cause("metadata.name", f"Invalid value: {name!r}: must be no more than {limit} characters")]
    if not pattern.match(name):
        kind = "RFC 1123 label" if label else "RFC 1123 subdomain"
        return [
            Cause(
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase {kind} must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character",
            )
        ]
    return []


def prepare_create(rt: ResourceType, obj: dict[str, Any], namespace: str | None, now: str) -> dict[str, Any]:
    """Fill server-set metadata on a new object (name from generateName, uid, timestamps, generation)."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = f"{meta['generateName']}{random_suffix()}"
    if rt.namespaced:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now
    meta["generation"] = 1
    for k in ("resourceVersion", "deletionTimestamp", "selfLink"):
        meta.pop(k, None)
    return obj


def _body(obj: dict[str, Any], *, drop_status: bool) -> dict[str, Any]:
    return {
        k: v
        for k, v in obj.items()
        if k not in ("metadata", "apiVersion", "kind") and not (drop_status and k == "status")
    }


def merge_update(
    rt: ResourceType, current: dict[str, Any], new: dict[str, Any], *, subresource: str | None
) -> dict[str, Any]:
    """The object an update produces: server-owned metadata kept, status/spec split honoured, generation bumped."""
    new = copy.deepcopy(new)
    new["apiVersion"], new["kind"] = rt.api_version, rt.kind
    meta = new.setdefault("metadata", {})
    cur_meta = current.get("metadata", {})
    for k in IMMUTABLE_META:
        if k in cur_meta:
            meta[k] = cur_meta[k]
        else:
            meta.pop(k, None)
    if subresource == "status":
        out = copy.deepcopy(current)
        if "status" in new:
            out["status"] = new["status"]
        else:
            out.pop("status", None)
        out["metadata"]["resourceVersion"] = meta.get("resourceVersion", cur_meta.get("resourceVersion"))
        return out
    if rt.status_subresource:
        if "status" in current:
            new["status"] = copy.deepcopy(current["status"])
        else:
            new.pop("status", None)
    if _body(new, drop_status=rt.status_subresource) != _body(current, drop_status=rt.status_subresource):
        meta["generation"] = int(cur_meta.get("generation", 1)) + 1
    return new


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal except for resourceVersion (a write that changes nothing creates no new version)."""

    def strip(o: dict[str, Any]) -> dict[str, Any]:
        o = dict(o)
        o["metadata"] = {k: v for k, v in (o.get("metadata") or {}).items() if k != "resourceVersion"}
        return o

    return strip(a) == strip(b)
