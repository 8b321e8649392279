"""The cluster twin's small kube-scheduler: filters and scores, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from sim.cluster.scheduler import NodeCandidate, PodRequest, schedule, tolerates

GIB = 2**30


def node(
    name: str,
    *,
    used_cpu: int = 0,
    used_mem: int = 0,
    labels: dict[str, str] | None = None,
    taints: tuple[dict[str, Any], ...] = (),
    ready: bool = True,
    unschedulable: bool = False,
) -> NodeCandidate:
    return NodeCandidate(name, 8000, 32 * GIB, used_cpu, used_mem, labels or {}, taints, ready, unschedulable)


POD = PodRequest(cpu_millis=1000, memory_bytes=4 * GIB)
SOFT = {"key": "nodeutilization.descheduler.openshift.io/overutilized", "value": "true", "effect": "PreferNoSchedule"}
HARD = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("pod", "nodes", "exclude", "expected"),
    [
        (POD, [node("a", used_mem=10 * GIB), node("b", used_mem=20 * GIB)], (), "a"),  # least allocated
        (POD, [node("a"), node("b")], ("a",), "b"),  # migration source excluded
        (POD, [node("a", used_mem=30 * GIB), node("b", used_mem=20 * GIB)], (), "b"),  # memory does not fit on a
        (POD, [node("a", used_cpu=7500), node("b", used_cpu=6000)], (), "b"),  # cpu does not fit on a
        (POD, [node("a", ready=False), node("b", used_mem=20 * GIB)], (), "b"),
        (POD, [node("a", unschedulable=True), node("b", used_mem=20 * GIB)], (), "b"),
        (POD, [node("a", taints=(HARD,)), node("b", used_mem=20 * GIB)], (), "b"),  # NoSchedule excludes
        (
            PodRequest(1000, GIB, tolerations=({"key": "dedicated", "operator": "Equal", "value": "gpu"},)),
            [node("a", taints=(HARD,)), node("b", used_mem=20 * GIB)],
            (),
            "a",
        ),  # tolerated
        (POD, [node("a", taints=(SOFT,)), node("b", used_mem=25 * GIB)], (), "b"),  # PreferNoSchedule avoided
        (
            POD,
            [
                node("a", taints=(SOFT, {**SOFT, "key": "nodeutilization.descheduler.openshift.io/appropriate"})),
                node("b", taints=(SOFT,), used_mem=20 * GIB),
            ],
            (),
            "b",
        ),  # fewer soft taints wins
        (POD, [node("a", taints=(SOFT,))], (), "a"),  # soft taints only prefer
        (
            PodRequest(1000, GIB, node_selector={"disk": "ssd"}),
            [node("a"), node("b", labels={"disk": "ssd"}, used_mem=20 * GIB)],
            (),
            "b",
        ),
        (
            PodRequest(
                1000,
                GIB,
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]},
                                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]},
                            ]
                        }
                    }
                },
            ),
            [
                node("a", labels={"zone": "z1"}),
                node("b", labels={"zone": "z2"}, used_mem=30 * GIB),
                node("c", used_mem=9 * GIB),
            ],
            (),
            "c",
        ),
        (POD, [node("a", used_mem=31 * GIB)], (), None),
    ],
)
def test_schedule(pod: PodRequest, nodes: list[NodeCandidate], exclude: tuple[str, ...], expected: str | None) -> None:
    assert schedule(pod, nodes, exclude).node == expected


def test_failure_message_counts_reasons() -> None:
    d = schedule(POD, [node("a", used_mem=31 * GIB), node("b", ready=False), node("c", taints=(HARD,))])
    assert d.node is None
    assert d.message() == (
        "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint, 1 node(s) were not ready."
    )


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        ({"operator": "Exists"}, HARD, True),
        ({"key": "dedicated", "operator": "Exists"}, HARD, True),
        ({"key": "dedicated", "value": "gpu", "effect": "NoExecute"}, HARD, False),
        ({"key": "dedicated", "value": "cpu"}, HARD, False),
        (
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            True,
        ),
    ],
)
def test_tolerates(toleration: dict, taint: dict, expected: bool) -> None:
    assert tolerates([toleration], taint) is expected
