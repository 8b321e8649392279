"""Slow API calls on a loaded cluster (issue 13, item 4): a slow eviction must not leave its evacuation unconfirmed,
and a cycle's taint changes must not queue one behind the other.

At 100 nodes x 3,000 VMs on the benchmark's twin, an eviction call took over a second of real time, tens of model
seconds at 30x. KubeVirt had created (and stamped) the evacuation's VMIM while the call was still answering; the
loop recorded the request at the answer, so the tracker, which only counts VMIMs created since the request, never
saw it, and each such eviction stayed "in flight" for 600 model s, filling the budget, then ended `unconfirmed`.
The request's time is now when it was sent. The table: how long the call takes, in model seconds. The same cycles
took minutes of model time because their dozens of taint changes ran one by one: nodes now change in parallel (at
most 20 at once, as the soft-tainter), each node's changes in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from controller.actuators import STARTED, ActionResult
from controller.config import parse_config
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.model import Move, Plan, TaintChange
from controller.sources.cluster import ClusterSource
from controller.sources.prometheus import PrometheusSource

T = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class ModelClock:
    def __init__(self) -> None:
        self.t = T

    def now(self) -> float:
        return self.t


class Cluster:
    """What the tracker reads of ClusterSource: VMIs by key, VMIMs by VM."""

    def __init__(self) -> None:
        self.vmis: dict[str, dict[str, Any]] = {}
        self.vmims: list[dict[str, Any]] = []

    def vmi(self, vm: str) -> dict[str, Any] | None:
        return self.vmis.get(vm)

    def migrations_of(self, vm: str) -> list[dict[str, Any]]:
        return [m for m in self.vmims if m["spec"]["vmiName"] == vm.split("/")[1]]


class SlowEvictions:
    """KubeVirt answers the eviction `call_s` model seconds after it created the evacuation's VMIM (stamped with
    second precision), which has already succeeded, its mark cleared, when the next cycle looks."""

    def __init__(self, clock: ModelClock, cluster: Cluster, call_s: float) -> None:
        self.clock, self.cluster, self.call_s = clock, cluster, call_s

    async def migrate(self, move: Move) -> ActionResult:
        created = datetime.fromtimestamp(int(self.clock.now()) + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.cluster.vmims.append(
            {
                "metadata": {"name": "kubevirt-evacuation-x", "creationTimestamp": created},
                "spec": {"vmiName": move.vm.split("/")[1]},
                "status": {"phase": "Succeeded", "migrationState": {"targetNode": "n1"}},
            }
        )
        self.clock.t += self.call_s
        return ActionResult("migrate", move.vm, STARTED, "Eviction triggered evacuation", None, move.reason)

    async def set_taint(self, change: TaintChange, why: str) -> ActionResult:
        raise AssertionError("no taints here")


@pytest.mark.parametrize("call_s", [0.0, 1.0, 30.0, 45.0, 120.0])
def test_an_evacuation_stamped_before_the_eviction_answered_is_followed(call_s: float) -> None:
    clock, cluster = ModelClock(), Cluster()
    controller = Controller(
        parse_config({"policy": "descheduler-compatible"}),
        cast(ClusterSource, cluster),
        cast(PrometheusSource, None),
        SlowEvictions(clock, cluster, call_s),
        ControllerMetrics(),
        clock,
    )
    move = Move("vms/a", "n0", None, "LowNodeUtilization: n0 over")
    result = asyncio.run(controller._migrate(move, "descheduler-compatible", dry_run=False))
    assert result.result == STARTED and [m.vm for m in controller.tracker.pending()] == ["vms/a"]
    clock.t += 60  # the next cycle
    outcomes = controller.tracker.update(cast(ClusterSource, cluster), clock.now())
    assert [(o.vm, o.outcome, o.migration) for o in outcomes] == [("vms/a", "succeeded", "kubevirt-evacuation-x")]
    assert controller.tracker.pending() == []  # no longer counted in flight: the budget has its room back


class CountingTaints:
    """Applies taint changes, yielding once inside each, and counts how many run at once, overall and per node."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.most, self.most_per_node = 0, 0
        self.applied: list[TaintChange] = []

    async def migrate(self, move: Move) -> ActionResult:
        raise AssertionError("no moves here")

    async def set_taint(self, change: TaintChange, why: str) -> ActionResult:
        self.running[change.node] = self.running.get(change.node, 0) + 1
        self.most = max(self.most, sum(self.running.values()))
        self.most_per_node = max(self.most_per_node, self.running[change.node])
        await asyncio.sleep(0)  # a yield, as an API call in a worker thread is: the others may start meanwhile
        self.running[change.node] -= 1
        self.applied.append(change)
        return ActionResult("taint", change.node, "applied", f"{change.action} {change.key}", None, why)


OVER, APPROPRIATE = "nodeutilization.descheduler.openshift.io/overutilized", "appropriate"


@pytest.mark.parametrize(
    ("nodes", "most"),
    [
        (["n0"], 1),  # one node: its changes one after the other
        (["n0", "n0", "n1"], 2),
        ([f"n{i}" for i in range(5)] * 2, 5),
        ([f"n{i}" for i in range(30)], 20),  # at most TAINT_PARALLELISM nodes at once
    ],
)
def test_taint_changes_run_in_parallel_across_nodes_in_order_on_each(nodes: list[str], most: int) -> None:
    changes = tuple(
        TaintChange(node, "add", OVER if nodes[:i].count(node) == 0 else APPROPRIATE) for i, node in enumerate(nodes)
    )
    actuator = CountingTaints()
    controller = Controller(
        parse_config({"policy": "descheduler-compatible"}),
        cast(ClusterSource, Cluster()),
        cast(PrometheusSource, None),
        actuator,
        ControllerMetrics(),
        ModelClock(),
    )
    results = asyncio.run(controller._set_taints(Plan("descheduler-compatible", False, taint_changes=changes)))
    assert [r.subject for r in results] == nodes  # in plan order
    assert actuator.most == most and actuator.most_per_node == 1
    for node in set(nodes):
        assert [c for c in actuator.applied if c.node == node] == [c for c in changes if c.node == node]


def test_no_taint_change_once_leadership_is_lost() -> None:
    controller = Controller(
        parse_config({"policy": "descheduler-compatible"}),
        cast(ClusterSource, Cluster()),
        cast(PrometheusSource, None),
        CountingTaints(),
        ControllerMetrics(),
        ModelClock(),
        is_leader=lambda: False,
    )
    plan = Plan("descheduler-compatible", False, taint_changes=(TaintChange("n0", "add", OVER),))
    assert asyncio.run(controller._set_taints(plan)) == []
