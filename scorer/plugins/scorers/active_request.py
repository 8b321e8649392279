"""active-request-scorer: prefer the endpoints with the fewest requests this picker has in flight to them.

Formula: `n(e) = max(0, in_flight(e) - idleThreshold)`; `score(e) = (max n - n(e)) / (max n - min n)` over the
candidates, 1.0 for everyone when equal. Unlike scraped metrics, the in-flight count is exact and current for traffic
through this picker (it rises at pick and falls when the response ends), so it works without any scraping
(llm-d's "payload-agnostic" profile).
Inputs: the picker's `in_flight`. Parameters: `idleThreshold` (0: endpoints at or below it count as idle).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from scorer.framework import PluginParams
from scorer.plugins.common import inverse_min_max
from scorer.types import CycleState, EndpointState, LLMRequest


class ActiveRequestParams(PluginParams):
    idle_threshold: int = Field(0, ge=0)


class ActiveRequestScorer:
    type_name: ClassVar[str] = "active-request-scorer"
    Params = ActiveRequestParams

    def __init__(self, name: str, params: ActiveRequestParams):
        self.name = name
        self.idle_threshold = params.idle_threshold

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        return inverse_min_max({c.address: float(max(0, c.in_flight - self.idle_threshold)) for c in candidates})
