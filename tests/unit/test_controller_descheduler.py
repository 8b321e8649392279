"""`descheduler-compatible`: the profile's choices, its limits and its quirks, case by case (ref §2.3-2.6), in both
profile versions: `main` (the default: evictionLimits.node 2, KubevirtMigrationAware) and `4.21-ga`."""

from __future__ import annotations

import pytest
from controller_builders import NOW, config, in_flight, make_node, make_snapshot, make_vm

from controller.budget import budget_for
from controller.classify import Thresholds
from controller.model import PREFER_NO_EVICTION_ANNOTATION, QoS, Taint, Toleration
from controller.plan import plan
from controller.policies.descheduler_compatible import DeschedulerCompatiblePolicy, eviction_order
from controller.view import build_view

NO_EVICT = {PREFER_NO_EVICTION_ANNOTATION: ""}
GA = {"deschedulerCompatible": {"profileVersion": "4.21-ga"}}  # release-4.21 GA: 1 per node, no cooldown
SCORES = {"u1": 0.0, "u2": 0.0, "u3": 0.0, "o50": 0.5, "o60": 0.6, "o70": 0.7}  # mean 30, high 40


def cluster(vms, scores=SCORES, migrations=(), **node_kw):
    nodes = [make_node(name, score, **node_kw.get(name, {})) for name, score in scores.items()]
    return make_snapshot(nodes, vms, migrations)


def three_vms_each(*nodes, **kw):
    return [make_vm(f"{n}-p{p}", n, priority=p, **kw) for n in nodes for p in (3, 1, 2)]


def moved(result):
    return [(m.vm, m.source, m.target) for m in result.moves]


@pytest.mark.parametrize(
    ("vms", "order"),
    [
        pytest.param(
            [
                make_vm("p5", "n", priority=5),
                make_vm("nil", "n"),
                make_vm("p0", "n", priority=0),
                make_vm("neg", "n", priority=-10),
            ],
            ["nil", "neg", "p0", "p5"],
            id="nil-first-then-ascending-priority",
        ),
        pytest.param(
            [
                make_vm("g", "n", priority=1, qos=QoS.GUARANTEED),
                make_vm("bu", "n", priority=1),
                make_vm("be", "n", priority=1, qos=QoS.BEST_EFFORT),
            ],
            ["be", "bu", "g"],
            id="qos-breaks-priority-ties",
        ),
        pytest.param(
            [make_vm("a", "n", annotations=NO_EVICT), make_vm("b", "n")],
            ["b", "a"],
            id="annotated-last",
        ),
        pytest.param([make_vm("z", "n"), make_vm("a", "n")], ["a", "z"], id="name-breaks-full-ties"),
    ],
)
def test_eviction_order_is_sort_pods_based_on_priority_low_to_high(vms, order):
    assert [vm.name for vm in eviction_order(vms)] == order


def test_4_21_ga_evicts_one_lowest_priority_vm_per_over_utilised_node_hottest_first_without_target():
    result = plan(cluster(three_vms_each("o50", "o60", "o70", "u1")), config(**GA), NOW)
    assert moved(result) == [
        ("default/o70-p1", "o70", None),
        ("default/o60-p1", "o60", None),
        ("default/o50-p1", "o50", None),
    ]
    assert result.moves[0].reason == "LowNodeUtilization: o70 usage 70% > high 40% (mean 30% + 10)"


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({}, id="main-by-default"),
        pytest.param({"deschedulerCompatible": {"profileVersion": "main"}}, id="main-by-name"),
        pytest.param({"deschedulerCompatible": {"profileVersion": "4.21-ga", "evictionLimitsNode": 2}}, id="ga-knob"),
    ],
)
def test_eviction_limits_node_two_evicts_two_per_node(doc):
    result = plan(cluster(three_vms_each("o70")), config(**doc), NOW)
    assert moved(result) == [("default/o70-p1", "o70", None), ("default/o70-p2", "o70", None)]


def test_main_evicts_two_per_node_hottest_first_until_the_cycle_limit():
    result = plan(cluster(three_vms_each("o50", "o60", "o70", "u1")), config(), NOW)
    assert moved(result) == [
        ("default/o70-p1", "o70", None),
        ("default/o70-p2", "o70", None),
        ("default/o60-p1", "o60", None),
        ("default/o60-p2", "o60", None),
        ("default/o50-p1", "o50", None),
    ]
    refusals = dict((r.subject, r.reason) for r in result.refusals)
    assert refusals["default/o50-p2"] == "cluster limit: 0 in flight + 5 planned = maxInFlightTotal 5"


def test_an_explicit_knob_overrides_the_profile_version():
    one_per_node = config(deschedulerCompatible={"evictionLimitsNode": 1})
    assert moved(plan(cluster(three_vms_each("o70")), one_per_node, NOW)) == [("default/o70-p1", "o70", None)]


def test_total_limit_counts_in_flight_migrations_and_stops_everything():
    flights = [in_flight(f"default/x{i}", "u1") for i in range(4)]
    vms = three_vms_each("o50", "o60", "o70") + [make_vm(f"x{i}", "u1") for i in range(4)]
    result = plan(cluster(vms, migrations=flights), config(limits={"maxInFlightPerNode": 5}, **GA), NOW)
    assert moved(result) == [("default/o70-p1", "o70", None)]
    refusals = dict((r.subject, r.reason) for r in result.refusals)
    assert refusals["default/o60-p1"] == "cluster limit: 4 in flight + 1 planned = maxInFlightTotal 5"
    assert "default/o50-p1" not in refusals  # the plugin stopped at the total limit


def test_node_limit_counts_outbound_in_flight_and_moves_on_to_the_next_node():
    vms = [*three_vms_each("o60", "o70"), make_vm("busy1", "o70", priority=9), make_vm("busy2", "o70", priority=9)]
    flights = [in_flight("default/busy1", "o70"), in_flight("default/busy2", "o70")]
    result = plan(cluster(vms, migrations=flights), config(**GA), NOW)
    assert moved(result) == [("default/o60-p1", "o60", None)]
    assert next(n.note for n in result.nodes if n.node == "o70").startswith("node limit: o70 has 2 outbound in flight")


def test_first_candidate_already_migrating_is_a_no_op_in_4_21_and_skipped_with_migration_aware():
    vms = three_vms_each("o70")
    flights = [in_flight("default/o70-p1", "o70")]
    ga = plan(cluster(vms, migrations=flights), config(**GA), NOW)
    assert moved(ga) == []
    assert "already being evacuated" in next(n.note for n in ga.nodes if n.node == "o70")
    ga_aware = config(deschedulerCompatible={"profileVersion": "4.21-ga", "migrationAware": {"enabled": True}})
    assert moved(plan(cluster(vms, migrations=flights), ga_aware, NOW)) == [("default/o70-p2", "o70", None)]
    main = plan(cluster(vms, migrations=flights), config(), NOW)  # in flight 1 + 1 planned = the node limit
    assert moved(main) == [("default/o70-p2", "o70", None)]
    assert ("default/o70-p1", "migration in progress (KubevirtMigrationAware)") in {
        (r.subject, r.reason) for r in main.refusals
    }


def test_migration_aware_cooldown_defers_recently_moved_vms():
    from controller.model import PastMigration

    recent = (PastMigration(NOW - 400, NOW - 300, "u2", "o70"),)
    vms = [make_vm("fresh", "o70", priority=0, history=recent), make_vm("old", "o70", priority=5)]
    one = {"evictionLimitsNode": 1}
    main = plan(cluster(vms), config(deschedulerCompatible=one), NOW)  # the default: KubevirtMigrationAware
    assert moved(main) == [("default/old", "o70", None)]
    assert ("default/fresh", "cooldown: 1 move(s) in 48h, last 300s ago < 900s") in {
        (r.subject, r.reason) for r in main.refusals
    }
    ga = config(deschedulerCompatible={"profileVersion": "4.21-ga"})
    assert moved(plan(cluster(vms), ga, NOW)) == [("default/fresh", "o70", None)]  # 4.21 GA: no cooldown
    ga_off = config(deschedulerCompatible={**one, "migrationAware": {"enabled": False}})
    assert moved(plan(cluster(vms), ga_off, NOW)) == [("default/fresh", "o70", None)]  # the knob alone, too


@pytest.mark.parametrize(
    ("vm_kw", "reason"),
    [
        pytest.param(
            {"annotations": NO_EVICT},
            "annotated descheduler.alpha.kubernetes.io/prefer-no-eviction",
            id="prefer-no-eviction",
        ),
        pytest.param({"priority": 2_000_000_000}, "system-critical priority 2000000000", id="system-critical"),
        pytest.param(
            {"live_migratable": False, "migratable_reason": "HostDevice"},
            "not live-migratable: HostDevice",
            id="not-migratable",
        ),
        pytest.param({"pdb_blocked": True}, "a PodDisruptionBudget allows no disruption", id="pdb"),
        pytest.param({"ns": "openshift"}, "namespace openshift is excluded", id="excluded-namespace"),
        pytest.param(
            {"eviction_strategy": None},
            "an eviction would stop it, not migrate it (evictionStrategy None)",
            id="no-strategy",
        ),
    ],
)
def test_a_refused_vm_is_reported_and_the_next_one_is_evicted(vm_kw, reason):
    first = make_vm("first", "o70", **{"priority": -1, **vm_kw})
    result = plan(cluster([first, make_vm("second", "o70", priority=4)]), config(), NOW)
    assert moved(result) == [("default/second", "o70", None)]
    assert {(r.subject, r.reason) for r in result.refusals} == {(first.key, reason)}


def test_a_vm_must_tolerate_every_taint_of_some_under_utilised_node():
    taints = (Taint("dedicated", "db", "NoSchedule"), Taint("zone", "b", "PreferNoSchedule"))
    under = {name: {"taints": taints} for name in ("u1", "u2", "u3")}
    exact = (Toleration("dedicated", "Equal", "db"), Toleration("zone", "Exists"))
    vms = [
        make_vm("none", "o70", priority=0),
        make_vm("wildcard", "o70", priority=1, tolerations=(Toleration(operator="Exists"),)),  # fewer than taints
        make_vm("both", "o70", priority=2, tolerations=exact),
    ]
    result = plan(cluster(vms, **under), config(), NOW)
    assert moved(result) == [("default/both", "o70", None)]
    assert {r.subject for r in result.refusals} == {"default/none", "default/wildcard"}


@pytest.mark.parametrize(
    ("scores", "doc", "code"),
    [
        pytest.param(
            {"a": 0.45, "b": 0.5, "c": 0.55},
            {"devDeviationThresholds": "Low"},
            "no-underutilized-node",
            id="none-under",
        ),
        pytest.param(SCORES, {"numberOfNodes": 3}, "too-few-underutilized-nodes", id="number-of-nodes"),
        pytest.param({"a": 0.2, "b": 0.2, "c": 0.2}, {}, "all-nodes-underutilized", id="all-under"),
        pytest.param({"a": 0.2, "b": 0.3, "c": 0.35}, {}, "no-overutilized-node", id="none-over"),
    ],
)
def test_balance_stop_conditions(scores, doc, code):
    vms = [make_vm(f"{n}-vm", n) for n in scores]
    result = plan(cluster(vms, scores=scores), config(deschedulerCompatible=doc), NOW)
    assert (result.moves, result.skip_code) == ((), code)


def test_no_room_below_the_truncated_high_threshold_stops_eviction():
    """mean 29 -> high 29 caps at int(29*0.01*100) = 28, below the under nodes' 29: continueEvictionCond fails."""
    scores = {"a": 0.295, "b": 0.295, "c": 0.405, "cordoned": 0.185}  # usage 29, 29, 40, 18
    snapshot = cluster([make_vm("v", "c")], scores=scores, cordoned={"schedulable": False})
    cfg = config()
    policy = DeschedulerCompatiblePolicy(cfg)
    policy.thresholds = Thresholds(0, 0)
    view = build_view(snapshot, cfg.node_selector, NOW)
    outcome = policy.propose(view, budget_for(view, cfg))
    assert (outcome.moves, outcome.idle_code) == ((), "no-room-below-high")
    assert outcome.classes == {"a": "under", "b": "under", "c": "over", "cordoned": "appropriate"}
