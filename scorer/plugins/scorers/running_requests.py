"""running-requests-scorer: prefer the endpoints with the fewest requests in their running batch.

Formula: `r(e) = running(e)` (`vllm:num_requests_running`); `score(e) = (max r - r(e)) / (max r - min r)` over the
candidates, 1.0 for everyone when equal. A bigger batch makes every decode step (and every prefill chunk) slower.
Inputs: scraped `running`. Parameters: none.
"""

from __future__ import annotations

from typing import ClassVar

from scorer.framework import NoParams
from scorer.plugins.common import inverse_min_max, metrics_of
from scorer.types import CycleState, EndpointState, LLMRequest


class RunningRequestsScorer:
    type_name: ClassVar[str] = "running-requests-scorer"
    Params = NoParams

    def __init__(self, name: str, params: NoParams):
        self.name = name

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        return inverse_min_max({c.address: float(metrics_of(c).running) for c in candidates})
