"""What each VM demands right now, and what that adds up to on each node: the input of the PSI model.

Why it exists: pressure comes from demand versus capacity, and demand comes from real VM load
(vm_trace.py), scaled to each VM's size, moved with the VM when a migration completes (a VM's demand counts on
the node in its `status.nodeName`), and raised while a migration runs. Pure functions of the cluster view,
the trace and the model time; the telemetry shell calls them on every tick.

Per VM (Running VMIs with a node):
- cpu: share of its vCPUs busy = trace cpu at the trace time (or the constant `cpu-load` annotation), times
  `cpu-load-factor`, capped at 1. Its vCPUs are that many threads for the CPU model (psi.py).
- memory in use: guest memory x (trace memory, or `memory-load`) x `memory-load-factor`, capped at the guest
  size, plus KubeVirt's launcher overhead (kv_objects.memory_overhead).
- trace time = load.startMinute x 60 + model seconds x load.traceSpeed, so --time-scale compresses the trace
  along with everything else.
Per node: the host's own `hostCpu` cores and `hostMemory`, plus its VMs. While a migration's memory
transfer runs, the source also runs the migration thread (`migration.sourceCpu` cores) and the target the
receiving side (`migration.targetCpu`); the target holds the VM's launcher overhead from the moment its pod
exists (Scheduled on) and the guest's memory in use during the transfer, while the source still holds
everything until the VM has moved. Both count the migration for io (psi.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sim.cluster.kv_objects import (
    CPU_LOAD_ANNOTATION,
    CPU_LOAD_FACTOR_ANNOTATION,
    MEMORY_LOAD_ANNOTATION,
    MEMORY_LOAD_FACTOR_ANNOTATION,
    memory_overhead,
)
from sim.cluster.psi import NodeLoad, ThreadGroup
from sim.cluster.scenario_load import LoadSettings
from sim.cluster.state_view import NodeInfo, VmiInfo
from sim.cluster.vm_trace import TraceError, VmLoadTrace

VmKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class VmProfile:
    """How one VM's demand is derived: its trace row and the overrides from its annotations."""

    trace_row: int
    cpu_load: float | None = None
    memory_load: float | None = None
    cpu_factor: float = 1.0
    memory_factor: float = 1.0


@dataclass(frozen=True)
class VmDemand:
    namespace: str
    name: str
    node: str
    vcpus: int
    cpu_busy: float  # share of its vCPUs runnable, 0..1
    memory_bytes: int  # guest memory
    memory_used: float  # guest memory in use, bytes
    overhead_bytes: int  # virt-launcher + QEMU overhead on the node that runs it
    target: str | None = None  # node receiving it, from Scheduled on
    transferring: bool = False  # memory transfer under way

    @property
    def key(self) -> VmKey:
        return (self.namespace, self.name)

    @property
    def cpu_cores(self) -> float:
        return self.cpu_busy * self.vcpus


def resolve_profile(vmi: VmiInfo, trace: VmLoadTrace, seed: int) -> tuple[VmProfile, list[str]]:
    """The VM's profile and the problems found in its annotations (a bad value is ignored, not fatal)."""
    problems: list[str] = []
    where = f"VMI {vmi.namespace}/{vmi.name}"
    row = trace.assign(seed, vmi.namespace, vmi.name)
    if vmi.load_trace:
        try:
            row = trace.row(vmi.load_trace)
        except TraceError as exc:
            problems.append(f"{where}: {exc}")

    def number(key: str, lo: float, hi: float, lo_open: bool) -> float | None:
        raw = vmi.annotations.get(key)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi):
            bound = f"{'>' if lo_open else '>='} {lo:g}" + ("" if math.isinf(hi) else f" and <= {hi:g}")
            problems.append(f"{where}: annotation {key}={raw!r} must be a number {bound}; ignored")
            return None
        return value

    profile = VmProfile(
        trace_row=row,
        cpu_load=number(CPU_LOAD_ANNOTATION, 0.0, 1.0, False),
        memory_load=number(MEMORY_LOAD_ANNOTATION, 0.0, 1.0, False),
        cpu_factor=number(CPU_LOAD_FACTOR_ANNOTATION, 0.0, math.inf, True) or 1.0,
        memory_factor=number(MEMORY_LOAD_FACTOR_ANNOTATION, 0.0, math.inf, True) or 1.0,
    )
    return profile, problems


def trace_time(settings: LoadSettings, model_now: float) -> float:
    return settings.start_minute * 60.0 + model_now * settings.trace_speed


def vm_demands(
    vmis: Iterable[VmiInfo],
    profiles: Mapping[VmKey, VmProfile],
    trace: VmLoadTrace,
    settings: LoadSettings,
    model_now: float,
) -> list[VmDemand]:
    """Demand of every Running VMI that has a node and a profile."""
    running = [v for v in vmis if v.phase == "Running" and v.node and (v.namespace, v.name) in profiles]
    if not running:
        return []
    prof = [profiles[(v.namespace, v.name)] for v in running]
    cpu, mem = trace.sample(np.array([p.trace_row for p in prof]), trace_time(settings, model_now))
    out = []
    for i, (v, p) in enumerate(zip(running, prof, strict=True)):
        busy = (p.cpu_load if p.cpu_load is not None else float(cpu[i])) * p.cpu_factor
        used = (p.memory_load if p.memory_load is not None else float(mem[i])) * p.memory_factor
        assert v.node is not None
        out.append(
            VmDemand(
                namespace=v.namespace,
                name=v.name,
                node=v.node,
                vcpus=max(1, v.vcpus),
                cpu_busy=min(1.0, max(0.0, busy)),
                memory_bytes=v.memory_bytes,
                memory_used=min(1.0, max(0.0, used)) * v.memory_bytes,
                overhead_bytes=memory_overhead(max(1, v.vcpus), v.memory_bytes),
                target=v.migration_target if v.migration_target != v.node else None,
                transferring=v.migrating,
            )
        )
    return out


def node_loads(nodes: Sequence[NodeInfo], demands: Iterable[VmDemand], settings: LoadSettings) -> dict[str, NodeLoad]:
    """Each node's threads, memory in use and migrations in flight (nodes without capacity are skipped)."""
    host = ThreadGroup.cores(settings.host_cpu)
    threads: dict[str, list[ThreadGroup]] = {n.name: [host] if settings.host_cpu > 0 else [] for n in nodes}
    memory = {n.name: float(settings.host_memory_bytes) for n in nodes}
    migrations = dict.fromkeys(threads, 0)
    cost = settings.migration
    for d in demands:
        if d.node in threads:
            threads[d.node].append(ThreadGroup(d.vcpus, d.cpu_busy))
            memory[d.node] += d.overhead_bytes + d.memory_used
            if d.transferring:
                if cost.source_cpu > 0:
                    threads[d.node].append(ThreadGroup.cores(cost.source_cpu))
                migrations[d.node] += 1
        if d.target in threads:
            memory[d.target] += d.overhead_bytes + (d.memory_used if d.transferring else 0.0)
            if d.transferring:
                if cost.target_cpu > 0:
                    threads[d.target].append(ThreadGroup.cores(cost.target_cpu))
                migrations[d.target] += 1
    return {
        n.name: NodeLoad(
            cores=n.cpu_millis / 1000.0,
            memory_bytes=float(n.memory_bytes),
            threads=tuple(threads[n.name]),
            memory_used_bytes=memory[n.name],
            migrations=migrations[n.name],
        )
        for n in nodes
        if n.cpu_millis > 0 and n.memory_bytes > 0
    }
