"""random-picker: ignore the scores and choose uniformly at random (a baseline, or for stateless load spreading).

Formula: a uniform random sample without replacement of `maxNumOfEndpoints` candidates (the first is the primary).
Inputs: `cycle.rng`. Parameters: `maxNumOfEndpoints` (1).
"""

from __future__ import annotations

from typing import ClassVar

from scorer.plugins.pickers.params import PickerParams, describe
from scorer.types import CycleState, LLMRequest, ScoredEndpoint


class RandomPicker:
    type_name: ClassVar[str] = "random-picker"
    Params = PickerParams

    def __init__(self, name: str, params: PickerParams):
        self.name = name
        self.count = params.max_num_of_endpoints

    def pick(
        self, cycle: CycleState, request: LLMRequest, scored: list[ScoredEndpoint]
    ) -> tuple[list[ScoredEndpoint], str]:
        chosen = cycle.rng.sample(scored, min(self.count, len(scored)))
        return chosen, f"random: {describe(chosen)}"
