"""The node-shape flags shared by `autonomic cluster-sim` and `autonomic bench rebalance`.

Why it exists: both commands generate clusters from the same few numbers and must validate them the same way, with
errors that name the flag (`--memory-fill: Input should be less than or equal to 1`), not the spec's field. The
flags build a `ClusterShape` (cluster_shape.py) of one node group; a mix of node shapes or other flavors goes in a
scenario file's `generate:` section. Standard library only at import: `autonomic bench` builds every benchmark's
parser, so the spec and the scenario (pydantic) load only when a shape is built.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.cluster.cluster_shape import ClusterShape
    from sim.cluster.scenario import Scenario

DEFAULT_NODE_CPUS, DEFAULT_NODE_MEMORY_GIB = 64, 512
_FLAGS = {
    ("nodes", 0, "count"): "--nodes",
    ("nodes", 0, "cpu"): "--node-cpus",
    ("nodes", 0, "memory"): "--node-memory-gib",
    ("vms",): "--vms",
    ("memoryFill",): "--memory-fill",
    ("seed",): "--seed",
}


def add_shape_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "node shapes (any of these makes --nodes generate a production-like cluster: every VM placed, memory "
        "requests never above allocatable; docs/cluster-twin.md)"
    )
    g.add_argument("--node-cpus", type=int, default=None, help=f"cores per node (default {DEFAULT_NODE_CPUS})")
    g.add_argument(
        "--node-memory-gib", type=float, default=None, help=f"GiB per node (default {DEFAULT_NODE_MEMORY_GIB})"
    )
    g.add_argument(
        "--memory-fill",
        type=float,
        default=None,
        help="fraction of the cluster's allocatable memory the VMs request, 0 < F <= 1 (e.g. 0.85); VMs are "
        "KubeVirt's u1 instance types; with --vms the mix is tilted to reach F with exactly that many VMs",
    )


def wants_shapes(args: argparse.Namespace) -> bool:
    return any(getattr(args, a, None) is not None for a in ("node_cpus", "node_memory_gib", "memory_fill"))


MAX_NODE_MEMORY_GIB = 65536  # 64 TiB


def _memory(gib: float) -> str:
    return f"{round(gib * 1024)}Mi"


def shape_from_args(args: argparse.Namespace) -> ClusterShape:
    """The one-group shape the flags describe; ShapeError naming the flags."""
    from pydantic import ValidationError

    from sim.cluster.cluster_shape import ClusterShape, ShapeError

    if args.nodes is None:
        raise ShapeError(["--node-cpus, --node-memory-gib and --memory-fill need --nodes"])
    gib = args.node_memory_gib if args.node_memory_gib is not None else DEFAULT_NODE_MEMORY_GIB
    if not 1.5 < gib <= MAX_NODE_MEMORY_GIB:  # also refuses NaN
        raise ShapeError(
            [
                f"--node-memory-gib: must be more than 1.5 (what a node reserves) and at most "
                f"{MAX_NODE_MEMORY_GIB}, got {gib}"
            ]
        )
    data: dict[str, Any] = {
        "nodes": [
            {
                "count": args.nodes,
                "cpu": args.node_cpus if args.node_cpus is not None else DEFAULT_NODE_CPUS,
                "memory": _memory(gib),
            }
        ],
        "vms": args.vms,
        "memoryFill": args.memory_fill,
        "seed": args.seed,
    }
    if args.vms is None and args.memory_fill is None:
        data["memoryFill"] = 0.85
    try:
        return ClusterShape.model_validate(data)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            loc = tuple(e["loc"])
            flag = next((f for k, f in _FLAGS.items() if loc[: len(k)] == k), "--nodes/--vms/--memory-fill")
            errors.append(f"{flag}: {e['msg']}")
        raise ShapeError(errors) from None


def shaped_scenario(shape: ClusterShape) -> Scenario:
    """The scenario of a flag-built shape (trace assignment seeded like the cluster); ShapeError naming the flags."""
    from sim.cluster.cluster_shape import expand
    from sim.cluster.scenario import Scenario

    nodes, vms = expand(shape, fill_label="--memory-fill" if shape.memory_fill is not None else "--vms")
    data = {"nodes": nodes, "vms": vms, "load": {"seed": shape.seed}, "generate": shape.model_dump(by_alias=True)}
    return Scenario.model_validate(data)
