"""DRA placement hints: from a pod to the devices its ResourceClaims were allocated, as `DeviceHints`.

Why it exists: the picker weights and filters endpoints by the hardware behind them (docs/picker.md, "DRA hints").
Kubernetes says which device a pod holds only through a chain of objects (reference/dra.md §1.4):

    pod spec.resourceClaims[] (+ status.resourceClaimStatuses[] for template claims,
                               + status.extendedResourceClaimStatus for extended-resource requests)
      -> ResourceClaim status.allocation.devices.results[] {driver, pool, device, tolerations}
      -> ResourceSlice device (driver, pool, device) among the slices of the pool's highest generation
      + ResourceClaim status.devices[].conditions and the pod's allocatedResourcesStatus (health)

`resolve_pod` walks it as a pure function of plain API dicts (what the watch shell caches). Any missing or partial
link (no claim yet, claim not allocated, pool incomplete, device not published, malformed quantity) leaves that part
unknown and is listed in `DeviceHints.unresolved`; nothing here raises on bad input. `DraCache` is the thin shell:
two watchers (claims in the pool's namespace, slices cluster-wide) and the slice index rebuilt when slices change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from common.kube_watch import Obj, ResourceWatcher
from scorer.device_hints import DeviceHints, DeviceInfo, DeviceTaint, Health

STANDARD_DOMAIN = "resource.kubernetes.io"


@dataclass(frozen=True)
class SliceIndex:
    """Devices by (driver, pool, device) from each pool's highest generation, and what is known about the pools."""

    devices: Mapping[tuple[str, str, str], tuple[Obj, str | None]] = field(default_factory=dict)  # -> (device, node)
    incomplete: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (driver, pool) -> why
    by_uuid: Mapping[tuple[str, str], Obj] = field(default_factory=dict)  # (driver, uuid) -> device (MIG parents)


def index_slices(slices: Iterable[Obj]) -> SliceIndex:
    """Keep only the slices of each pool's highest `pool.generation`; note pools with fewer slices than announced."""
    pools: dict[tuple[str, str], list[Obj]] = {}
    generation: dict[tuple[str, str], int] = {}
    for s in slices:
        spec = s.get("spec") if isinstance(s, dict) else None
        if not isinstance(spec, dict):
            continue
        pool = spec.get("pool")
        driver, name = spec.get("driver"), pool.get("name") if isinstance(pool, dict) else None
        if not isinstance(pool, dict) or not isinstance(driver, str) or not isinstance(name, str):
            continue
        key = (driver, name)
        gen = _int(pool.get("generation")) or 0
        if gen > generation.get(key, -1):
            generation[key], pools[key] = gen, []
        if gen == generation[key]:
            pools[key].append(spec)
    devices: dict[tuple[str, str, str], tuple[Obj, str | None]] = {}
    by_uuid: dict[tuple[str, str], Obj] = {}
    incomplete: dict[tuple[str, str], str] = {}
    for (driver, pool_name), specs in pools.items():
        announced = _int((specs[0].get("pool") or {}).get("resourceSliceCount"))
        if announced is not None and len(specs) < announced:
            gen = generation[(driver, pool_name)]
            incomplete[(driver, pool_name)] = f"{len(specs)} of {announced} slices at generation {gen}"
        for spec in specs:
            node = spec.get("nodeName") if isinstance(spec.get("nodeName"), str) else None
            for dev in spec.get("devices") or []:
                if isinstance(dev, dict) and isinstance(dev.get("name"), str):
                    devices[(driver, pool_name, dev["name"])] = (dev, node)
                    uuid = _attr(dev, driver, "uuid")
                    if isinstance(uuid, str):
                        by_uuid[(driver, uuid)] = dev
    return SliceIndex(devices, incomplete, by_uuid)


def pod_claim_names(pod: Obj) -> tuple[list[str], list[str]]:
    """The ResourceClaim names a pod uses (in its namespace), and the pod claims not resolvable to a name yet."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    generated = {
        s.get("name"): s.get("resourceClaimName")
        for s in status.get("resourceClaimStatuses") or []
        if isinstance(s, dict)
    }
    names: list[str] = []
    missing: list[str] = []
    for ref in spec.get("resourceClaims") or []:
        if not isinstance(ref, dict):
            continue
        if isinstance(ref.get("resourceClaimName"), str):
            names.append(ref["resourceClaimName"])
        elif isinstance(claim := generated.get(ref.get("name")), str):
            names.append(claim)
        else:
            missing.append(f"pod claim {ref.get('name')!r}: no ResourceClaim in status.resourceClaimStatuses yet")
    extended = (status.get("extendedResourceClaimStatus") or {}).get("resourceClaimName")
    if isinstance(extended, str):
        names.append(extended)
    for claim_name in generated.values():  # status entries whose spec entry we could not see
        if isinstance(claim_name, str) and claim_name not in names:
            names.append(claim_name)
    return list(dict.fromkeys(names)), missing


def resolve_pod(pod: Obj, claims: Mapping[tuple[str, str], Obj], index: SliceIndex) -> DeviceHints:
    """The pod's devices, as far as the objects at hand allow; never raises on missing or malformed data."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    namespace = meta.get("namespace") or ""
    node = spec.get("nodeName") if isinstance(spec.get("nodeName"), str) else None
    names, unresolved = pod_claim_names(pod)
    pod_health = _pod_health(pod)
    devices: list[DeviceInfo] = []
    for name in names:
        claim = claims.get((namespace, name))
        if claim is None:
            unresolved.append(f"claim {namespace}/{name}: not found")
            continue
        status = claim.get("status") or {}
        results = ((status.get("allocation") or {}).get("devices") or {}).get("results")
        if not results:
            unresolved.append(f"claim {namespace}/{name}: not allocated")
            continue
        conditions = _claim_conditions(status)
        for result in results:
            if not isinstance(result, dict):
                continue
            try:
                key = (str(result["driver"]), str(result["pool"]), str(result["device"]))
            except KeyError as exc:
                unresolved.append(f"claim {namespace}/{name}: allocation result without {exc.args[0]}")
                continue
            device = _device(key, result, index, conditions.get(key), pod_health.get("/".join(key)))
            devices.append(device)
            if device.type is None and device.memory_bytes is None:
                why = index.incomplete.get(key[:2])
                note = f" (pool has {why})" if why else ""
                unresolved.append(f"device {device.id}: not in the pool's slices{note}")
    return DeviceHints(node, tuple(devices), tuple(unresolved))


def _device(
    key: tuple[str, str, str], result: Obj, index: SliceIndex, ready: str | None, pod_health: str | None
) -> DeviceInfo:
    driver = key[0]
    found = index.devices.get(key)
    health, reason = _health(ready, pod_health)
    if found is None:
        return DeviceInfo("/".join(key), health=health, health_reason=reason)
    dev, node = found
    dtype = _str(_attr(dev, driver, "type"))
    memory = _capacity(dev, driver, "memory")
    sms = _capacity(dev, driver, "multiprocessors")
    fraction: float | None = 1.0 if dtype == "gpu" else None
    parent_uuid = _attr(dev, driver, "parentUUID")
    parent = index.by_uuid.get((driver, parent_uuid)) if isinstance(parent_uuid, str) else None
    if parent is not None:
        parent_sms, parent_memory = _capacity(parent, driver, "multiprocessors"), _capacity(parent, driver, "memory")
        if sms and parent_sms:
            fraction = sms / parent_sms
        elif memory and parent_memory:
            fraction = memory / parent_memory
    taints = tuple(t for t in _taints(dev) if not any(_tolerates(tol, t) for tol in result.get("tolerations") or []))
    return DeviceInfo(
        id="/".join(key),
        node=node,
        type=dtype,
        product=_str(_attr(dev, driver, "productName")) or _str(_attr(dev, driver, "model")),
        memory_bytes=memory,
        multiprocessors=sms,
        mig_profile=_str(_attr(dev, driver, "profile")),
        fraction=fraction,
        pcie_root=_str(_attr(dev, driver, f"{STANDARD_DOMAIN}/pcieRoot")),
        taints=taints,
        health=health,
        health_reason=reason,
    )


def _attr(dev: Obj, driver: str, name: str) -> Any:
    """An attribute's value by its unqualified name (the driver's domain) or qualified name; None when absent."""
    attrs = dev.get("attributes") or {}
    if not isinstance(attrs, dict):
        return None
    raw = attrs.get(name)
    if raw is None and "/" not in name:
        raw = attrs.get(f"{driver}/{name}")
    if raw is None and name.startswith(f"{driver}/"):
        raw = attrs.get(name.split("/", 1)[1])
    if not isinstance(raw, dict):
        return None
    for kind in ("string", "int", "bool", "version"):
        if kind in raw:
            return raw[kind]
    return None


def _capacity(dev: Obj, driver: str, name: str) -> int | None:
    caps = dev.get("capacity") or {}
    if not isinstance(caps, dict):
        return None
    raw = caps.get(name, caps.get(f"{driver}/{name}"))
    value = raw.get("value") if isinstance(raw, dict) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        parsed = parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return None
    return int(parsed) if isinstance(parsed, Decimal | int) and parsed >= 0 else None


def _taints(dev: Obj) -> list[DeviceTaint]:
    return [
        DeviceTaint(str(t["key"]), str(t.get("value") or ""), str(t.get("effect") or ""))
        for t in dev.get("taints") or []
        if isinstance(t, dict) and t.get("key")
    ]


def _tolerates(tol: Any, taint: DeviceTaint) -> bool:
    """core/v1 toleration semantics, as DRA uses them: key (empty with Exists = all), operator, value, effect."""
    if not isinstance(tol, dict):
        return False
    if tol.get("effect") and tol["effect"] != taint.effect:
        return False
    operator = tol.get("operator") or "Equal"
    if not tol.get("key"):
        return operator == "Exists"
    if tol["key"] != taint.key:
        return False
    return operator == "Exists" or (operator == "Equal" and (tol.get("value") or "") == taint.value)


def _claim_conditions(status: Obj) -> dict[tuple[str, str, str], str]:
    """(driver, pool, device) -> the Ready condition's status from the claim's `status.devices` (KEP-4817)."""
    out: dict[tuple[str, str, str], str] = {}
    for d in status.get("devices") or []:
        if not isinstance(d, dict):
            continue
        ready = next((c for c in d.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"), None)
        if ready is not None:
            out[(str(d.get("driver")), str(d.get("pool")), str(d.get("device")))] = str(ready.get("status"))
    return out


def _pod_health(pod: Obj) -> dict[str, str]:
    """resourceID (driver/pool/device) -> Healthy | Unhealthy | Unknown from allocatedResourcesStatus (KEP-4680)."""
    out: dict[str, str] = {}
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for entry in (cs or {}).get("allocatedResourcesStatus") or []:
            for r in (entry or {}).get("resources") or []:
                rid = r.get("resourceID") if isinstance(r, dict) else None
                if isinstance(rid, str) and out.get(rid) != "Unhealthy":  # one container seeing it is enough
                    out[rid] = str(r.get("health"))
    return out


def _health(ready: str | None, pod_health: str | None) -> tuple[Health, str]:
    if pod_health == "Unhealthy":
        return "unhealthy", "pod allocatedResourcesStatus Unhealthy"
    if ready == "False":
        return "unhealthy", "claim device condition Ready=False"
    if pod_health == "Healthy" or ready == "True":
        return "healthy", ""
    return "unknown", ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class DraCache:
    """The ResourceClaims of one namespace and all ResourceSlices, kept current (optional: no DRA API = empty)."""

    def __init__(self, resource_api: Any, namespace: str, on_change: Callable[[], None], **watch: Any) -> None:
        self._index = SliceIndex()
        self._dirty = True
        self._lock = threading.Lock()
        self._on_change = on_change
        self.claims = ResourceWatcher(
            "resourceclaims",
            resource_api.list_namespaced_resource_claim,
            namespace,
            on_event=lambda *_: on_change(),
            optional=True,
            **watch,
        )
        self.slices = ResourceWatcher(
            "resourceslices", resource_api.list_resource_slice, on_event=self._slice_event, optional=True, **watch
        )
        self.watchers: Sequence[ResourceWatcher] = (self.claims, self.slices)

    def _slice_event(self, *_: Any) -> None:
        with self._lock:
            self._dirty = True
        self._on_change()

    def resolver(self) -> Callable[[Obj], DeviceHints]:
        """A resolver over the claims and slices as they are now (built once per endpoint recomputation)."""
        claims, index = self.claims_by_key(), self.index()
        return lambda pod: resolve_pod(pod, claims, index)

    def claims_by_key(self) -> dict[tuple[str, str], Obj]:
        return {(c["metadata"].get("namespace") or "", c["metadata"]["name"]): c for c in self.claims.items()}

    def index(self) -> SliceIndex:
        with self._lock:
            if self._dirty:
                self._index, self._dirty = index_slices(self.slices.items()), False
            return self._index
