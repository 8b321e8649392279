"""What the picker knows about the accelerator(s) behind one endpoint, resolved from DRA (plain data, no I/O).

Why it exists: discovery (scorer/sources/dra.py) resolves a pod's ResourceClaims to ResourceSlice devices, and the
scheduling plugins (device-capacity-scorer, device-health-filter) read the result; this is the vocabulary between
them. Every field may be unknown (None): DRA is optional on a cluster (OpenShift 4.21 ships device taints, health and
partitions only behind feature gates), so an endpoint with no or partial DRA data is still a normal endpoint, and
the plugins treat "unknown" as neutral, never as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Health = Literal["healthy", "unhealthy", "unknown"]
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})  # other effects (None, unknown ones) are informational


@dataclass(frozen=True)
class DeviceTaint:
    key: str
    value: str = ""
    effect: str = ""  # NoSchedule | NoExecute | None (unknown effects are treated like None, as the API says)

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class DeviceInfo:
    """One allocated device (`driver/pool/device`) with what its ResourceSlice and the claim's status say."""

    id: str  # <driver>/<pool>/<device>, the DRA device id
    node: str | None = None  # the slice's spec.nodeName (node-local pools)
    type: str | None = None  # gpu | mig | vfio | ... (the driver's `type` attribute)
    product: str | None = None  # productName (NVIDIA) or model (dra-example-driver)
    memory_bytes: int | None = None  # capacity `memory` (MIG: the slice's own memory)
    multiprocessors: int | None = None  # capacity `multiprocessors` (MIG slices, DynamicMIG GPUs)
    mig_profile: str | None = None  # e.g. 1g.10gb
    fraction: float | None = None  # share of the physical GPU: 1.0 for a whole GPU, SMs (or memory) of parent for MIG
    pcie_root: str | None = None  # resource.kubernetes.io/pcieRoot
    taints: tuple[DeviceTaint, ...] = ()  # not tolerated by the claim
    health: Health = "unknown"
    health_reason: str = ""

    @property
    def blocking_taints(self) -> tuple[DeviceTaint, ...]:
        return tuple(t for t in self.taints if t.effect in BLOCKING_EFFECTS)


@dataclass(frozen=True)
class DeviceHints:
    """Everything resolved for one pod: its devices (possibly none) and what could not be resolved, and why."""

    node: str | None = None  # the pod's spec.nodeName
    devices: tuple[DeviceInfo, ...] = ()
    unresolved: tuple[str, ...] = ()  # one line per gap ("claim llm/x: not allocated", ...)

    @property
    def known(self) -> bool:
        return bool(self.devices)

    def total(self, field: Literal["memory_bytes", "multiprocessors"]) -> int | None:
        """Sum of a capacity over the accelerators (gpu/mig or untyped devices); None unless known for each one."""
        values = [getattr(d, field) for d in self.accelerators()]
        if not values or any(v is None for v in values):
            return None
        return sum(values)

    def accelerators(self) -> tuple[DeviceInfo, ...]:
        """The devices that compute (GPUs and MIG slices; devices of unknown type that have memory)."""
        return tuple(
            d for d in self.devices if d.type in ("gpu", "mig") or (d.type is None and d.memory_bytes is not None)
        )

    def unhealthy(self) -> list[str]:
        """Why this endpoint should get no traffic (blocking taints, unhealthy devices); empty when none."""
        reasons = [f"{d.id} taint {t}" for d in self.devices for t in d.blocking_taints]
        reasons += [f"{d.id} unhealthy ({d.health_reason})" for d in self.devices if d.health == "unhealthy"]
        return reasons
