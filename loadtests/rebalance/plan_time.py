"""How long one `plan()` cycle takes for each policy at 100 nodes / 3,000 VMs and 1,000 nodes / 30,000 VMs.

Why it exists: the controller plans once per cycle over the whole cluster, and the issue asks for planning time
per cycle at these sizes (BENCHMARKS.md). Reported as p50 and max over several cycles, each on a fresh synthetic
snapshot (built outside the timing), and as a ratio to a baseline measured in the same run on the same snapshots:
building the view and validating the inputs, the part every cycle pays before any policy runs.

Synthetic cluster: 64-core / 512 GiB nodes, 30 VMs per node of 1-8 vCPUs (requesting 1/10 core each, KubeVirt's
default allocation ratio) using 10-60% of them, 4 GiB per vCPU, a few
hot nodes (1%, at least 3) loaded to ~95% CPU; node PSI = utilisation^6; the score is the recording rule's shape
(3 x positive distance from the mean, capped at 1); 5% of the VMs migrated in the last two days, 1% not
live-migratable, three migrations in flight.

    python -m loadtests.rebalance.plan_time [--cycles 5] [--sizes 100,1000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

from controller.config import ControllerConfig, parse_config
from controller.model import ClusterSnapshot, MigrationState, NodePressure, NodeState, PastMigration, Plan, VMState
from controller.plan import plan
from controller.validate import check_inputs
from controller.view import build_view

T = TypeVar("T")
GIB = 2.0**30
NOW = 1_800_000_000.0
VMS_PER_NODE = 30
CORES = 64.0
CPU_ALLOCATION_RATIO = 10.0  # KubeVirt's default: a vCPU requests 1/10 of a core


def synthetic_snapshot(n_nodes: int, seed: int) -> ClusterSnapshot:
    rng = random.Random(seed)
    names = [f"worker-{i:04d}" for i in range(n_nodes)]
    hot = set(rng.sample(names, max(3, n_nodes // 100)))
    vms: list[VMState] = []
    usage: dict[str, float] = {}
    for name in names:
        node_vms = []
        for j in range(VMS_PER_NODE):
            vcpus = float(rng.choice((1, 1, 2, 2, 4, 8)))
            history: tuple[PastMigration, ...] = ()
            if rng.random() < 0.05:
                ended = NOW - rng.uniform(60, 172_800)
                history = (PastMigration(ended - 40, ended, rng.choice(names), name),)
            node_vms.append(
                VMState(
                    "tenant-" + str(j % 7),
                    f"{name}-vm{j:02d}",
                    name,
                    vcpus / CPU_ALLOCATION_RATIO,
                    vcpus * 4 * GIB,
                    cpu_usage=vcpus * rng.uniform(0.1, 0.6),
                    memory_size=vcpus * 4 * GIB,
                    dirty_rate=rng.uniform(0, 50e6),
                    live_migratable=rng.random() > 0.01,
                    priority=rng.choice((None, 0, 100)),
                    history=history,
                )
            )
        used = sum(vm.cpu_usage or 0.0 for vm in node_vms)
        if name in hot:  # scale this node's VMs up to ~95% of its cores
            factor = 0.95 * CORES / used
            node_vms = [_scaled(vm, factor) for vm in node_vms]
            used *= factor
        usage[name] = min(1.0, used / CORES)
        vms.extend(node_vms)
    psi = {name: u**6 for name, u in usage.items()}
    mean_u, mean_p = statistics.fmean(usage.values()), statistics.fmean(psi.values())
    nodes = []
    for name in names:
        dev = (max(0.0, usage[name] - mean_u) ** 2 + max(0.0, psi[name] - mean_p) ** 2) ** 0.5
        pressure = NodePressure(
            NOW - 15, score=min(1.0, 3 * dev), psi_cpu=psi[name], psi_memory=0.0, cpu_utilization=usage[name]
        )
        nodes.append(NodeState(name, CORES, 512 * GIB, {"kubevirt.io/schedulable": "true"}, (), True, True, pressure))
    flights = tuple(MigrationState(vm.key, vm.node, None, "Running", NOW - 30) for vm in rng.sample(vms, 3))
    return ClusterSnapshot(tuple(nodes), tuple(vms), flights, NOW - 2)


def _scaled(vm: VMState, factor: float) -> VMState:
    from dataclasses import replace

    return replace(vm, cpu_usage=(vm.cpu_usage or 0.0) * factor)


def _timed(fn: Callable[[ClusterSnapshot], T], snapshots: list[ClusterSnapshot]) -> tuple[list[float], list[T]]:
    times, results = [], []
    for snapshot in snapshots:
        gc.collect()  # garbage left by building the snapshots is not the planner's
        start = time.perf_counter()
        results.append(fn(snapshot))
        times.append(time.perf_counter() - start)
    return times, results


def _planner(config: ControllerConfig) -> Callable[[ClusterSnapshot], Plan]:
    return lambda snapshot: plan(snapshot, config, NOW)


def measure(n_nodes: int, cycles: int) -> list[tuple[str, list[float], str]]:
    snapshots = [synthetic_snapshot(n_nodes, seed) for seed in range(cycles)]
    configs: dict[str, ControllerConfig] = {
        "descheduler-compatible": parse_config({}),  # the operator's main profile, the default
        "descheduler-compatible-ga": parse_config({"deschedulerCompatible": {"profileVersion": "4.21-ga"}}),
        "psi-relief": parse_config({"policy": "psi-relief", "actuator": "migration"}),
    }
    baseline_config = configs["descheduler-compatible"]

    def validate_only(snapshot: ClusterSnapshot) -> str:
        view = build_view(snapshot, baseline_config.node_selector, NOW)
        return check_inputs(view, baseline_config).code or "ok"

    for cfg in configs.values():  # imports and first-call costs stay out of the timing
        plan(snapshots[0], cfg, NOW)
    rows = []
    times, verdicts = _timed(validate_only, snapshots)
    rows.append(("baseline: view + validation", times, "inputs " + ", ".join(sorted(set(verdicts)))))
    for name, cfg in configs.items():
        times, plans = _timed(_planner(cfg), snapshots)
        rows.append((name, times, f"{statistics.median(len(p.moves) for p in plans):g} moves per cycle"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--sizes", default="100,1000", help="node counts; 30 VMs per node")
    args = parser.parse_args(argv)
    print("| nodes | VMs | stage | p50 ms | max ms | p50 / baseline | outcome |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n_nodes in (int(s) for s in args.sizes.split(",")):
        rows = measure(n_nodes, args.cycles)
        base = statistics.median(rows[0][1])
        for stage, times, outcome in rows:
            p50, worst = statistics.median(times), max(times)
            print(
                f"| {n_nodes:,} | {n_nodes * VMS_PER_NODE:,} | {stage} | {p50 * 1e3:.1f} | {worst * 1e3:.1f} | "
                f"{p50 / base:.2f} | {outcome} |"
            )


if __name__ == "__main__":
    main()
