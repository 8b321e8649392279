"""psi-relief's chains and swaps (controller/policies/chains.py): acting on a memory-packed cluster where no single
move fits, without overcommitting memory at any step, within the budget, cooldowns and return blocks."""

from __future__ import annotations

from collections import Counter

import pytest
from controller_builders import NOW, CpuCluster, config, in_flight, make_node, make_snapshot, make_vm, psi_config

from controller.model import MigrationState, Move, PastMigration
from controller.plan import plan
from controller.tracker import HELD, MigrationTracker, Outcome, Requested

HOT = ("hot", 64, [("big", 5.0, 16), ("m1", 3.0, 16), ("m2", 3.0, 16), ("m3", 3.0, 16)])  # psi 0.45, memory full
A = ("a", 64, [("small", 0.5, 8), ("x1", 1.0, 16), ("x2", 1.0, 16), ("x3", 1.0, 16)])  # 8 GiB free
B = ("b", 64, [("y1", 1.0, 16), ("y2", 1.0, 16), ("y3", 1.0, 16), ("y4", 1.0, 16)])  # full
C = ("c", 64, [("z1", 1.0, 16), ("z2", 1.0, 16), ("z3", 1.0, 16), ("z4", 0.5, 8)])  # 8 GiB free
C_TIGHT = ("c", 64, [("z1", 1.0, 16), ("z2", 1.0, 16), ("z3", 1.0, 16), ("z4", 0.5, 12)])  # 4 GiB free
HOT_ROOMY = ("hot", 64, [("big", 5.0, 16), ("m1", 4.5, 16), ("m2", 4.5, 16)])  # 16 GiB free
A_FULL = ("a", 64, [("x1", 1.0, 16), ("x2", 1.0, 16), ("x3", 1.0, 16), ("x4", 1.0, 16)])


def packed(*specs, history=None):
    """(node, memory GiB, [(vm, cpu usage, memory GiB)]) -> 16-core nodes (psi = u**6) and their 1-core VMs."""
    nodes, vms = [], []
    for name, mem, vm_specs in specs:
        u = sum(x for _, x, _ in vm_specs) / 16
        nodes.append(make_node(name, cpu=16, mem_gib=mem, psi_cpu=min(1.0, u) ** 6, util_cpu=min(1.0, u)))
        for vm, usage, gib in vm_specs:
            past = (history or {}).get(f"{name}-{vm}", ())
            vms.append(make_vm(f"{name}-{vm}", name, cpu=1, usage=usage, mem_gib=gib, history=past))
    return nodes, vms


def steps(result):
    return [
        (m.vm.removeprefix("default/"), m.source, m.target, (m.after or "").removeprefix("default/"))
        for m in result.moves
    ]


def note(result, node="hot"):
    return next(n.note for n in result.nodes if n.node == node)


RECENT = (PastMigration(NOW - 200, NOW - 100, "elsewhere", "a"),)


@pytest.mark.parametrize(
    ("specs", "extra", "history", "expected", "says"),
    [
        pytest.param(
            (HOT, A, B, C),
            {},
            None,
            [("a-small", "a", "c", ""), ("hot-big", "hot", "a", "a-small")],
            "chain planned: default/a-small a->c, then default/hot-big hot->a",
            id="no-single-move-fits-a-chain-makes-room",
        ),
        pytest.param(
            (HOT_ROOMY, A_FULL, B),
            {},
            None,
            [("a-x1", "a", "hot", ""), ("hot-big", "hot", "a", "a-x1")],
            "swap planned: default/a-x1 a->hot, then default/hot-big hot->a",
            id="only-a-swap-works",
        ),
        pytest.param(
            (HOT, A, B, C),
            {},
            {"a-small": RECENT},
            [("c-z4", "c", "a", ""), ("hot-big", "hot", "c", "c-z4")],
            "chain planned: default/c-z4 c->a, then default/hot-big hot->c",
            id="a-vm-in-cooldown-is-never-used-the-other-chain-is",
        ),
        pytest.param(
            (HOT, A, B, C_TIGHT),
            {},
            None,
            [],
            "no chain or swap makes room",
            id="refused-step-one-would-overcommit-the-third-node",
        ),
        pytest.param(
            (HOT, A, B, C),
            {"limits": {"maxMovesPerCycle": 1}},
            None,
            [],
            "a chain or swap needs 2 moves, the budget has room for 1",
            id="refused-cycle-limit",
        ),
    ],
)
def test_chains_and_swaps(specs, extra, history, expected, says):
    nodes, vms = packed(*specs, history=history)
    cfg = config(policy="psi-relief", actuator="migration", psiRelief={"dimensions": ["cpu"]}, **extra)
    result = plan(make_snapshot(nodes, vms), cfg, NOW)
    assert steps(result) == expected
    assert says in note(result)
    for move in result.moves:
        assert move.reason.startswith(("psi-relief chain:", "psi-relief swap:"))
        assert (move.target_after is not None and move.target_after <= 0.20) or move.target == "hot"
    if expected:
        assert result.moves[1].source_after <= 0.15


def test_in_flight_limits_refuse_a_chain_that_would_exceed_them():
    nodes, vms = packed(HOT, A, B, C)
    flights = [in_flight(f"default/b-y{i}", "b") for i in range(1, 5)]  # 4 of maxInFlightTotal 5 in flight
    result = plan(make_snapshot(nodes, vms, flights), psi_config(), NOW)
    assert result.moves == () and "the budget has room for 1" in note(result)


def test_the_per_node_limit_of_the_target_is_respected():
    nodes, vms = packed(HOT, A, B, C)
    flights = [in_flight("default/a-x1", "a"), in_flight("default/a-x2", "a")]  # a may send nothing more
    result = plan(make_snapshot(nodes, vms, flights), psi_config(), NOW)
    assert all(m.source != "a" for m in result.moves)


def test_chains_are_deterministic_whatever_the_order_of_the_vms():
    nodes, vms = packed(HOT, A, B, C)
    first = plan(make_snapshot(nodes, vms), psi_config(), NOW)
    assert first == plan(make_snapshot(nodes, vms), psi_config(), NOW)
    assert steps(plan(make_snapshot(nodes, vms[::-1]), psi_config(), NOW)) == steps(first)


def test_while_a_chain_runs_its_held_second_move_counts_and_nothing_else_is_started_for_the_hot_node():
    nodes, vms = packed(HOT, A, B, C)
    flights = [
        MigrationState("default/a-small", "a", "c", "Running", NOW - 5),
        MigrationState("default/hot-big", "hot", "a", HELD, NOW - 5),
    ]
    result = plan(make_snapshot(nodes, vms, flights), psi_config(), NOW)
    assert result.moves == () and note(result).startswith("moves in flight bring it to 0.")


def test_no_ping_pong_after_a_chain():
    """A memory-packed CpuCluster (256 GiB nodes): the chain relieves the hot node, and over 40 cycles no VM moves
    twice and none goes back."""
    gib = 64
    vms = [make_vm(f"hot-{i}", "hot", cpu=1, usage=u, mem_gib=gib) for i, u in enumerate((5.0, 3.0, 3.0, 3.0))]
    vms += [make_vm(f"a-{i}", "a", cpu=1, usage=1.0, mem_gib=gib) for i in range(3)]
    vms += [make_vm("a-small", "a", cpu=1, usage=0.5, mem_gib=32)]
    vms += [make_vm(f"b-{i}", "b", cpu=1, usage=1.0, mem_gib=gib) for i in range(4)]
    vms += [make_vm(f"c-{i}", "c", cpu=1, usage=1.0, mem_gib=gib) for i in range(3)]
    vms += [make_vm("c-pinned", "c", cpu=1, usage=0.5, mem_gib=32, live_migratable=False)]
    cluster, now = CpuCluster({n: 16.0 for n in ("hot", "a", "b", "c")}, vms), NOW
    for _ in range(40):
        cluster.apply(plan(cluster.snapshot(now), psi_config(), now), now)
        now += 60.0
    moved = [(vm, src, dst) for _, vm, src, dst in cluster.moves]
    assert moved == [("default/a-small", "a", "c"), ("default/hot-0", "hot", "a")]
    assert max(Counter(vm for vm, _, _ in moved).values()) == 1
    assert all(cluster.psi(n) <= 0.3 for n in cluster.cores)


def test_the_tracker_holds_a_second_move_until_the_first_succeeded():
    tracker = MigrationTracker(expiry_s=600)
    second = Move("default/v", "hot", "a", "chain", after="default/w")
    tracker.record(Requested("default/w", "a", "c", NOW, confirmed=True))
    tracker.hold(second, NOW)
    assert [(m.vm, m.phase) for m in tracker.pending()] == [("default/w", "Requested"), ("default/v", HELD)]
    assert tracker.release([], NOW + 10) == ([], [])
    assert tracker.release([Outcome("default/w", "a", "succeeded", None)], NOW + 20) == ([second], [])
    tracker.hold(second, NOW)
    ready, dropped = tracker.release([Outcome("default/w", "a", "failed", None)], NOW + 20)
    assert ready == [] and dropped == [(second, "default/w, which it waited for, failed")]
    tracker.hold(Move("default/v", "hot", "a", "chain", after="default/gone"), NOW)  # never started, or expired
    assert tracker.release([], NOW + 30)[1][0][1] == "default/gone, which it waited for, is not followed"
