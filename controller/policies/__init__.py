"""Planning policies: given the validated view and the budget, propose moves and classify nodes.

Why it exists: the controller ships two interchangeable policies selected by `policy:` in the config, the
`descheduler-compatible` baseline and our `psi-relief`; `plan()` only knows this protocol. A policy proposes,
the `MigrationBudget` it receives admits (policies call `budget.admit` for every move, so limits and safety can
never be skipped), and `plan()` turns the node classes into soft taints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.budget import MigrationBudget
from controller.config import ControllerConfig
from controller.model import Move, NodeExplanation
from controller.view import ClusterView


@dataclass(frozen=True)
class PolicyOutcome:
    moves: tuple[Move, ...] = ()
    nodes: tuple[NodeExplanation, ...] = ()
    classes: Mapping[str, str] = field(default_factory=dict)  # population node -> under | appropriate | over
    idle_code: str | None = None  # why the policy found nothing to do (short label) ...
    idle_reason: str | None = None  # ... and in words


class Policy(Protocol):
    name: str

    def propose(self, view: ClusterView, budget: MigrationBudget) -> PolicyOutcome: ...


def build_policy(config: ControllerConfig) -> Policy:
    """The policy named by `config.policy`."""
    from controller.policies.descheduler_compatible import DeschedulerCompatiblePolicy
    from controller.policies.psi_relief import PsiReliefPolicy

    if config.policy == "psi-relief":
        return PsiReliefPolicy(config)
    return DeschedulerCompatiblePolicy(config)
