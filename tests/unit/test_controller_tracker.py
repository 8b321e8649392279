"""Following what the controller started (controller/tracker.py) and editing node taints (actuators/taints.py):
requests count as in flight until the cluster shows them, then until their VMIM ends; unconfirmed ones expire."""

from __future__ import annotations

from typing import Any

import pytest

from controller.actuators.taints import edit_taints
from controller.model import TaintChange
from controller.tracker import MigrationTracker, Outcome, Requested

T = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Watched:
    """The part of a ResourceWatcher the tracker reads."""

    def __init__(self) -> None:
        self.objects: list[dict[str, Any]] = []

    def items(self) -> list[dict[str, Any]]:
        return list(self.objects)


class Cache:
    """Stands in for ClusterSource: VMIs by key and VMIMs."""

    def __init__(self) -> None:
        self.vmis: dict[str, dict[str, Any]] = {}
        self.migrations = Watched()

    def vmi(self, vm: str) -> dict[str, Any] | None:
        return self.vmis.get(vm)

    def migrations_of(self, vm: str) -> list[dict[str, Any]]:
        _, name = vm.split("/")
        return [m for m in self.migrations.objects if m["spec"]["vmiName"] == name]


def vmim(name: str, vm: str, phase: str, created: str = "2026-01-01T00:00:05Z", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "vms", "creationTimestamp": created, "labels": labels},
        "spec": {"vmiName": vm},
        "status": {"phase": phase, "migrationState": {"sourceNode": "n0", "targetNode": "n1"}},
    }


def test_an_eviction_is_in_flight_until_its_evacuation_ends() -> None:
    cache, tracker = Cache(), MigrationTracker()
    tracker.record(Requested("vms/a", "n0", None, T + 4))
    cache.migrations.objects = [vmim("older", "a", "Succeeded", created="2026-01-01T00:00:00Z")]  # an earlier one
    assert tracker.update(cache, T + 5) == [] and [m.vm for m in tracker.pending()] == ["vms/a"]
    cache.vmis["vms/a"] = {"status": {"evacuationNodeName": "n0"}}  # the webhook's mark: confirmed
    assert tracker.update(cache, T + 6) == []
    cache.migrations.objects.append(vmim("kubevirt-evacuation-x", "a", "Running"))
    assert tracker.update(cache, T + 7) == []
    cache.migrations.objects[-1] = vmim("kubevirt-evacuation-x", "a", "Succeeded")
    cache.vmis["vms/a"] = {"status": {}}
    assert tracker.update(cache, T + 8) == [Outcome("vms/a", "n0", "succeeded", "kubevirt-evacuation-x", "n1")]
    assert tracker.pending() == [] and len(tracker) == 0


@pytest.mark.parametrize(
    ("steps", "outcome"),
    [
        ([("Failed", True)], "failed"),
        ([("Running", True), (None, False)], "aborted"),  # the VMIM was deleted before it finished
    ],
)
def test_a_created_migration_is_followed_by_name(steps: list[tuple[str | None, bool]], outcome: str) -> None:
    cache, tracker = Cache(), MigrationTracker()
    tracker.record(Requested("vms/a", "n0", "n1", T, "a-autonomic-1"))
    cache.migrations.objects = [vmim("a-autonomic-0", "a", "Succeeded")]  # not ours: ignored
    assert tracker.update(cache, T + 1) == []
    done: list[Outcome] = []
    for phase, present in steps:
        others = [m for m in cache.migrations.objects if m["metadata"]["name"] != "a-autonomic-1"]
        cache.migrations.objects = [*others, vmim("a-autonomic-1", "a", phase or "")] if present else others
        done = tracker.update(cache, T + 2)
    assert [o.outcome for o in done] == [outcome] and len(tracker) == 0


def test_a_request_the_cluster_never_shows_expires() -> None:
    cache, tracker = Cache(), MigrationTracker(expiry_s=600)
    tracker.record(Requested("vms/a", "n0", None, T))
    assert tracker.update(cache, T + 599) == []
    (done,) = tracker.update(cache, T + 601)
    assert done.outcome == "unconfirmed" and len(tracker) == 0


def test_after_a_restart_our_unfinished_migrations_are_adopted() -> None:
    cache, tracker = Cache(), MigrationTracker()
    label = {"app.kubernetes.io/managed-by": "autonomic-controller"}
    cache.migrations.objects = [
        vmim("a-autonomic-1", "a", "Running", **label),
        vmim("b-autonomic-1", "b", "Succeeded", **label),
        vmim("kubevirt-evacuation-1", "c", "Running"),
    ]
    assert tracker.adopt(cache, "app.kubernetes.io/managed-by", "autonomic-controller") == 1
    assert [(m.vm, m.source, m.target) for m in tracker.pending()] == [("vms/a", "n0", "n1")]


@pytest.mark.parametrize(
    ("taints", "change", "expected"),
    [
        ([], TaintChange("n", "add", "k"), [{"key": "k", "value": "true", "effect": "PreferNoSchedule"}]),
        (
            [{"key": "other", "effect": "NoSchedule"}, {"key": "k", "value": "true", "effect": "PreferNoSchedule"}],
            TaintChange("n", "remove", "k"),
            [{"key": "other", "effect": "NoSchedule"}],
        ),
        (  # same key with another effect belongs to someone else
            [{"key": "k", "value": "x", "effect": "NoSchedule"}],
            TaintChange("n", "remove", "k"),
            [{"key": "k", "value": "x", "effect": "NoSchedule"}],
        ),
        (
            [{"key": "k", "value": "false", "effect": "PreferNoSchedule"}],
            TaintChange("n", "add", "k"),
            [{"key": "k", "value": "true", "effect": "PreferNoSchedule"}],
        ),
    ],
)
def test_edit_taints(taints: list[dict[str, Any]], change: TaintChange, expected: list[dict[str, Any]]) -> None:
    assert edit_taints(taints, change) == expected
