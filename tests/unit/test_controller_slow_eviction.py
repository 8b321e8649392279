"""A slow eviction call must not leave its evacuation unconfirmed (issue 13, item 4).

At 100 nodes x 3,000 VMs on the benchmark's twin, an eviction call took over a second of real time, tens of model
seconds at 30x. KubeVirt had created (and stamped) the evacuation's VMIM while the call was still answering; the
loop recorded the request at the answer, so the tracker, which only counts VMIMs created since the request, never
saw it, and each such eviction stayed "in flight" for 600 model s, filling the budget, then ended `unconfirmed`.
The request's time is now when it was sent. The table: how long the call takes, in model seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from controller.actuators import STARTED, ActionResult
from controller.config import parse_config
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.model import Move, TaintChange
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
