"""The figures of one rebalancing run, from pressure samples and the migrations the twin recorded (pure).

Why it exists: the demo and `autonomic bench rebalance` compare policies by the same figures, computed the same
way, so the arithmetic lives here, apart from the processes that produce its inputs, and is unit-tested on tables:

- `node_minutes_over`: sum over nodes of the model minutes during which the node's CPU PSI "some" was above the
  threshold (each sample stands for the step that follows it);
- `peak_pressure`: the highest node pressure seen; `p95_pressure`: the 95th percentile over time of the most
  pressured node's pressure (the cluster's hot spot, not diluted by idle nodes);
- `migrations`: migrations that Succeeded; `failed_migrations`: that Failed; `pingpong_vms`: VMs that moved more
  than once (successfully) in the run; `gib_moved`: guest memory of the VMs moved, in GiB;
- `evictions_per_vm_day` (`steady_figures`): migrations begun (started, or ended without starting) after the first
  hour of the run, per VM and per day of that steady part (the anchor's figure: about one per VM per day for the
  descheduler on a rebalanced 300-VM cluster); None when the run is not longer than that hour;
- `cooldown_violations`: successful moves of a VM that began within the KubevirtMigrationAware cooldown of its
  previous move (max(15 min, that move's duration) x 2^(moves in the last 48 h - 1), at most 6 h, from its end).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

GIB = 2.0**30


@dataclass(frozen=True)
class MigrationRecord:
    vmi: str  # namespace/name
    phase: str  # Succeeded | Failed | anything else: still under way
    source: str | None
    target: str | None
    memory_bytes: float
    started_at: float | None = None  # model seconds (the twin's clock), for the report
    ended_at: float | None = None


def pressure_figures(series: Mapping[str, Sequence[float]], step_model_s: float, threshold: float) -> dict[str, float]:
    """`series`: node -> pressure samples at a common step (missing samples as NaN); step in model seconds."""
    if step_model_s <= 0:
        raise ValueError("step_model_s must be > 0")
    if not series:
        return {"node_minutes_over": 0.0, "peak_pressure": 0.0, "p95_pressure": 0.0}
    lengths = {len(v) for v in series.values()}
    if len(lengths) != 1:
        raise ValueError(f"series of different lengths: {sorted(lengths)}")
    grid = np.array([list(v) for v in series.values()], dtype=float)  # nodes x samples
    over = np.nan_to_num(grid, nan=0.0) > threshold
    hottest = np.nanmax(np.where(np.isnan(grid), -np.inf, grid), axis=0) if grid.size else np.array([])
    hottest = hottest[np.isfinite(hottest)]
    return {
        "node_minutes_over": float(over.sum() * step_model_s / 60.0),
        "peak_pressure": float(hottest.max()) if hottest.size else 0.0,
        "p95_pressure": float(np.percentile(hottest, 95)) if hottest.size else 0.0,
    }


def migration_figures(migrations: Iterable[MigrationRecord]) -> dict[str, float | int]:
    done = list(migrations)
    ok = [m for m in done if m.phase == "Succeeded"]
    moves = Counter(m.vmi for m in ok)
    return {
        "migrations": len(ok),
        "failed_migrations": sum(1 for m in done if m.phase == "Failed"),
        "pingpong_vms": sum(1 for n in moves.values() if n > 1),
        "gib_moved": float(sum(m.memory_bytes for m in ok) / GIB),
        "unfinished_migrations": sum(1 for m in done if m.phase not in ("Succeeded", "Failed")),
    }


def ratio(value: float, base: float) -> float | None:
    """value / base, or None when the baseline is zero (a ratio to nothing says nothing)."""
    return value / base if base else None


@dataclass(frozen=True)
class CooldownParams:
    """The KubevirtMigrationAware plugin's defaults on the operator's main branch (controller/cooldown.py)."""

    base_s: float = 900.0
    growth: float = 2.0
    cap_s: float = 21_600.0
    window_s: float = 172_800.0


def steady_figures(
    migrations: Iterable[MigrationRecord], vm_count: int, start_s: float, end_s: float, settle_s: float = 3600.0
) -> dict[str, float | int | None]:
    """Evictions per VM per day after `settle_s` of the run [start_s, end_s], and moves within a VM's cooldown."""
    done = list(migrations)
    steady_from, days = start_s + settle_s, (end_s - start_s - settle_s) / 86_400.0
    begun = [m for m in done if (m.started_at if m.started_at is not None else m.ended_at) is not None]
    steady = [m for m in begun if (m.started_at if m.started_at is not None else m.ended_at or 0.0) >= steady_from]
    per_day = len(steady) / vm_count / days if days > 0 and vm_count > 0 else None
    return {"evictions_per_vm_day": per_day, "cooldown_violations": cooldown_violations(done)}


def cooldown_violations(migrations: Iterable[MigrationRecord], params: CooldownParams = CooldownParams()) -> int:
    """Successful moves that began while their VM was still cooling down from its previous successful move."""
    by_vm: dict[str, list[MigrationRecord]] = {}
    for m in migrations:
        if m.phase == "Succeeded" and m.started_at is not None and m.ended_at is not None:
            by_vm.setdefault(m.vmi, []).append(m)
    count = 0
    for moves in by_vm.values():
        moves.sort(key=lambda m: m.started_at or 0.0)
        for i in range(1, len(moves)):
            last, start = moves[i - 1], moves[i].started_at or 0.0
            recent = sum(1 for m in moves[:i] if start - (m.ended_at or 0.0) < params.window_s)
            base = max(params.base_s, (last.ended_at or 0.0) - (last.started_at or 0.0))
            cooldown = min(base * params.growth ** max(recent - 1, 0), params.cap_s)
            count += start - (last.ended_at or 0.0) < cooldown
    return count
