"""`plan(snapshot, config, now) -> Plan`: one controller cycle's decision, with no I/O at all.

Why it exists: it is the whole of the controller's judgement in one synchronous function the I/O shell calls once
per cycle, that tests drive with hand-built snapshots and that dry-run reports verbatim. Stages:

1. view: the node population (Ready, matching nodeSelector), VMs per node, migrations in flight (view.py);
2. validation (validate.py): if Prometheus is down, the snapshot stale or malformed, or too few nodes can be
   trusted, return a plan that does nothing and says why (`skipped`, `skip_code`), without even soft-taint
   changes; a node whose own metrics are missing, non-finite, out of range or stale is left out of this cycle's
   population instead (never a source or a target, its taints untouched) and explained as "untrusted";
3. policy: classify the trusted nodes and propose moves (policies/); each move passes the `MigrationBudget`
   (budget.py), which counts every migration in flight, those touching untrusted nodes included;
4. soft taints from the policy's node classes (soft_taints.py).
"""

from __future__ import annotations

from dataclasses import replace

from controller.budget import budget_for
from controller.config import ControllerConfig
from controller.model import ClusterSnapshot, NodeExplanation, Plan
from controller.policies import build_policy
from controller.soft_taints import soft_taint_changes
from controller.validate import NodeVerdict, check_inputs
from controller.view import build_view, matches_selector

__all__ = ["UNTRUSTED", "plan"]

UNTRUSTED = "untrusted"  # the class of a node left out of a cycle because its metrics cannot be trusted


def plan(snapshot: ClusterSnapshot, config: ControllerConfig, now: float) -> Plan:
    """Decide this cycle's migrations and taint changes from `snapshot` as of `now` (Unix seconds)."""
    view = build_view(snapshot, config.node_selector, now)
    verdict = check_inputs(view, config)
    untrusted = tuple(_untrusted(v) for v in verdict.untrusted)
    if not verdict.ok:
        return Plan(config.policy, config.dry_run, nodes=untrusted, skipped=verdict.reason, skip_code=verdict.code)
    if verdict.untrusted:
        left_out = {v.node for v in verdict.untrusted}
        view = replace(view, population=tuple(n for n in view.population if n.name not in left_out))
    budget = budget_for(view, config)
    outcome = build_policy(config).propose(view, budget)
    excluded = tuple(
        NodeExplanation(
            node.name,
            "excluded",
            None,
            None,
            None,
            "NotReady" if not node.ready else "does not match nodeSelector",
        )
        for node in snapshot.nodes
        if not (node.ready and matches_selector(node.labels, config.node_selector))
    )
    return Plan(
        policy=config.policy,
        dry_run=config.dry_run,
        moves=outcome.moves,
        taint_changes=soft_taint_changes(view.nodes, outcome.classes, config.soft_taints),
        refusals=budget.refusals(),
        nodes=outcome.nodes + untrusted + excluded,
        skipped=None if outcome.moves else outcome.idle_reason,
        skip_code=None if outcome.moves else outcome.idle_code,
    )


def _untrusted(verdict: NodeVerdict) -> NodeExplanation:
    return NodeExplanation(verdict.node, UNTRUSTED, None, None, None, verdict.reason, verdict.code)
