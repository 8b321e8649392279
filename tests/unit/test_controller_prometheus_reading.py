"""Which queries the controller runs for each policy, and what it makes of their results (controller/sources/
prometheus.py): per-node pressure with the age of the oldest sample behind it, per-VM usage, and the results it
refuses (no instance label, two series for one node, not an instant vector)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from controller.config import DEFAULT_FRESHNESS_QUERY, DEFAULT_SCORE_QUERY, parse_config
from controller.sources.prometheus import PrometheusSource, VmUsage, assemble, query_plan

WALL = 2_000_000.0


def sample(value: float | str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [WALL, str(value)]}


def test_the_descheduler_baseline_reads_the_score_and_its_age() -> None:
    plan = query_plan(parse_config({}))
    assert plan == {
        "score": DEFAULT_SCORE_QUERY,
        "fresh": DEFAULT_FRESHNESS_QUERY,
        "fresh:score": f"timestamp({DEFAULT_SCORE_QUERY})",  # a recording rule: its own timestamp counts too
    }


def test_psi_relief_reads_psi_utilisation_and_per_vm_usage() -> None:
    config = parse_config({"policy": "psi-relief", "metrics": {"freshnessQuery": ""}})
    plan = query_plan(config)
    assert set(plan) == {
        "psi:cpu",
        "psi:memory",
        "util:cpu",
        "util:memory",
        "fresh:util:cpu",
        "fresh:util:memory",
        "vm:cpu",
        "vm:memory",
        "vm:dirty_rate",
    }
    assert plan["fresh:util:cpu"] == "timestamp(descheduler:nodeutilization:cpu:avg1m)"
    score = query_plan(parse_config({"policy": "psi-relief", "psiRelief": {"signal": "score"}}))
    assert "score" in score and "psi:cpu" not in score


def test_pressure_per_node_dated_by_its_oldest_sample() -> None:
    results = {
        "score": [sample(0.5, instance="n0"), sample(0.1, instance="n1"), sample(0.2, instance="gone")],
        "psi:cpu": [sample(0.3, instance="n0")],
        "fresh": [sample(WALL - 4, instance="n0"), sample(WALL - 1, instance="n1")],
        "fresh:score": [sample(WALL - 2, instance="n0"), sample(WALL - 30, instance="n1")],
    }
    reading = assemble(results, clock_now=100.0, wall_now=WALL)  # the controller's clock may run apart
    assert reading.error is None and set(reading.nodes) == {"n0", "n1"}  # "gone" has no fresh sample
    n0, n1 = reading.nodes["n0"], reading.nodes["n1"]
    assert (n0.score, n0.psi_cpu, n0.sampled_at) == (0.5, 0.3, 96.0)
    assert (n1.score, n1.psi_cpu, n1.sampled_at) == (0.1, None, 70.0)


def test_values_are_passed_on_as_read_for_validation() -> None:
    results = {"score": [sample("NaN", instance="n0"), sample(1.5, instance="n1")]}
    reading = assemble(results, clock_now=WALL, wall_now=WALL)
    assert math.isnan(reading.nodes["n0"].score or 0) and reading.nodes["n1"].score == 1.5
    assert reading.nodes["n0"].sampled_at == WALL  # no freshness query: as of the query


@pytest.mark.parametrize(
    ("results", "error"),
    [
        ({"score": [sample(0.1, node="n0")]}, "query score: a sample has no instance label"),
        (
            {"psi:cpu": [sample(0.1, instance="n0", job="a"), sample(0.2, instance="n0", job="b")]},
            "query psi:cpu: more than one series for instance n0",
        ),
    ],
)
def test_unusable_results_are_errors(results: dict[str, list[dict[str, Any]]], error: str) -> None:
    reading = assemble(results, clock_now=WALL, wall_now=WALL)
    assert reading.error is not None and error in reading.error and not reading.nodes


def test_per_vm_usage_by_node_and_ambiguous_series_dropped() -> None:
    results = {
        "vm:cpu": [
            sample(1.0, namespace="vms", name="a", node="n0"),
            sample(0.1, namespace="vms", name="a", node="n1"),  # the old node's series, until it goes stale
            sample(0.5, namespace="vms", name="b"),
            sample(0.7, namespace="vms", name="c", node="n0"),
            sample(0.9, namespace="vms", name="c", node="n0"),
            sample(0.3, name="no-namespace"),
        ],
        "vm:memory": [sample(2**30, namespace="vms", name="a", node="n0")],
    }
    reading = assemble(results, clock_now=WALL, wall_now=WALL)
    assert reading.vm_usage("vms/a", "n0") == VmUsage(cpu=1.0, memory=2**30)
    assert reading.vm_usage("vms/a", "n1") == VmUsage(cpu=0.1)
    assert reading.vm_usage("vms/b", "n3") == VmUsage(cpu=0.5)  # no node label: whatever node it runs on
    assert reading.vm_usage("vms/c", "n0") is None and len(reading.vms) == 3


def test_an_unreachable_prometheus_is_a_reading_error() -> None:
    class Clock:
        def now(self) -> float:
            return WALL

    config = parse_config({"metrics": {"timeoutSeconds": 1}})
    reading = PrometheusSource("http://127.0.0.1:9", config, Clock()).read_sync()  # discard port: refused
    assert reading.error is not None and reading.error.startswith("prometheus http://127.0.0.1:9 unreachable")


def test_optional_utilisation_rules_date_a_node_only_where_present() -> None:
    results = {
        "psi:cpu": [sample(0.3, instance="n0"), sample(0.1, instance="n1")],
        "fresh": [sample(WALL - 1, instance="n0"), sample(WALL - 1, instance="n1")],
        "util:cpu": [sample(0.9, instance="n0")],
        "fresh:util:cpu": [sample(WALL - 50, instance="n0")],  # n1: no rules there (or not yet)
    }
    reading = assemble(results, clock_now=WALL, wall_now=WALL)
    assert reading.nodes["n0"].sampled_at == WALL - 50 and reading.nodes["n0"].cpu_utilization == 0.9
    assert reading.nodes["n1"].sampled_at == WALL - 1 and reading.nodes["n1"].cpu_utilization is None
