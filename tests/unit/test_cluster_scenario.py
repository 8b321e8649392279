"""Scenario files of the cluster twin: validation with paths, the shipped default, the generator, quantities."""

from __future__ import annotations

import pytest

from sim.cluster import quantity
from sim.cluster.builder import kubevirt_config
from sim.cluster.generator import ALLOCATABLE_MEMORY, generate
from sim.cluster.kv_objects import memory_overhead
from sim.cluster.scenario import ScenarioError, default_scenario_path, load_scenario, parse_scenario


def test_default_scenario_loads() -> None:
    s = load_scenario(default_scenario_path())
    assert len(s.nodes) == 4 and any(vm.host_devices for vm in s.vms) and any(vm.resource_claims for vm in s.vms)
    cfg = kubevirt_config(s)
    assert cfg.parallel_migrations_per_cluster == 5 and cfg.node_link_bytes_per_s == 2**30


def test_every_error_is_reported_with_its_path() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(
            {
                "nodes": [{"name": "a", "memory": "lots"}, {"name": "a"}],
                "vms": [{"name": "v", "node": "zz", "cpu": 0}, {"name": "w", "evictionStrategy": "Sometimes"}],
                "pdbs": [{"name": "p", "selector": {}}],
                "bogus": 1,
            }
        )
    errors = exc.value.errors
    assert any(e.startswith("nodes[0].memory:") for e in errors)
    assert any(e.startswith("vms[0].cpu:") for e in errors)
    assert any(e.startswith("vms[1].evictionStrategy:") for e in errors)
    assert any(e.startswith("bogus:") for e in errors)


def test_cross_references_are_checked() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(
            {
                "nodes": [{"name": "a"}, {"name": "a"}],
                "vms": [{"name": "v", "node": "zz"}],
                "pdbs": [{"name": "p", "selector": {}}],
                "pods": [{"name": "p", "node": "q", "ip": "1.2.3.4"}],
            }
        )
    assert exc.value.errors == [
        "nodes[1].name: duplicate node 'a'",
        "vms[0].node: unknown node 'zz'",
        "pods[0].node: unknown node 'q'",
        "pdbs[0]: exactly one of minAvailable and maxUnavailable is required",
    ]


def test_generator_packs_unevenly_without_memory_overcommit() -> None:
    s = generate(6, 30, seed=3)
    assert len(s.nodes) == 6 and len(s.vms) == 30
    per_node: dict[str, list[int]] = {n.name: [0, 0] for n in s.nodes}
    for vm in s.vms:
        assert vm.node is not None and 1 <= vm.cpu <= 4
        mem = quantity.bytes_(vm.memory)
        per_node[vm.node][0] += vm.cpu
        per_node[vm.node][1] += mem + memory_overhead(vm.cpu, mem)
    vcpus = sorted(v[0] for v in per_node.values())
    assert vcpus[-1] > 8 and vcpus[-1] >= 2 * vcpus[0]  # the busiest node overcommits its 8 cores, unevenly
    assert all(v[1] <= ALLOCATABLE_MEMORY for v in per_node.values())
    assert generate(6, 30, seed=3) == s  # deterministic


@pytest.mark.parametrize(
    ("text", "cpu", "bytes_"),
    [
        ("500m", 500, 1),
        ("2", 2000, 2),
        ("1.5", 1500, 2),
        ("8Gi", None, 8 * 2**30),
        ("1G", None, 10**9),
        ("64Mi", None, 64 * 2**20),
        ("1e3", None, 1000),
    ],
)
def test_quantities(text: str, cpu: int | None, bytes_: int) -> None:
    if cpu is not None:
        assert quantity.cpu_millis(text) == cpu
    assert quantity.bytes_(text) == bytes_
    with pytest.raises(quantity.QuantityError):
        quantity.parse("12 apples")
