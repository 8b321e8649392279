"""The scenario's `load:` and `faults:` sections, and how per-VM load settings reach the VMIs.

Why it exists: the controller's demo and tests need pressure that is reproducible and relieved by moving VMs.
A hotspot therefore multiplies the demand of chosen VMs (those the scenario places on a node, or listed ones),
and that demand moves with them; a VM can also follow a chosen trace VM (`loadTrace`) or hold a constant
load (`cpuLoad`, `memoryLoad`). All of it is written onto each VMI (and its VM template) as annotations, so
it is visible with `kubectl get vmi -o yaml`, survives a VM restart, and can be changed at run time with an
ordinary PATCH (or `POST /_twin/load/hotspot`):

    sim.autonomic.io/load-trace           trace VM id                 (else picked by hash of seed/ns/name)
    sim.autonomic.io/cpu-load             0..1 of the vCPUs, constant (replaces the trace's cpu)
    sim.autonomic.io/memory-load          0..1 of guest memory, constant
    sim.autonomic.io/cpu-load-factor      > 0, multiplies cpu demand (result capped at all vCPUs busy)
    sim.autonomic.io/memory-load-factor   > 0, multiplies memory demand (capped at guest memory)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sim.cluster import quantity
from sim.cluster.faults import FaultError, FaultState
from sim.cluster.kv_objects import (
    CPU_LOAD_ANNOTATION,
    CPU_LOAD_FACTOR_ANNOTATION,
    MEMORY_LOAD_ANNOTATION,
    MEMORY_LOAD_FACTOR_ANNOTATION,
)

if TYPE_CHECKING:
    from sim.cluster.scenario import Scenario, VmSpec


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Hotspot(_Model):
    """Multiply the demand of the VMs the scenario places on `node`, or of the VMs in `vms`."""

    node: str | None = None
    vms: list[str] = Field(default_factory=list)  # "namespace/name", or "name" when unambiguous
    cpu_factor: float = Field(1.0, gt=0, alias="cpuFactor")
    memory_factor: float = Field(1.0, gt=0, alias="memoryFactor")


class MigrationCost(_Model):
    """What a live migration costs while its memory transfer runs (cores busy; see docs/cluster-twin.md)."""

    source_cpu: float = Field(0.8, ge=0, le=16, alias="sourceCpu")  # QEMU's migration thread: copy, TLS, send
    target_cpu: float = Field(0.5, ge=0, le=16, alias="targetCpu")  # receiving and writing guest pages


class LoadSettings(_Model):
    seed: int = 1  # picks the trace VM of each VM without loadTrace
    trace_file: str | None = Field(None, alias="traceFile")  # default: $AUTONOMIC_VM_LOAD_TRACE or shared data
    trace_speed: float = Field(1.0, gt=0, alias="traceSpeed")  # trace seconds per model second
    start_minute: float = Field(0.0, ge=0, lt=1440, alias="startMinute")  # trace minute at model time 0
    host_cpu: float = Field(0.2, ge=0, alias="hostCpu")  # cores the host itself keeps busy (kubelet, CRI-O, OS)
    host_memory: str = Field("1536Mi", alias="hostMemory")  # memory the host itself uses
    hotspots: list[Hotspot] = Field(default_factory=list)
    migration: MigrationCost = Field(default_factory=lambda: MigrationCost.model_validate({}))

    @field_validator("host_memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> str:
        try:
            quantity.parse(v)
        except quantity.QuantityError as exc:
            raise ValueError(str(exc)) from None
        return str(v)

    @property
    def host_memory_bytes(self) -> int:
        return quantity.bytes_(self.host_memory)


class FaultSettings(_Model):
    """Fault knobs on from the start, in the admin API's shapes (docs/cluster-twin.md, "Fault knobs")."""

    api: dict[str, Any] | None = None  # {"errorRate": 0.1, "errorStatus": 503, "latencyMs": 20}
    migrations: dict[str, Any] | None = None  # {"count": 1, "reason": "..."}
    scrape: list[dict[str, Any]] = Field(default_factory=list)  # [{"node": "worker-1", "mode": "error"}]


def apply_faults(state: FaultState, f: FaultSettings) -> list[str]:
    """Set `state` from the scenario; returns the errors, each with its path (nothing is applied partially
    per knob: each knob validates before it changes)."""
    errors: list[str] = []
    if f.api is not None:
        _apply(errors, "faults.api", functools.partial(state.apply_api, f.api))
    if f.migrations is not None:
        _apply(errors, "faults.migrations", functools.partial(state.apply_migrations, f.migrations))
    for i, item in enumerate(f.scrape):
        _apply(errors, f"faults.scrape[{i}]", functools.partial(state.apply_scrape, item))
    return errors


def _apply(errors: list[str], path: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except FaultError as exc:
        errors.append(f"{path}: {exc}")


def check_load(s: Scenario) -> list[str]:
    """Cross-references of the load section: hotspot targets exist, and each names one kind of target."""
    errors: list[str] = []
    nodes = {n.name for n in s.nodes}
    for i, h in enumerate(s.load.hotspots):
        if (h.node is None) == (not h.vms):
            errors.append(f"load.hotspots[{i}]: exactly one of node and vms is required")
        if h.node is not None and h.node not in nodes:
            errors.append(f"load.hotspots[{i}].node: unknown node {h.node!r}")
        for j, ref in enumerate(h.vms):
            if len(_match(s, ref)) != 1:
                what = "ambiguous" if _match(s, ref) else "unknown"
                errors.append(f"load.hotspots[{i}].vms[{j}]: {what} VM {ref!r}")
    return errors + apply_faults(FaultState(), s.faults)


def _match(s: Scenario, ref: str) -> list[VmSpec]:
    ns, _, name = ref.rpartition("/")
    return [vm for vm in s.vms if vm.name == name and (not ns or vm.namespace == ns)]


def load_annotations(s: Scenario, vm: VmSpec) -> dict[str, str]:
    """The load annotations of one scenario VM: its own constants and the product of its hotspots' factors."""
    out: dict[str, str] = {}
    if vm.cpu_load is not None:
        out[CPU_LOAD_ANNOTATION] = _num(vm.cpu_load)
    if vm.memory_load is not None:
        out[MEMORY_LOAD_ANNOTATION] = _num(vm.memory_load)
    cpu = mem = 1.0
    for h in s.load.hotspots:
        hit = (h.node is not None and vm.node == h.node) or any(v is vm for ref in h.vms for v in _match(s, ref))
        if hit:
            cpu, mem = cpu * h.cpu_factor, mem * h.memory_factor
    if cpu != 1.0:
        out[CPU_LOAD_FACTOR_ANNOTATION] = _num(cpu)
    if mem != 1.0:
        out[MEMORY_LOAD_FACTOR_ANNOTATION] = _num(mem)
    return out


def _num(x: float) -> str:
    return f"{x:.6g}"
