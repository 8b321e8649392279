"""`plan()` end to end, and the soft taints it derives from the node classes (the soft-tainter's table, ref §1.5)."""

from __future__ import annotations

import math

import pytest
from controller_builders import NOW, config, in_flight, make_node, make_snapshot, make_vm, psi_config

from controller.config import SoftTaintsConfig
from controller.model import Taint, TaintChange
from controller.plan import plan
from controller.soft_taints import soft_taint_changes

OVER_KEY = "nodeutilization.descheduler.openshift.io/overutilized"
APPR_KEY = "nodeutilization.descheduler.openshift.io/appropriate"
OVER_TAINT = Taint(OVER_KEY, "true", "PreferNoSchedule")
APPR_TAINT = Taint(APPR_KEY, "true", "PreferNoSchedule")


def changes(classes, taints=None):
    nodes = {name: make_node(name, 0.0, taints=(taints or {}).get(name, ())) for name in classes}
    return {(c.node, c.action, c.key) for c in soft_taint_changes(nodes, classes, SoftTaintsConfig())}


@pytest.mark.parametrize(
    ("classes", "taints", "expected"),
    [
        pytest.param(
            {"o": "over", "a": "appropriate", "u": "under"},
            {},
            {("o", "add", OVER_KEY), ("o", "add", APPR_KEY), ("a", "add", APPR_KEY)},
            id="fresh-cluster",
        ),
        pytest.param(
            {"o": "over", "a": "appropriate", "u": "under"},
            {"o": (OVER_TAINT, APPR_TAINT), "a": (APPR_TAINT,)},
            set(),
            id="already-in-place",
        ),
        pytest.param(
            {"was-over": "appropriate", "was-appr": "under", "u": "under"},
            {"was-over": (OVER_TAINT, APPR_TAINT), "was-appr": (APPR_TAINT,)},
            {("was-over", "remove", OVER_KEY), ("was-appr", "remove", APPR_KEY)},
            id="recovered-nodes-lose-taints",
        ),
        pytest.param(
            {"o": "over", "a": "appropriate", "b": "appropriate"},
            {"a": (APPR_TAINT,)},
            {("o", "add", OVER_KEY), ("o", "add", APPR_KEY), ("a", "remove", APPR_KEY)},
            id="no-under-means-appropriate-is-under",
        ),
        pytest.param(
            {"u": "under"},
            {"u": (Taint(OVER_KEY, "true", "NoSchedule"), Taint(APPR_KEY, "other", "PreferNoSchedule"))},
            set(),
            id="only-our-exact-taints-are-touched",
        ),
    ],
)
def test_soft_taints_follow_the_soft_tainters_table(classes, taints, expected):
    assert changes(classes, taints) == expected


def test_disabled_soft_taints_change_nothing():
    nodes = {"o": make_node("o", 0.0)}
    assert soft_taint_changes(nodes, {"o": "over"}, SoftTaintsConfig(enabled=False)) == ()


def hot_cluster():
    nodes = [make_node(f"n{i}", 0.0, psi_cpu=0.0, util_cpu=0.1) for i in range(3)]
    nodes.append(make_node("hot", 0.6, psi_cpu=0.6, util_cpu=0.95))
    vms = [make_vm(f"v{i}", "hot", cpu=4, usage=4.0) for i in range(4)] + [make_vm("w", "n0", usage=3.0)]
    return make_snapshot(nodes, vms)


@pytest.mark.parametrize(
    "cfg",
    [config(dryRun=True), psi_config(), config(policy="psi-relief", dryRun=True)],
    ids=["descheduler-dry-run", "psi-relief", "psi-relief-dry-run"],
)
def test_plan_carries_policy_moves_taints_and_explanations(cfg):
    result = plan(hot_cluster(), cfg, NOW)
    assert (result.policy, result.dry_run) == (cfg.policy, cfg.dry_run)
    assert result.moves and all(m.source == "hot" for m in result.moves)
    assert result.skipped is None and result.skip_code is None
    assert {TaintChange("hot", "add", OVER_KEY), TaintChange("hot", "add", APPR_KEY)} <= set(result.taint_changes)
    explained = {n.node: n.classification for n in result.nodes}
    assert explained["hot"] == "over" and set(explained) == {"n0", "n1", "n2", "hot"}


def test_dry_run_plans_exactly_what_a_real_run_would():
    snapshot, doc = hot_cluster(), {"policy": "psi-relief", "actuator": "migration"}
    real, dry = plan(snapshot, config(**doc), NOW), plan(snapshot, config(**doc, dryRun=True), NOW)
    assert (real.moves, real.taint_changes, real.refusals) == (dry.moves, dry.taint_changes, dry.refusals)
    assert (real.dry_run, dry.dry_run) == (False, True)


def two_hot_nodes(bad: str | None = None, fault: str = "", migrations=()):
    """n0, n1 cold; hot0, hot1 hot; `bad`'s metrics broken by `fault`."""
    spec = {"n0": (0.0, 0.1), "n1": (0.0, 0.1), "hot0": (0.6, 0.95), "hot1": (0.6, 0.95)}
    nodes = []
    for name, (psi, util) in spec.items():
        kw: dict = {"psi_cpu": psi, "util_cpu": util}
        if name == bad:
            kw = {
                "stale": {**kw, "age": 95},
                "nan": {**kw, "psi_cpu": math.nan},
                "out-of-range": {**kw, "psi_cpu": 60.0},
                "missing": {"pressure": False},
            }[fault]
        nodes.append(make_node(name, psi, **kw))
    vms = [make_vm(f"{h}-v{i}", h, cpu=4, usage=4.0) for h in ("hot0", "hot1") for i in range(4)]
    return make_snapshot(nodes, [*vms, make_vm("w", "n0", usage=3.0)], migrations)


FAULTS = {
    "stale": ("metrics-stale", "metrics stale: last sample 95s old > 60s"),
    "nan": ("metrics-invalid", "metrics invalid: psi_cpu is nan"),
    "out-of-range": ("metrics-out-of-range", "metrics out of range: psi_cpu 60 outside [0, 1]"),
    "missing": ("metrics-missing", "metrics missing: absent from the query results"),
}


@pytest.mark.parametrize("bad", ["hot0", "n0"], ids=["hot-node-untrusted", "cold-node-untrusted"])
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("cfg", [psi_config(), config()], ids=["psi-relief", "descheduler-compatible"])
def test_an_untrusted_node_is_left_out_and_the_others_are_still_relieved(cfg, fault, bad):
    result = plan(two_hot_nodes(bad, fault), cfg, NOW)
    code, reason = FAULTS[fault]
    assert result.skip_code is None and result.moves
    assert [(n.node, n.classification, n.code, n.note) for n in result.nodes if n.node == bad] == [
        (bad, "untrusted", code, reason)
    ]
    hot = {"hot0", "hot1"} - {bad}
    assert {m.source for m in result.moves} <= hot and hot & {m.source for m in result.moves}
    assert all(bad not in (m.source, m.target) for m in result.moves)  # never a source, never a target
    assert all(change.node != bad for change in result.taint_changes)  # its taints untouched


def test_in_flight_migrations_of_an_untrusted_node_still_count_against_the_budget():
    flights = (in_flight("default/hot0-v0", "hot0", "n1"),)
    cfg = psi_config()
    limited = config(**{**cfg.model_dump(by_alias=True), "limits": {"maxInFlightTotal": 1, "maxInFlightPerNode": 1}})
    result = plan(two_hot_nodes("hot0", "stale", flights), limited, NOW)
    assert result.moves == () and result.skip_code == "no-admissible-move"
    assert plan(two_hot_nodes("hot0", "stale"), limited, NOW).moves  # without the flight, hot1 gets its move
