"""`MigrationTracker`: what this controller started, followed until KubeVirt says how it ended.

Why it exists: two gaps between "the API said yes" and "the cache shows it":
1. Counting. Right after an eviction answers 429 (evacuation started) or a VMIM is created, the watch may not yet
   have delivered the VMI's evacuation mark or the VMIM. Until it does, the request is reported to the planner as
   in flight (`pending()`), so the budget counts it and the VM is not chosen twice: the descheduler's erCache,
   ref §2.6. An entry the cluster never confirms (no mark, no VMIM) expires after `expiry_s` (600 s, as erCache's
   assumed entries).
2. Outcomes. A migration's end is only visible on its VMIM: `update()` finds it (by name for VMIMs we created; for
   an eviction, the newest VMIM of the VM created since the request) and reports `succeeded`, `failed`,
   `aborted` (the VMIM went away unfinished) or `unconfirmed`, for the metrics and the log.
3. Chains. A chain's or swap's second move (`Move.after`, policies/chains.py) is held until the move it waits for
   has succeeded (`hold()`, `release()`): reported to the planner as in flight meanwhile (phase `Held`), so the
   budget counts it and no other move takes its target's room; dropped when the first move ends otherwise, is no
   longer followed, or `expiry_s` passes. Held moves are not persisted: after a restart the planner plans afresh.
After a restart `adopt()` picks up the unfinished VMIMs this controller had created (label managed-by), so their
outcomes are still counted; evacuations in flight are counted by the planner from the cluster in any case.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from common.kube_watch import Obj
from controller.model import TERMINAL_MIGRATION_PHASES, MigrationState, Move
from controller.sources.cluster import ClusterSource
from controller.sources.objects import timestamp

TIMESTAMP_SLACK_S = 2.0  # object timestamps have second precision
HELD = "Held"  # the phase reported for a chain's second move while it waits for the first


@dataclass(frozen=True)
class Requested:
    vm: str
    source: str
    target: str | None
    requested_at: float  # controller clock (the cluster's time)
    migration: str | None = None  # VMIM name when we created it
    confirmed: bool = False  # the cache has shown the mark or the VMIM


@dataclass(frozen=True)
class Outcome:
    vm: str
    source: str
    outcome: str  # succeeded | failed | aborted | unconfirmed
    migration: str | None
    detail: str = ""


@dataclass(frozen=True)
class Held:
    move: Move  # move.after: the VM whose migration must succeed first
    held_at: float


class MigrationTracker:
    def __init__(self, expiry_s: float = 600.0) -> None:
        self.expiry_s = expiry_s
        self._entries: dict[str, Requested] = {}
        self._held: dict[str, Held] = {}  # by the VM each waits for

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, entry: Requested) -> None:
        self._entries[entry.vm] = entry

    def pending(self) -> list[MigrationState]:
        """Requests the planner must count as in flight (the snapshot prefers what the cluster shows)."""
        requested = [
            MigrationState(e.vm, e.source, e.target, "Requested", e.requested_at) for e in self._entries.values()
        ]
        held = [MigrationState(h.move.vm, h.move.source, h.move.target, HELD, h.held_at) for h in self._held.values()]
        return requested + held

    def hold(self, move: Move, now: float) -> None:
        """Keep a chain's second move until `move.after`'s migration (followed here) has ended."""
        if move.after is not None:
            self._held[move.after] = Held(move, now)

    def release(self, outcomes: list[Outcome], now: float) -> tuple[list[Move], list[tuple[Move, str]]]:
        """The held moves to start now (their first move succeeded), and those dropped with why."""
        ready: list[Move] = []
        dropped: list[tuple[Move, str]] = []
        for outcome in outcomes:
            held = self._held.pop(outcome.vm, None)
            if held is None:
                continue
            if outcome.outcome == "succeeded":
                ready.append(held.move)
            else:
                dropped.append((held.move, f"{outcome.vm}, which it waited for, {outcome.outcome}"))
        for first, held in list(self._held.items()):
            if first not in self._entries:
                dropped.append((held.move, f"{first}, which it waited for, is not followed"))
            elif now - held.held_at > self.expiry_s:
                dropped.append((held.move, f"{first} not done within {self.expiry_s:.0f}s"))
            else:
                continue
            del self._held[first]
        return ready, dropped

    def adopt(self, cluster: ClusterSource, manager_label: str, manager: str) -> int:
        """Track the unfinished VMIMs labelled as ours (after a restart); returns how many."""
        adopted = 0
        for m in cluster.migrations.items():
            if (m["metadata"].get("labels") or {}).get(manager_label) != manager or _phase(
                m
            ) in TERMINAL_MIGRATION_PHASES:
                continue
            vm = f"{m['metadata'].get('namespace')}/{(m.get('spec') or {}).get('vmiName')}"
            state = (m.get("status") or {}).get("migrationState") or {}
            vmi = cluster.vmi(vm) or {}
            source = state.get("sourceNode") or (vmi.get("status") or {}).get("nodeName") or ""
            created = timestamp(m["metadata"].get("creationTimestamp")) or 0.0
            self._entries[vm] = Requested(vm, source, state.get("targetNode"), created, m["metadata"]["name"], True)
            adopted += 1
        return adopted

    def update(self, cluster: ClusterSource, now: float) -> list[Outcome]:
        """Check every entry against the cache; return (and forget) the ones that ended."""
        done: list[Outcome] = []
        for vm, entry in list(self._entries.items()):
            vmim = self._find(cluster.migrations_of(vm), entry)
            marked = bool(((cluster.vmi(vm) or {}).get("status") or {}).get("evacuationNodeName"))
            outcome: str | None = None
            detail = ""
            if vmim is not None:
                entry = replace(entry, migration=vmim["metadata"]["name"], confirmed=True)
                phase = _phase(vmim)
                if phase in TERMINAL_MIGRATION_PHASES:
                    outcome = phase.lower()
                    state = (vmim.get("status") or {}).get("migrationState") or {}
                    detail = state.get("failureReason") or state.get("targetNode") or ""
            elif marked:
                entry = replace(entry, confirmed=True)
            elif entry.confirmed:
                outcome, detail = "aborted", "the migration disappeared before it finished"
            elif now - entry.requested_at > self.expiry_s:
                outcome, detail = "unconfirmed", f"no migration seen within {self.expiry_s:.0f}s"
            if outcome is None:
                self._entries[vm] = entry
                continue
            del self._entries[vm]
            done.append(Outcome(vm, entry.source, outcome, entry.migration, detail))
        return done

    def _find(self, migrations: list[Obj], entry: Requested) -> Obj | None:
        if entry.migration is not None:
            return next((m for m in migrations if m["metadata"].get("name") == entry.migration), None)
        since = entry.requested_at - TIMESTAMP_SLACK_S
        recent = [m for m in migrations if (timestamp(m["metadata"].get("creationTimestamp")) or 0.0) >= since]
        return max(recent, key=lambda m: timestamp(m["metadata"].get("creationTimestamp")) or 0.0, default=None)


def _phase(m: Obj) -> str:
    return (m.get("status") or {}).get("phase") or "Pending"
