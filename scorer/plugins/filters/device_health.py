"""device-health-filter: no traffic to endpoints whose GPU carries a blocking DRA taint or reports itself unhealthy.

Formula: drop `e` iff some device allocated to its pod (DRA hints, scorer/sources/dra.py) has a taint whose effect
is in `effects` and that the claim does not tolerate, or (with `dropUnhealthy`) is unhealthy: the claim's
`status.devices[].conditions` say Ready=False, or the pod's `allocatedResourcesStatus` says Unhealthy.
Why: `NoSchedule` on a GPU is how the NVIDIA driver reports a fatal XID or a lost GPU (reference/dra.md §2), and
`NoExecute` means the pod is about to be evicted; a replica on such a device answers slowly, wrongly or not at all.
Effect `None` and unknown effects are informational, as the API says. Endpoints without DRA data are kept.
Inputs: `Endpoint.hints` (InferencePool discovery). Parameters: `effects` ([NoSchedule, NoExecute]),
`dropUnhealthy` (true), `failOpen` (false: when every candidate is unhealthy the request fails with 503; true: the
filter is soft and skipped then, so traffic still flows to degraded devices).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from scorer.framework import PluginParams
from scorer.types import CycleState, EndpointState, LLMRequest

Effect = Literal["NoSchedule", "NoExecute"]


def _blocking() -> list[Effect]:
    return ["NoSchedule", "NoExecute"]


class DeviceHealthParams(PluginParams):
    effects: list[Effect] = Field(default_factory=_blocking)
    drop_unhealthy: bool = True
    fail_open: bool = False


class DeviceHealthFilter:
    type_name: ClassVar[str] = "device-health-filter"
    Params = DeviceHealthParams

    def __init__(self, name: str, params: DeviceHealthParams):
        self.name = name
        self.effects = frozenset(params.effects)
        self.drop_unhealthy = params.drop_unhealthy
        self.soft = params.fail_open

    def problems(self, state: EndpointState) -> list[str]:
        """Why this endpoint is dropped (empty: kept)."""
        hints = state.endpoint.hints
        if hints is None:
            return []
        out = [f"{d.id} taint {t}" for d in hints.devices for t in d.taints if t.effect in self.effects]
        if self.drop_unhealthy:
            out += [f"{d.id} unhealthy: {d.health_reason}" for d in hints.devices if d.health == "unhealthy"]
        return out

    def filter(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        return [c for c in candidates if not self.problems(c)]
