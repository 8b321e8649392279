"""queue-scorer: prefer the endpoints with the shortest queue of waiting requests, relative to the others.

Formula (GIE): `q(e) = waiting(e) + dispatched_since_scrape(e)`; `score(e) = (max q - q(e)) / (max q - min q)` over
the candidates, 1.0 for everyone when all queues are equal.
Why the second term (default on, `countUnscraped`): between two scrapes every request would otherwise see the same
queues and herd onto the same replica; counting what this picker sent since the last scrape spreads a burst at once.
The count resets at each successful scrape, whose `waiting` then includes those requests (or they already run).
Inputs: scraped `waiting`; the picker's `dispatched_since_scrape`. Parameters: `countUnscraped` (true).
"""

from __future__ import annotations

from typing import ClassVar

from scorer.framework import PluginParams
from scorer.plugins.common import inverse_min_max, queue_length
from scorer.types import CycleState, EndpointState, LLMRequest


class QueueParams(PluginParams):
    count_unscraped: bool = True


class QueueScorer:
    type_name: ClassVar[str] = "queue-scorer"
    Params = QueueParams

    def __init__(self, name: str, params: QueueParams):
        self.name = name
        self.count_unscraped = params.count_unscraped

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        return inverse_min_max({c.address: float(queue_length(c, self.count_unscraped)) for c in candidates})
