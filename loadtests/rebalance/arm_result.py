"""One arm's result, as both engines report it: figures, series, moves with their reasons, the MILP bound.

Why it exists: `run.py` (live: real Prometheus, the API twin) and `model_engine.py` (model time, in process) must
produce the same figures from the same kind of inputs, computed once, so that their results compare and the report
reads either. Inputs are per-node pressure series at a common model step, the migrations the twin recorded and the
controller's reasons; the output is the arm's entry of `runs.json` (schema in `report.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.metrics import ControllerMetrics
from controller.model import Plan
from loadtests.rebalance.bound import BoundNode, BoundVm, lower_bound
from loadtests.rebalance.figures import MigrationRecord, migration_figures, pressure_figures, steady_figures
from sim.cluster.state_view import VmiInfo


@dataclass(frozen=True)
class ArmSeries:
    """Per-node CPU PSI and descheduler score, one sample per `step_s` model seconds from `start_s` to `end_s`."""

    cpu: Mapping[str, Sequence[float]]
    score: Mapping[str, Sequence[float]]
    step_s: float
    start_s: float
    end_s: float


def finish_result(
    result: dict[str, Any],
    series: ArmSeries,
    migrations: Sequence[MigrationRecord],
    reasons: Mapping[str, list[str]],
    *,
    vm_count: int,
    threshold: float,
    bounds: tuple[list[BoundNode], list[BoundVm]] | None,
    milp_max_variables: int,
) -> None:
    """Add the figures, series, moves and (with `bounds`) the MILP bound to `result`."""
    result.update(pressure_figures(series.cpu, series.step_s, threshold))
    result.update(migration_figures(migrations))
    result.update(steady_figures(migrations, vm_count, series.start_s, series.end_s))
    result["peak_score"] = pressure_figures(series.score, series.step_s, 1.0)["peak_pressure"]
    result["started_model_s"] = series.start_s
    samples = len(next(iter(series.cpu.values()), []))
    result["series"] = {
        "model_minutes": [i * series.step_s / 60 for i in range(samples)],
        "cpu_psi": dict(series.cpu),
        "score": dict(series.score),
    }
    t0 = series.start_s
    result["moves"] = [
        {
            "vmi": m.vmi,
            "phase": m.phase,
            "source": m.source,
            "target": m.target,
            "started_min": None if m.started_at is None else round((m.started_at - t0) / 60, 2),
            "ended_min": None if m.ended_at is None else round((m.ended_at - t0) / 60, 2),
            "why": reasons.get(m.vmi, []),
        }
        for m in migrations
    ]
    if bounds is not None:
        nodes, vms = bounds
        bound = lower_bound(nodes, vms, threshold, max_variables=milp_max_variables)
        result["milp_lower_bound"], result["milp_bound_kind"] = bound.value, bound.kind


def unplaced_vms(vmis: Iterable[VmiInfo]) -> int:
    """VMIs not Running on a node: VMs the cluster failed to schedule (must stay 0)."""
    return sum(1 for v in vmis if v.node is None or v.phase != "Running")


def cycle_outcomes(metrics: ControllerMetrics) -> dict[str, float]:
    """outcome -> cycles, from the controller's own `autonomic_controller_cycles_total` counter."""
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "autonomic_controller_cycles_total":
                out[sample.labels.get("outcome", "")] = sample.value
    return out


def explain(plan: Plan | None) -> dict[str, Any] | None:
    """The controller's last plan in short, for runs.json: why it did (not) act."""
    if plan is None:
        return None
    return {
        "skipped": plan.skipped,
        "moves": [f"{m.vm} {m.source}->{m.target or '(scheduler)'}: {m.reason}" for m in plan.moves],
        "refusals": [f"{r.subject}: {r.reason}" for r in plan.refusals[:20]],
        "nodes": [
            f"{n.node} {n.classification} {n.value if n.value is None else round(n.value, 3)}"
            + (f" ({n.note})" if n.note else "")
            for n in plan.nodes
        ],
    }
