"""Checks at the door: an untrusted node is left out of the cycle, an untrusted cluster input skips it, and the
plan says exactly why."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from controller_builders import NOW, config, make_node, make_snapshot, make_vm, psi_config

from controller.plan import plan
from controller.validate import INPUT_CODES


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
def test_untrustworthy_cluster_input_skips_the_cycle_with_a_precise_reason(snapshot, code, reason):
    result = plan(snapshot, config(), NOW)
    assert (result.skip_code, result.skipped) == (code, reason)
    assert result.moves == () and result.taint_changes == ()


NODE_CASES = [
    pytest.param(
        make_node("node-3", pressure=False),
        "metrics-missing",
        "metrics missing: absent from the query results",
        id="absent",
    ),
    pytest.param(make_node("node-3", None), "metrics-missing", "metrics missing: no score sample", id="score-missing"),
    pytest.param(make_node("node-3", math.nan), "metrics-invalid", "metrics invalid: score is nan", id="nan"),
    pytest.param(make_node("node-3", math.inf), "metrics-invalid", "metrics invalid: score is inf", id="infinite"),
    pytest.param(
        make_node("node-3", 1.7),
        "metrics-out-of-range",
        "metrics out of range: score 1.7 outside [0, 1]",
        id="above-one",
    ),
    pytest.param(
        make_node("node-3", 0.1, util_cpu=-0.2),
        "metrics-out-of-range",
        "metrics out of range: cpu_utilization -0.2 outside [0, 1]",
        id="negative-utilisation",
    ),
    pytest.param(
        make_node("node-3", 0.1, age=95), "metrics-stale", "metrics stale: last sample 95s old > 60s", id="stale"
    ),
    pytest.param(
        make_node("node-3", 0.1, age=-30),
        "metrics-invalid",
        "metrics invalid (clock skew?): sample 30s in the future",
        id="future-sample",
    ),
]


@pytest.mark.parametrize(("node", "code", "reason"), NODE_CASES)
def test_one_untrustworthy_node_is_left_out_and_the_cycle_goes_on(node, code, reason):
    result = plan(make_snapshot(_nodes(node_3=node), []), config(), NOW)
    assert result.skip_code not in INPUT_CODES
    untrusted = [n for n in result.nodes if n.classification == "untrusted"]
    assert [(n.node, n.code, n.note) for n in untrusted] == [("node-3", code, reason)]
    assert {n.node for n in result.nodes if n.classification != "untrusted"} == {"node-1", "node-2", "node-4"}


@pytest.mark.parametrize(
    ("ages", "fraction", "code", "reason"),
    [
        pytest.param((10, 95, 95, 10), 0.5, None, None, id="2-of-4-trusted-is-enough-at-0.5"),
        pytest.param(
            (10, 95, 95, 10),
            0.75,
            "metrics-stale",
            "2 of 4 nodes untrusted (need 3 trusted): node-2 (metrics stale: last sample 95s old > 60s); "
            "node-3 (metrics stale: last sample 95s old > 60s)",
            id="2-of-4-trusted-is-too-few-at-0.75",
        ),
        pytest.param(
            (10, 95, 95),
            0.0,
            "metrics-stale",
            "2 of 3 nodes untrusted (need 2 trusted): node-2 (metrics stale: last sample 95s old > 60s); "
            "node-3 (metrics stale: last sample 95s old > 60s)",
            id="never-fewer-than-2-trusted",
        ),
        pytest.param((10, 10, 95), 1.0, "metrics-stale", None, id="fraction-1-needs-every-node"),
    ],
)
def test_too_few_trusted_nodes_skip_the_cycle_naming_them(ages, fraction, code, reason):
    nodes = [make_node(f"node-{i}", 0.1, age=age) for i, age in enumerate(ages, 1)]
    result = plan(make_snapshot(nodes, []), config(metrics={"minTrustedFraction": fraction}), NOW)
    if code is None:
        assert result.skip_code not in INPUT_CODES
    else:
        assert result.skip_code == code and (reason is None or result.skipped == reason)
        assert result.moves == () and result.taint_changes == ()
        assert {n.node for n in result.nodes} == {f"node-{i}" for i, a in enumerate(ages, 1) if a > 60}


def test_the_skip_code_is_the_commonest_node_rule():
    nodes = [
        make_node("node-1", math.nan),
        make_node("node-2", 0.1, age=95),
        make_node("node-3", 0.1, age=95),
        make_node("node-4", 0.1),
    ]
    assert plan(make_snapshot(nodes, []), config(), NOW).skip_code == "metrics-stale"


def test_many_offenders_are_summarised():
    nodes = [make_node(f"node-{i}", 0.1, age=100) for i in range(1, 7)]
    result = plan(make_snapshot(nodes, []), config(), NOW)
    assert result.skip_code == "metrics-stale"
    assert result.skipped.startswith(
        "6 of 6 nodes untrusted (need 3 trusted): node-1 (metrics stale: last sample 100s old > 60s); node-2"
    )
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
    untrusted = {n.node: n.note for n in result.nodes if n.classification == "untrusted"}
    assert untrusted == {"node-2": "metrics missing: no psi_cpu sample"}


def test_valid_input_is_not_skipped_for_validation():
    result = plan(make_snapshot(_nodes(), []), config(), NOW)
    assert result.skip_code == "all-nodes-underutilized"  # a policy reason (equal scores), not an input problem
