"""What the controller's Prometheus queries would answer, computed from the load model's samples (no Prometheus).

Why it exists: the model-time engine (`model_engine.py`) runs a day of load in minutes, which a real Prometheus
scraping on the wall clock cannot follow. The controller still reads its pressure through `assemble()` (the same
checks as in production); only the query results are made here, from the samples of the twin's load and PSI models
kept over the last rate window:

- `psi:<d>` = `avg by (instance) (rate(node_pressure_<d>_waiting_seconds_total[1m]))`: the mean stall fraction over
  the window (a counter's increase over the window divided by its length is the mean of the fractions in effect);
- `util:cpu` / `util:memory` and `score`: the descheduler's recording rules (deploy/prometheus/descheduler-rules.yaml)
  written out: utilisation over the window, pressure counted only above 70% utilisation, the positive deviation from
  the worker nodes' mean, the Euclidean distance amplified 3x and capped at 1 (`...:k3:avg1m`, the default query);
- `vm:cpu` = `rate(kubevirt_vmi_cpu_usage_seconds_total[1m])` per VM and node (like `rate()`, at least two samples of
  the VM on that node in the window), `vm:memory` = the last sample's guest memory in use, `vm:dirty_rate` = nothing
  (the twin exports no dirty rate, as in the live engine);
- `fresh` and `fresh:*` = the last sample's time (what `timestamp()` of a scraped series gives).

Only the controller's default queries are understood (with any rate window: the window is the engine's, stated in
`window_s`); a configuration that asks for anything else is refused by `check_queries` with the query named, rather
than answered wrongly. Pure: samples in, query results out; times are the controller's epoch seconds.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.config import DEFAULT_FRESHNESS_QUERY, DEFAULT_SCORE_QUERY, DEFAULT_UTILIZATION_QUERIES
from sim.cluster.state_view import NodeInfo
from sim.cluster.telemetry_state import Sample

WORKER_LABEL = "node-role.kubernetes.io/worker"
UTILIZATION_GATE = 0.7  # pressure counts only above this utilisation (the rules' `> 0.7`)
AMPLIFICATION = 3.0  # the k3 rule
PSI_QUERY = re.compile(r"^avg by \(instance\) \(rate\(node_pressure_(cpu|memory|io)_waiting_seconds_total\[\w+\]\)\)$")
VM_CPU_QUERY = re.compile(r"^rate\(kubevirt_vmi_cpu_usage_seconds_total\[\w+\]\)$")
KNOWN_FIXED = {
    "score": {DEFAULT_SCORE_QUERY},
    "util:cpu": {DEFAULT_UTILIZATION_QUERIES["cpu"]},
    "util:memory": {DEFAULT_UTILIZATION_QUERIES["memory"]},
    "vm:memory": {"kubevirt_vmi_memory_used_bytes"},
    "vm:dirty_rate": {"kubevirt_vmi_dirty_rate_bytes_per_second"},
    "fresh": {DEFAULT_FRESHNESS_QUERY},
}


def check_queries(plan: Mapping[str, str]) -> list[str]:
    """The queries of `plan` (controller/sources/prometheus.py `query_plan`) this module cannot answer."""
    bad = []
    for name, promql in plan.items():
        if name.startswith("fresh:"):
            continue  # timestamp(<a query answered here>)
        if name.startswith("psi:"):
            match = PSI_QUERY.match(promql)
            ok = match is not None and match.group(1) == name[4:]
        elif name == "vm:cpu":
            ok = VM_CPU_QUERY.match(promql) is not None
        else:
            ok = promql in KNOWN_FIXED.get(name, set())
        if not ok:
            bad.append(f"{name}: {promql!r}")
    return bad


@dataclass(frozen=True)
class NodeWindow:
    """One node's means over the window."""

    psi: Mapping[str, float]  # cpu, memory, io
    cpu_utilization: float
    memory_utilization: float | None  # None without allocatable memory (the rule drops such nodes)


class QueryModel:
    """The samples of the last `window_s` model seconds, and the query results they give."""

    def __init__(self, window_s: float) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._samples: deque[tuple[float, Sample]] = deque()  # (epoch seconds, sample), oldest first
        self._windows: tuple[Any, dict[str, NodeWindow]] | None = None  # node_windows' last answer, by its inputs

    def add(self, at: float, sample: Sample) -> None:
        """A sample taken at epoch second `at`; samples older than the window (from the newest) are dropped."""
        self._samples.append((at, sample))
        while self._samples and self._samples[0][0] <= at - self.window_s:
            self._samples.popleft()

    @property
    def last_at(self) -> float | None:
        return self._samples[-1][0] if self._samples else None

    def node_windows(self, nodes: Mapping[str, NodeInfo]) -> dict[str, NodeWindow]:
        """Per node present in the newest sample: the means over the window's samples that have it (computed once
        per newest sample: the engine's series and the controller's reading ask for the same)."""
        if not self._samples:
            return {}
        newest = self._samples[-1]
        key = (
            len(self._samples),
            newest[0],
            id(newest[1]),
            tuple(sorted((n, i.allocatable_memory_bytes) for n, i in nodes.items())),
        )
        if self._windows is not None and self._windows[0] == key:
            return self._windows[1]
        out: dict[str, NodeWindow] = {}
        for name in self._samples[-1][1].nodes:
            seen = [s.nodes[name] for _, s in self._samples if name in s.nodes]
            psi = {
                "cpu": _mean(n.pressure.cpu.some for n in seen),
                "memory": _mean(n.pressure.memory_some for n in seen),
                "io": _mean(n.pressure.io_some for n in seen),
            }
            busy = _mean(1.0 - n.pressure.cpu_modes.get("idle", 0.0) for n in seen)
            info = nodes.get(name)
            allocatable = info.allocatable_memory_bytes if info is not None else 0
            memory = 1.0 - _mean(n.pressure.memory_available_bytes for n in seen) / allocatable if allocatable else None
            out[name] = NodeWindow(psi, busy, memory)
        self._windows = (key, out)
        return out

    def results(self, plan: Mapping[str, str], nodes: Mapping[str, NodeInfo]) -> dict[str, list[dict[str, Any]]]:
        """name -> instant-vector samples (`{"metric": ..., "value": [t, "v"]}`), as `assemble()` reads them."""
        at = self.last_at
        if at is None:
            return {name: [] for name in plan}
        windows = self.node_windows(nodes)
        scores = descheduler_scores(windows, nodes)
        out: dict[str, list[dict[str, Any]]] = {}
        for name in plan:
            values: Mapping[str, float | None]
            if name == "score":
                values = scores
            elif name.startswith("psi:"):
                values = {n: w.psi[name[4:]] for n, w in windows.items()}
            elif name == "util:cpu":
                values = {n: w.cpu_utilization for n, w in windows.items()}
            elif name == "util:memory":
                values = {n: w.memory_utilization for n, w in windows.items()}
            elif name.startswith("fresh"):
                values = dict.fromkeys(windows, at)
            elif name.startswith("vm:"):
                out[name] = self._vm_results(name, at)
                continue
            else:
                values = {}
            out[name] = [_sample({"instance": n}, at, v) for n, v in sorted(values.items()) if v is not None]
        return out

    def _vm_results(self, name: str, at: float) -> list[dict[str, Any]]:
        if name == "vm:memory":
            return [_sample(_vm_labels(vm), at, vm.memory_used) for vm in self._samples[-1][1].vms]
        if name != "vm:cpu":
            return []
        cores: dict[tuple[str, str, str], list[float]] = {}
        for _, sample in self._samples:
            for vm in sample.vms:
                cores.setdefault((vm.namespace, vm.name, vm.node), []).append(vm.cpu_cores)
        return [
            _sample({"namespace": ns, "name": name_, "node": node}, at, _mean(values))
            for (ns, name_, node), values in sorted(cores.items())
            if len(values) >= 2
        ]


def descheduler_scores(windows: Mapping[str, NodeWindow], nodes: Mapping[str, NodeInfo]) -> dict[str, float]:
    """`descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m` per node (the rules, in Python)."""
    usable = {n: w for n, w in windows.items() if w.memory_utilization is not None}
    if not usable:
        return {}
    dims: dict[str, dict[str, float]] = {
        "util_cpu": {n: w.cpu_utilization for n, w in usable.items()},
        "util_memory": {n: w.memory_utilization or 0.0 for n, w in usable.items()},
        "psi_cpu": {n: w.psi["cpu"] if w.cpu_utilization > UTILIZATION_GATE else 0.0 for n, w in usable.items()},
        "psi_memory": {
            n: w.psi["memory"] if (w.memory_utilization or 0.0) > UTILIZATION_GATE else 0.0 for n, w in usable.items()
        },
    }
    workers = [n for n in usable if n in nodes and WORKER_LABEL in nodes[n].labels]
    out: dict[str, float] = {}
    means = {d: (_mean(v[n] for n in workers) if workers else math.nan) for d, v in dims.items()}
    for node in usable:
        # `(x - mean >= 0) or x * 0`: with no worker mean (no worker nodes) the subtraction has no sample: 0
        deviations = [max(v[node] - means[d], 0.0) if math.isfinite(means[d]) else 0.0 for d, v in dims.items()]
        out[node] = min(AMPLIFICATION * math.sqrt(sum(x * x for x in deviations)), 1.0)
    return out


def _mean(values: Any) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


def _vm_labels(vm: Any) -> dict[str, str]:
    return {"namespace": vm.namespace, "name": vm.name, "node": vm.node}


def _sample(labels: dict[str, str], at: float, value: float) -> dict[str, Any]:
    return {"metric": labels, "value": [at, repr(float(value))]}
