"""Carrying out a plan: live migrations (eviction API or VirtualMachineInstanceMigration), soft taints, Events.

Why it exists: the plan is data; these are the only modules that write to the cluster. Every action answers with
an `ActionResult` the loop logs and counts, whichever actuator ran it, so dry-run (recording.py) and the real
thing (kubevirt.py, taints.py, with events.py) are observed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from controller.model import Move, TaintChange

# ActionResult.result values
STARTED = "started"  # a migration or evacuation was started (the tracker follows it until it ends)
IN_PROGRESS = "in-progress"  # KubeVirt says one is already under way for this VM: nothing new started
REFUSED = "refused"  # the cluster said no (PDB, webhook): nothing started
FAILED = "failed"  # an error (API unreachable, object gone)
EVICTED = "evicted"  # the eviction deleted the pod instead of migrating the VM (no live-migrating strategy)
APPLIED = "applied"  # a taint was added or removed
UNCHANGED = "unchanged"  # the taint was already as wanted
DRY_RUN = "dry-run"  # recorded, not carried out
HELD = "held"  # a chain's second move, waiting for its first to succeed (loop.py, tracker.py)
HELD_DROPPED = "chain-dropped"  # a held move not started: its first move did not succeed


@dataclass(frozen=True)
class ActionResult:
    action: str  # "migrate" | "taint"
    subject: str  # "namespace/name" of the VM, or the node
    result: str
    detail: str = ""  # the API's answer, or what would have been done
    migration: str | None = None  # the VirtualMachineInstanceMigration's name, when known
    reason: str = ""  # why the plan asked for it


class Actuator(Protocol):
    async def migrate(self, move: Move) -> ActionResult: ...

    async def set_taint(self, change: TaintChange, why: str) -> ActionResult: ...
