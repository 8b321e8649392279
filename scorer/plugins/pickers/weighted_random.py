"""weighted-random-picker: choose at random with probability proportional to the total score.

Formula (GIE, A-Res weighted sampling without replacement): each candidate with total `w > 0` draws
`key = U^(1/w)`, `U` uniform in (0, 1); the largest keys win. Candidates with `w <= 0` come after all positive
ones, in random order; when every score is 0 the choice is uniform. Returns `maxNumOfEndpoints` endpoints.
Inputs: the weighted totals; `cycle.rng`. Parameters: `maxNumOfEndpoints` (1).
"""

from __future__ import annotations

from typing import ClassVar

from scorer.plugins.pickers.params import PickerParams, describe
from scorer.types import CycleState, LLMRequest, ScoredEndpoint


class WeightedRandomPicker:
    type_name: ClassVar[str] = "weighted-random-picker"
    Params = PickerParams

    def __init__(self, name: str, params: PickerParams):
        self.name = name
        self.count = params.max_num_of_endpoints

    def pick(
        self, cycle: CycleState, request: LLMRequest, scored: list[ScoredEndpoint]
    ) -> tuple[list[ScoredEndpoint], str]:
        rng = cycle.rng
        keyed: list[tuple[int, float, ScoredEndpoint]] = []
        for s in scored:
            u = 1.0 - rng.random()  # in (0, 1]
            if s.total > 0:
                keyed.append((1, u ** (1.0 / s.total), s))
            else:
                keyed.append((0, u, s))
        keyed.sort(key=lambda k: (k[0], k[1]), reverse=True)
        chosen = [s for _tier, _key, s in keyed[: self.count]]
        return chosen, f"weighted random: {describe(chosen)}"
