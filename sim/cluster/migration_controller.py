"""virt-controller's migration loop: VirtualMachineInstanceMigrations from Pending to Succeeded or Failed.

Why it exists: this is the behaviour a rebalancer lives with (pkg/virt-controller/watch/migration/
migration.go). Pending migrations are taken highest priority first, oldest first; one waits while running
migrations (phases Scheduling..Running) reach `parallel_migrations_per_cluster` or those leaving its VMI's node
reach `parallel_outbound_migrations_per_node`; evacuation migrations of a VMI whose previous evacuations failed
wait 20 s, 40 s, ... after the last failure. Admitted, a migration creates the target pod on the node the
scheduler picks, then steps Scheduling -> Scheduled -> PreparingTarget -> TargetReady -> Running with the
delays of `KubeVirtConfig`; Running lasts what `migration_model.simulate` says for the VMI's memory, dirty rate
and the bandwidth it gets. On success the VMI moves (status.nodeName, labels, activePods) and the source pod
goes; on failure the target pod goes and the VMI stays. Deleting a migration aborts it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sim.cluster.clock import rfc3339
from sim.cluster.faults import FaultState
from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.kv_objects import (
    CREATED_BY_LABEL,
    dirty_rate,
    launcher_pod,
    vmi_requests,
)
from sim.cluster.migration_effects import (
    migration_phase,
    target_pod_creating,
    target_pod_running,
    vmi_migration_aborted,
    vmi_migration_failed,
    vmi_moved,
    vmi_target_chosen,
    vmi_transfer_started,
)
from sim.cluster.migration_model import MigrationOutcome, link_share, simulate
from sim.cluster.migration_queue import backoff_until, limits_allow, pending_in_order
from sim.cluster.placement import IpAllocator, node_ready, place_vmi
from sim.cluster.resources import NODES, PODS, VMIMS, VMIS
from sim.cluster.store import Store

log = logging.getLogger("autonomic.cluster.kubevirt")
RUNNING_PHASES = ("Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running")
NEXT = {
    "Scheduling": "Scheduled",
    "Scheduled": "PreparingTarget",
    "PreparingTarget": "TargetReady",
    "TargetReady": "Running",
}


@dataclass
class _Run:
    """What virt-controller and virt-handler keep about one admitted migration (not in the API object)."""

    ns: str
    name: str
    vmi: str
    source: str
    source_pod: str
    target: str | None = None
    target_pod: str | None = None
    since: float = 0.0  # model time the current phase began
    admitted: float = 0.0
    outcome: MigrationOutcome | None = None
    injected_failure: str | None = None


class MigrationController:
    def __init__(
        self,
        store: Store,
        config: KubeVirtConfig,
        faults: FaultState,
        ips: IpAllocator,
        on_final: Callable[[dict[str, Any], str | None], None],
    ) -> None:
        self.store, self.config, self.faults, self.ips = store, config, faults, ips
        self.on_final = on_final  # (final migration object, failure reason)
        self.runs: dict[str, _Run] = {}  # migration uid -> run
        self.failed_at: dict[str, float] = {}  # migration uid -> model time it failed (evacuation backoff)
        self.next_due: float | None = None  # earliest model time something changes on its own

    def reconcile(self, now: float) -> None:
        self.next_due = None
        migrations = {m["metadata"]["uid"]: m for m in self.store.peek(VMIMS)}
        for uid in [u for u in self.runs if u not in migrations]:
            self._abort_deleted(self.runs.pop(uid), now)
        for uid, run in list(self.runs.items()):
            self._advance(migrations[uid], run, now)
        pending = pending_in_order(migrations.values())
        for m in pending:
            self._admit(m, now)

    def _due(self, t: float) -> None:
        self.next_due = t if self.next_due is None else min(self.next_due, t)

    # ---- Pending -------------------------------------------------------------------------------------------
    def _admit(self, m: dict[str, Any], now: float) -> None:
        ns, name, vmi_name = m["metadata"]["namespace"], m["metadata"]["name"], m["spec"]["vmiName"]
        vmi = self.store.peek_one(VMIS, ns, vmi_name)
        if vmi is None or (vmi.get("status") or {}).get("phase") != "Running":
            self._finish(m, None, now, "Failed", "Migration aborted: the VMI is not running")
            return
        until = backoff_until(m, self.store.peek(VMIMS), self.failed_at, self.config.evacuation_backoff_initial)
        if until is not None and now < until:
            self._due(until)
            return
        source = vmi["status"]["nodeName"]
        if not limits_allow(self.config, [r.source for r in self.runs.values()], source):
            return
        src_pod = next(
            (
                p
                for p in self.store.peek(PODS)
                if (p["metadata"].get("labels") or {}).get(CREATED_BY_LABEL) == vmi["metadata"]["uid"]
                and p["spec"].get("nodeName") == source
            ),
            None,
        )
        run = _Run(ns, name, vmi_name, source, src_pod["metadata"]["name"] if src_pod else "", since=now, admitted=now)
        self.runs[m["metadata"]["uid"]] = run
        self._set_phase(m, "Scheduling", now)
        self._try_schedule(m, run, vmi, now)

    # ---- phases --------------------------------------------------------------------------------------------
    def _try_schedule(self, m: dict[str, Any], run: _Run, vmi: dict[str, Any], now: float) -> None:
        added = (m.get("spec") or {}).get("addedNodeSelector")
        decision = place_vmi(
            self.store, vmi, exclude=(run.source,), added=added, ratio=self.config.cpu_allocation_ratio
        )
        if decision.node is None:
            if now - run.since >= self.config.unschedulable_pending_timeout:
                self._fail(
                    m,
                    run,
                    now,
                    f"target pod unschedulable for {self.config.unschedulable_pending_timeout:.0f}s: "
                    + decision.message(),
                )
            else:
                self._due(run.since + self.config.unschedulable_pending_timeout)
            return
        now_s = rfc3339(self.store.clock.wall())
        pod = launcher_pod(vmi, decision.node, self.ips.next(), now_s, migration_uid=m["metadata"]["uid"],
                           cpu_allocation_ratio=self.config.cpu_allocation_ratio)  # fmt: skip
        target_pod_creating(pod, now_s)
        created = self.store.create(PODS, pod, run.ns)
        run.target, run.target_pod, run.since = decision.node, created["metadata"]["name"], now
        self._due(now + self.config.target_schedule_s)

    def _advance(self, m: dict[str, Any], run: _Run, now: float) -> None:
        phase = (m.get("status") or {}).get("phase")
        vmi = self.store.peek_one(VMIS, run.ns, run.vmi)
        if vmi is None:
            self._fail(m, run, now, "the VMI disappeared during migration")
            return
        if phase == "Scheduling" and run.target is None:
            self._try_schedule(m, run, vmi, now)
            return
        nodes = {n["metadata"]["name"]: n for n in self.store.peek(NODES)}
        for n in (run.source, run.target):
            if n and (n not in nodes or not node_ready(nodes[n])):
                self._fail(m, run, now, f"node {n} is not ready")
                return
        delays = {
            "Scheduling": self.config.target_schedule_s,
            "Scheduled": self.config.target_start_s,
            "PreparingTarget": self.config.target_prepare_s,
            "TargetReady": self.config.handoff_s,
        }
        if phase in NEXT:
            due = run.since + delays[phase]
            if now < due:
                self._due(due)
                return
            run.since = now
            nxt = NEXT[phase]
            self._enter(m, run, vmi, nxt, now)
            self._set_phase(m, nxt, now)
            return
        if phase == "Running" and run.outcome is not None:
            duration = run.outcome.duration_s
            if run.injected_failure:
                duration = duration / 2
            due = run.since + duration
            if now < due:
                self._due(due)
                return
            if run.injected_failure or not run.outcome.succeeded:
                self._fail(m, run, now, run.injected_failure or run.outcome.failure_reason or "migration failed")
            else:
                self._succeed(m, run, vmi, now)

    def _enter(self, m: dict[str, Any], run: _Run, vmi: dict[str, Any], phase: str, now: float) -> None:
        now_s = rfc3339(self.store.clock.wall())
        if phase == "Scheduled":
            state = {
                "migrationUid": m["metadata"]["uid"],
                "sourceNode": run.source,
                "targetNode": run.target,
                "sourcePod": run.source_pod,
                "targetPod": run.target_pod,
            }
            chosen = functools.partial(vmi_target_chosen, state=state, target=run.target or "")
            self.store.mutate(VMIS, run.ns, run.vmi, chosen)
        elif phase == "PreparingTarget" and run.target_pod:
            self.store.mutate(PODS, run.ns, run.target_pod, functools.partial(target_pod_running, now=now_s))
        elif phase == "Running":
            _, mem = vmi_requests(vmi)
            dirty = dirty_rate(vmi, self.config.default_dirty_rate)
            outbound = sum(1 for r in self.runs.values() if r.source == run.source and r.outcome is not None) + 1
            inbound = sum(1 for r in self.runs.values() if r.target == run.target and r.outcome is not None) + 1
            bandwidth = link_share(
                self.config.node_link_bytes_per_s, outbound, inbound, self.config.bandwidth_per_migration
            )
            run.outcome = simulate(mem, dirty, bandwidth, self.config.migration_params())
            run.injected_failure = self.faults.take_migration_failure()
            self.store.mutate(VMIS, run.ns, run.vmi, functools.partial(vmi_transfer_started, now=now_s))
            self._due(now + (run.outcome.duration_s / 2 if run.injected_failure else run.outcome.duration_s))

    def _set_phase(self, m: dict[str, Any], phase: str, now: float, reason: str | None = None) -> dict[str, Any]:
        now_s = rfc3339(self.store.clock.wall())

        vmi = self.store.peek_one(VMIS, m["metadata"]["namespace"], m["spec"]["vmiName"])
        state = ((vmi or {}).get("status") or {}).get("migrationState")
        change = functools.partial(migration_phase, phase=phase, now=now_s, vmi_state=state)
        return self.store.mutate(VMIMS, m["metadata"]["namespace"], m["metadata"]["name"], change)

    # ---- endings -------------------------------------------------------------------------------------------
    def _succeed(self, m: dict[str, Any], run: _Run, vmi: dict[str, Any], now: float) -> None:
        target_pod = self.store.peek_one(PODS, run.ns, run.target_pod or "") or {}
        moved = functools.partial(
            vmi_moved,
            target=run.target or "",
            pod_uid=target_pod.get("metadata", {}).get("uid", ""),
            ip=target_pod.get("status", {}).get("podIP", ""),
            mode=run.outcome.mode if run.outcome else "PreCopy",
            now=rfc3339(self.store.clock.wall()),
        )
        self.store.mutate(VMIS, run.ns, run.vmi, moved)
        if run.source_pod and self.store.peek_one(PODS, run.ns, run.source_pod):
            self.store.delete(PODS, run.ns, run.source_pod, admit=False)
        log.info("migration %s/%s succeeded: %s -> %s", run.ns, run.name, run.source, run.target)
        self._finish(m, run, now, "Succeeded", None)

    def _fail(self, m: dict[str, Any], run: _Run, now: float, reason: str) -> None:
        self._drop_target(run)
        vmi = self.store.peek_one(VMIS, run.ns, run.vmi)
        state = ((vmi or {}).get("status") or {}).get("migrationState") or {}
        if vmi is not None and state.get("migrationUid") == m["metadata"]["uid"]:
            failed = functools.partial(vmi_migration_failed, reason=reason, now=rfc3339(self.store.clock.wall()))
            self.store.mutate(VMIS, run.ns, run.vmi, failed)
        log.info("migration %s/%s failed: %s", run.ns, run.name, reason)
        self._finish(m, run, now, "Failed", reason)

    def _finish(self, m: dict[str, Any], run: _Run | None, now: float, phase: str, reason: str | None) -> None:
        self.runs.pop(m["metadata"]["uid"], None)
        if phase == "Failed":
            self.failed_at[m["metadata"]["uid"]] = now
        final = self._set_phase(m, phase, now)
        self.on_final(final, reason)

    def _abort_deleted(self, run: _Run, now: float) -> None:
        self._drop_target(run)
        if self.store.peek_one(VMIS, run.ns, run.vmi) is not None:
            aborted = functools.partial(vmi_migration_aborted, now=rfc3339(self.store.clock.wall()))
            self.store.mutate(VMIS, run.ns, run.vmi, aborted)

    def _drop_target(self, run: _Run) -> None:
        if run.target_pod and self.store.peek_one(PODS, run.ns, run.target_pod):
            self.store.delete(PODS, run.ns, run.target_pod, admit=False)
