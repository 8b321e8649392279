"""Generated clusters with node shapes: flavors, packing, memory fill, infeasible fills, the flags' errors."""

from __future__ import annotations

import argparse
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sim.cluster import quantity
from sim.cluster.cluster_shape import FLAVOR_LABEL, ShapeError, describe, expand, fill_tolerance, parse_shape
from sim.cluster.flavors import GIB, U1_FLAVORS
from sim.cluster.packing import Bin, Item, PackingError, pack
from sim.cluster.scenario import ScenarioError, parse_scenario
from sim.cluster.scenario_objects import RESERVED_MEMORY
from sim.cluster.shape_options import shape_from_args, shaped_scenario


def _group(count: int, cpu: int, memory: str) -> dict[str, object]:
    return {"count": count, "cpu": cpu, "memory": memory}


FEASIBLE = [
    # (id, node groups, vms, memoryFill)
    ("20x600 at 0.85", [_group(20, 64, "512Gi")], 600, 0.85),
    ("fill only", [_group(10, 64, "512Gi")], None, 0.85),
    ("count only", [_group(4, 64, "512Gi")], 50, None),
    ("mixed shapes", [_group(6, 64, "512Gi"), _group(4, 128, "1Ti")], None, 0.9),
    ("mixed shapes with count", [_group(3, 64, "512Gi"), _group(2, 128, "1Ti")], 300, 0.8),
    ("tight 0.95", [_group(8, 64, "512Gi")], None, 0.95),
    ("tight with count", [_group(8, 64, "512Gi")], 250, 0.97),
    ("small nodes", [_group(6, 16, "64Gi")], None, 0.8),
]


@pytest.mark.parametrize(("groups", "vms", "fill"), [c[1:] for c in FEASIBLE], ids=[c[0] for c in FEASIBLE])
def test_every_vm_is_placed_without_memory_overcommit_at_the_fill(
    groups: list[dict[str, object]], vms: int | None, fill: float | None
) -> None:
    shape = parse_shape({"nodes": groups, "vms": vms, "memoryFill": fill})
    nodes, entries = expand(shape)
    assert len(nodes) == sum(int(str(g["count"])) for g in groups)
    if vms is not None:
        assert len(entries) == vms
    allocatable = {n["name"]: quantity.bytes_(n["memory"]) - RESERVED_MEMORY for n in nodes}
    requested = dict.fromkeys(allocatable, 0)
    by_name = {f.name: f for f in U1_FLAVORS}
    for vm in entries:
        assert vm["node"] in allocatable  # every VM placed
        flavor = by_name[vm["labels"][FLAVOR_LABEL]]
        assert (vm["cpu"], quantity.bytes_(vm["memory"])) == (flavor.cpu, flavor.memory_bytes)
        requested[vm["node"]] += flavor.request_bytes
    assert all(requested[n] <= allocatable[n] for n in allocatable)  # memory never overcommitted
    achieved = sum(requested.values()) / sum(allocatable.values())
    if fill is not None:
        assert abs(achieved - fill) <= fill_tolerance(shape)
    scenario = parse_scenario({"generate": {"nodes": groups, "vms": vms, "memoryFill": fill}})
    summary = describe(scenario.nodes, scenario.vms)
    assert summary["unplaced_vms"] == 0 and summary["memory_fill"] == pytest.approx(achieved, abs=1e-4)


INFEASIBLE = [
    # (id, node groups, vms, memoryFill, words in the error)
    ("fill 1.0 cannot pack", [_group(3, 8, "16Gi")], None, 1.0, "infeasible"),
    ("too few VMs for the fill", [_group(2, 64, "512Gi")], 10, 0.85, "86.8 GiB each"),
    ("too many VMs for the fill", [_group(2, 64, "512Gi")], 1000, 0.1, "infeasible"),
    ("VM larger than any node", [_group(4, 8, "32Gi")], 4, 0.99, "infeasible"),
]


@pytest.mark.parametrize(
    ("groups", "vms", "fill", "words"), [c[1:] for c in INFEASIBLE], ids=[c[0] for c in INFEASIBLE]
)
def test_an_infeasible_fill_is_refused_naming_the_field(
    groups: list[dict[str, object]], vms: int | None, fill: float, words: str
) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario({"generate": {"nodes": groups, "vms": vms, "memoryFill": fill}})
    assert exc.value.errors[0].startswith("generate.memoryFill:") and words in str(exc.value)


INVALID = [
    ({"nodes": [], "memoryFill": 0.8}, "generate.nodes:"),
    ({"nodes": [_group(1, 64, "512Gi")]}, "give vms, memoryFill or both"),
    ({"nodes": [_group(1, 64, "lots")], "vms": 1}, "generate.nodes[0].memory:"),
    ({"nodes": [_group(1, 64, "1Gi")], "vms": 1}, "generate.nodes[0].memory: Value error, must be more than"),
    ({"nodes": [_group(0, 64, "512Gi")], "vms": 1}, "generate.nodes[0].count:"),
    ({"nodes": [_group(1, 64, "512Gi")], "memoryFill": 1.2}, "generate.memoryFill:"),
    ({"nodes": [_group(1, 64, "512Gi")], "memoryFill": float("nan")}, "generate.memoryFill:"),
    ({"nodes": [_group(1, 64, "512Gi")], "vms": 1, "flavors": [{"name": "x", "cpu": 0, "memory": "1Gi"}]}, "cpu"),
    ({"nodes": [_group(1, 64, "512Gi")], "vms": 1, "colour": "red"}, "generate.colour:"),
]


@pytest.mark.parametrize(("data", "words"), INVALID)
def test_invalid_shapes_are_reported_with_their_path(data: dict[str, object], words: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario({"generate": data})
    assert words in str(exc.value)


def test_generate_cannot_be_mixed_with_listed_nodes() -> None:
    with pytest.raises(ScenarioError, match="generate: cannot be combined"):
        parse_scenario({"generate": {"nodes": [_group(1, 64, "512Gi")], "vms": 1}, "nodes": [{"name": "w"}]})


def test_default_flavors_are_the_u1_instance_types_from_1_to_16_vcpus() -> None:
    assert U1_FLAVORS[0].name == "u1.small" and U1_FLAVORS[-1].name == "u1.4xlarge"
    assert min(f.cpu for f in U1_FLAVORS) == 1 and max(f.cpu for f in U1_FLAVORS) == 16
    assert min(f.memory_bytes for f in U1_FLAVORS) == 2 * GIB and max(f.memory_bytes for f in U1_FLAVORS) == 64 * GIB


def test_custom_flavors_are_used() -> None:
    flavors = [{"name": "big", "cpu": 8, "memory": "32Gi"}, {"name": "tiny", "cpu": 1, "memory": "2Gi", "weight": 3}]
    s = parse_scenario({"generate": {"nodes": [_group(2, 64, "512Gi")], "memoryFill": 0.5, "flavors": flavors}})
    assert {vm.labels[FLAVOR_LABEL] for vm in s.vms} == {"big", "tiny"}


def test_same_seed_same_cluster_other_seed_another() -> None:
    data = {"nodes": [_group(5, 64, "512Gi")], "vms": 150, "memoryFill": 0.85}
    a, b = expand(parse_shape(data)), expand(parse_shape(data))
    c = expand(parse_shape({**data, "seed": 2}))
    assert a == b and a != c


def test_pack_places_largest_first_when_creation_order_strands_a_vm() -> None:
    bins = [Bin("a", 10_000, 10), Bin("b", 10_000, 10)]
    items = [Item("s1", 1, 5), Item("s2", 1, 5), Item("big", 1, 10)]  # in order: s1->a, s2->b, big fits nowhere
    placed = pack(bins, items, random.Random(1))
    assert set(placed) == {"s1", "s2", "big"}
    assert placed["s1"] == placed["s2"] != placed["big"]


def test_pack_says_how_many_fit_nowhere() -> None:
    with pytest.raises(PackingError) as exc:
        pack([Bin("a", 10_000, 10)], [Item("x", 1, 6), Item("y", 1, 6)], random.Random(1))
    assert exc.value.unplaced == 1 and "1 of 2 VMs" in str(exc.value)


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "nodes": 4,
        "vms": None,
        "seed": 1,
        "node_cpus": None,
        "node_memory_gib": None,
        "memory_fill": None,
    }
    return argparse.Namespace(**{**base, **kw})


FLAG_ERRORS = [
    ({"memory_fill": 1.5}, "--memory-fill:"),
    ({"memory_fill": 0.0}, "--memory-fill:"),
    ({"nodes": 0, "node_cpus": 8}, "--nodes:"),
    ({"nodes": None, "node_cpus": 8}, "need --nodes"),
    ({"node_cpus": 0}, "--node-cpus:"),
    ({"node_memory_gib": -1.0}, "--node-memory-gib:"),
    ({"node_memory_gib": 1.0}, "--node-memory-gib:"),
    ({"node_memory_gib": 1e308}, "--node-memory-gib:"),
    ({"vms": -1, "node_cpus": 8}, "--vms:"),
]


@pytest.mark.parametrize(("kw", "words"), FLAG_ERRORS)
def test_flag_errors_name_the_flag(kw: dict[str, object], words: str) -> None:
    with pytest.raises(ShapeError) as exc:
        shape_from_args(_args(**kw))
    assert words in str(exc.value)


def test_flags_default_to_64_cores_512_gib_at_085() -> None:
    s = shaped_scenario(shape_from_args(_args(node_cpus=64)))
    summary = describe(s.nodes, s.vms)
    assert summary["node_shapes"] == {"64 cores / 512 GiB": 4}
    assert summary["memory_fill"] == pytest.approx(0.85, abs=0.01) and summary["unplaced_vms"] == 0


def test_an_infeasible_fill_from_flags_names_the_flag() -> None:
    with pytest.raises(ShapeError, match=r"^--memory-fill: a memory fill of 0\.85 with 10 VMs is infeasible"):
        shaped_scenario(shape_from_args(_args(vms=10, memory_fill=0.85)))


# property-based: the parser of `generate:` only ever answers a shape or a ShapeError, and a shape it accepts
# expands to a cluster that keeps the invariants, or is refused with an error naming the field

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(), st.text(max_size=8))
_memory = st.one_of(st.sampled_from(["512Gi", "1Ti", "64Gi", "2Gi", "1Gi", "x", "", "-1Gi", "1e3Gi"]), _scalars)
_groups = st.lists(
    st.fixed_dictionaries(
        {"count": st.one_of(st.integers(-1, 12), _scalars), "cpu": st.one_of(st.integers(-1, 256), _scalars)},
        optional={"memory": _memory, "labels": st.dictionaries(st.text(max_size=4), st.text(max_size=4))},
    ),
    max_size=3,
)
_shapes = st.fixed_dictionaries(
    {},
    optional={
        "nodes": st.one_of(_groups, _scalars),
        "vms": st.one_of(st.integers(-1, 400), _scalars),
        "memoryFill": st.one_of(st.floats(-0.5, 1.5), _scalars),
        "seed": st.integers(0, 3),
        "bogus": _scalars,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(_shapes, _scalars, st.lists(_scalars, max_size=2)))
def test_property_parser_answers_a_shape_or_shape_error(data: object) -> None:
    try:
        shape = parse_shape(data)
    except ShapeError as exc:
        assert exc.errors and all(e.startswith("generate") for e in exc.errors)
        return
    assert shape.nodes and (shape.vms is not None or shape.memory_fill is not None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.lists(
        st.tuples(st.integers(1, 6), st.sampled_from([8, 16, 64, 128]), st.sampled_from(["32Gi", "128Gi", "512Gi"])),
        min_size=1,
        max_size=3,
    ),
    vms=st.one_of(st.none(), st.integers(0, 300)),
    fill=st.one_of(st.none(), st.floats(0.05, 1.0)),
    seed=st.integers(0, 5),
)
def test_property_expand_keeps_the_invariants_or_refuses(
    groups: list[tuple[int, int, str]], vms: int | None, fill: float | None, seed: int
) -> None:
    if vms is None and fill is None:
        fill = 0.5
    shape = parse_shape({"nodes": [_group(*g) for g in groups], "vms": vms, "memoryFill": fill, "seed": seed})
    try:
        nodes, entries = expand(shape)
    except ShapeError as exc:
        assert exc.errors[0].startswith("generate.memoryFill:")
        return
    allocatable = {n["name"]: quantity.bytes_(n["memory"]) - RESERVED_MEMORY for n in nodes}
    used = dict.fromkeys(allocatable, 0)
    by_name = {f.name: f for f in U1_FLAVORS}
    for vm in entries:
        used[vm["node"]] += by_name[vm["labels"][FLAVOR_LABEL]].request_bytes
    assert all(used[n] <= allocatable[n] for n in used)
    if vms is not None:
        assert len(entries) == vms
    if fill is not None:
        assert abs(sum(used.values()) / sum(allocatable.values()) - fill) <= fill_tolerance(shape) + 1e-9


@settings(max_examples=200, deadline=None)
@example(nodes=2, vms=None, cpus=None, gib=1e308, fill=None)  # once: OverflowError
@example(nodes=2, vms=None, cpus=None, gib=1e-300, fill=None)
@example(nodes=2, vms=None, cpus=None, gib=float("nan"), fill=0.5)
@given(
    nodes=st.one_of(st.none(), st.integers(-3, 20_000)),
    vms=st.one_of(st.none(), st.integers(-3, 2_000_000)),
    cpus=st.one_of(st.none(), st.integers(-3, 5000)),
    gib=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    fill=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_property_flags_give_a_valid_shape_or_an_error_naming_a_flag(
    nodes: int | None, vms: int | None, cpus: int | None, gib: float | None, fill: float | None
) -> None:
    args = _args(nodes=nodes, vms=vms, node_cpus=cpus, node_memory_gib=gib, memory_fill=fill)
    try:
        shape = shape_from_args(args)
    except ShapeError as exc:
        assert exc.errors and all(e.startswith("--") for e in exc.errors)
        return
    assert shape.nodes[0].count == nodes and (shape.memory_fill is None or 0 < shape.memory_fill <= 1)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="0123456789x,X -٣", max_size=20))
def test_property_twin_scale_sizes_parse_or_name_the_flag(text: str) -> None:
    from loadtests.rebalance.twin_scale import parse_sizes

    try:
        sizes = parse_sizes(text)
    except ValueError as exc:
        assert str(exc).startswith("--sizes:")
        return
    assert sizes and all(1 <= n <= 10_000 and 1 <= v <= 1_000_000 for n, v in sizes)
