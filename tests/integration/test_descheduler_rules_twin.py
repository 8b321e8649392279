"""The operator's 2026-04 recording rules (deploy/prometheus/descheduler-rules.yaml: p66 smoothing, the per-node
eviction count, the cooldown multiplier, `descheduler:node:actuation_priority:p66_5m`) as the cluster twin's real
Prometheus evaluates them on the twin's own series, while the default controller (descheduler-compatible, the
operator's main profile) evicts from the hot node and is scraped by that Prometheus (1 s scrapes, 3 s rate, 10 s
smoothing and 60 s cooldown windows, rules every second): before any eviction every node's multiplier is 1 and its
actuation priority is its smoothed score; after the controller's evictions from worker-0 succeed, worker-0's count
rises and its priority drops by 10% per eviction, on every node the product of the two rules it reads."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import wait_for
from controller_helpers import BackgroundController, controller_config, twin_options

from harness.netutil import free_port
from sim.cluster.prometheus import DEFAULT_BINARY, TwinTelemetry, start_telemetry
from sim.cluster.scenario import parse_scenario
from sim.cluster.state_view import TelemetryOptions
from sim.cluster.twin import ClusterTwin

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.path.exists(DEFAULT_BINARY),
    reason="Prometheus is not installed (make prometheus)",
)
NODES = [f"worker-{i}" for i in range(4)]
SCENARIO = {  # worker-0 runs 12 busy vCPUs on 8 cores (CPU PSI about 0.45); a fast link: migrations end quickly
    "namespaces": ["vms"],
    "kubevirt": {"nodeLinkBandwidth": "4Gi"},
    "nodes": [{"name": n} for n in NODES],
    "vms": [
        *(
            {"name": f"hot-{i}", "namespace": "vms", "cpu": 4, "memory": "4Gi", "node": "worker-0", "cpuLoad": 0.95}
            for i in range(3)
        ),
        *(
            {"name": f"cold-{i}", "namespace": "vms", "cpu": 2, "memory": "2Gi", "node": f"worker-{i}", "cpuLoad": 0.1}
            for i in (1, 2, 3)
        ),
    ],
}
K3_P66 = "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:p66_5m"
COUNT = "descheduler:node:eviction_count:10m"
MULTIPLIER = "descheduler:node:cooldown_multiplier:10m"
PRIORITY = "descheduler:node:actuation_priority:p66_5m"


@dataclasses.dataclass
class Stack:
    twin: ClusterTwin
    telemetry: TwinTelemetry
    controller_port: int  # Prometheus scrapes the controller's /metrics there (job "descheduler")

    @property
    def prometheus_url(self) -> str:
        assert self.telemetry.prometheus_url is not None
        return self.telemetry.prometheus_url

    def query(self, promql: str, at: float) -> dict[str, float]:
        """Instant query at `at` (Unix seconds) -> {instance: value}."""
        q = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        with urllib.request.urlopen(f"{self.prometheus_url}/api/v1/query?{q}", timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        assert body["status"] == "success", body
        return {r["metric"]["instance"]: float(r["value"][1]) for r in body["data"]["result"]}

    def rules_at(self, at: float) -> dict[str, dict[str, float]]:
        """The four rules at one instant: the group records them at the same evaluation timestamps, so their latest
        samples at a time a couple of seconds ago come from one and the same evaluation."""
        return {name: self.query(name, at) for name in (K3_P66, COUNT, MULTIPLIER, PRIORITY)}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    scenario = parse_scenario(SCENARIO)
    port = free_port()
    options = TelemetryOptions(
        scrape_interval_s=1.0,
        rate_window="3s",
        smoothing_window="10s",
        cooldown_window="60s",
        rule_interval="1s",
        tick_s=0.1,
        load=scenario.load,
        extra_scrape_targets=(("descheduler", f"127.0.0.1:{port}/metrics"),),
    )
    with ClusterTwin(scenario, time_scale=20) as twin:
        telemetry = twin.run(start_telemetry(twin.view, options))
        try:
            yield Stack(twin, telemetry, port)
        finally:
            twin.run(telemetry.stop())


def test_actuation_priority_is_the_smoothed_score_damped_by_the_nodes_evictions(stack: Stack) -> None:
    def scored() -> dict[str, dict[str, float]] | None:
        rules = stack.rules_at(time.time() - 2)
        complete = all(sorted(rules[name]) == NODES for name in rules)
        return rules if complete and rules[K3_P66]["worker-0"] > 0.5 else None

    before = wait_for(scored, timeout=90, what="the smoothed k3 score up on worker-0, every rule for every node")
    assert before[COUNT] == dict.fromkeys(NODES, 0.0)  # the `or ... * 0` fallback: no evictions anywhere yet
    assert before[MULTIPLIER] == dict.fromkeys(NODES, 1.0)
    assert before[PRIORITY] == before[K3_P66]  # undamped
    assert max(before[K3_P66][n] for n in NODES[1:]) < 0.2  # the cold nodes sit at or under the mean

    # the default configuration: descheduler-compatible, profile main (2 per node, KubevirtMigrationAware)
    options = twin_options(
        stack.twin, controller_config(), stack.prometheus_url, metrics_port=stack.controller_port, leader_election=False
    )
    labels = {"strategy": "LowNodeUtilization", "profile": "KubeVirtRelieveAndMigrate", "namespace": "vms"}
    with BackgroundController(options) as ctl:
        assert ctl.running is not None and "policy=descheduler-compatible profile=main " in ctl.running.ready_line()
        wait_for(
            lambda: ctl.sample("descheduler_pods_evicted_total", result="success", node="worker-0", **labels) >= 1,
            timeout=90,
            what="an eviction from worker-0 followed until its migration succeeded",
        )

        def damped() -> dict[str, dict[str, float]] | None:
            rules = stack.rules_at(time.time() - 2)
            complete = all(sorted(rules[name]) == NODES for name in rules)
            return rules if complete and rules[COUNT].get("worker-0", 0) >= 0.9 else None

        after = wait_for(damped, timeout=60, what="worker-0's eviction counted by the rules")
    count = after[COUNT]["worker-0"]
    assert after[MULTIPLIER]["worker-0"] == pytest.approx(max(1 - 0.1 * count, 0.01))
    assert after[MULTIPLIER]["worker-0"] < 1
    for node in NODES:  # the priority is the product the rule says, node by node, from the same evaluation
        assert after[PRIORITY][node] == pytest.approx(after[K3_P66][node] * after[MULTIPLIER][node], abs=1e-9)
