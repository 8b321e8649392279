"""psi-relief's model of node pressure as a function of utilisation, fitted per node from one observation.

Why it exists: the descheduler cannot tell how much one eviction lowers a node's score (`podUsage` is not
supported with Prometheus, ref §2.2), so it moves one VM per node per cycle and looks again. psi-relief predicts.

Model, per node i and dimension d (cpu, memory): utilisation u (busy fraction) and signal s (PSI "some" stall
fraction of that dimension, or the descheduler score) follow a power law  s = u^k.  It is 0 when idle, 1 when
saturated, convex, and has one parameter, fitted from the observed pair: k = ln s / ln u, clamped to
[minExponent, maxExponent]. A node showing no pressure (s < 0.005) does not identify k; it gets the median k of
the nodes that do (else `defaultExponent`), raised to ln 0.005 / ln u so that it stays consistent with showing
none. A node whose pressure exceeds its measured utilisation while u < 0.7 is flagged unexplained: contention at
that load cannot produce it (CFS throttling is the usual cause, ref §5 pain 4; 0.7 is the recording rules' gate,
ref §1.4).

Saturated CPU (signal "psi", measured CPU utilisation >= 0.95, CPU "some" >= 0.005). Measured utilisation is
capped at 1, so the power law would see none of the demand in excess of the cores, fit k from u ~ 1 and predict
that any removal clears the node (the demo: 0.38 -> 0.00 predicted, 0.16 measured). The kernel's own multi-CPU
definition (kernel/sched/psi.c, "Multiple CPUs"): on n CPUs, threads = min(non-idle tasks, n) and
SOME = min(delayed tasks / threads, 1). With every CPU busy, threads = n, so the runnable demand is
x = u + s CPUs' worth per CPU, and each core of demand removed takes one delayed task away: s falls by 1/n per
core, one for one in capacity units, down to what remains when nothing waits for want of a core (wake-up latency,
imbalance: the observed idle share 1 - u, carried as the residual). So on such a node the CPU dimension is
modelled in demand units, s = max(x - 1, 0) + r, exact at the observation. Per VM, the demand it takes away is
bounded below by what it was served (its measured usage, or its share of the measured busy time): a VM under
its CFS share waits for nothing, so that bound is exact for it and conservative for the throttled ones. What it
brings to a target is bounded above by its fair share of the demand, usage * x / u (CFS serves every runnable
thread alike, so no VM got less than u / x of what it wanted, weights aside): over-predicting the target is the
safe side. A saturated node is never a target: whatever arrives queues whole.

The node's signal is the max over its dimensions, plus the residual r = s_obs - max_d f_d(u_obs) so the model
reproduces the observation exactly. Being monotone, "signal <= L" is a ceiling per dimension:
u_d <= (L - r)^(1/k_d), or x <= 1 + L - r on a saturated CPU.

Per-VM load: measured usage when known; otherwise the node's measured busy capacity not explained by known usage,
shared in proportion to requests; otherwise the request. Moves in flight and moves finished less than
`metricLagSeconds` ago (still averaged into the 1-minute rates) are applied to "now" but not to the observation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from controller.config import PsiReliefConfig
from controller.model import NodePressure, PastMigration
from controller.view import ClusterView

DIMS = ("cpu", "memory")
SIGNAL_FLOOR = 0.005
UTILIZATION_GATE = 0.7
SATURATED = 0.95  # measured CPU utilisation from which "some" is read as demand beyond the cores (psi.c)


@dataclass(frozen=True)
class PressureModel:
    names: tuple[str, ...]
    index: Mapping[str, int]
    alloc: np.ndarray  # (n, 2): cores, bytes
    u_obs: np.ndarray  # (n, 2) utilisation behind the observed signal; demand (may exceed 1) where saturated
    u_now: np.ndarray  # (n, 2) with in-flight and just-finished moves applied
    s_obs: np.ndarray  # (n,) observed signal
    k: np.ndarray  # (n, 2) exponents; 0 where the dimension is not modelled, 1 where saturated
    knee: np.ndarray  # (n, 2) 1 where the dimension is saturated (signal = max(x - 1, 0)), else 0
    residual: np.ndarray  # (n,)
    unexplained: np.ndarray  # (n,) bool
    vm_index: Mapping[str, int]  # VM key -> row of `vm_load`
    vm_load: np.ndarray  # (VMs, 2) cores, bytes: what the VM was served (removed from its source)
    vm_demand: np.ndarray  # (VMs, 2) cores, bytes: what it may use where nothing throttles it (at a target)
    requested: np.ndarray  # (n, 2) requests of the VMs on each node, plus those migrating in

    def load(self, vm: str) -> np.ndarray:
        """(cores, bytes) the VM is estimated to use where it is: what leaving takes off its node."""
        return self.vm_load[self.vm_index[vm]]

    def demand(self, vm: str) -> np.ndarray:
        """(cores, bytes) the VM may use on a node that does not throttle it: what it brings to a target."""
        return self.vm_demand[self.vm_index[vm]]

    @property
    def saturated(self) -> np.ndarray:
        """(n,) nodes modelled at the CPU knee: never targets."""
        return np.asarray((self.knee > 0).any(axis=1))

    def predict(self, u: np.ndarray, rows: np.ndarray | slice | int = slice(None)) -> np.ndarray:
        """Signal of nodes `rows` at utilisation (demand, where saturated) `u` (same leading shape)."""
        k = self.k[rows]
        powered = np.where(k > 0, np.clip(u - self.knee[rows], 0.0, 1.0) ** np.where(k > 0, k, 1.0), 0.0)
        return np.clip(powered.max(axis=-1) + self.residual[rows], 0.0, 1.0)

    def ceiling(self, level: float) -> np.ndarray:
        """(n, 2) utilisation at or below which each node's predicted signal is <= `level`."""
        room = np.maximum(level - self.residual, 1e-9)[:, None]
        return np.where(self.k > 0, room ** (1.0 / np.where(self.k > 0, self.k, 1.0)) + self.knee, 1.0)


def build_model(view: ClusterView, params: PsiReliefConfig) -> PressureModel:
    names = view.population_names
    index = {name: i for i, name in enumerate(names)}
    n, now, lag = len(names), view.now, params.metric_lag_seconds
    pressures = [node.pressure for node in view.population]
    alloc = np.array([[node.cpu_allocatable, node.memory_allocatable] for node in view.population], float)
    measured = np.array(
        [[_nan(p.cpu_utilization), _nan(p.memory_utilization)] if p else [math.nan, math.nan] for p in pressures],
        float,
    ).reshape(n, 2)
    vms = view.snapshot.vms
    at = np.fromiter((index.get(vm.node, -1) for vm in vms), int, len(vms))
    req, use = np.empty((len(vms), 2)), np.empty((len(vms), 2))  # one column at a time: 3x faster at 30,000 VMs
    req[:, 0] = np.fromiter((vm.cpu_request for vm in vms), float, len(vms))
    req[:, 1] = np.fromiter((vm.memory_request for vm in vms), float, len(vms))
    use[:, 0] = np.array([vm.cpu_usage for vm in vms], dtype=float)  # None -> nan
    use[:, 1] = np.array([vm.memory_usage for vm in vms], dtype=float)
    recent = [bool(vm.history) and _just_arrived(vm.history[-1], vm.node, now, lag) for vm in vms]
    recent_mask = np.array(recent, bool)

    modeled = np.array([d in params.dimensions for d in DIMS])
    signal = np.array([_signals(node.pressure, params.signal) for node in view.population], float).reshape(n, 2)
    signal = np.where(modeled, signal, 0.0)
    knee = np.zeros((n, 2))
    if params.signal == "psi" and modeled[0]:
        knee[:, 0] = (np.nan_to_num(measured[:, 0]) >= SATURATED) & (np.nan_to_num(signal[:, 0]) >= SIGNAL_FLOOR)
    saturated = knee[:, 0] > 0
    # psi.c: with every CPU busy, demand = u + s per CPU; a throttled VM wanted up to (u + s) / u of its usage
    fair_share = np.ones(n)
    fair_share[saturated] = 1.0 + signal[saturated, 0] / measured[saturated, 0]

    load = np.where(np.isnan(use), req, use)
    inside = at >= 0
    for d in range(2):
        known = ~np.isnan(use[:, d]) & inside
        shared = np.isnan(use[:, d]) & inside & ~recent_mask
        known_sum = np.bincount(at[known], use[known, d], minlength=n)
        shared_req = np.bincount(at[shared], req[shared, d], minlength=n)
        remainder = np.maximum(np.nan_to_num(measured[:, d]) * alloc[:, d] - known_sum, 0.0)
        scale = np.divide(remainder, shared_req, out=np.ones(n), where=shared_req > 0)
        use_scale = shared & ~np.isnan(measured[at.clip(0), d])
        load[use_scale, d] = req[use_scale, d] * scale[at[use_scale]]
    if len(view.vms) == len(vms):  # no duplicate keys (validation refuses them): the view's keys, in snapshot order
        vm_index = dict(zip(view.vms, range(len(vms)), strict=True))
    else:
        vm_index = {vm.key: j for j, vm in enumerate(vms)}
    demand = load.copy()
    demand[inside, 0] *= fair_share[at[inside]]

    computed = np.zeros((n, 2))
    np.add.at(computed, at[inside], load[inside])
    computed /= alloc
    left_recent, came_recent, left_flight, came_flight = (np.zeros((n, 2)) for _ in range(4))
    for j in np.flatnonzero(recent_mask):
        _shift(left_recent, came_recent, index.get(vms[j].history[-1].source, -1), at[j], load[j], load[j], alloc)
    for flight in view.in_flight.values():
        vm = view.vms.get(flight.vm)
        if vm is not None:
            target = index.get(flight.target, -1) if flight.target else -1
            row = vm_index[vm.key]
            _shift(left_flight, came_flight, index.get(flight.source, -1), target, load[row], demand[row], alloc)
    requested = np.zeros((n, 2))
    np.add.at(requested, at[inside], req[inside])
    for flight in view.in_flight.values():
        incoming = view.vms.get(flight.vm)
        if incoming is not None and flight.target in index:
            requested[index[flight.target]] += (incoming.cpu_request, incoming.memory_request)
    observed = measured + np.where(knee > 0, signal, 0.0)  # demand on a saturated CPU, utilisation elsewhere
    u_obs = np.where(np.isnan(measured), computed - came_recent + left_recent, observed).clip(0.0)
    u_now = (u_obs - left_recent + came_recent - left_flight + came_flight).clip(0.0)

    k, unexplained = _fit(u_obs, signal, modeled, ~np.isnan(measured), knee > 0, params)
    if params.signal == "score":  # one curve per node, on its busiest dimension
        peak = np.where(modeled, u_obs, -1.0).argmax(axis=1)
        k = np.where(modeled, k[np.arange(n), peak][:, None], 0.0)
    s_obs = signal.max(axis=1)
    parts = (names, index, alloc, u_obs, u_now, s_obs, k, knee)
    base = PressureModel(*parts, np.zeros(n), unexplained, vm_index, load, demand, requested)
    residual = s_obs - base.predict(u_obs)
    return PressureModel(*parts, residual, unexplained, vm_index, load, demand, requested)


def _fit(
    u: np.ndarray, s: np.ndarray, modeled: np.ndarray, measured: np.ndarray, knee: np.ndarray, p: PsiReliefConfig
) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = p.model.min_exponent, p.model.max_exponent
    log_u = np.log(np.clip(u, 1e-6, 1 - 1e-6))
    identified = modeled & ~knee & (s >= SIGNAL_FLOOR) & (u > 0.02) & (u < 0.999)
    raw = np.log(np.clip(s, SIGNAL_FLOOR, 1 - 1e-6)) / log_u
    # only a measured utilisation can contradict the pressure: requests say little about real load
    unexplained = np.asarray((identified & measured & (u < UTILIZATION_GATE) & (s > u)).any(axis=1))
    k = np.zeros_like(u)
    for d in range(2):
        if not modeled[d]:
            continue
        ids = identified[:, d]
        typical = float(np.median(np.clip(raw[ids, d], lo, hi))) if ids.any() else p.model.default_exponent
        floor = np.where(u[:, d] < 0.999, math.log(SIGNAL_FLOOR) / log_u[:, d], lo)
        k[:, d] = np.clip(np.where(ids, raw[:, d], np.maximum(floor, typical)), lo, hi)
    return np.where(knee, 1.0, k), unexplained


def _shift(
    left: np.ndarray, came: np.ndarray, src: int, dst: int, taken: np.ndarray, brought: np.ndarray, alloc: np.ndarray
) -> None:
    if src >= 0:
        left[src] += taken / alloc[src]
    if dst >= 0:
        came[dst] += brought / alloc[dst]


def _just_arrived(last: PastMigration, node: str, now: float, lag: float) -> bool:
    return bool(last.succeeded and last.target == node and now - last.ended < lag)


def _signals(pressure: NodePressure | None, signal: str) -> tuple[float, float]:
    if pressure is None:
        return (math.nan, math.nan)
    if signal == "score":
        return (_nan(pressure.score), _nan(pressure.score))
    return (_nan(pressure.psi_cpu), _nan(pressure.psi_memory))


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
