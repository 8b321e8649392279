"""`SoftTaintActuator`: adds and removes the soft-tainter's PreferNoSchedule taints on nodes.

Why it exists: with the eviction actuator the KubeVirt scheduler picks the target, and these taints are what steer
it away from hot nodes (ref §1.5, pain 3); they must also go when a node recovers, or it stays shunned. Node
`spec.taints` has no patch strategy (a patch replaces the whole list), so a change reads the node, edits only the
controller's own key, and writes the list back with the read `resourceVersion`: a concurrent writer (kubelet,
another taint controller) makes it 409 and the change is redone on the fresh node (3 attempts). Each applied change
records an Event on the node with the policy's reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common.kube_watch import read_json
from controller.actuators import APPLIED, FAILED, UNCHANGED, ActionResult
from controller.actuators.events import EventRecorder
from controller.model import TaintChange

ATTEMPTS = 3


class SoftTaintActuator:
    def __init__(self, api: client.ApiClient, events: EventRecorder) -> None:
        self.core, self.events = client.CoreV1Api(api), events

    async def set_taint(self, change: TaintChange, why: str) -> ActionResult:
        return await asyncio.to_thread(self._apply, change, why)

    def _apply(self, change: TaintChange, why: str) -> ActionResult:
        last = ""
        for _ in range(ATTEMPTS):
            try:
                node = read_json(self.core.read_node(change.node, _preload_content=False))
                taints = list((node.get("spec") or {}).get("taints") or [])
                wanted = edit_taints(taints, change)
                if wanted == taints:
                    return self._result(change, UNCHANGED, "already as wanted", why)
                patch: Any = {
                    "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                    "spec": {"taints": wanted},
                }
                self.core.patch_node(change.node, patch, _preload_content=False)
            except ApiException as exc:
                last = f"HTTP {exc.status}: {exc.reason}"
                if exc.status == 409:
                    continue
                return self._result(change, FAILED, last, why)
            except Exception as exc:  # connection errors
                return self._result(change, FAILED, f"{type(exc).__name__}: {exc}", why)
            verb = "added" if change.action == "add" else "removed"
            self.events.node(
                node, change.node, "SoftTaint", f"{verb} {change.key}={change.value}:{change.effect}: {why}"
            )
            return self._result(change, APPLIED, verb, why)
        return self._result(change, FAILED, f"gave up after {ATTEMPTS} conflicts ({last})", why)

    @staticmethod
    def _result(change: TaintChange, result: str, detail: str, why: str) -> ActionResult:
        return ActionResult("taint", change.node, result, f"{change.action} {change.key}: {detail}", None, why)


def edit_taints(taints: list[dict[str, Any]], change: TaintChange) -> list[dict[str, Any]]:
    """`taints` with `change` applied: add once (same key and effect replaced), or remove that key and effect."""
    kept = [t for t in taints if not (t.get("key") == change.key and t.get("effect") == change.effect)]
    if change.action == "add":
        existing = next((t for t in taints if t.get("key") == change.key and t.get("effect") == change.effect), None)
        if existing is not None and existing.get("value") == change.value:
            return taints
        return [*kept, {"key": change.key, "value": change.value, "effect": change.effect}]
    return kept if len(kept) != len(taints) else taints
