"""`CooldownRule`: how long a VM must rest after a migration before it may be moved again (pure).

Why it exists: churn is the baseline's known failure (ref §5, pain 2), and the operator's answer on main is the
KubevirtMigrationAware evictor plugin's `PreEvictionFilter` (ref §4, read in the operator's vendored
`plugins/kubevirtmigrationaware/kubevirtmigrationaware.go`). Both policies use this one rule: the baseline with the
plugin's parameters, psi-relief with its own `vmCooldown`. For a VM whose last migration ended at `end` after
lasting `d`, with `n` migrations ended in the history window:

    effective = min(max(base, d) * growth^(n - 1), max)        (n <= 1: no growth; max 0: no cap)
    blocked   while  now - end < effective

exactly as the plugin computes it: the base is the configured cooldown or the last migration's duration, whichever
is longer; it doubles (growth 2) for each migration beyond the first in the window; the cap applies last and only
when non-zero; the window keeps a migration while `now - end < window` (`ts.After(now - window)`); the cooldown runs
from the last migration's end, whether it succeeded or failed (the VMI's `migrationState`). Which migrations `n`
counts is the rule's `count_failed`: the plugin's informer records every new `endTimestamp`, failures included
(`onVMIUpdate`), so the baseline counts them; psi-relief counts successful moves only.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.config import CooldownConfig
from controller.model import PastMigration, VMState


@dataclass(frozen=True)
class CooldownRule:
    base: float
    growth: float
    maximum: float  # 0: no cap
    window: float
    count_failed: bool = False

    @classmethod
    def from_config(cls, c: CooldownConfig, *, count_failed: bool = False) -> CooldownRule:
        return cls(c.base_seconds, c.growth_factor, c.max_seconds, c.history_window_seconds, count_failed)

    def counted(self, history: tuple[PastMigration, ...], now: float) -> int:
        """Migrations that ended within the window (strictly: one ended exactly `window` ago is forgotten)."""
        return sum(1 for m in history if (m.succeeded or self.count_failed) and now - m.ended < self.window)

    def effective(self, vm: VMState, now: float) -> float:
        """The VM's current cooldown in seconds (0 for a VM that never migrated)."""
        if not vm.history:
            return 0.0
        base = max(self.base, vm.history[-1].duration)
        doublings = max(self.counted(vm.history, now) - 1, 0)
        try:
            grown = base * float(self.growth) ** doublings
        except OverflowError:  # the plugin stops doubling at int64's limit; a float has its own
            grown = float("inf")
        return min(grown, self.maximum) if self.maximum > 0 else grown

    def blocking(self, vm: VMState, now: float) -> str | None:
        """The refusal reason while `vm` is cooling down, else None."""
        if not vm.history:
            return None
        elapsed, effective = now - vm.history[-1].ended, self.effective(vm, now)
        if elapsed >= effective:
            return None
        moves = self.counted(vm.history, now)
        return f"cooldown: {moves} move(s) in {self.window / 3600:g}h, last {elapsed:.0f}s ago < {effective:.0f}s"
