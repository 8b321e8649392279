"""PreferNoSchedule taints that steer the KubeVirt scheduler away from over-utilised nodes, as OpenShift's
soft-tainter sets them.

Why it exists: when the controller does not name a target (the eviction actuator, the descheduler-compatible
policy), the only link between relieving a node and where its VM lands is these taints (ref §5 pain 3). The
semantics are the soft-tainter's (`pkg/softtainter/softtainter.go`, ref §1.5 lines 118-144), same keys, value
"true", effect PreferNoSchedule:

    class        overutilized   appropriate
    over         add            add
    appropriate  remove         add
    under        remove         remove

and when no node is under-utilised, every appropriate node is treated as under (its taints are dropped), so a
cluster that is uniformly busy carries no taint but those of its hot nodes. A change is emitted only when the node
does not already have (or no longer has) the taint, matching addTaint/dropTaint's existence checks. Nodes outside
the population (NotReady, not selected) are left untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.classify import APPROPRIATE, OVER, UNDER
from controller.config import SoftTaintsConfig
from controller.model import NodeState, TaintChange

EFFECT = "PreferNoSchedule"
VALUE = "true"


def soft_taint_changes(
    nodes: Mapping[str, NodeState], classes: Mapping[str, str], config: SoftTaintsConfig
) -> tuple[TaintChange, ...]:
    """The taint additions and removals that bring `nodes` in line with `classes` (node -> under/appropriate/over)."""
    if not config.enabled:
        return ()
    no_under = UNDER not in classes.values()
    wanted = {
        OVER: {config.overutilized_key: True, config.appropriate_key: True},
        APPROPRIATE: {config.overutilized_key: False, config.appropriate_key: True},
        UNDER: {config.overutilized_key: False, config.appropriate_key: False},
    }
    changes = []
    for name, category in classes.items():
        if no_under and category == APPROPRIATE:
            category = UNDER
        node = nodes[name]
        for key, present in wanted[category].items():
            has = any(t.key == key and t.value == VALUE and t.effect == EFFECT for t in node.taints)
            if present and not has:
                changes.append(TaintChange(name, "add", key, VALUE, EFFECT))
            elif has and not present:
                changes.append(TaintChange(name, "remove", key, VALUE, EFFECT))
    return tuple(changes)
