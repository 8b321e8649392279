"""How long a live migration of a VM will take, and whether it will converge at all.

Why it exists: psi-relief prefers cheap moves, and must not start a migration that KubeVirt will abort: pre-copy
sends the guest memory, then re-sends what the guest dirtied meanwhile, round after round. With memory M, copy
bandwidth B and dirty rate D (r = D/B < 1) the rounds form a geometric series, so the data sent is M/(1-r) and the
duration t = M / (B - D). A migration is refused as non-converging when r >= `maxDirtyRateRatio` (KubeVirt's
auto-converge and post-copy are off by default, ref §3), or when t exceeds KubeVirt's completion timeout,
`completionTimeoutPerGiB` (150 s by default, ref §3) times the memory in GiB.

The planning cost of a move is 1 + 0.5 * t / (t + 600 s), in [1, 1.5): any one move costs less than two, so the
planner first minimises the number of migrations and only then prefers the shorter ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.config import MigrationCostConfig
from controller.model import VMState

GIB = float(2**30)
MIB = float(2**20)
COST_HALF_SECONDS = 600.0


@dataclass(frozen=True)
class MigrationEstimate:
    seconds: float
    cost: float
    problem: str | None = None  # why the migration would not converge, else None


def estimate_migration(vm: VMState, params: MigrationCostConfig) -> MigrationEstimate:
    size = vm.memory_size or vm.memory_request
    bandwidth, dirty = params.bandwidth_bytes_per_second, vm.dirty_rate or 0.0
    ratio = dirty / bandwidth
    if ratio >= params.max_dirty_rate_ratio:
        why = (
            f"may not converge: dirty rate {dirty / MIB:.0f} MiB/s is {ratio:.0%} of the "
            f"{bandwidth / MIB:.0f} MiB/s bandwidth (limit {params.max_dirty_rate_ratio:.0%})"
        )
        return MigrationEstimate(float("inf"), float("inf"), why)
    seconds = size / (bandwidth - dirty)
    timeout = params.completion_timeout_per_gib * size / GIB
    if size > 0 and seconds > timeout:
        why = f"would exceed the completion timeout: {seconds:.0f}s > {timeout:.0f}s for {size / GIB:.1f} GiB"
        return MigrationEstimate(seconds, float("inf"), why)
    return MigrationEstimate(seconds, 1.0 + 0.5 * seconds / (seconds + COST_HALF_SECONDS))
