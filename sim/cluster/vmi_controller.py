"""virt-controller's VM, VMI and evacuation loops, reduced to what a rebalancer can observe.

Why it exists: VMIs must start on a node with a virt-launcher pod, fail when that pod disappears (and be
restarted by their VM), carry `descheduler.alpha.kubernetes.io/eviction-in-progress` on their pod while
marked for evacuation, and — the part the descheduler relies on — a VMI marked by the eviction webhook
(`status.evacuationNodeName`) gets a VirtualMachineInstanceMigration named `kubevirt-evacuation-<random>`
(pkg/virt-controller/watch/drain/evacuation/evacuation.go) unless one is already in flight. PDB status is kept
current here too (the disruption controller's job).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Container
from typing import Any

from sim.cluster.clock import rfc3339
from sim.cluster.eviction import pdb_status
from sim.cluster.kubevirt_admission import KubeVirtAdmission
from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.kv_objects import (
    CREATED_BY_LABEL,
    DOMAIN_ANNOTATION,
    EVACUATION_ANNOTATION,
    EVICTION_IN_PROGRESS,
    EVICTION_SOURCE_ANNOTATION,
    NODE_NAME_LABEL,
    condition,
    eviction_strategy,
    is_migratable,
    launcher_pod,
    pod_bound,
    pod_unschedulable,
    set_condition,
)
from sim.cluster.placement import IpAllocator, candidates, place_vmi
from sim.cluster.resources import PDBS, PODS, VMIMS, VMIS, VMS
from sim.cluster.scheduler import Decision, NodeCandidate
from sim.cluster.store import Store
from sim.cluster.vmi_index import VmiIndex
from sim.cluster.watch import Change

log = logging.getLogger("autonomic.cluster.kubevirt")


class VmiController:
    def __init__(self, store: Store, config: KubeVirtConfig, admission: KubeVirtAdmission, ips: IpAllocator) -> None:
        self.store, self.config, self.admission, self.ips = store, config, admission, ips
        self._nodes: list[NodeCandidate] | None = None  # node candidates, computed once per pass
        self._failed_at: dict[str, float] = {}  # VMI uid -> model time it failed (VM restart delay)
        # The (namespace, name) of the VMIs and VMs whose objects changed since the last pass (None: look at all).
        # A placed VMI's reaction depends only on itself, its launcher pods and its migrations, and a VM's only on
        # itself and its VMI, so a pass looks at those that changed, the VMIs still waiting for a node (their chance
        # depends on every node) and, while a VM restart is pending, every VM: at 3,000 VMs a full pass per store
        # change was most of the model-time engine's work.
        self._dirty_vmis: set[tuple[str, str]] | None = None
        self._dirty_vms: set[tuple[str, str]] | None = None
        self.index = VmiIndex(store)  # launcher pods by VMI, unfinished migrations, VMIs waiting for a node
        store.on_change(self._note)

    @property
    def pending_restart(self) -> bool:
        return bool(self._failed_at)

    def reconcile(self, now: float) -> None:
        self._nodes = None
        if not self.index.ready:
            self.index.rebuild()
            self._dirty_vmis = None
        dirty, self._dirty_vmis = self._dirty_vmis, set()
        if dirty is None:
            vmis = self.store.peek(VMIS)
        else:  # the changed ones and those still waiting for a node, in key order as a full pass takes them
            found = (self.store.peek_one(VMIS, *key) for key in sorted(dirty | self.index.waiting))
            vmis = [vmi for vmi in found if vmi is not None]
        for vmi in vmis:
            self._vmi(vmi, self.index.pods(vmi["metadata"]["uid"]), self.index, now)
        self._vms(now, dirty)
        self._pdbs()

    # ---- VMIs ----------------------------------------------------------------------------------------------
    def _vmi(self, vmi: dict[str, Any], pods: list[dict[str, Any]], active: Container[Any], now: float) -> None:
        meta, status = vmi["metadata"], vmi.get("status") or {}
        ns, name, phase = meta["namespace"], meta["name"], status.get("phase", "Pending")
        if phase in ("", "Pending"):
            self._start(vmi)
            return
        if phase == "Scheduling":
            self._scheduling(vmi, pods, now)
            return
        if phase != "Running":
            return
        node = status.get("nodeName")
        running_pods = [p for p in pods if p["spec"].get("nodeName") == node and p["status"].get("phase") == "Running"]
        if not running_pods and (ns, name) not in active:
            self._fail(vmi, "launcher pod disappeared", now)
            return
        marked = bool(status.get("evacuationNodeName"))
        for pod in running_pods:
            has = EVICTION_IN_PROGRESS in (pod["metadata"].get("annotations") or {})
            if has != marked:
                self.store.mutate(PODS, ns, pod["metadata"]["name"], functools.partial(_flag, marked=marked))
        if marked and status.get("evacuationNodeName") == node and (ns, name) not in active:
            self._evacuate(vmi)

    def _place(self, vmi: dict[str, Any]) -> Decision:
        if self._nodes is None:
            self._nodes = candidates(self.store)
        return place_vmi(self.store, vmi, ratio=self.config.cpu_allocation_ratio, nodes=self._nodes)

    def _start(self, vmi: dict[str, Any]) -> None:
        """A new VMI gets its launcher pod at once; where no node fits, the pod stays Pending (Unschedulable) and the
        VMI is Scheduling, as with virt-controller and kube-scheduler."""
        decision = self._place(vmi)
        if decision.node is not None:
            self.bind(vmi, decision.node)
            return
        meta, now_s = vmi["metadata"], rfc3339(self.store.clock.wall())
        ratio, message = self.config.cpu_allocation_ratio, decision.message()
        pod = launcher_pod(vmi, None, "", now_s, cpu_allocation_ratio=ratio, unschedulable=message)
        pod = self.store.create(PODS, pod, meta["namespace"])
        log.info("vmi %s/%s unschedulable: %s", meta["namespace"], meta["name"], message)
        self.store.mutate(VMIS, meta["namespace"], meta["name"], functools.partial(_scheduling, pod=pod, now=now_s))

    def _scheduling(self, vmi: dict[str, Any], pods: list[dict[str, Any]], now: float) -> None:
        """A VMI whose launcher pod waits for a node: bind the pod once one fits, fail the VMI if the pod is gone."""
        meta = vmi["metadata"]
        pod = next((p for p in pods if not p["spec"].get("nodeName") and p["status"].get("phase") == "Pending"), None)
        if pod is None:  # someone other than virt-controller deleted it: KubeVirt fails the VMI
            self._fail(vmi, "virt-launcher pod disappeared while the VMI was scheduling", now)
            return
        decision, now_s = self._place(vmi), rfc3339(self.store.clock.wall())
        if decision.node is None:
            scheduled = condition(pod, "PodScheduled") or {}
            if scheduled.get("message") != decision.message():  # the scheduler's latest reason
                update = functools.partial(pod_unschedulable, message=decision.message(), now=now_s)
                pod = self.store.mutate(PODS, meta["namespace"], pod["metadata"]["name"], update)
                copied = functools.partial(_scheduling, pod=pod, now=now_s)
                self.store.mutate(VMIS, meta["namespace"], meta["name"], copied)
            return
        self._nodes = None  # node usage changed
        bound = functools.partial(pod_bound, node=decision.node, pod_ip=self.ips.next(), now=now_s)
        pod = self.store.mutate(PODS, meta["namespace"], pod["metadata"]["name"], bound)
        log.info("vmi %s/%s scheduled on %s", meta["namespace"], meta["name"], decision.node)
        self._running(vmi, pod, decision.node)

    def bind(self, vmi: dict[str, Any], node: str) -> None:
        """Create the launcher pod on `node` and mark the VMI Running there."""
        self._nodes = None  # node usage changed
        meta = vmi["metadata"]
        now_s = rfc3339(self.store.clock.wall())
        pod = launcher_pod(vmi, node, self.ips.next(), now_s, cpu_allocation_ratio=self.config.cpu_allocation_ratio)
        self._running(vmi, self.store.create(PODS, pod, meta["namespace"]), node)

    def _running(self, vmi: dict[str, Any], pod: dict[str, Any], node: str) -> None:
        meta, now_s = vmi["metadata"], rfc3339(self.store.clock.wall())

        def running(o: dict[str, Any]) -> None:
            st = o.setdefault("status", {})
            st.update(phase="Running", nodeName=node, migrationMethod="LiveMigration", migrationTransport="Unix")
            st["activePods"] = {pod["metadata"]["uid"]: node}
            st["interfaces"] = [
                {"name": "default", "ipAddress": pod["status"]["podIP"], "ipAddresses": [pod["status"]["podIP"]]}
            ]
            st["conditions"] = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
            set_condition(o, "Ready", "True", now=now_s)
            o["metadata"].setdefault("labels", {})[NODE_NAME_LABEL] = node

        self.store.mutate(VMIS, meta["namespace"], meta["name"], running)

    def _fail(self, vmi: dict[str, Any], reason: str, now: float) -> None:
        log.info("vmi %s/%s failed: %s", vmi["metadata"]["namespace"], vmi["metadata"]["name"], reason)
        if any(o.get("kind") == "VirtualMachine" for o in vmi["metadata"].get("ownerReferences") or []):
            self._failed_at[vmi["metadata"]["uid"]] = now
        now_s = rfc3339(self.store.clock.wall())

        def failed(o: dict[str, Any]) -> None:
            o.setdefault("status", {})["phase"] = "Failed"
            set_condition(o, "Ready", "False", "PodTerminating", reason, now_s)

        self.store.mutate(VMIS, vmi["metadata"]["namespace"], vmi["metadata"]["name"], failed)

    def _evacuate(self, vmi: dict[str, Any]) -> None:
        strategy = eviction_strategy(vmi, self.config.default_eviction_strategy)
        wants = strategy == "LiveMigrate" or (strategy == "LiveMigrateIfPossible" and is_migratable(vmi))
        if not wants or not is_migratable(vmi):
            return
        meta = vmi["metadata"]
        from_descheduler = (meta.get("annotations") or {}).get(EVICTION_SOURCE_ANNOTATION) == "descheduler"
        migration = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "generateName": "kubevirt-evacuation-",
                "annotations": {EVACUATION_ANNOTATION: vmi["status"]["nodeName"]},
            },
            "spec": {
                "vmiName": meta["name"],
                "priority": "system-maintenance" if from_descheduler else "system-critical",
            },
        }
        self.admission.controller_request = True
        try:
            created = self.store.create(VMIMS, migration, meta["namespace"])
        finally:
            self.admission.controller_request = False
        log.info(
            "evacuation: created migration %s for vmi %s/%s",
            created["metadata"]["name"],
            meta["namespace"],
            meta["name"],
        )

    # ---- VMs -----------------------------------------------------------------------------------------------
    def _vms(self, now: float, dirty_vmis: set[tuple[str, str]] | None) -> None:
        dirty, self._dirty_vms = self._dirty_vms, set()
        if dirty is None or dirty_vmis is None or self._failed_at:
            vms = self.store.peek(VMS)
        else:
            found = (self.store.peek_one(VMS, *key) for key in sorted(dirty | dirty_vmis))
            vms = [vm for vm in found if vm is not None]
        for vm in vms:
            self._vm(vm, self.store.peek_one(VMIS, vm["metadata"]["namespace"], vm["metadata"]["name"]), now)

    def _note(self, change: Change) -> None:
        """Remember what a store change touched (see `_dirty_vmis`)."""
        if self._dirty_vmis is None or self._dirty_vms is None:
            return
        meta = change.obj.get("metadata") or {}
        namespace = meta.get("namespace") or ""
        if change.resource == VMIS.key:
            self._dirty_vmis.add((namespace, meta.get("name", "")))
        elif change.resource == VMS.key:
            self._dirty_vms.add((namespace, meta.get("name", "")))
        elif change.resource == VMIMS.key:
            self._dirty_vmis.add((namespace, (change.obj.get("spec") or {}).get("vmiName", "")))
        elif change.resource == PODS.key:
            owner = (meta.get("annotations") or {}).get(DOMAIN_ANNOTATION)
            if owner:
                self._dirty_vmis.add((namespace, owner))
            elif (meta.get("labels") or {}).get(CREATED_BY_LABEL):
                self._dirty_vmis = None  # a launcher pod that does not name its VMI: look at every one

    def _vm(self, vm: dict[str, Any], vmi: dict[str, Any] | None, now: float) -> None:
        meta, spec = vm["metadata"], vm.get("spec") or {}
        run = spec.get("runStrategy") or ("Always" if spec.get("running") else "Halted")
        if (
            vmi is not None
            and (vmi.get("status") or {}).get("phase") == "Failed"
            and run in ("Always", "RerunOnFailure")
        ):
            if now - self._failed_at.get(vmi["metadata"]["uid"], now) >= self.config.vm_restart_s:
                self._failed_at.pop(vmi["metadata"]["uid"], None)
                self.store.delete(VMIS, meta["namespace"], meta["name"])
                vmi = None
            else:
                return
        if vmi is None and run in ("Always", "RerunOnFailure"):
            template = spec.get("template") or {}
            new = {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstance",
                "metadata": {
                    "name": meta["name"],
                    "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                    "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                    "ownerReferences": [
                        {
                            "apiVersion": "kubevirt.io/v1",
                            "kind": "VirtualMachine",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": template.get("spec") or {},
            }
            self.store.create(VMIS, new, meta["namespace"])
        phase = ((vmi or {}).get("status") or {}).get("phase", "Pending")
        printable = "Running" if phase == "Running" else ("Stopped" if run == "Halted" else "Starting")
        if (condition(vmi or {}, "PodScheduled") or {}).get("reason") == "Unschedulable":
            printable = "ErrorUnschedulable"  # virt-controller's printable status for a VMI no node fits
        ready = phase == "Running"
        if (vm.get("status") or {}).get("printableStatus") != printable or (vm.get("status") or {}).get(
            "ready"
        ) != ready:
            status = {**(vm.get("status") or {}), "printableStatus": printable, "ready": ready, "created": True}
            self.store.mutate(VMS, meta["namespace"], meta["name"], functools.partial(_set_status, status=status))

    # ---- PDBs ----------------------------------------------------------------------------------------------
    def _pdbs(self) -> None:
        pdbs = self.store.peek(PDBS)
        if not pdbs:
            return
        pods = self.store.peek(PODS)
        for pdb in pdbs:
            ns = pdb["metadata"]["namespace"]
            st = pdb_status(pdb, [p for p in pods if p["metadata"].get("namespace") == ns])
            if {k: (pdb.get("status") or {}).get(k) for k in st} != st:
                self.store.mutate(PDBS, ns, pdb["metadata"]["name"], functools.partial(_set_status, status=st))


def _scheduling(vmi: dict[str, Any], pod: dict[str, Any], now: str) -> None:
    """VMI phase Scheduling with its pod's PodScheduled=False condition copied over (virt-controller's
    AddPodCondition), and Ready=False because the guest is not running yet."""
    vmi.setdefault("status", {})["phase"] = "Scheduling"
    scheduled = condition(pod, "PodScheduled") or {}
    conds = [c for c in vmi["status"].get("conditions") or [] if c.get("type") != "PodScheduled"]
    vmi["status"]["conditions"] = [*conds, dict(scheduled)]
    set_condition(vmi, "Ready", "False", "GuestNotRunning", "Guest VM is not reported as running", now)


def _set_status(obj: dict[str, Any], status: dict[str, Any]) -> None:
    obj["status"] = status


def _flag(pod: dict[str, Any], marked: bool) -> None:
    annotations = pod["metadata"].setdefault("annotations", {})
    if marked:
        annotations[EVICTION_IN_PROGRESS] = "true"
    else:
        annotations.pop(EVICTION_IN_PROGRESS, None)
