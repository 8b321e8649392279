"""`RecordingActuator`: dry-run. Every action the plan asks for is recorded and reported, and nothing is written.

Why it exists: the operator's `Predictive` mode (the descheduler's `--dry-run`, ref §1.3) is how a cluster owner
decides whether to trust a policy. The plan, the budget and the safety checks are the same as for real (the
planner runs unchanged with `dryRun: true`); only this actuator differs. Records are kept in memory (the last
`limit`, served at `/debug/actions`), logged one per line, and counted by the loop like real actions with
result `dry-run`. Not even Events are written, so the cluster's resourceVersion does not move.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from controller.actuators import DRY_RUN, ActionResult
from controller.clock import Clock
from controller.model import Move, TaintChange

log = logging.getLogger("autonomic.controller.dry-run")


@dataclass(frozen=True)
class RecordedAction:
    at: float  # controller clock
    result: ActionResult


class RecordingActuator:
    def __init__(self, clock: Clock, limit: int = 1000) -> None:
        self.clock = clock
        self.records: deque[RecordedAction] = deque(maxlen=limit)

    async def migrate(self, move: Move) -> ActionResult:
        where = f"to {move.target}" if move.target else "(target left to the scheduler)"
        detail = f"would migrate from {move.source} {where}"
        return self._record(ActionResult("migrate", move.vm, DRY_RUN, detail, None, move.reason))

    async def set_taint(self, change: TaintChange, why: str) -> ActionResult:
        detail = f"would {change.action} {change.key}={change.value}:{change.effect}"
        return self._record(ActionResult("taint", change.node, DRY_RUN, detail, None, why))

    def _record(self, result: ActionResult) -> ActionResult:
        self.records.append(RecordedAction(self.clock.now(), result))
        log.info(
            "dry-run: " + result.detail,
            extra={"action": result.action, "subject": result.subject, "reason": result.reason},
        )
        return result
