"""saturation-filter: keep traffic off replicas that are already overloaded, and shed sheddable work when all are.

Formula (GIE v1.0's saturation detector, per endpoint): an endpoint has headroom iff
`queue <= queueThreshold` and `kv_usage <= kvThreshold`, where `queue = waiting` (+ the requests this picker sent
since the last scrape, when `countUnscraped`). A deep queue alone, or a full KV cache alone, is saturation.
Keeps the endpoints with headroom. When none has headroom the pool is saturated:
- a request with `priority < 0` (sheddable) is refused: `NoEndpointError(shed=True)`, the shell answers 429;
- any other request keeps every candidate: the filter is *soft*, it returns nothing and the scheduler skips it.

Inputs: scraped `waiting`, `kv_usage`; the picker's `dispatched_since_scrape`; the request's priority.
Parameters: `queueThreshold` (5), `kvThreshold` (0.8), `countUnscraped` (true).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from scorer.framework import PluginParams
from scorer.plugins.common import metrics_of, queue_length
from scorer.types import CycleState, EndpointState, LLMRequest, NoEndpointError


class SaturationParams(PluginParams):
    queue_threshold: int = Field(5, ge=0)
    kv_threshold: float = Field(0.8, ge=0.0, le=1.0)
    count_unscraped: bool = True


class SaturationFilter:
    type_name: ClassVar[str] = "saturation-filter"
    Params = SaturationParams
    soft: ClassVar[bool] = True

    def __init__(self, name: str, params: SaturationParams):
        self.name = name
        self.params = params

    def has_headroom(self, state: EndpointState) -> bool:
        p = self.params
        return queue_length(state, p.count_unscraped) <= p.queue_threshold and metrics_of(state).kv_usage <= (
            p.kv_threshold
        )

    def filter(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        kept = [c for c in candidates if self.has_headroom(c)]
        if not kept and candidates and request.priority < 0:
            raise NoEndpointError(
                f"all {len(candidates)} endpoints saturated: sheddable request (priority {request.priority}) dropped",
                shed=True,
            )
        return kept
