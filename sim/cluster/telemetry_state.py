"""Samples of node pressure and VM usage, and the counters that integrate them over real time.

Why it exists: node-exporter reports PSI and CPU time as ever-growing counters in seconds, and
`rate(counter[1m])` in Prometheus is what turns them back into fractions. Prometheus runs on real time, so
the counters advance by (stall fraction x real seconds elapsed), whatever --time-scale is: `rate()` then gives
the stall fraction itself, while the load behind it follows model time. Each `advance` integrates the rates
of the previous sample over the real time since (left Riemann sum: the twin ticks every `tick_s`, and a scrape
that finds the last sample older than that takes a new one, so a change shows in the next sample). A scrape
within a tick of the last sample (`LoadTelemetry.for_scrape`) reuses it and reads its node's counters projected
to the scrape's instant (`Counters.node_at`): the same values `advance` would give, at the cost of one node, not
of the whole cluster's load model (at 100 nodes x 3,000 VMs a full update costs ~66 ms and 100 scrapes a second
would need 6.6 cores).

`take_sample` and `Counters` are pure (time is passed in); `LoadTelemetry` binds them to a `ClusterView`, the
trace and the scenario's load settings.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sim.cluster.load import VmDemand, VmKey, VmProfile, node_loads, resolve_profile, vm_demands
from sim.cluster.psi import CPU_MODES, NodePressure, PsiParams, node_pressure
from sim.cluster.scenario_load import LoadSettings
from sim.cluster.state_view import ClusterView, NodeInfo, VmiInfo
from sim.cluster.vm_trace import VmLoadTrace

log = logging.getLogger("autonomic.cluster.telemetry")

# node-exporter counter (without the node_pressure_ prefix and _seconds_total suffix) -> its fraction
PRESSURE_COUNTERS: dict[str, Callable[[NodePressure], float]] = {
    "cpu_waiting": lambda p: p.cpu.some,
    "memory_waiting": lambda p: p.memory_some,
    "memory_stalled": lambda p: p.memory_full,
    "io_waiting": lambda p: p.io_some,
    "io_stalled": lambda p: p.io_full,
}


class LoadError(ValueError):
    pass


@dataclass(frozen=True)
class NodeSample:
    name: str
    cpus: int  # CPUs node_cpu_seconds_total lists (capacity, rounded up)
    memory_total: float
    pressure: NodePressure


@dataclass(frozen=True)
class VmSample:
    namespace: str
    name: str
    node: str
    cpu_cores: float  # CPU time it gets per second (its demand x the node's served share)
    memory_used: float  # guest memory in use
    memory_domain: int  # guest memory size


@dataclass(frozen=True)
class Sample:
    model_time: float
    nodes: Mapping[str, NodeSample]
    vms: tuple[VmSample, ...]


def take_sample(
    nodes: Sequence[NodeInfo],
    demands: Sequence[VmDemand],
    settings: LoadSettings,
    params: PsiParams,
    model_time: float,
) -> Sample:
    loads = node_loads(nodes, demands, settings)
    samples = {
        name: NodeSample(name, max(1, math.ceil(load.cores)), load.memory_bytes, node_pressure(load, params))
        for name, load in loads.items()
    }
    vms = tuple(
        VmSample(
            d.namespace,
            d.name,
            d.node,
            cpu_cores=d.cpu_cores * samples[d.node].pressure.cpu.served,
            memory_used=d.memory_used,
            memory_domain=d.memory_bytes,
        )
        for d in demands
        if d.node in samples
    )
    return Sample(model_time, samples, vms)


class Counters:
    """Monotonic per-node and per-VM counters in seconds, integrated from successive samples."""

    def __init__(self) -> None:
        self.pressure: dict[str, dict[str, float]] = {}  # node -> counter -> seconds
        self.cpu: dict[str, dict[str, float]] = {}  # node -> mode -> seconds (per CPU; all CPUs alike)
        self.vm_cpu: dict[tuple[str, str, str], float] = {}  # (namespace, name, node) -> CPU seconds
        self.sample: Sample | None = None
        self.at: float | None = None

    def advance(self, sample: Sample, real_now: float) -> None:
        prev, dt = self.sample, 0.0 if self.at is None else max(0.0, real_now - self.at)
        if prev is not None and dt > 0:
            for name, ns in prev.nodes.items():
                pressure = self.pressure.setdefault(name, dict.fromkeys(PRESSURE_COUNTERS, 0.0))
                for counter, fraction in PRESSURE_COUNTERS.items():
                    pressure[counter] += fraction(ns.pressure) * dt
                modes = self.cpu.setdefault(name, dict.fromkeys(CPU_MODES, 0.0))
                for mode, share in ns.pressure.cpu_modes.items():
                    modes[mode] += share * dt
            for vm in prev.vms:
                key = (vm.namespace, vm.name, vm.node)
                self.vm_cpu[key] = self.vm_cpu.get(key, 0.0) + vm.cpu_cores * dt
        # a node or VM that disappears loses its counters; one that (re)appears starts from 0, as after a reboot
        # or, for a VM, on the node a migration took it to (a new QEMU process)
        for name in set(self.pressure) - set(sample.nodes):
            self.pressure.pop(name)
            self.cpu.pop(name, None)
        for name in sample.nodes:
            self.pressure.setdefault(name, dict.fromkeys(PRESSURE_COUNTERS, 0.0))
            self.cpu.setdefault(name, dict.fromkeys(CPU_MODES, 0.0))
        live = {(vm.namespace, vm.name, vm.node) for vm in sample.vms}
        self.vm_cpu = {k: self.vm_cpu.get(k, 0.0) for k in live}
        self.sample, self.at = sample, real_now

    def node_at(self, name: str, vms: Sequence[VmSample], real_now: float) -> Counters:
        """One node's counters and those of its `vms` (from the last sample), integrated up to `real_now` as
        `advance` would, in a new object: these counters do not change."""
        out = Counters()
        dt = 0.0 if self.at is None else max(0.0, real_now - self.at)
        pressure = out.pressure[name] = dict(self.pressure.get(name) or dict.fromkeys(PRESSURE_COUNTERS, 0.0))
        modes = out.cpu[name] = dict(self.cpu.get(name) or dict.fromkeys(CPU_MODES, 0.0))
        ns = self.sample.nodes.get(name) if self.sample is not None else None
        if ns is not None and dt > 0:
            for counter, fraction in PRESSURE_COUNTERS.items():
                pressure[counter] += fraction(ns.pressure) * dt
            for mode, share in ns.pressure.cpu_modes.items():
                modes[mode] += share * dt
        for vm in vms:
            key = (vm.namespace, vm.name, vm.node)
            out.vm_cpu[key] = self.vm_cpu.get(key, 0.0) + vm.cpu_cores * dt
        return out


class LoadTelemetry:
    """The load model, PSI model and counters over a live `ClusterView`; `update()` on every tick and scrape."""

    def __init__(
        self,
        view: ClusterView,
        trace: VmLoadTrace,
        settings: LoadSettings,
        *,
        params: PsiParams | None = None,
        real_clock: Callable[[], float] = time.monotonic,
        counters: bool = True,
    ) -> None:
        """`counters` False: samples only, no exporter counters (the model-time engine reads samples)."""
        self.view, self.trace, self.settings = view, trace, settings
        self.track_counters = counters
        self.params = params or PsiParams()
        self.counters = Counters()
        self._real = real_clock
        self._profiles: dict[VmKey, tuple[tuple[str | None, tuple[tuple[str, str], ...]], VmProfile]] = {}
        self._warned: set[str] = set()

    def profiles(self, vmis: Iterable[VmiInfo]) -> tuple[dict[VmKey, VmProfile], list[str]]:
        out: dict[VmKey, VmProfile] = {}
        problems: list[str] = []
        for v in vmis:
            key = (v.namespace, v.name)
            stamp = (v.load_trace, tuple(sorted(v.annotations.items())))
            cached = self._profiles.get(key)
            if cached is None or cached[0] != stamp:
                profile, found = resolve_profile(v, self.trace, self.settings.seed)
                problems += found
                cached = (stamp, profile)
                self._profiles[key] = cached
            out[key] = cached[1]
        for key in set(self._profiles) - set(out):
            del self._profiles[key]
        return out, problems

    def check(self) -> None:
        """Raise `LoadError` listing every VMI whose load annotations are wrong (at start: fail loudly)."""
        _, problems = LoadTelemetry(self.view, self.trace, self.settings).profiles(self.view.vmis())
        if problems:
            raise LoadError("invalid VM load settings:\n  " + "\n  ".join(problems))

    def for_scrape(self, node: str, max_age_s: float) -> tuple[Sample, list[VmSample], Counters]:
        """What a scrape of `node` shows: the last sample if it is younger than `max_age_s` real seconds (its
        counters projected to now), else a new one; with the node's VMs."""
        sample, at = self.counters.sample, self.counters.at
        if sample is None or at is None or self._real() - at >= max_age_s:
            sample = self.update()
            return sample, [vm for vm in sample.vms if vm.node == node], self.counters
        mine = [vm for vm in sample.vms if vm.node == node]
        return sample, mine, self.counters.node_at(node, mine, self._real())

    def update(self) -> Sample:
        now, vmis = self.view.now(), self.view.vmis()
        profiles, problems = self.profiles(vmis)
        for p in problems:
            if p not in self._warned:
                self._warned.add(p)
                log.warning("%s", p)
        demands = vm_demands(vmis, profiles, self.trace, self.settings, now)
        sample = take_sample(self.view.nodes(), demands, self.settings, self.params, now)
        if self.track_counters:
            self.counters.advance(sample, self._real())
        return sample
