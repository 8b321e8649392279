"""The controller's cluster cache against the twin: it resumes a dropped watch from its resourceVersion without
listing again, and lists again when that version has left the server's window (410 Gone)."""

from __future__ import annotations

import logging

import pytest
from cluster_helpers import admin, api_client, wait_for

from controller.sources.cluster import ClusterSource
from sim.cluster.kv_objects import CPU_LOAD_FACTOR_ANNOTATION
from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin


def factor(source: ClusterSource) -> str | None:
    vmi = source.vmi("vms/vm-0") or {}
    return (vmi.get("metadata", {}).get("annotations") or {}).get(CPU_LOAD_FACTOR_ANNOTATION)


def test_resume_after_a_dropped_watch_and_relist_after_410(caplog: pytest.LogCaptureFixture) -> None:
    scenario = parse_scenario(
        {"namespaces": ["vms"], "nodes": [{"name": "n0"}], "vms": [{"name": "vm-0", "namespace": "vms", "node": "n0"}]}
    )
    caplog.set_level(logging.INFO, "autonomic.controller.watch")
    with ClusterTwin(scenario, event_window=3) as twin, api_client(twin) as api:
        source = ClusterSource(api, watch_timeout_s=30)
        source.start()
        try:
            wait_for(lambda: source.synced, what="first list")
            assert source.vmis.relists == 1
            admin(twin, "POST", "watches/drop")
            admin(twin, "POST", "load/hotspot", {"vms": ["vms/vm-0"], "cpuFactor": 2})
            wait_for(lambda: factor(source) == "2", what="the change after the drop")
            assert source.vmis.relists == 1  # resumed from its resourceVersion
            # the re-watch is held back by API latency while more changes than the window holds happen
            admin(twin, "PUT", "faults/api", {"latencyMs": 1000})
            admin(twin, "POST", "watches/drop")
            for f in (3, 4, 5, 6, 7):
                admin(twin, "POST", "load/hotspot", {"vms": ["vms/vm-0"], "cpuFactor": f})
            admin(twin, "POST", "faults/reset")
            wait_for(lambda: source.vmis.relists >= 2, timeout=15, what="a relist after 410")
            wait_for(lambda: factor(source) == "7", what="the cache caught up")
            expired = [r for r in caplog.records if r.getMessage() == "watch expired, relisting"]
            assert "virtualmachineinstances" in {getattr(r, "kind", None) for r in expired}  # (the window is global)
        finally:
            source.stop()
