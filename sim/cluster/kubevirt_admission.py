"""KubeVirt's admission webhooks for VMIs and migrations, as store admission hooks.

Why it exists: a client creating a VirtualMachineInstanceMigration meets KubeVirt's webhooks before anything
runs (pkg/virt-api/webhooks/validating-webhook/admitters/migration-create-admitter.go and the mutator next to
it): the VMI must exist, not be final, be live-migratable, have no migration in flight, and only
virt-controller may set `spec.priority`. Denials come back as kube-apiserver renders a webhook denial. VMIs get
their LiveMigratable condition when created, as virt-controller would set it.
"""

from __future__ import annotations

from typing import Any

from sim.cluster import errors
from sim.cluster.clock import rfc3339
from sim.cluster.kv_objects import LIVE_MIGRATABLE, MIGRATION_SELECTOR_LABEL, non_migratable_reason, set_condition
from sim.cluster.resources import VMIMS, VMIS
from sim.cluster.store import Store

CREATE_VALIDATOR = "migration-create-validator.kubevirt.io"
FINAL = ("Succeeded", "Failed")


def _denied(
    code: int, message: str, *, reason: str = "", causes: list[dict[str, str]] | None = None
) -> errors.ApiError:
    details = {"causes": causes} if causes else None
    return errors.ApiError(
        code, reason, f'admission webhook "{CREATE_VALIDATOR}" denied the request: {message}', details=details
    )


class KubeVirtAdmission:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.controller_request = False  # set by virt-controller's own writes (priority is allowed then)
        store.add_admission(VMIMS, self._migration)
        store.add_admission(VMIS, self._vmi)

    def _vmi(self, op: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        if op != "CREATE" or new is None:
            return
        status = new.setdefault("status", {})
        status.setdefault("phase", "Pending")
        why = non_migratable_reason(new)
        now = rfc3339(self.store.clock.wall())
        if why:
            set_condition(new, LIVE_MIGRATABLE, "False", why[0], why[1], now)
        else:
            set_condition(new, LIVE_MIGRATABLE, "True", now=now)

    def _migration(self, op: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        if op != "CREATE" or new is None:
            return
        spec = new.get("spec") or {}
        ns, vmi_name = new["metadata"]["namespace"], spec.get("vmiName", "")
        if spec.get("priority") is not None and not self.controller_request:
            cause = {
                "reason": "FieldValueForbidden",
                "message": "Migration priority queue, only virt-controller is allowed to set priority field",
                "field": "spec.migrationPriority",
            }
            raise _denied(422, cause["message"], reason="Invalid", causes=[cause])
        vmi = self.store.peek_one(VMIS, ns, vmi_name)
        if vmi is None:
            raise _denied(400, f'the VMI "{ns}/{vmi_name}" does not exist')
        if (vmi.get("status") or {}).get("phase") in FINAL:
            raise _denied(400, "Cannot migrate VMI in finalized state.")
        for c in (vmi.get("status") or {}).get("conditions") or []:
            if c.get("type") == LIVE_MIGRATABLE and c.get("status") == "False":
                raise _denied(
                    400, f"Cannot migrate VMI, Reason: {c.get('reason', '')}, Message: {c.get('message', '')}"
                )
        for m in self.store.peek(VMIMS):
            if (
                m["metadata"].get("namespace") == ns
                and (m.get("spec") or {}).get("vmiName") == vmi_name
                and (m.get("status") or {}).get("phase") not in FINAL
            ):
                raise _denied(
                    400,
                    f"in-flight migration detected. Active migration job ({m['metadata']['uid']}) is currently already "
                    f"in progress for VMI {vmi_name}.",
                )
        new["metadata"].setdefault("labels", {})[MIGRATION_SELECTOR_LABEL] = vmi_name
        new["status"] = {"phase": "Pending"}
