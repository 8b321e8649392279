"""Which Pending migrations may start: priority order, concurrency limits, evacuation backoff."""

from __future__ import annotations

from typing import Any

import pytest

from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.migration_queue import backoff_until, limits_allow, pending_in_order

CFG = KubeVirtConfig(parallel_migrations_per_cluster=3, parallel_outbound_migrations_per_node=2)


def vmim(
    name: str,
    *,
    phase: str = "Pending",
    priority: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    rv: int = 1,
    evacuation: bool = True,
    vmi: str = "v",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": name,
        "creationTimestamp": created,
        "resourceVersion": str(rv),
    }
    if evacuation:
        meta["annotations"] = {"kubevirt.io/evacuationMigration": "n0"}
    spec: dict[str, Any] = {"vmiName": vmi}
    if priority:
        spec["priority"] = priority
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def test_pending_order_is_priority_then_age() -> None:
    items = [
        vmim("old-maint", priority="system-maintenance", created="2026-01-01T00:00:00Z"),
        vmim("user", created="2026-01-01T00:00:05Z"),
        vmim("crit", priority="system-critical", created="2026-01-01T00:00:09Z"),
        vmim("done", phase="Succeeded"),
        vmim("older-user", created="2026-01-01T00:00:01Z"),
    ]
    assert [m["metadata"]["name"] for m in pending_in_order(items)] == ["crit", "older-user", "user", "old-maint"]


@pytest.mark.parametrize(
    ("running", "source", "allowed"),
    [
        ([], "a", True),
        (["a"], "a", True),
        (["a", "a"], "a", False),
        (["a", "a"], "b", True),
        (["a", "b", "c"], "d", False),
    ],
)
def test_limits(running: list[str], source: str, allowed: bool) -> None:
    assert limits_allow(CFG, running, source) is allowed


@pytest.mark.parametrize(
    ("history", "failed_at", "expected"),
    [
        ([], {}, None),  # first evacuation: no backoff
        ([vmim("f1", phase="Failed", rv=5)], {"f1": 100.0}, 120.0),  # 20 s after the failure
        ([vmim("f2", phase="Failed", rv=9), vmim("f1", phase="Failed", rv=5)], {"f1": 100.0, "f2": 150.0}, 190.0),
        (
            [vmim("f2", phase="Failed", rv=9), vmim("ok", phase="Succeeded", rv=7), vmim("f1", phase="Failed", rv=5)],
            {"f1": 100.0, "f2": 150.0},
            170.0,
        ),  # a success resets the doubling
        ([vmim("user-failed", phase="Failed", evacuation=False)], {"user-failed": 100.0}, None),  # only evacuations
    ],
)
def test_evacuation_backoff(history: list[dict[str, Any]], failed_at: dict[str, float], expected: float | None) -> None:
    new = vmim("new", rv=20)
    assert backoff_until(new, [*history, new], failed_at, 20.0) == expected
    assert backoff_until(vmim("direct", evacuation=False), history, failed_at, 20.0) is None
