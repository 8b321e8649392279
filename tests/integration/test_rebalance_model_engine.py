"""`autonomic bench rebalance --engine model`: the same twin models and controller code in discrete model time.

The engine's own pieces against the twin's store: the actuator starts evictions and directed migrations through the
twin's eviction webhook and admission (and is refused as the API would refuse), the cluster source reads the store as
synced caches; then whole runs: the report is complete, relief is real (the hotspot is there without a controller,
both controllers reduce it), psi-relief moves no more than the baseline, a day-long steady figure appears only for
runs longer than an hour, and a configuration whose queries the engine cannot compute is refused with the query
named. Figures are checked for sense, never timings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from controller.actuators import IN_PROGRESS, REFUSED, STARTED
from controller.config import parse_config
from controller.model import Move
from controller.sources.cluster import ClusterSource
from loadtests.rebalance.cli import main as bench
from loadtests.rebalance.model_engine import ModelPressureSource, ModelTwin
from loadtests.rebalance.model_io import StoreActuator, store_caches
from loadtests.rebalance.model_queries import QueryModel
from loadtests.rebalance.run import default_scenario
from sim.cluster.resources import VMIMS, VMIS


@pytest.fixture
def twin() -> ModelTwin:
    return ModelTwin(default_scenario())


def actuator(twin: ModelTwin, mode: str) -> StoreActuator:
    cluster = ClusterSource(None, caches=store_caches(twin.store))
    assert cluster.synced and cluster.launcher_pod("vms/web-0") is not None
    return StoreActuator(twin.store, twin.kubevirt.eviction, cluster, mode)


def test_eviction_marks_the_vmi_and_a_second_one_is_in_progress(twin: ModelTwin) -> None:
    act = actuator(twin, "eviction")
    move = Move("vms/web-0", "worker-0", None, "test: relieve worker-0")
    first = asyncio.run(act.migrate(move))
    assert first.result == STARTED, first
    assert twin.store.peek_one(VMIS, "vms", "web-0")["status"]["evacuationNodeName"] == "worker-0"
    assert asyncio.run(act.migrate(move)).result == IN_PROGRESS
    assert act.reasons == {"vms/web-0": ["test: relieve worker-0"]}
    twin.advance_to(600.0)  # KubeVirt evacuates it: a migration that ends off worker-0
    vmi = twin.store.peek_one(VMIS, "vms", "web-0")
    assert vmi["status"]["nodeName"] != "worker-0" and not vmi["status"].get("evacuationNodeName")


def test_directed_migration_names_the_target_and_is_refused_for_a_missing_vmi(twin: ModelTwin) -> None:
    act = actuator(twin, "migration")
    started = asyncio.run(act.migrate(Move("vms/web-1", "worker-0", "worker-3", "test: to worker-3")))
    assert started.result == STARTED and started.migration is not None
    vmim = twin.store.peek_one(VMIMS, "vms", started.migration)
    assert vmim["spec"]["addedNodeSelector"] == {"kubernetes.io/hostname": "worker-3"}
    twin.advance_to(600.0)
    assert twin.store.peek_one(VMIS, "vms", "web-1")["status"]["nodeName"] == "worker-3"
    missing = asyncio.run(act.migrate(Move("vms/nope", "worker-0", "worker-3", "test")))
    assert missing.result == REFUSED, missing


def test_queries_the_engine_cannot_compute_are_refused(twin: ModelTwin) -> None:
    config = parse_config({"policy": "descheduler-compatible", "metrics": {"query": "max by (instance) (x)"}})
    with pytest.raises(ValueError, match="score: 'max by"):
        ModelPressureSource(config, twin, QueryModel(60.0))


def test_bench_rebalance_model_engine_relieves_the_hotspot(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert bench(["--engine", "model", "--duration", "900", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())["policies"]
    runs = json.loads((out / "runs.json").read_text())
    assert runs["settings"]["engine"] == "model"
    noop, baseline, relief = (results[p] for p in ("no-op", "descheduler-compatible", "psi-relief"))
    assert noop["node_minutes_over"] > 0 and noop["migrations"] == 0
    for name, arm in (("descheduler-compatible", baseline), ("psi-relief", relief)):
        assert arm["node_minutes_over"] < noop["node_minutes_over"], name
        assert arm["migrations"] >= 1 and arm["failed_migrations"] == 0, name
        assert runs["policies"][name]["engine"] == "model"
        assert all(m["why"] for m in runs["policies"][name]["moves"] if m["phase"] == "Succeeded"), name
        assert runs["policies"][name]["cycles"], name
    assert relief["migrations"] <= baseline["migrations"]
    assert runs["policies"]["psi-relief"]["evictions_per_vm_day"] is None  # no steady part in 15 minutes
    report = (out / "report.md").read_text()
    assert "| moves within the VM's cooldown |" in report


def test_a_run_past_the_first_hour_reports_evictions_per_vm_per_day(tmp_path: Path) -> None:
    out = tmp_path / "day"
    args = ["--engine", "model", "--duration", "7200", "--policies", "descheduler-compatible", "--out", str(out)]
    assert bench(args) == 0
    arm = json.loads((out / "runs.json").read_text())["policies"]["descheduler-compatible"]
    steady = [m for m in arm["moves"] if (m["started_min"] if m["started_min"] is not None else -1) >= 60]
    expected = len(steady) / 10 / (1 / 24)  # 10 VMs, one steady hour
    assert arm["evictions_per_vm_day"] == pytest.approx(expected)
    assert arm["cooldown_violations"] == 0  # the migration-aware profile never moves a VM inside its cooldown
