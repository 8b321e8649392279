"""VM load for the cluster twin: the trace file, trace assignment, per-VM demand, per-node load with migration
costs, and the scenario's load section (hotspots, constants, validation)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.cluster.kv_objects import (
    CPU_LOAD_ANNOTATION,
    CPU_LOAD_FACTOR_ANNOTATION,
    MEMORY_LOAD_ANNOTATION,
    MEMORY_LOAD_FACTOR_ANNOTATION,
)
from sim.cluster.load import VmDemand, VmProfile, node_loads, resolve_profile, trace_time, vm_demands
from sim.cluster.psi import ThreadGroup
from sim.cluster.scenario import ScenarioError, load_scenario, parse_scenario
from sim.cluster.scenario_load import LoadSettings, load_annotations
from sim.cluster.state_view import NodeInfo, VmiInfo
from sim.cluster.vm_trace import TraceError, VmLoadTrace, default_trace_path, load_vm_trace, parse_trace

GIB = 2**30
CSV = b"""vm,minute,cpu_pct,mem_pct
b,5,40,30
a,0,10,20
a,5,30,40
a,10,50,60
b,0,20,130
"""


def small_trace() -> VmLoadTrace:
    return parse_trace(CSV)


def vmi(name: str, node: str | None = "n0", *, vcpus: int = 4, mem_gib: int = 8, **kw: Any) -> VmiInfo:
    fields: dict[str, Any] = {
        "namespace": "vms",
        "name": name,
        "node": node,
        "cpu_millis": vcpus * 100,
        "memory_bytes": mem_gib * GIB,
        "vcpus": vcpus,
        "phase": "Running",
        "migrating": False,
        "migration_target": None,
        "dirty_rate_bytes_per_s": 0.0,
        "load_trace": None,
    }
    fields.update(kw)
    return VmiInfo(**fields)


def node(name: str, cores: int = 8, mem_gib: int = 32) -> NodeInfo:
    return NodeInfo(name, cores * 1000, mem_gib * GIB, cores * 1000 - 500, mem_gib * GIB - GIB, True, False)


def settings(**kw: Any) -> LoadSettings:
    return LoadSettings.model_validate({"hostCpu": 0, "hostMemory": "0", **kw})


# ---- the trace ------------------------------------------------------------------------------------------


def test_parse_orders_rows_fills_gaps_and_clips() -> None:
    t = small_trace()
    assert t.ids == ("a", "b") and t.step_s == 300.0 and t.cpu.shape == (2, 3)
    np.testing.assert_allclose(t.cpu[0], [0.1, 0.3, 0.5])
    np.testing.assert_allclose(t.cpu[1], [0.2, 0.4, 0.4])  # b's minute 10 missing: the earlier sample
    np.testing.assert_allclose(t.memory[1], [1.0, 0.3, 0.3])  # 130% clipped to the guest's size


def test_sample_interpolates_and_wraps_around_the_period() -> None:
    t = small_trace()
    rows = np.array([0, 1])
    cpu, _ = t.sample(rows, 150.0)  # halfway between minute 0 and 5
    np.testing.assert_allclose(cpu, [0.2, 0.3])
    cpu, _ = t.sample(rows, 750.0)  # halfway from the last sample back to the first
    np.testing.assert_allclose(cpu, [0.3, 0.3])
    np.testing.assert_allclose(t.sample(rows, 60.0 + t.period_s)[0], t.sample(rows, 60.0)[0])


def test_bad_traces_are_rejected() -> None:
    with pytest.raises(TraceError, match="header"):
        parse_trace(b"vm,minute,cpu\nx,0,1\n")
    with pytest.raises(TraceError, match="bad number"):
        parse_trace(b"vm,minute,cpu_pct,mem_pct\nx,0,lots,1\n")
    with pytest.raises(TraceError, match="not found"):
        load_vm_trace("/nonexistent/trace.csv.gz")


def test_gzip_and_real_trace(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(CSV))
    assert load_vm_trace(p).ids == ("a", "b")
    real = load_vm_trace(default_trace_path())
    assert real.cpu.shape == (781, 288) and real.period_s == 86400.0
    assert real.cpu.min() >= 0.0 and real.memory.max() <= 1.0
    assert load_vm_trace(default_trace_path()) is real  # parsed once


def test_assignment_is_deterministic_by_seed() -> None:
    real = load_vm_trace()
    names = [f"vm-{i}" for i in range(50)]
    first = [real.assign(1, "default", n) for n in names]
    assert first == [real.assign(1, "default", n) for n in names]
    assert sum(a != b for a, b in zip(first, [real.assign(2, "default", n) for n in names], strict=True)) > 40
    assert len(set(first)) > 40  # spread over the trace


# ---- per-VM demand ----------------------------------------------------------------------------------------


def test_profile_reads_annotations_and_reports_bad_ones() -> None:
    t = small_trace()
    good = vmi(
        "x",
        load_trace="b",
        annotations={CPU_LOAD_ANNOTATION: "0.5", MEMORY_LOAD_FACTOR_ANNOTATION: "2", CPU_LOAD_FACTOR_ANNOTATION: "1.5"},
    )
    assert resolve_profile(good, t, 1) == (VmProfile(1, cpu_load=0.5, cpu_factor=1.5, memory_factor=2.0), [])
    bad = vmi("y", load_trace="zz", annotations={CPU_LOAD_ANNOTATION: "2", MEMORY_LOAD_ANNOTATION: "x"})
    profile, problems = resolve_profile(bad, t, 1)
    assert profile.cpu_load is None and profile.memory_load is None
    assert profile.trace_row == t.assign(1, "vms", "y")  # unknown trace: the seeded pick
    assert [p.split(": ", 1)[1].split(" ")[0] for p in problems] == ["unknown", "annotation", "annotation"]


def test_vm_demand_from_trace_constants_and_factors() -> None:
    t = small_trace()
    vms = [
        vmi("a", vcpus=4, mem_gib=8),  # trace a at minute 5: cpu 0.3, mem 0.4
        vmi("b", vcpus=2, mem_gib=4),  # constant cpu x factor, capped at 1
        vmi("off", phase="Pending"),  # not running: no demand
    ]
    profiles = {("vms", "a"): VmProfile(0), ("vms", "b"): VmProfile(1, cpu_load=0.6, cpu_factor=2, memory_factor=0.5)}
    d = {x.name: x for x in vm_demands(vms, profiles, t, settings(traceSpeed=10), 30.0)}  # trace time 300 s
    assert set(d) == {"a", "b"}
    assert d["a"].cpu_busy == pytest.approx(0.3) and d["a"].cpu_cores == pytest.approx(1.2)
    assert d["a"].memory_used == pytest.approx(0.4 * 8 * GIB)
    assert d["b"].cpu_busy == 1.0  # 0.6 x 2 capped at all vCPUs busy
    assert d["b"].memory_used == pytest.approx(0.3 * 0.5 * 4 * GIB)
    assert trace_time(settings(startMinute=5, traceSpeed=2), 10) == 320.0


def demand(name: str, node: str, **kw: Any) -> VmDemand:
    fields: dict[str, Any] = {
        "namespace": "vms",
        "name": name,
        "node": node,
        "vcpus": 4,
        "cpu_busy": 0.5,
        "memory_bytes": 8 * GIB,
        "memory_used": 2 * GIB,
        "overhead_bytes": GIB // 4,
    }
    fields.update(kw)
    return VmDemand(**fields)


def test_node_load_counts_vms_host_and_migrations() -> None:
    s = settings(hostCpu=0.2, hostMemory="1Gi", migration={"sourceCpu": 0.8, "targetCpu": 0.5})
    loads = node_loads(
        [node("n0"), node("n1"), node("n2")],
        [
            demand("a", "n0"),
            demand("b", "n0", target="n1", transferring=True),  # memory transfer under way: cost on both ends
            demand("c", "n0", target="n2"),  # target pod exists, transfer not started: overhead only
        ],
        s,
    )
    host = ThreadGroup(1, 0.2)
    assert loads["n0"].threads == (
        host,
        ThreadGroup(4, 0.5),
        ThreadGroup(4, 0.5),
        ThreadGroup(1, 0.8),
        ThreadGroup(4, 0.5),
    )
    assert loads["n0"].memory_used_bytes == GIB + 3 * (GIB // 4 + 2 * GIB)
    assert loads["n0"].migrations == 1
    assert loads["n1"].threads == (host, ThreadGroup(1, 0.5))
    assert loads["n1"].memory_used_bytes == GIB + GIB // 4 + 2 * GIB and loads["n1"].migrations == 1
    assert loads["n2"].memory_used_bytes == GIB + GIB // 4 and loads["n2"].migrations == 0


def test_demand_moves_with_the_vm() -> None:
    t, s = small_trace(), settings()
    profiles = {("vms", "a"): VmProfile(0, cpu_load=1.0)}
    before = node_loads([node("n0"), node("n1")], vm_demands([vmi("a", "n0")], profiles, t, s, 0), s)
    after = node_loads([node("n0"), node("n1")], vm_demands([vmi("a", "n1")], profiles, t, s, 0), s)
    assert before["n0"].threads == (ThreadGroup(4, 1.0),) and before["n1"].threads == ()
    assert after["n0"].threads == () and after["n1"].threads == (ThreadGroup(4, 1.0),)


# ---- the scenario's load section ------------------------------------------------------------------------------

SCENARIO = {
    "nodes": [{"name": "w0"}, {"name": "w1"}],
    "vms": [
        {"name": "a", "namespace": "vms", "node": "w0", "cpuLoad": 0.9},
        {"name": "b", "namespace": "vms", "node": "w0"},
        {"name": "c", "namespace": "other", "node": "w1", "memoryLoad": 0.5},
    ],
    "load": {
        "seed": 7,
        "hotspots": [{"node": "w0", "cpuFactor": 2}, {"vms": ["vms/b", "c"], "cpuFactor": 1.5, "memoryFactor": 3}],
    },
}


def test_hotspots_become_annotations_and_multiply() -> None:
    s = parse_scenario(SCENARIO)
    ann = {vm.name: load_annotations(s, vm) for vm in s.vms}
    assert ann["a"] == {CPU_LOAD_ANNOTATION: "0.9", CPU_LOAD_FACTOR_ANNOTATION: "2"}
    assert ann["b"] == {CPU_LOAD_FACTOR_ANNOTATION: "3", MEMORY_LOAD_FACTOR_ANNOTATION: "3"}
    assert ann["c"] == {
        MEMORY_LOAD_ANNOTATION: "0.5",
        CPU_LOAD_FACTOR_ANNOTATION: "1.5",
        MEMORY_LOAD_FACTOR_ANNOTATION: "3",
    }


def test_load_section_errors_have_paths(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(
            {
                **SCENARIO,
                "vms": [*SCENARIO["vms"], {"name": "a", "namespace": "third", "node": "w1"}],
                "load": {"hotspots": [{"node": "zz"}, {"vms": ["a"], "node": "w0"}, {}, {"vms": ["vms/q"]}]},
                "faults": {"api": {"errorRate": 2}, "scrape": [{"node": "w0", "mode": "later"}]},
            }
        )
    assert exc.value.errors == [
        "load.hotspots[0].node: unknown node 'zz'",
        "load.hotspots[1]: exactly one of node and vms is required",
        "load.hotspots[1].vms[0]: ambiguous VM 'a'",
        "load.hotspots[2]: exactly one of node and vms is required",
        "load.hotspots[3].vms[0]: unknown VM 'vms/q'",
        "faults.api: errorRate: must be a number in [0, 1], got 2",
        "faults.scrape[0]: mode: must be one of error, stall, nan, inflate, frozen, none; got 'later'",
    ]
    with pytest.raises(ScenarioError) as exc:
        parse_scenario({"vms": [{"name": "v", "cpuLoad": 1.5}], "load": {"traceSpeed": 0}})
    assert {e.split(":")[0] for e in exc.value.errors} == {"vms[0].cpuLoad", "load.traceSpeed"}
    f = tmp_path / "s.yaml"
    f.write_text("load: {traceFile: missing.csv.gz}\n")
    with pytest.raises(ScenarioError, match=r"load\.traceFile: no such file"):
        load_scenario(f)
    (tmp_path / "t.csv").write_bytes(CSV)
    f.write_text("load: {traceFile: t.csv}\n")
    assert load_scenario(f).load.trace_file == str(tmp_path / "t.csv")  # relative to the scenario file
