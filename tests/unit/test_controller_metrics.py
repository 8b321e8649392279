"""The untrusted-node series: set from each cycle's plan, gone when the node is trusted again."""

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
