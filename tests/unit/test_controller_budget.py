"""`MigrationBudget`: every refusal has a reason, limits count in-flight migrations, cooldowns apply (the rule
itself: test_controller_cooldown.py)."""

from __future__ import annotations

import pytest
from controller_builders import NOW, config, in_flight, make_node, make_snapshot, make_vm

from controller.budget import ADMITTED, MigrationBudget, Refused, budget_for
from controller.cooldown import CooldownRule
from controller.model import PREFER_NO_EVICTION_ANNOTATION, Move, PastMigration
from controller.view import build_view

NODES = [make_node(f"n{i}", 0.1) for i in range(4)]


def budget(vms, migrations=(), cooldown=None, **doc):
    cfg = config(**doc)
    view = build_view(make_snapshot(NODES, vms, migrations), cfg.node_selector, NOW)
    return MigrationBudget(view, cfg, cooldown)


def move(vm, source="n0", target=None):
    return Move(f"default/{vm}", source, target, "test")


def history(*ended_ago, duration=60.0):
    return tuple(PastMigration(NOW - ago - duration, NOW - ago, "n1", "n0") for ago in ended_ago)


@pytest.mark.parametrize(
    ("vm_kw", "doc", "reason"),
    [
        pytest.param(
            {"live_migratable": False, "migratable_reason": "DisksNotLiveMigratable"},
            {},
            "not live-migratable: DisksNotLiveMigratable",
            id="not-migratable",
        ),
        pytest.param({"live_migratable": False}, {}, "not live-migratable: LiveMigratable=False", id="no-reason"),
        pytest.param(
            {"host_devices": True}, {}, "has host devices (passthrough): pinned to its node", id="host-devices"
        ),
        pytest.param({"dra_claims": True}, {}, "has DRA resource claims: pinned to its node", id="dra"),
        pytest.param({"pdb_blocked": True}, {}, "a PodDisruptionBudget allows no disruption", id="pdb"),
        pytest.param(
            {"annotations": {PREFER_NO_EVICTION_ANNOTATION: "true"}},
            {},
            "annotated descheduler.alpha.kubernetes.io/prefer-no-eviction",
            id="prefer-no-eviction",
        ),
        pytest.param({"priority": 2_000_000_000}, {}, "priority 2000000000 >= protected 2000000000", id="critical"),
        pytest.param(
            {"priority": 1000},
            {"limits": {"protectedPriority": 1000}},
            "priority 1000 >= protected 1000",
            id="configured-protection",
        ),
        pytest.param({"ns": "kube-system"}, {}, "namespace kube-system is excluded", id="excluded-namespace"),
        pytest.param(
            {"eviction_strategy": "External"},
            {},
            "an eviction would stop it, not migrate it (evictionStrategy External)",
            id="external-strategy",
        ),
    ],
)
def test_unsafe_vms_are_refused_with_their_reason(vm_kw, doc, reason):
    vm = make_vm("vm", "n0", **vm_kw)
    b = budget([vm], **doc)
    assert b.admit(Move(vm.key, "n0", None, "test")) == Refused(reason, "vm")
    assert [(r.subject, r.reason) for r in b.refusals()] == [(vm.key, reason)]


def test_prefer_no_eviction_is_ignored_under_the_preferred_evictor_policy():
    vm = make_vm("vm", "n0", annotations={PREFER_NO_EVICTION_ANNOTATION: ""})
    assert budget([vm], deschedulerCompatible={"evictorNoEvictionPolicy": "Preferred"}).admit(move("vm")) is ADMITTED


def test_the_migration_actuator_may_move_vms_without_an_eviction_strategy():
    assert budget([make_vm("vm", "n0", eviction_strategy=None)], actuator="migration").admit(move("vm")) is ADMITTED


def test_a_migrating_vm_is_never_started_twice():
    b = budget([make_vm("vm", "n0")], [in_flight("default/vm", "n0", "n2", "Scheduling")])
    assert b.admit(move("vm")) == Refused("already migrating from n0 (phase Scheduling)", "vm")


def test_finished_migrations_do_not_count():
    b = budget([make_vm("vm", "n0")], [in_flight("default/vm", "n0", "n2", "Succeeded")])
    assert b.admit(move("vm")) is ADMITTED


@pytest.mark.parametrize(
    ("in_flight_sources", "planned", "limits", "expected"),
    [
        pytest.param(
            [],
            ["n0", "n0"],
            {},
            Refused("node limit: n0 has 0 outbound in flight + 2 planned = maxInFlightPerNode 2", "node"),
            id="node-limit-from-planned",
        ),
        pytest.param(
            ["n0"],
            ["n0"],
            {},
            Refused("node limit: n0 has 1 outbound in flight + 1 planned = maxInFlightPerNode 2", "node"),
            id="node-limit-counts-in-flight",
        ),
        pytest.param(
            ["n1", "n1", "n2", "n2"],
            ["n3"],
            {},
            Refused("cluster limit: 4 in flight + 1 planned = maxInFlightTotal 5", "cluster"),
            id="cluster-limit",
        ),
        pytest.param(
            [],
            ["n1", "n2"],
            {"maxMovesPerCycle": 2},
            Refused("cycle limit: maxMovesPerCycle 2 reached", "cluster"),
            id="cycle-limit",
        ),
        pytest.param(
            ["n0", "n0", "n1", "n1"],
            ["n2"],
            {},
            Refused("cluster limit: 4 in flight + 1 planned = maxInFlightTotal 5", "cluster"),
            id="total-checked-first",
        ),
        pytest.param(["n1"], ["n0"], {}, ADMITTED, id="room-left"),
    ],
)
def test_limits_count_in_flight_and_planned_moves(in_flight_sources, planned, limits, expected):
    flights = [in_flight(f"default/f{i}", src) for i, src in enumerate(in_flight_sources)]
    vms = [make_vm(f"f{i}", src) for i, src in enumerate(in_flight_sources)]
    vms += [make_vm(f"p{i}", src) for i, src in enumerate(planned)] + [make_vm("vm", "n0")]
    b = budget(vms, flights, limits=limits)
    for i, src in enumerate(planned):
        assert b.admit(move(f"p{i}", src)) is ADMITTED
    assert b.admit(move("vm", "n0")) == expected


def test_remaining_room_reflects_every_limit():
    flights = [in_flight("default/f0", "n0")]
    b = budget([make_vm("f0", "n0"), make_vm("a", "n1")], flights)
    assert (b.remaining_total(), b.remaining_for("n0"), b.remaining_for("n1")) == (4, 1, 2)
    b.admit(move("a", "n1"))
    assert (b.remaining_total(), b.remaining_for("n1")) == (3, 1)


def test_an_unknown_vm_is_refused():
    assert budget([]).admit(move("ghost")) == Refused("not in the cluster snapshot", "vm")


def test_a_move_onto_its_own_source_is_refused():
    assert budget([make_vm("vm", "n0")]).admit(move("vm", "n0", "n0")) == Refused("target n0 is the source", "vm")


RULE = CooldownRule(base=900, growth=2, maximum=21_600, window=172_800)


def test_cooldown_blocks_until_it_has_elapsed():
    recent = make_vm("vm", "n0", history=history(5000, 100))
    b = budget([recent], cooldown=RULE)
    assert b.admit(move("vm")) == Refused("cooldown: 2 move(s) in 48h, last 100s ago < 1800s", "vm")
    later = build_view(make_snapshot(NODES, [recent]), {"kubevirt.io/schedulable": "true"}, NOW + 1800)
    assert MigrationBudget(later, config(), RULE).admit(move("vm")) is ADMITTED


def test_each_policy_gets_its_own_cooldown():
    view = build_view(make_snapshot(NODES, []), {"kubevirt.io/schedulable": "true"}, NOW)
    # the default baseline (profile main): KubevirtMigrationAware's 15 min, x2, 6 h cap, 48 h window, failures count
    assert budget_for(view, config()).cooldown == CooldownRule(900, 2, 21_600, 172_800, count_failed=True)
    ga = config(deschedulerCompatible={"profileVersion": "4.21-ga"})
    assert budget_for(view, ga).cooldown is None  # 4.21 GA has none
    tuned = config(deschedulerCompatible={"profileVersion": "4.21-ga", "migrationAware": {"enabled": True}})
    assert budget_for(view, tuned).cooldown == CooldownRule(900, 2, 21_600, 172_800, count_failed=True)
    relief = budget_for(view, config(policy="psi-relief", psiRelief={"vmCooldown": {"growthFactor": 3}})).cooldown
    assert relief == CooldownRule(900, 3, 21_600, 172_800)
