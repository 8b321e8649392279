"""Checks at the door: when an input cannot be trusted the plan does nothing and says exactly why."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from controller_builders import NOW, config, make_node, make_snapshot, make_vm, psi_config

from controller.plan import plan


def _nodes(**overrides):
    nodes = [make_node(f"node-{i}", 0.1) for i in range(1, 5)]
    for name, node in overrides.items():
        index = int(name.split("_")[1]) - 1
        nodes[index] = node
    return nodes


CASES = [
    pytest.param(
        make_snapshot(_nodes(), [], metrics_error="connection refused"),
        "metrics-unavailable",
        "metrics unavailable: connection refused",
        id="prometheus-down",
    ),
    pytest.param(
        make_snapshot(_nodes(), [], taken_at=NOW - 120),
        "snapshot-stale",
        "cluster snapshot 120s old > 60s",
        id="old-snapshot",
    ),
    pytest.param(
        make_snapshot([*_nodes(), make_node("node-1", 0.1)], []),
        "invalid-snapshot",
        "duplicate objects in snapshot: node-1",
        id="duplicate-node",
    ),
    pytest.param(
        make_snapshot([make_node("node-1", 0.1), make_node("node-2", 0.1, ready=False)], []),
        "too-few-nodes",
        "1 Ready node(s) match nodeSelector; need at least 2",
        id="one-ready-node",
    ),
    pytest.param(
        make_snapshot(_nodes(node_3=make_node("node-3", pressure=False)), []),
        "metrics-missing",
        "metrics missing for node-3 (1 of 4 nodes)",
        id="node-absent-from-metrics",
    ),
    pytest.param(
        make_snapshot(_nodes(node_2=make_node("node-2", None)), []),
        "metrics-missing",
        "metrics missing: node-2 has no score sample",
        id="score-missing",
    ),
    pytest.param(
        make_snapshot(_nodes(node_2=make_node("node-2", math.nan)), []),
        "metrics-invalid",
        "metrics invalid: node-2 score is nan",
        id="nan",
    ),
    pytest.param(
        make_snapshot(_nodes(node_4=make_node("node-4", math.inf)), []),
        "metrics-invalid",
        "metrics invalid: node-4 score is inf",
        id="infinite",
    ),
    pytest.param(
        make_snapshot(_nodes(node_4=make_node("node-4", 1.7)), []),
        "metrics-out-of-range",
        "metrics out of range: node-4 score 1.7 outside [0, 1]",
        id="above-one",
    ),
    pytest.param(
        make_snapshot(_nodes(node_1=make_node("node-1", 0.1, util_cpu=-0.2)), []),
        "metrics-out-of-range",
        "metrics out of range: node-1 cpu_utilization -0.2 outside [0, 1]",
        id="negative-utilisation",
    ),
    pytest.param(
        make_snapshot(_nodes(node_3=make_node("node-3", 0.1, age=95)), []),
        "metrics-stale",
        "metrics stale: node-3 last sample 95s old > 60s",
        id="stale-sample",
    ),
    pytest.param(
        make_snapshot(_nodes(node_3=make_node("node-3", 0.1, age=-30)), []),
        "metrics-invalid",
        "metrics invalid (clock skew?): node-3 sample 30s in the future",
        id="future-sample",
    ),
    pytest.param(
        make_snapshot(_nodes(), [make_vm("a", "node-1", usage=math.nan)]),
        "invalid-snapshot",
        "invalid cluster objects: vm default/a cpu_usage nan",
        id="vm-usage-nan",
    ),
    pytest.param(
        make_snapshot(_nodes(node_2=make_node("node-2", 0.1, cpu=0)), []),
        "invalid-snapshot",
        "invalid cluster objects: node node-2 cpu_allocatable 0",
        id="zero-allocatable",
    ),
]


@pytest.mark.parametrize(("snapshot", "code", "reason"), CASES)
def test_untrustworthy_input_skips_the_cycle_with_a_precise_reason(snapshot, code, reason):
    result = plan(snapshot, config(), NOW)
    assert (result.skip_code, result.skipped) == (code, reason)
    assert result.moves == () and result.taint_changes == ()


def test_many_offenders_are_summarised():
    nodes = [make_node(f"node-{i}", 0.1, age=100) for i in range(1, 7)]
    result = plan(make_snapshot(nodes, []), config(), NOW)
    assert result.skipped.startswith("metrics stale: node-1 last sample 100s old > 60s, node-2")
    assert result.skipped.endswith("and 3 more")


def test_nodes_outside_the_population_need_no_metrics():
    nodes = [
        *_nodes(),
        make_node("down", pressure=False, ready=False),
        make_node("other", pressure=False, labels={"kubevirt.io/schedulable": "false"}),
    ]
    result = plan(make_snapshot(nodes, []), config(), NOW)
    assert result.skip_code != "metrics-missing"
    excluded = {n.node: n.note for n in result.nodes if n.classification == "excluded"}
    assert excluded == {"down": "NotReady", "other": "does not match nodeSelector"}


def test_psi_relief_requires_the_psi_of_its_dimensions():
    nodes = [replace(n, pressure=replace(n.pressure, psi_cpu=0.1)) for n in _nodes()]
    nodes[1] = replace(nodes[1], pressure=replace(nodes[1].pressure, psi_cpu=None))
    result = plan(make_snapshot(nodes, []), psi_config(), NOW)
    assert result.skipped == "metrics missing: node-2 has no psi_cpu sample"


def test_valid_input_is_not_skipped_for_validation():
    result = plan(make_snapshot(_nodes(), []), config(), NOW)
    assert result.skip_code == "all-nodes-underutilized"  # a policy reason (equal scores), not an input problem
