"""The controller against the cluster twin and its real Prometheus (1 s scrapes, 3 s rate windows), one stack for
the module, tests in order: dry-run writes nothing; a scrape gap leaves its node out of the cycle (or skips it when
every node is required) and frozen samples on every node skip it, writing nothing; a
hotspot is relieved by psi-relief across a controller restart mid-migration, with no duplicate migration; with
Prometheus down the controller skips every cycle and says why. worker-0 runs 12 busy vCPUs on 8 cores (CPU PSI
about 0.45); the migration link is slow (64 MiB/s) so that a migration lasts seconds."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import admin, api_client, wait_for
from controller_helpers import (
    BackgroundController,
    ConcurrencyWatch,
    ScoreExporter,
    controller_config,
    resource_version,
    twin_options,
    vmims,
)
from kubernetes import client

from controller.actuators.kubevirt import MANAGED_BY_LABEL
from sim.cluster.prometheus import DEFAULT_BINARY, TwinTelemetry, start_telemetry
from sim.cluster.scenario import parse_scenario
from sim.cluster.state_view import TelemetryOptions
from sim.cluster.twin import ClusterTwin

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.path.exists(DEFAULT_BINARY),
    reason="Prometheus is not installed (make prometheus)",
)
HOT = ("hot-0", "hot-1", "hot-2")
SCENARIO = {
    "namespaces": ["vms"],
    "kubevirt": {"nodeLinkBandwidth": "64Mi"},
    "nodes": [{"name": f"worker-{i}"} for i in range(4)],
    "vms": [
        *({"name": n, "namespace": "vms", "cpu": 4, "memory": "4Gi", "node": "worker-0", "cpuLoad": 0.95} for n in HOT),
        *(
            {"name": f"cold-{i}", "namespace": "vms", "cpu": 2, "memory": "2Gi", "node": f"worker-{i}", "cpuLoad": 0.1}
            for i in (1, 2, 3)
        ),
    ],
}
OVERUTILIZED = "nodeutilization.descheduler.openshift.io/overutilized"
# scores served beside the twin's own series: frozen ones (old timestamps) and fresh ones that never change
FROZEN_SCORES = {"worker-0": 0.9, "worker-1": 0.0, "worker-2": 0.0, "worker-3": 0.0}
FRESH_SCORES = {"worker-0": 0.9, "worker-1": 0.9, "worker-2": 0.0, "worker-3": 0.0}
BY_NODE = '"instance", "$1", "node", "(.+)"'


@dataclasses.dataclass
class Stack:
    twin: ClusterTwin
    telemetry: TwinTelemetry
    scores: ScoreExporter

    @property
    def prometheus_url(self) -> str:
        assert self.telemetry.prometheus_url is not None
        return self.telemetry.prometheus_url

    def query(self, promql: str) -> dict[str, float]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in body["data"]["result"]}

    def cpu_psi(self) -> dict[str, float]:
        return self.query("avg by (instance) (rate(node_pressure_cpu_waiting_seconds_total[3s]))")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    scenario = parse_scenario(SCENARIO)
    scores = ScoreExporter(FRESH_SCORES, FROZEN_SCORES, frozen_age_s=30).start()
    options = TelemetryOptions(
        scrape_interval_s=1.0,
        rate_window="3s",
        smoothing_window="10s",
        cooldown_window="30s",
        rule_interval="1s",
        tick_s=0.1,
        load=scenario.load,
        extra_scrape_targets=(("scores", f"{scores.address}/metrics"),),
    )
    with ClusterTwin(scenario, time_scale=20) as twin:
        telemetry = twin.run(start_telemetry(twin.view, options))
        try:
            s = Stack(twin, telemetry, scores)
            wait_for(lambda: s.cpu_psi().get("worker-0", 0) > 0.3 and len(s.cpu_psi()) == 4, timeout=60, what="PSI")
            yield s
        finally:
            twin.run(telemetry.stop())
            scores.stop()


def psi_relief(**doc: Any) -> Any:
    return controller_config(policy="psi-relief", actuator="migration", psiRelief={"dimensions": ["cpu"]}, **doc)


def test_dry_run_records_every_action_and_writes_nothing(stack: Stack) -> None:
    before, migrations = resource_version(stack.twin), len(vmims(stack.twin))
    options = twin_options(stack.twin, psi_relief(dryRun=True), stack.prometheus_url)
    with BackgroundController(options) as ctl:
        assert ctl.running is not None and ctl.running.recorder is not None and ctl.running.elector is None
        recorder = ctl.running.recorder
        wait_for(lambda: len(recorder.records) >= 3, timeout=30, what="dry-run actions recorded")
        wait_for(lambda: ctl.sample("autonomic_controller_cycles_total", outcome="acted") >= 3, what="3 cycles")
    results = [r.result for r in recorder.records]
    moves = [r for r in results if r.action == "migrate"]
    hot = {f"vms/{n}" for n in HOT}
    # a cold VM moves only as a chain's first step, making room for a hot one (when no single move is admissible)
    room = [r for r in moves if r.subject not in hot]
    assert all("step 1/2" in r.reason and "to make room for vms/hot-" in r.reason for r in room), room
    assert moves and len(room) < len(moves)
    assert all(r.result == "dry-run" for r in moves)
    assert all("would migrate from worker-0 to worker-" in r.detail for r in moves if r.subject in hot)
    assert any(r.action == "taint" and r.subject == "worker-0" for r in results)  # the soft taint it would set
    assert ctl.sample("autonomic_controller_actions_total", action="migrate", result="dry-run") == len(moves)
    assert resource_version(stack.twin) == before  # not a Lease, an Event, a taint or a migration
    assert len(vmims(stack.twin)) == migrations


def test_a_scrape_gap_leaves_that_node_out_and_the_hot_node_is_still_relieved(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    admin(stack.twin, "PUT", "faults/scrape", {"node": "worker-2", "mode": "error"})
    try:
        wait_for(lambda: "worker-2" not in stack.cpu_psi(), timeout=30, what="worker-2's series gone stale")
        before = resource_version(stack.twin)
        # every node required: too few trusted nodes, the whole cycle is skipped and nothing written
        strict = psi_relief(metrics={"minTrustedFraction": 1.0})
        options = twin_options(stack.twin, strict, stack.prometheus_url, leader_election=False)
        with caplog.at_level(logging.WARNING, "autonomic.controller"), BackgroundController(options) as ctl:
            wait_for(lambda: ctl.skipped("metrics-missing") >= 3, timeout=30, what="3 skipped cycles")
        assert resource_version(stack.twin) == before  # the hot worker-0 was left alone
        needed = "1 of 4 nodes untrusted (need 4 trusted): worker-2 (metrics missing: absent from the query results)"
        assert any(needed in r.getMessage() for r in caplog.records)
        # the default (half the population): worker-2 is left out, worker-0 relieved elsewhere (dry-run: the
        # later tests need the hotspot)
        caplog.clear()
        options = twin_options(stack.twin, psi_relief(dryRun=True), stack.prometheus_url, leader_election=False)
        with caplog.at_level(logging.WARNING, "autonomic.controller"), BackgroundController(options) as ctl:
            assert ctl.running is not None and ctl.running.recorder is not None
            recorder = ctl.running.recorder
            wait_for(lambda: any(r.result.action == "migrate" for r in recorder.records), timeout=30, what="a move")
            untrusted = ctl.sample("autonomic_controller_untrusted_node", node="worker-2", reason="metrics-missing")
            assert untrusted == 1 and ctl.sample("autonomic_controller_untrusted_nodes", reason="metrics-missing") == 1
            assert ctl.skipped("metrics-missing") == 0
        results = [r.result for r in recorder.records]
        moves = [r for r in results if r.action == "migrate"]
        assert moves and all("from worker-0 to worker-" in r.detail and "worker-2" not in r.detail for r in moves)
        assert all(r.subject != "worker-2" for r in results if r.action == "taint")  # its taints untouched
        assert resource_version(stack.twin) == before
        warned = [r.getMessage() for r in caplog.records if "untrusted, left out of this cycle" in r.getMessage()]
        assert warned and all("worker-2 (metrics missing: " in m for m in warned)
    finally:
        admin(stack.twin, "POST", "faults/reset")
    wait_for(lambda: len(stack.cpu_psi()) == 4, timeout=30, what="worker-2 scraped again")


def test_frozen_samples_are_stale_and_skip_the_cycle(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    # the frozen exporter says worker-0 scores 0.9 (a baseline that ignored staleness would evict from it)
    config = controller_config(
        policy="descheduler-compatible",
        metrics={
            "source": "promql",
            "query": f"label_replace(frozen_score, {BY_NODE})",
            "freshnessQuery": f"label_replace(timestamp(frozen_score), {BY_NODE})",
            "maxAgeSeconds": 10,
        },
    )
    assert stack.query(f"label_replace(frozen_score, {BY_NODE})").get("worker-0") == 0.9
    before = resource_version(stack.twin)
    options = twin_options(stack.twin, config, stack.prometheus_url, leader_election=False)
    with caplog.at_level(logging.WARNING, "autonomic.controller"), BackgroundController(options) as ctl:
        wait_for(lambda: ctl.skipped("metrics-stale") >= 3, timeout=30, what="3 stale cycles")
    assert resource_version(stack.twin) == before
    assert any("worker-0 (metrics stale: last sample" in r.getMessage() for r in caplog.records)


def test_hotspot_relieved_across_a_restart_mid_migration_without_duplicates(stack: Stack) -> None:
    config = psi_relief(limits={"maxInFlightTotal": 1, "maxInFlightPerNode": 1})
    concurrency = ConcurrencyWatch(stack.twin, source_of={n: "worker-0" for n in HOT}).start()
    try:
        first = BackgroundController(twin_options(stack.twin, config, stack.prometheus_url, identity="first")).start()
        try:
            wait_for(lambda: concurrency.open_count() == 1, timeout=30, what="a migration under way")
        finally:
            first.stop()  # mid-migration: the VMIM is still unfinished
        assert concurrency.open_count() == 1, "the migration ended before the restart: the test proves nothing"
        second = BackgroundController(twin_options(stack.twin, config, stack.prometheus_url, identity="second"))
        with second:
            adopted = lambda: second.sample("autonomic_controller_migrations_total", outcome="succeeded") == 1  # noqa: E731
            wait_for(adopted, timeout=60, what="the adopted migration succeeded")
            wait_for(lambda: stack.cpu_psi().get("worker-0", 1) < 0.15, timeout=60, what="worker-0 relieved")
            wait_for(lambda: not _tainted(stack.twin, OVERUTILIZED), timeout=30, what="soft taint removed")
            cycles = second.sample("autonomic_controller_cycles_total", outcome="no-pressured-node")
            wait_for(
                lambda: second.sample("autonomic_controller_cycles_total", outcome="no-pressured-node") >= cycles + 3,
                what="3 more quiet cycles",
            )
    finally:
        concurrency.stop()
    assert concurrency.max_total == 1 and concurrency.max_per_vmi == 1  # no duplicate, limit respected
    ours = [m for m in vmims(stack.twin) if (m["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL)]
    moved = [m["spec"]["vmiName"] for m in ours]
    assert 1 <= len(moved) <= 2 and len(set(moved)) == len(moved)  # fewest moves, nobody moved twice
    assert all(m["status"]["phase"] == "Succeeded" and m["spec"].get("addedNodeSelector") for m in ours)
    assert max(stack.cpu_psi().values()) < 0.3  # the VMs' new nodes have room for them
    with api_client(stack.twin) as api:
        core = client.CoreV1Api(api)
        vm_events = core.list_namespaced_event("vms", field_selector=f"involvedObject.name={moved[0]}").items
        node_events = core.list_namespaced_event("default", field_selector="involvedObject.name=worker-0").items
    assert any(e.reason == "Migrating" and "psi-relief: worker-0 at" in e.message for e in vm_events)
    assert {"RelievingNode", "SoftTaint"} <= {e.reason for e in node_events}


def test_limits_hold_while_the_policy_wants_every_vm_moved(stack: Stack) -> None:
    """Scores that say worker-0 and worker-1 stay hot whatever moves: the descheduler-compatible policy as 4.21 GA
    (no KubevirtMigrationAware cooldown to hold it back) with evictionLimits.node 2 evicts everything it may, and
    only the budget (2 in flight, 1 per source node, in-flight evacuations counted across cycles) keeps KubeVirt
    from running more; KubeVirt's own limits (5, 2 per node) are looser, so any excess would show."""
    config = controller_config(
        policy="descheduler-compatible",
        actuator="eviction",
        metrics={
            "source": "promql",
            "query": f"label_replace(fresh_score, {BY_NODE})",
            "freshnessQuery": f"label_replace(timestamp(fresh_score), {BY_NODE})",
        },
        deschedulerCompatible={"profileVersion": "4.21-ga", "evictionLimitsNode": 2},
        limits={"maxInFlightTotal": 2, "maxInFlightPerNode": 1},
    )
    concurrency = ConcurrencyWatch(stack.twin).start()
    try:
        with BackgroundController(twin_options(stack.twin, config, stack.prometheus_url)) as ctl:
            succeeded = lambda: ctl.sample("autonomic_controller_migrations_total", outcome="succeeded")  # noqa: E731
            wait_for(lambda: succeeded() >= 4, timeout=90, what="4 evacuations followed until they succeeded")
            started = ctl.sample("autonomic_controller_actions_total", action="migrate", result="started")
        wait_for(lambda: concurrency.open_count() == 0, timeout=60, what="the last evacuations finished")
    finally:
        concurrency.stop()
    assert concurrency.max_total == 2  # reached, never exceeded
    assert set(concurrency.max_per_node) <= {"worker-0", "worker-1"}
    assert max(concurrency.max_per_node.values()) == 1 and concurrency.max_per_vmi == 1
    assert started == concurrency.created  # each 429 "evacuation triggered" is one migration, none twice
    assert len(concurrency.finished) >= 4 and all(m["status"]["phase"] == "Succeeded" for m in concurrency.finished)
    labels = {"strategy": "LowNodeUtilization", "profile": "KubeVirtRelieveAndMigrate", "namespace": "vms"}
    assert ctl.sample("descheduler_pods_evicted_total", result="success", node="worker-0", **labels) >= 1


def test_prometheus_down_skips_every_cycle_and_says_why(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    options = twin_options(stack.twin, psi_relief(), stack.prometheus_url, leader_election=False)
    with caplog.at_level(logging.WARNING, "autonomic.controller"), BackgroundController(options) as ctl:
        wait_for(lambda: ctl.sample("autonomic_controller_cycles_total", outcome="no-pressured-node") >= 2, what="up")
        assert ctl.skipped("metrics-unavailable") == 0
        assert stack.telemetry.prometheus is not None
        stack.twin.run(stack.telemetry.prometheus.stop())  # the last test of the module: Prometheus stays down
        admin(stack.twin, "POST", "load/hotspot", {"node": "worker-1", "cpuFactor": 8})  # pressure nobody can see
        before = resource_version(stack.twin)
        wait_for(lambda: ctl.skipped("metrics-unavailable") >= 3, timeout=30, what="3 skipped cycles")
        assert resource_version(stack.twin) == before
    assert any("metrics unavailable: prometheus" in r.getMessage() for r in caplog.records)


def _tainted(twin: ClusterTwin, key: str) -> list[str]:
    with api_client(twin) as api:
        nodes = client.CoreV1Api(api).list_node().items
    return [n.metadata.name for n in nodes if any(t.key == key for t in n.spec.taints or [])]
