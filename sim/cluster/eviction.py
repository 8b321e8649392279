"""`POST pods/<name>/eviction`: the policy/v1 Eviction subresource, with KubeVirt's eviction webhook in front.

Why it exists: this is how the descheduler (and a controller imitating it) asks for a VM to move. The order of
checks is the apiserver's: the pod must exist (404); validating admission runs, which is where KubeVirt's
`virt-launcher-eviction-interceptor.kubevirt.io` webhook (pkg/virt-api/webhooks/validating-webhook/admitters/
pod-eviction-admitter.go) answers 429 for VMIs it will live-migrate, after marking them with
`status.evacuationNodeName`; then PodDisruptionBudgets are checked (429 with a DisruptionBudget cause);
finally the pod is deleted and 201 Success returned. KubeVirt no longer creates PDBs for VMIs (the webhook
replaced them), so only user PDBs take part.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sim.cluster import errors
from sim.cluster.kv_objects import (
    DOMAIN_ANNOTATION,
    EVICTION_SOURCE_ANNOTATION,
    eviction_strategy,
    is_launcher,
    is_migratable,
)
from sim.cluster.resources import PDBS, PODS, VMIS
from sim.cluster.selectors import label_selector_matches
from sim.cluster.shapes import check_types
from sim.cluster.store import Store

WEBHOOK = "virt-launcher-eviction-interceptor.kubevirt.io"
EVICTION_FMT = 'Eviction triggered evacuation of VMI "{ns}/{name}"'


def _denied(message: str) -> errors.ApiError:
    # what kube-apiserver makes of a webhook's denial with code 429 and no reason
    return errors.ApiError(429, "", f'admission webhook "{WEBHOOK}" denied the request: {message}')


def pdb_status(pdb: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """What the disruption controller would write: expected, healthy, desired and allowed disruptions."""
    spec = pdb.get("spec") or {}
    selected = [p for p in pods if label_selector_matches(spec.get("selector"), p["metadata"].get("labels"))]
    expected = len(selected)
    healthy = sum(
        1
        for p in selected
        if (p.get("status") or {}).get("phase") == "Running"
        and any(c.get("type") == "Ready" and c.get("status") == "True" for c in p["status"].get("conditions") or [])
    )
    if "maxUnavailable" in spec:
        desired = max(0, expected - _resolve(spec["maxUnavailable"], expected, round_up=True))
    else:
        desired = _resolve(spec.get("minAvailable", 1), expected, round_up=True)
    return {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "expectedPods": expected,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": max(0, healthy - desired),
    }


def _resolve(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1])
        n = total * pct
        return -(-n // 100) if round_up else n // 100
    return int(value)


class EvictionHandler:
    def __init__(self, store: Store, *, cluster_default_strategy: str | None) -> None:
        self.store = store
        self.cluster_default_strategy = cluster_default_strategy

    async def __call__(
        self, request: web.Request, namespace: str | None, name: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        return self.evict(namespace or "default", name, body, dry_run=request.query.get("dryRun") == "All")

    def evict(self, namespace: str, name: str, body: Any, *, dry_run: bool = False) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
            raise errors.bad_request("the body must be a policy/v1 Eviction")
        check_types("eviction", body)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise errors.bad_request("name in URL does not match name in Eviction object")
        pod = self.store.get(PODS, namespace, name)
        opts = body.get("deleteOptions") or {}
        dry_run = dry_run or "All" in (opts.get("dryRun") or [])
        self._kubevirt_webhook(pod, meta.get("annotations") or {}, dry_run=dry_run)
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed", "Pending"):
            self._check_pdbs(pod)
        if not dry_run:
            self.store.delete(PODS, namespace, name)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _kubevirt_webhook(self, pod: dict[str, Any], annotations: dict[str, str], *, dry_run: bool) -> None:
        if not is_launcher(pod) or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        vmi_name = (pod["metadata"].get("annotations") or {}).get(DOMAIN_ANNOTATION)
        if not vmi_name:
            return
        ns = pod["metadata"]["namespace"]
        vmi = self.store.try_get(VMIS, ns, vmi_name)
        if vmi is None:
            raise _denied(
                f'kubevirt failed getting the vmi: virtualmachineinstances.kubevirt.io "{vmi_name}" not found'
            )
        strategy = eviction_strategy(vmi, self.cluster_default_strategy)
        migratable = is_migratable(vmi)
        if strategy == "LiveMigrate" and not migratable:
            raise _denied(f"VMI {vmi_name} is configured with an eviction strategy but is not live-migratable")
        mark = strategy == "External" or (strategy in ("LiveMigrate", "LiveMigrateIfPossible") and migratable)
        if not mark:
            return
        status = vmi.get("status") or {}
        if status.get("evacuationNodeName"):
            raise _denied("Evacuation in progress: " + EVICTION_FMT.format(ns=ns, name=vmi_name))
        if status.get("nodeName") != pod["spec"].get("nodeName"):
            raise _denied("Eviction request for target Pod")
        if not dry_run:
            from_descheduler = annotations.get("requested-by") == "sigs.k8s.io/descheduler"

            def mark_vmi(obj: dict[str, Any]) -> None:
                obj.setdefault("status", {})["evacuationNodeName"] = pod["spec"].get("nodeName")
                if from_descheduler:
                    obj["metadata"].setdefault("annotations", {})[EVICTION_SOURCE_ANNOTATION] = "descheduler"

            self.store.mutate(VMIS, ns, vmi_name, mark_vmi)
        raise _denied(EVICTION_FMT.format(ns=ns, name=vmi_name))

    def _check_pdbs(self, pod: dict[str, Any]) -> None:
        ns = pod["metadata"]["namespace"]
        pdbs = [
            p
            for p in self.store.list(PDBS, ns)[0]
            if label_selector_matches((p.get("spec") or {}).get("selector"), pod["metadata"].get("labels"))
        ]
        if not pdbs:
            return
        if len(pdbs) > 1:
            raise errors.internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
            )
        pdb = pdbs[0]
        pods = self.store.list(PODS, ns)[0]
        status = pdb_status(pdb, pods)
        if status["disruptionsAllowed"] <= 0:
            cause = {
                "reason": "DisruptionBudget",
                "message": f"The disruption budget {pdb['metadata']['name']} needs {status['desiredHealthy']} healthy "
                f"pods and has {status['currentHealthy']} currently",
            }
            raise errors.too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                causes=[cause],
                reason="TooManyRequests",
            )
        status["disruptionsAllowed"] -= 1
        self.store.mutate(PDBS, ns, pdb["metadata"]["name"], lambda o: o.__setitem__("status", status))
