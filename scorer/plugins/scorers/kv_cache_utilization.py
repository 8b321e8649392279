"""kv-cache-utilization-scorer: prefer the endpoints with the most free KV-cache memory.

Formula (GIE): `score(e) = 1 - kv_usage(e)`, with `kv_usage` = `vllm:kv_cache_usage_perc` in [0, 1] (the scheduler
clamps a bogus value). A full cache means preemptions and evicted prefixes, so this spreads long contexts.
Inputs: scraped `kv_usage`. Parameters: none.
"""

from __future__ import annotations

from typing import ClassVar

from scorer.framework import NoParams
from scorer.plugins.common import metrics_of
from scorer.types import CycleState, EndpointState, LLMRequest


class KVCacheUtilizationScorer:
    type_name: ClassVar[str] = "kv-cache-utilization-scorer"
    Params = NoParams

    def __init__(self, name: str, params: NoParams):
        self.name = name

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        return {c.address: 1.0 - metrics_of(c).kv_usage for c in candidates}
