"""The model-time engine's query results: the descheduler's recording rules in Python, rate-window means, per-VM
rates and freshness, on hand-made samples; and the refusal of queries it cannot answer."""

from __future__ import annotations

import math

import pytest

from controller.config import parse_config
from controller.sources.prometheus import assemble, query_plan
from loadtests.rebalance.model_queries import NodeWindow, QueryModel, check_queries, descheduler_scores
from sim.cluster.psi import CpuContention, NodePressure
from sim.cluster.state_view import NodeInfo
from sim.cluster.telemetry_state import NodeSample, Sample, VmSample

GIB = 2**30
WORKER = {"node-role.kubernetes.io/worker": ""}


def node(name: str, *, worker: bool = True, memory: int = 64 * GIB) -> NodeInfo:
    return NodeInfo(name, 8000, memory, 8000, memory, True, False, labels=WORKER if worker else {})


def window(util: float, psi_cpu: float, memory: float | None = 0.5, psi_memory: float = 0.0) -> NodeWindow:
    return NodeWindow({"cpu": psi_cpu, "memory": psi_memory, "io": 0.0}, util, memory)


@pytest.mark.parametrize(
    ("windows", "workers", "expected"),
    [
        # mean util 0.7; a's CPU PSI counts (util 0.9 > 0.7), b's not (0.5): PSI mean 0.15;
        # a: sqrt(0.2^2 + 0.15^2) = 0.25, x3 = 0.75; b is below every mean: 0
        pytest.param(
            {"a": window(0.9, 0.3), "b": window(0.5, 0.1)}, {"a", "b"}, {"a": 0.75, "b": 0.0}, id="gate-and-mean"
        ),
        pytest.param(
            {"a": window(1.0, 0.9), "b": window(0.0, 0.0)}, {"a", "b"}, {"a": 1.0, "b": 0.0}, id="capped-at-1"
        ),
        pytest.param({"a": window(0.9, 0.3), "b": window(0.5, 0.1)}, set(), {"a": 0.0, "b": 0.0}, id="no-workers"),
        # memory: a at 0.9 (> 0.7, its memory PSI counts), b at 0.5; mean memory 0.7, memory PSI mean 0.1
        # a: sqrt(0.2^2 + 0.1^2) = 0.2236, x3 = 0.6708
        pytest.param(
            {"a": window(0.5, 0.0, 0.9, 0.2), "b": window(0.5, 0.0, 0.5, 0.3)},
            {"a", "b"},
            {"a": 3 * math.sqrt(0.05), "b": 0.0},
            id="memory-gate",
        ),
        # a node without allocatable memory has no utilisation series: the rules drop it, and the mean is b's
        pytest.param({"a": window(0.9, 0.3, None), "b": window(0.5, 0.1)}, {"a", "b"}, {"b": 0.0}, id="no-memory"),
    ],
)
def test_descheduler_scores(windows, workers, expected):
    nodes = {n: node(n, worker=n in workers) for n in windows}
    got = descheduler_scores(windows, nodes)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


def pressure(some: float, idle: float, available: float) -> NodePressure:
    return NodePressure(
        cpu=CpuContention(utilization=1 - idle, served=1.0, some=some, demand_cores=0.0),
        memory_some=0.0,
        memory_full=0.0,
        io_some=0.0,
        io_full=0.0,
        memory_available_bytes=available,
        cpu_modes={"idle": idle, "user": 1 - idle},
    )


def sample(t: float, some: dict[str, float], vms: tuple[VmSample, ...] = ()) -> Sample:
    nodes = {n: NodeSample(n, 8, 64 * GIB, pressure(v, 0.5, 32 * GIB)) for n, v in some.items()}
    return Sample(t, nodes, vms)


def test_window_means_and_freshness_through_assemble():
    queries = QueryModel(60.0)
    vm = VmSample("vms", "a-0", "a", cpu_cores=1.0, memory_used=GIB, memory_domain=2 * GIB)
    for t, some in ((0.0, 0.9), (20.0, 0.6), (40.0, 0.3), (60.0, 0.0)):  # the first leaves the window at 60
        queries.add(1000.0 + t, sample(t, {"a": some, "b": 0.1}, (vm,)))
    assert queries.last_at == 1060.0
    config = parse_config({"policy": "psi-relief", "actuator": "migration"})
    plan = query_plan(config)
    assert check_queries(plan) == []
    nodes = {"a": node("a"), "b": node("b")}
    reading = assemble(queries.results(plan, nodes), 1060.0, 1060.0)
    assert reading.error is None
    assert reading.nodes["a"].psi_cpu == pytest.approx(0.3)  # (0.6 + 0.3 + 0.0) / 3
    assert reading.nodes["b"].psi_cpu == pytest.approx(0.1)
    assert reading.nodes["a"].cpu_utilization == pytest.approx(0.5)
    assert reading.nodes["a"].memory_utilization == pytest.approx(0.5)  # 32 of 64 GiB available
    assert reading.nodes["a"].sampled_at == pytest.approx(1060.0)
    usage = reading.vm_usage("vms/a-0", "a")
    assert usage is not None and usage.cpu == pytest.approx(1.0) and usage.memory == GIB


def test_a_vm_rate_needs_two_samples_on_its_node():
    queries = QueryModel(60.0)
    queries.add(0.0, sample(0.0, {"a": 0.0, "b": 0.0}, (VmSample("vms", "x", "a", 1.0, 0.0, GIB),)))
    queries.add(20.0, sample(20.0, {"a": 0.0, "b": 0.0}, (VmSample("vms", "x", "b", 2.0, 0.0, GIB),)))
    assert queries.results({"vm:cpu": "rate(kubevirt_vmi_cpu_usage_seconds_total[1m])"}, {})["vm:cpu"] == []
    queries.add(40.0, sample(40.0, {"a": 0.0, "b": 0.0}, (VmSample("vms", "x", "b", 4.0, 0.0, GIB),)))
    got = queries.results({"vm:cpu": "rate(kubevirt_vmi_cpu_usage_seconds_total[1m])"}, {})["vm:cpu"]
    assert [(s["metric"]["node"], float(s["value"][1])) for s in got] == [("b", 3.0)]


def test_no_samples_answers_nothing():
    plan = {"score": "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m"}
    assert QueryModel(60.0).results(plan, {}) == {"score": []}


@pytest.mark.parametrize(
    ("section", "bad"),
    [
        pytest.param({"query": "max by (instance) (something)"}, "score", id="custom-score"),
        pytest.param({"vmQueries": {"cpuUsage": "irate(x[5m])"}}, "vm:cpu", id="custom-vm-cpu"),
        pytest.param({"psiQueries": {"cpu": "rate(node_pressure_io_waiting_seconds_total[1m])"}}, "psi:cpu", id="psi"),
    ],
)
def test_queries_it_cannot_answer_are_named(section, bad):
    policy = "descheduler-compatible" if "query" in section else "psi-relief"
    config = parse_config({"policy": policy, "metrics": section})
    problems = check_queries(query_plan(config))
    assert [p.split(":", 1)[0] if not p.startswith(("psi:", "vm:")) else ":".join(p.split(":")[:2]) for p in problems]
    assert any(p.startswith(bad + ":") for p in problems), problems


def test_the_default_queries_of_every_arm_are_answered():
    for doc in (
        {"policy": "descheduler-compatible"},
        {"policy": "descheduler-compatible", "deschedulerCompatible": {"profileVersion": "4.21-ga"}},
        {"policy": "psi-relief", "actuator": "migration"},
    ):
        assert check_queries(query_plan(parse_config(doc))) == [], doc
