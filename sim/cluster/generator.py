"""`--nodes N --vms M`: a generated scenario of identical workers and VMs packed unevenly.

Why it exists: rebalancing needs imbalance to fix. Nodes are 8 cores / 32 GiB; VMs get 1-4 vCPUs and
2-8 GiB; each VM goes to a node drawn with Zipf-like weights (node i weighs 1/(i+1)^skew over a shuffled
order), skipping nodes whose memory requests would no longer fit, so the first nodes get most VMs and their
vCPUs overcommit the cores (KubeVirt requests only vCPUs/10 of a core per vCPU), while the last nodes stay
light. Deterministic for a given seed.
"""

from __future__ import annotations

import random

from sim.cluster.kv_objects import memory_overhead
from sim.cluster.scenario import NodeSpec, Scenario, VmSpec

GIB = 2**30
NODE_CPU, NODE_MEMORY_GIB = 8, 32
ALLOCATABLE_MEMORY = NODE_MEMORY_GIB * GIB - 1536 * 2**20


def generate(nodes: int, vms: int, *, seed: int = 1, skew: float = 1.0, namespace: str = "default") -> Scenario:
    if nodes < 1 or vms < 0:
        raise ValueError("need at least one node and a non-negative number of VMs")
    rng = random.Random(seed)
    node_specs = [NodeSpec(name=f"worker-{i}", cpu=str(NODE_CPU), memory=f"{NODE_MEMORY_GIB}Gi") for i in range(nodes)]
    order = list(range(nodes))
    rng.shuffle(order)
    weights = [1 / (rank + 1) ** skew for rank in range(nodes)]
    used = [0] * nodes
    vm_specs = []
    for j in range(vms):
        cpu = rng.choice((1, 2, 2, 4))
        mem_gib = rng.choice((2, 4, 4, 8))
        need = mem_gib * GIB + memory_overhead(cpu, mem_gib * GIB)
        fits = [rank for rank in range(nodes) if used[order[rank]] + need <= ALLOCATABLE_MEMORY]
        node: str | None = None
        if fits:
            rank = rng.choices(fits, weights=[weights[r] for r in fits])[0]
            used[order[rank]] += need
            node = node_specs[order[rank]].name
        vm_specs.append(
            VmSpec.model_validate(
                {
                    "name": f"vm-{j}",
                    "namespace": namespace,
                    "cpu": cpu,
                    "memory": f"{mem_gib}Gi",
                    "node": node,
                    "labels": {"app": f"vm-{j}"},
                }
            )
        )
    return Scenario.model_validate({"nodes": node_specs, "vms": vm_specs, "load": {"seed": seed}})
