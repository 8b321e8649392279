"""label-selector-filter: keep only the endpoints whose labels match, e.g. one hardware class or one rollout track.

Formula: keep `e` iff `labels(e)[k] == v` for every `k: v` in `matchLabels` (an empty selector keeps everyone).
Inputs: the endpoint's labels (from its pod). Parameters: `matchLabels` (mapping, default `{}`).
Hard filter: when nothing matches, the cycle fails with 503 (a selector is a requirement, not a preference).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from scorer.framework import PluginParams
from scorer.types import CycleState, EndpointState, LLMRequest


class LabelSelectorParams(PluginParams):
    match_labels: dict[str, str] = Field(default_factory=dict)


class LabelSelectorFilter:
    type_name: ClassVar[str] = "label-selector-filter"
    Params = LabelSelectorParams
    soft: ClassVar[bool] = False

    def __init__(self, name: str, params: LabelSelectorParams):
        self.name = name
        self.selector = dict(params.match_labels)

    def filter(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        selector = self.selector.items()
        return [c for c in candidates if all(c.endpoint.labels.get(k) == v for k, v in selector)]
