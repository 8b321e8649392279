"""The untrusted-node series: set from each cycle's plan, gone when the node is trusted again; the descheduler's
eviction counter, whose outcomes start at 0 so that the recording rules' increase() counts the first one."""

from __future__ import annotations

from controller.metrics import ControllerMetrics
from controller.model import NodeExplanation, Plan


def untrusted(node: str, code: str) -> NodeExplanation:
    return NodeExplanation(node, "untrusted", None, None, None, f"{code}: ...", code)


def test_untrusted_nodes_are_counted_by_reason_each_cycle():
    metrics = ControllerMetrics()
    get = metrics.registry.get_sample_value
    metrics.observe_plan(Plan("psi-relief", False, nodes=(untrusted("w3", "metrics-stale"),)), 0)
    metrics.observe_plan(Plan("psi-relief", False, nodes=(untrusted("w3", "metrics-stale"),)), 0)
    assert get("autonomic_controller_untrusted_nodes", {"reason": "metrics-stale"}) == 1
    assert get("autonomic_controller_untrusted_nodes", {"reason": "metrics-missing"}) == 0
    assert get("autonomic_controller_untrusted_node", {"node": "w3", "reason": "metrics-stale"}) == 1
    assert get("autonomic_controller_untrusted_node_cycles_total", {"reason": "metrics-stale"}) == 2
    metrics.observe_plan(Plan("psi-relief", False, nodes=(NodeExplanation("w3", "under", 0.1, 0.15, 0.3),)), 0)
    assert get("autonomic_controller_untrusted_nodes", {"reason": "metrics-stale"}) == 0
    assert get("autonomic_controller_untrusted_node", {"node": "w3", "reason": "metrics-stale"}) is None


def test_a_started_eviction_creates_its_outcome_series_at_zero():
    metrics = ControllerMetrics()
    labels = {"strategy": "LowNodeUtilization", "profile": "KubeVirtRelieveAndMigrate", "namespace": "vms"}

    def evicted(result: str, node: str = "w0") -> float | None:
        return metrics.registry.get_sample_value(
            "descheduler_pods_evicted_total", {**labels, "result": result, "node": node}
        )

    metrics.descheduler_eviction("background", "vms/a", "w0")
    assert (evicted("background"), evicted("success"), evicted("error")) == (1, 0, 0)
    metrics.descheduler_eviction("success", "vms/a", "w0")
    metrics.descheduler_eviction("background", "vms/b", "w0")  # touching them again does not reset them
    assert (evicted("background"), evicted("success"), evicted("error")) == (2, 1, 0)
    assert evicted("success", "w1") is None  # only where something was started
