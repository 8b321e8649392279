"""The rebalancing figures (node-minutes over, peak/p95, migrations, ping-pong, GiB) and the MILP lower bound on moves,
on hand-made tables."""

from __future__ import annotations

import math

import pytest

from loadtests.rebalance.bound import BoundNode, BoundVm, LowerBound, cpu_room, lower_bound, min_moves
from loadtests.rebalance.figures import (
    MigrationRecord,
    cooldown_violations,
    migration_figures,
    pressure_figures,
    ratio,
    steady_figures,
)
from sim.cluster.psi import PsiParams, ThreadGroup, cpu_contention

GIB = 2**30
NAN = math.nan


@pytest.mark.parametrize(
    ("series", "step", "expected"),
    [
        pytest.param({}, 60.0, (0.0, 0.0, 0.0), id="no-nodes"),
        pytest.param({"a": [0.1, 0.2], "b": [0.0, 0.0]}, 60.0, (0.0, 0.2, None), id="never-over"),
        # a over for 2 samples, b for 1; 30 model s per sample: 3 x 0.5 min
        pytest.param({"a": [0.5, 0.4, 0.1], "b": [0.0, 0.35, 0.0]}, 30.0, (1.5, 0.5, None), id="two-nodes-over"),
        pytest.param({"a": [0.3, 0.31]}, 60.0, (1.0, 0.31, None), id="threshold-is-exclusive"),
        pytest.param({"a": [NAN, 0.9], "b": [0.2, NAN]}, 60.0, (1.0, 0.9, None), id="missing-samples-not-over"),
    ],
)
def test_pressure_figures(series, step, expected):
    minutes, peak, p95 = expected
    got = pressure_figures(series, step, threshold=0.3)
    assert got["node_minutes_over"] == pytest.approx(minutes)
    assert got["peak_pressure"] == pytest.approx(peak)
    if p95 is not None:
        assert got["p95_pressure"] == pytest.approx(p95)
    assert got["p95_pressure"] <= got["peak_pressure"]


def test_p95_follows_the_hottest_node_over_time():
    hot = [0.5] * 10 + [0.1] * 90  # the hot spot lasts a tenth of the run
    cold = [0.05] * 100
    got = pressure_figures({"hot": hot, "cold": cold}, 60.0, 0.3)
    assert got["p95_pressure"] == pytest.approx(0.5)
    assert got["node_minutes_over"] == pytest.approx(10.0)
    shorter = pressure_figures({"hot": [0.5] * 4 + [0.1] * 96, "cold": cold}, 60.0, 0.3)
    assert shorter["p95_pressure"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("series", "step", "error"),
    [
        pytest.param({"a": [0.1], "b": [0.1, 0.2]}, 60.0, "different lengths", id="ragged"),
        pytest.param({"a": [0.1]}, 0.0, "step_model_s", id="zero-step"),
    ],
)
def test_pressure_figures_refuse_bad_input(series, step, error):
    with pytest.raises(ValueError, match=error):
        pressure_figures(series, step, 0.3)


def m(vmi, phase="Succeeded", gib=4):
    return MigrationRecord(vmi, phase, "n0", "n1", gib * GIB)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param([], (0, 0, 0, 0.0, 0), id="none"),
        pytest.param([m("a"), m("b", gib=8)], (2, 0, 0, 12.0, 0), id="two-vms-once"),
        pytest.param([m("a"), m("a"), m("a"), m("b")], (4, 0, 1, 16.0, 0), id="a-moved-three-times"),
        pytest.param([m("a", "Failed"), m("a")], (1, 1, 0, 4.0, 0), id="failed-then-succeeded-is-one-move"),
        pytest.param([m("a", "Running"), m("b", "Pending")], (0, 0, 0, 0.0, 2), id="unfinished"),
    ],
)
def test_migration_figures(records, expected):
    got = migration_figures(records)
    assert (
        got["migrations"],
        got["failed_migrations"],
        got["pingpong_vms"],
        got["gib_moved"],
        got["unfinished_migrations"],
    ) == expected


@pytest.mark.parametrize(("value", "base", "expected"), [(2.0, 4.0, 0.5), (3.0, 0.0, None), (0.0, 5.0, 0.0)])
def test_ratio(value, base, expected):
    assert ratio(value, base) == expected


def test_cpu_room_is_where_the_twin_model_crosses_the_threshold():
    room = cpu_room(8.0, 0.2, 0.3)
    assert 8.0 < room < 16.0

    def some(demand: float) -> float:
        return cpu_contention(8.0, [ThreadGroup.cores(demand), ThreadGroup.cores(0.2)], PsiParams()).some

    assert some(room) <= 0.3 < some(room + 0.01)
    assert cpu_room(8.0, 0.0, 0.3) > room  # the host's own work takes room
    assert cpu_room(8.0, 0.0, 0.0) == 0.0  # wake-up wait makes any load count as some pressure


def nodes(*rooms: float, memory_gib: float = 32) -> list[BoundNode]:
    return [BoundNode(f"n{i}", 8.0, memory_gib * GIB) for i in range(len(rooms))]


def vm(key, node, cpu, gib=4, movable=True):
    return BoundVm(key, node, cpu, gib * GIB, movable)


@pytest.mark.parametrize(
    ("vms", "rooms", "memory_gib", "expected"),
    [
        pytest.param([vm("a", "n0", 4), vm("b", "n1", 4)], (8, 8), 32, 0, id="already-fine"),
        # n0 holds 12 cores with room 9: one 4-core VM must leave (a 2-core one is not enough)
        pytest.param(
            [vm("a", "n0", 4), vm("b", "n0", 4), vm("c", "n0", 2), vm("d", "n0", 2)], (9, 9), 32, 1, id="one-big-move"
        ),
        # only small VMs: two must leave
        pytest.param([vm(k, "n0", 2) for k in "abcdef"], (9, 9), 32, 2, id="two-small-moves"),
        # the big VM cannot move: the two small ones must
        pytest.param(
            [vm("big", "n0", 8, movable=False), vm("a", "n0", 1), vm("b", "n0", 1)], (8, 8), 32, 2, id="pinned"
        ),
        # the target has cores but no memory left for the 4-core VM: two 2-core VMs move instead
        pytest.param(
            [
                vm("a", "n0", 4, gib=30),
                *(vm(k, "n0", 2, gib=1) for k in "bcd"),
                vm("pinned", "n1", 0, gib=4, movable=False),
            ],
            (7, 9),
            32,
            2,
            id="memory-binds",
        ),
        pytest.param([vm("a", "n0", 10, movable=False)], (8, 8), 32, None, id="infeasible"),
    ],
)
def test_min_moves(vms, rooms, memory_gib, expected):
    ns = nodes(*rooms, memory_gib=memory_gib)
    assert min_moves(ns, vms, 0.3, rooms={n.name: r for n, r in zip(ns, rooms, strict=True)}) == expected


def test_min_moves_is_none_when_the_instance_is_too_large():
    ns = nodes(9, 9, 9)
    vms = [vm(f"v{i}", "n0", 1, gib=1) for i in range(20)]
    rooms = {n.name: 9.0 for n in ns}
    assert min_moves(ns, vms, 0.3, rooms=rooms, max_variables=59) is None
    assert min_moves(ns, vms, 0.3, rooms=rooms, max_variables=60) == 11  # 20 one-core VMs, 9 stay


def test_lower_bound_is_exact_when_the_milp_is_proven_and_relaxed_above_the_size_cap():
    ns = nodes(9, 9, 9)
    vms = [vm(f"v{i}", "n0", 1, gib=1) for i in range(20)]
    rooms = {n.name: 9.0 for n in ns}
    assert lower_bound(ns, vms, 0.3, rooms=rooms, max_variables=60) == LowerBound(11, "exact")
    relaxed = lower_bound(ns, vms, 0.3, rooms=rooms, max_variables=59)
    assert relaxed.kind == "LP relaxation" and relaxed.value == 11  # here the relaxation is tight


def test_lower_bound_never_exceeds_the_exact_optimum():
    """A fractional VM can split across nodes: the relaxation may be looser, never above the integer optimum."""
    ns = nodes(2.5, 2.5, 2.5, 2.5)
    vms = [vm(f"v{i}", "n0", 1.5, gib=1) for i in range(4)]  # two 1.5-core VMs never share a 2.5-core node
    rooms = {n.name: 2.5 for n in ns}
    exact = lower_bound(ns, vms, 0.3, rooms=rooms)
    relaxed = lower_bound(ns, vms, 0.3, rooms=rooms, max_variables=1)
    assert exact.kind == "exact" and relaxed.kind == "LP relaxation"
    assert exact.value == 3  # one VM per node
    assert relaxed.value is not None and 0 < relaxed.value <= exact.value


def test_lower_bound_of_an_infeasible_instance_is_none():
    ns = nodes(8, 8)
    assert lower_bound(ns, [vm("a", "n0", 10, movable=False)], 0.3, rooms={"n0": 8.0, "n1": 8.0}) == LowerBound(
        None, "none"
    )


def moved(vmi: str, start_min: float, end_min: float, phase: str = "Succeeded") -> MigrationRecord:
    return MigrationRecord(vmi, phase, "a", "b", GIB, start_min * 60, end_min * 60)


@pytest.mark.parametrize(
    ("moves", "expected"),
    [
        pytest.param([], 0, id="none"),
        pytest.param([moved("x", 0, 1), moved("y", 2, 3)], 0, id="different-vms"),
        # base 15 min from the first move's end (1 min): a move at 10 min is inside, at 16 min outside
        pytest.param([moved("x", 0, 1), moved("x", 10, 11)], 1, id="inside-15-min"),
        pytest.param([moved("x", 0, 1), moved("x", 16, 17)], 0, id="after-15-min"),
        # a 20-minute migration: its own duration is the base
        pytest.param([moved("x", 0, 20), moved("x", 35, 36)], 1, id="long-migration-sets-the-base"),
        # the third move: 2 moves in 48 h, so 30 min after the second's end (17): 40 is inside, 48 outside
        pytest.param([moved("x", 0, 1), moved("x", 16, 17), moved("x", 40, 41)], 1, id="doubles"),
        pytest.param([moved("x", 0, 1), moved("x", 16, 17), moved("x", 48, 49)], 0, id="doubled-and-waited"),
        pytest.param([moved("x", 0, 1, "Failed"), moved("x", 2, 3)], 0, id="failed-not-counted"),
    ],
)
def test_cooldown_violations(moves, expected):
    assert cooldown_violations(moves) == expected


def test_evictions_per_vm_day_count_the_steady_part_only():
    # a 25-hour run from t=0: the first hour is left out, 24 h of steady part; 3 migrations begin in it
    moves = [moved("a", 30, 31), moved("b", 61, 62), moved("c", 600, 601), moved("d", 1400, 1401, "Failed")]
    got = steady_figures(moves, vm_count=10, start_s=0.0, end_s=25 * 3600.0)
    assert got["evictions_per_vm_day"] == pytest.approx(3 / 10 / 1.0)
    assert got["cooldown_violations"] == 0
    short = steady_figures(moves, vm_count=10, start_s=0.0, end_s=3600.0)
    assert short["evictions_per_vm_day"] is None  # no steady part in a 1-hour run
