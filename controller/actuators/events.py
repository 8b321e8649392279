"""Kubernetes Events on the VMI and the node for every action the controller takes, saying why.

Why it exists: the descheduler's background evictions are invisible (ref §5 pain 7); an operator running
`kubectl describe vmi db-0` or `kubectl get events --field-selector involvedObject.name=worker-3` should read what
the controller did to it and for which reason (the plan's reason string). core/v1 Events, one per action, with
`source.component` and `reportingComponent` = autonomic-controller. Best effort: a failed Event is logged and never
fails the action it describes.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from controller.clock import Clock

log = logging.getLogger("autonomic.controller.events")
COMPONENT = "autonomic-controller"
NODE_EVENT_NAMESPACE = "default"  # where kubelet and kube-controller-manager put Node events
MAX_MESSAGE = 1024  # the API server truncates longer notes


class EventRecorder:
    def __init__(self, api: client.ApiClient, clock: Clock, instance: str) -> None:
        self.core = client.CoreV1Api(api)
        self.clock, self.instance = clock, instance

    def vmi(self, vmi: dict[str, Any] | None, vm: str, reason: str, message: str, *, warning: bool = False) -> None:
        namespace, name = vm.split("/", 1)
        ref = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": name, "namespace": namespace}
        if vmi is not None:
            ref["uid"] = vmi["metadata"].get("uid", "")
        self._emit(namespace, ref, reason, message, warning)

    def node(self, node: dict[str, Any] | None, name: str, reason: str, message: str, *, warning: bool = False) -> None:
        ref = {"apiVersion": "v1", "kind": "Node", "name": name}
        if node is not None:
            ref["uid"] = node["metadata"].get("uid", "")
        self._emit(NODE_EVENT_NAMESPACE, ref, reason, message, warning)

    def _emit(self, namespace: str, ref: dict[str, str], reason: str, message: str, warning: bool) -> None:
        stamp = datetime.fromtimestamp(self.clock.now(), UTC)
        seconds = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": seconds,
            "lastTimestamp": seconds,
            "eventTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "action": reason,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(namespace, body, _preload_content=False)
        except Exception as exc:  # best effort: ApiException, connection errors
            log.warning("event not recorded", extra={"object": ref["name"], "reason": reason, "error": str(exc)})
