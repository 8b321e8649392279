"""The three PATCH flavours kube-apiserver accepts: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a
strategic merge patch subset.

Why it exists: the official client sends a dict body as strategic merge patch for built-in kinds and as merge
patch for custom resources, and a list body as JSON patch; controllers patch taints, annotations and status
conditions. Errors raise `PatchError` (the HTTP layer answers 422 or 400 like the apiserver).

Strategic merge subset (the merge keys are the ones in k8s.io/api's struct tags for the kinds served here):
- maps merge recursively; a `null` value deletes the key;
- lists with a merge key (`LIST_MERGE_KEYS`, matched on the list's field path with indices removed, e.g.
  `spec.containers` by `name`, `status.conditions` by `type`) merge element-wise: elements with the same key are
  merged recursively, new ones appended; `{"$patch": "delete", <key>: ...}` removes one; an element
  `{"$patch": "replace"}` makes the list be replaced by the patch's other elements;
- primitive lists with strategy merge (`metadata.finalizers`) become the ordered union;
  `$deleteFromPrimitiveList/<field>` removes values from them;
- every other list (node `spec.taints`, pod `spec.tolerations`, ...) is replaced, as in Kubernetes, whose
  NodeSpec.Taints carries no patch strategy;
- directives `$setElementOrder/<field>` and `$retainKeys` are accepted and ignored (order is kept as merged).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


# list field path (no indices) -> merge key; "" means a primitive list merged as a set
LIST_MERGE_KEYS: dict[str, str] = {
    "metadata.finalizers": "",
    "metadata.ownerReferences": "uid",
    "spec.containers": "name",
    "spec.initContainers": "name",
    "spec.containers.ports": "containerPort",
    "spec.containers.env": "name",
    "spec.containers.volumeMounts": "mountPath",
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "status.conditions": "type",
    "status.addresses": "type",
    "status.containerStatuses": "name",
    "status.podIPs": "ip",
}


def json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any, path: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if not isinstance(value, list):
                raise PatchError(f"{key}: must be a list")
            out[field] = [v for v in out.get(field) or [] if v not in value]
            continue
        child = f"{path}.{key}" if path else key
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list):
            out[key] = _merge_list(out.get(key), value, child)
        else:
            merged = strategic_merge_patch(out.get(key), value, child)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
    return out


def _merge_list(current: Any, patch: list[Any], path: str) -> list[Any]:
    if path not in LIST_MERGE_KEYS or not isinstance(current, list):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    key = LIST_MERGE_KEYS[path]
    if key == "":
        out = list(current)
        out.extend(v for v in patch if v not in out)
        return out
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    out = [copy.deepcopy(v) for v in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{path}: every element must be an object with the merge key {key!r}")
        idx = next((i for i, cur in enumerate(out) if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            out[idx] = strategic_merge_patch(out[idx], item, path)
    return out


# ---- JSON patch ------------------------------------------------------------------------------------------
def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict):
            if part not in cur:
                raise PatchError(f"path {path!r} not found (missing {part!r})")
            cur = cur[part]
        elif isinstance(cur, list):
            cur = cur[_index(cur, part, path, allow_end=False)]
        else:
            raise PatchError(f"path {path!r} not found")
    return cur


def _index(lst: list[Any], part: str, path: str, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(lst)
    if not part.isdigit():
        raise PatchError(f"invalid array index {part!r} in {path!r}")
    i = int(part)
    if i > len(lst) or (i == len(lst) and not allow_end):
        raise PatchError(f"array index {i} out of range in {path!r}")
    return i


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), copy.deepcopy(value))
    else:
        raise PatchError(f"cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} not found")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path, allow_end=False))
    raise PatchError(f"path {path!r} not found")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {n}: must be an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {n} ({kind}): missing 'value'")
        if kind == "add":
            doc = _add(doc, path, op["value"])
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _resolve(doc, _pointer(path), path)
            doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
            doc = _add(doc, path, op["value"])
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f"operation {n} ({kind}): missing 'from'")
            value = copy.deepcopy(_resolve(doc, _pointer(op["from"]), op["from"]))
            if kind == "move":
                doc, value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _resolve(doc, _pointer(path), path) != op["value"]:
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"operation {n}: unknown op {kind!r}")
    return doc
