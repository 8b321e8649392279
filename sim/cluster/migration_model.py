"""How long a live migration takes and whether pre-copy converges: a pure model of QEMU pre-copy as KubeVirt
drives it.

Why it exists: the rebalancer's value depends on migrations costing time and sometimes failing. The model:
- the memory transfer runs at `bandwidth` bytes/s (see `link_share`: a node's link is shared by all migrations
  leaving or entering it; KubeVirt's `bandwidthPerMigration` caps it when non-zero, unlimited by default);
- round 0 copies all guest memory; each later round copies what the guest dirtied during the previous round
  (`dirty_rate` bytes/s, at most all of memory); with `allow_auto_converge`, QEMU throttles the vCPUs by 20 %
  then +10 % per round, scaling the dirty rate down likewise;
- when the remaining data can be sent within `max_downtime_ms`, the guest pauses and the rest is copied
  (stop-and-copy): the migration succeeds;
- KubeVirt aborts after `completion_timeout_per_gib` x guest GiB seconds (default 150 s/GiB), or after
  `progress_timeout` seconds (default 150 s) without the remaining data shrinking; with `allow_post_copy` it
  switches to post-copy instead, which always finishes (remaining bytes / bandwidth) with mode PostCopy.
Defaults are KubeVirt's (pkg/virt-config/virt-config.go): 150 s/GiB, 150 s, 900 ms, no auto-converge, no
post-copy.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
MIB = 2**20
MAX_ROUNDS = 1000


@dataclass(frozen=True)
class MigrationParams:
    completion_timeout_per_gib: float = 150.0
    progress_timeout: float = 150.0
    max_downtime_ms: float = 900.0
    allow_auto_converge: bool = False
    allow_post_copy: bool = False


@dataclass(frozen=True)
class MigrationOutcome:
    succeeded: bool
    duration_s: float  # model seconds from the start of the transfer to success or abort
    mode: str  # PreCopy | PostCopy
    rounds: int
    transferred_bytes: int
    downtime_ms: float
    failure_reason: str | None = None


def link_share(link_bytes_per_s: float, outbound_on_source: int, inbound_on_target: int, cap: float = 0.0) -> float:
    """Bandwidth of one migration when the links of its source and target are shared evenly."""
    share = link_bytes_per_s / max(1, outbound_on_source, inbound_on_target)
    return min(share, cap) if cap > 0 else share


def simulate(memory_bytes: int, dirty_rate: float, bandwidth: float, params: MigrationParams) -> MigrationOutcome:
    if memory_bytes <= 0 or bandwidth <= 0:
        raise ValueError("memory and bandwidth must be positive")
    completion_timeout = params.completion_timeout_per_gib * max(memory_bytes / GIB, 1 / 1024)
    downtime_bytes = bandwidth * params.max_downtime_ms / 1000
    elapsed, sent, remaining = 0.0, 0.0, float(memory_bytes)
    best_remaining, last_progress = remaining, 0.0
    rounds = 0
    while rounds < MAX_ROUNDS:
        if remaining <= downtime_bytes and rounds > 0:
            downtime = remaining / bandwidth * 1000
            return MigrationOutcome(
                True, elapsed + remaining / bandwidth, "PreCopy", rounds, int(sent + remaining), downtime
            )
        t = remaining / bandwidth
        throttle = min(0.99, 0.2 + 0.1 * (rounds - 1)) if params.allow_auto_converge and rounds >= 1 else 0.0
        dirtied = min(float(memory_bytes), dirty_rate * (1 - throttle) * t)
        if elapsed + t > completion_timeout:
            partial = sent + (completion_timeout - elapsed) * bandwidth
            return _abort(memory_bytes, completion_timeout, partial, remaining, rounds, bandwidth, params)
        elapsed += t
        sent += remaining
        remaining = dirtied
        rounds += 1
        if remaining < best_remaining:
            best_remaining, last_progress = remaining, elapsed
        elif elapsed - last_progress >= params.progress_timeout:
            return _abort(memory_bytes, elapsed, sent, remaining, rounds, bandwidth, params)
    return _abort(memory_bytes, elapsed, sent, remaining, rounds, bandwidth, params)


def _abort(
    memory: int, at: float, sent: float, remaining: float, rounds: int, bandwidth: float, params: MigrationParams
) -> MigrationOutcome:
    if params.allow_post_copy:
        # post-copy: the guest runs on the target at once, pages still on the source are pulled on demand
        return MigrationOutcome(True, at + remaining / bandwidth, "PostCopy", rounds, int(sent + remaining), 0.0)
    reason = (
        f"Live migration aborted after {at:.0f}s: pre-copy did not converge or complete in time "
        f"({memory / GIB:.1f} GiB at {bandwidth / MIB:.0f} MiB/s; completionTimeoutPerGiB/progressTimeout)"
    )
    return MigrationOutcome(False, at, "PreCopy", rounds, int(sent), 0.0, reason)
