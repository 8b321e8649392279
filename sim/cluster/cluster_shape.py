"""A generated cluster described by its shape: node groups, VM flavors, a VM count and/or a memory fill.

Why it exists: a benchmark at production density needs clusters like the ones rebalancers meet (64-128-core nodes
with 512 GiB-1 TiB, VMs of the common instance types, 80-90% of the memory requested, every VM running), written
as a few numbers rather than thousands of VM entries. The same typed spec is read from a scenario file's
`generate:` section and built from `--nodes/--node-cpus/--node-memory-gib/--vms/--memory-fill`
(`shape_options.py`); `expand` turns it into the scenario's `nodes` and `vms` (docs/cluster-twin.md,
"Generated clusters with node shapes").

Memory fill = the VMs' memory requests (guest + KubeVirt's launcher overhead, what the scheduler counts) over the
nodes' allocatable memory (capacity - 1.5 GiB). It is reached within `fill_tolerance` (FILL_TOLERANCE of the
allocatable memory, or one smallest flavor if that is more), every VM is placed (`packing.py`) and no node's memory
requests exceed its allocatable; otherwise ShapeError says so.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.cluster import quantity
from sim.cluster.flavors import GIB, U1_FLAVORS, Flavor, FlavorMixError, draw_flavors
from sim.cluster.packing import Bin, Item, PackingError, pack
from sim.cluster.scenario_objects import RESERVED_CPU_MILLIS, RESERVED_MEMORY

FILL_TOLERANCE = 0.01  # |achieved - memoryFill| <= 1 point of allocatable memory, or one smallest flavor if more
FLAVOR_LABEL = "sim.autonomic.io/flavor"
MAX_NODE_MEMORY = 64 * 2**40
MAX_PACKING_WORK = 50_000_000  # nodes x VMs the packer may try (1,000 x 30,000 is 3e7: seconds)


class ShapeError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _memory(v: Any) -> str:
    try:
        n = quantity.bytes_(v)
    except quantity.QuantityError as exc:
        raise ValueError(str(exc)) from None
    if n <= RESERVED_MEMORY:
        raise ValueError(f"must be more than the 1.5 GiB a node reserves, got {v!r}")
    if n > MAX_NODE_MEMORY:
        raise ValueError(f"must be at most 64Ti, got {v!r}")
    return str(v)


class NodeGroup(_Model):
    """`count` identical workers."""

    count: int = Field(ge=1, le=10_000)
    cpu: int = Field(ge=1, le=4096, description="cores")
    memory: str = Field(description="capacity, a quantity: 512Gi, 1Ti")
    labels: dict[str, str] = Field(default_factory=dict)

    _m = field_validator("memory", mode="before")(_memory)


class FlavorSpec(_Model):
    name: str = Field(min_length=1)
    cpu: int = Field(ge=1, le=1024, description="vCPUs")
    memory: str = Field(description="guest memory, a quantity")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)

    @field_validator("memory", mode="before")
    @classmethod
    def _m(cls, v: Any) -> str:
        try:
            n = quantity.bytes_(v)
        except quantity.QuantityError as exc:
            raise ValueError(str(exc)) from None
        if not 2**20 <= n <= MAX_NODE_MEMORY:
            raise ValueError(f"must be 1Mi-64Ti, got {v!r}")
        return str(v)

    def flavor(self) -> Flavor:
        return Flavor(self.name, self.cpu, quantity.bytes_(self.memory), self.weight)


class ClusterShape(_Model):
    nodes: list[NodeGroup] = Field(min_length=1)
    vms: int | None = Field(None, ge=0, le=1_000_000)
    memory_fill: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, alias="memoryFill")
    flavors: list[FlavorSpec] | None = Field(None, min_length=1)  # None: U1_FLAVORS
    namespace: str = "default"
    seed: int = 1

    @model_validator(mode="after")
    def _count_or_fill(self) -> ClusterShape:
        if self.vms is None and self.memory_fill is None:
            raise ValueError("give vms, memoryFill or both")
        return self

    def flavor_table(self) -> tuple[Flavor, ...]:
        return U1_FLAVORS if self.flavors is None else tuple(f.flavor() for f in self.flavors)


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "generate"


def parse_shape(data: Any, where: str = "generate") -> ClusterShape:
    """The typed shape, or ShapeError with every problem as `<where>.<path>: message`."""
    try:
        return ClusterShape.model_validate(data)
    except ValidationError as exc:
        raise ShapeError([f"{_path(where, tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]) from None


def expand(
    shape: ClusterShape, *, cpu_allocation_ratio: int = 10, fill_label: str = "generate.memoryFill"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(node entries, VM entries) of a scenario, every VM bound to a node; ShapeError (its message starting with
    `fill_label`, the field or flag to change) when the fill cannot be met."""
    nodes: list[dict[str, Any]] = []
    for group in shape.nodes:
        for _ in range(group.count):
            nodes.append({"name": f"worker-{len(nodes)}", "cpu": str(group.cpu), "memory": group.memory})
            if group.labels:
                nodes[-1]["labels"] = dict(group.labels)
    bins = [
        Bin(
            n["name"],
            quantity.cpu_millis(n["cpu"]) - RESERVED_CPU_MILLIS,
            quantity.bytes_(n["memory"]) - RESERVED_MEMORY,
        )
        for n in nodes
    ]
    allocatable = sum(b.memory_bytes for b in bins)
    rng = random.Random(shape.seed)
    target = None if shape.memory_fill is None else shape.memory_fill * allocatable
    table = shape.flavor_table()
    tolerance = fill_tolerance(shape) * allocatable
    try:
        flavors = draw_flavors(table, rng, count=shape.vms, total_request=target, tolerance=tolerance)
    except FlavorMixError as exc:
        with_vms = "" if shape.vms is None else f" with {shape.vms} VMs"
        raise ShapeError(
            [f"{fill_label}: a memory fill of {shape.memory_fill}{with_vms} is infeasible: {exc}"]
        ) from None
    if len(flavors) * len(bins) > MAX_PACKING_WORK:
        raise ShapeError(
            [
                f"{fill_label}: {len(bins)} nodes x {len(flavors)} VMs is too large to generate (at most "
                f"{MAX_PACKING_WORK:,} node-VM pairs)"
            ]
        )
    items = [Item(f"vm-{j}", -(-f.cpu * 1000 // cpu_allocation_ratio), f.request_bytes) for j, f in enumerate(flavors)]
    try:
        placed = pack(bins, items, rng)
    except PackingError as exc:
        fill = sum(i.memory_bytes for i in items) / allocatable
        raise ShapeError(
            [f"{fill_label}: infeasible: a fill of {fill:.3f} leaves VMs unscheduled: {exc}; lower the fill"]
        ) from None
    vms = [
        {
            "name": f"vm-{j}",
            "namespace": shape.namespace,
            "cpu": f.cpu,
            "memory": quantity.format_bytes(f.memory_bytes),
            "node": placed[f"vm-{j}"],
            "labels": {"app": f"vm-{j}", FLAVOR_LABEL: f.name},
        }
        for j, f in enumerate(flavors)
    ]
    return nodes, vms


def fill_tolerance(shape: ClusterShape) -> float:
    """How far (a fraction of allocatable memory) the achieved fill may be from `memoryFill`."""
    allocatable = sum(g.count * (quantity.bytes_(g.memory) - RESERVED_MEMORY) for g in shape.nodes)
    return max(FILL_TOLERANCE, min(f.request_bytes for f in shape.flavor_table()) / allocatable)


def describe(nodes: list[Any], vms: list[Any], cpu_allocation_ratio: int = 10) -> dict[str, Any]:
    """What a scenario's cluster looks like, for reports: node shapes, VM flavors, memory fill, unplaced VMs.

    Takes the scenario's NodeSpec and VmSpec lists (any objects with the same attributes)."""
    shapes: dict[str, int] = {}
    allocatable = 0
    for n in nodes:
        mem = quantity.bytes_(n.memory)
        key = f"{quantity.cpu_millis(n.cpu) / 1000:g} cores / {mem / GIB:g} GiB"
        shapes[key] = shapes.get(key, 0) + 1
        allocatable += max(mem - RESERVED_MEMORY, 0)
    flavors: dict[str, int] = {}
    requested = 0
    for vm in vms:
        mem = quantity.bytes_(vm.memory)
        key = vm.labels.get(FLAVOR_LABEL) or f"{vm.cpu} vCPU / {mem / GIB:g} GiB"
        flavors[key] = flavors.get(key, 0) + 1
        requested += Flavor("", vm.cpu, mem).request_bytes
    return {
        "nodes": len(nodes),
        "vms": len(vms),
        "node_shapes": shapes,
        "flavors": dict(sorted(flavors.items(), key=lambda kv: -kv[1])),
        "memory_fill": round(requested / allocatable, 4) if allocatable else None,
        "unplaced_vms": sum(1 for vm in vms if vm.node is None),
    }
