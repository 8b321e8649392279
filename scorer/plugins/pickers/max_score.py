"""max-score-picker: the highest total score wins; ties are broken at random; the next best are the fallbacks.

Formula (GIE): order the candidates by total score, descending, with candidates of equal score in uniformly random
order (the same distribution as GIE's shuffle-then-stable-sort, but only tied groups that reach the top
`maxNumOfEndpoints` are shuffled); return the first `maxNumOfEndpoints`.
Inputs: the weighted totals; `cycle.rng` for tie-breaks. Parameters: `maxNumOfEndpoints` (1).
"""

from __future__ import annotations

from typing import ClassVar

from scorer.plugins.pickers.params import PickerParams, describe
from scorer.types import CycleState, LLMRequest, ScoredEndpoint


class MaxScorePicker:
    type_name: ClassVar[str] = "max-score-picker"
    Params = PickerParams

    def __init__(self, name: str, params: PickerParams):
        self.name = name
        self.count = params.max_num_of_endpoints

    def pick(
        self, cycle: CycleState, request: LLMRequest, scored: list[ScoredEndpoint]
    ) -> tuple[list[ScoredEndpoint], str]:
        ranked = sorted(scored, key=lambda s: -s.total)
        chosen: list[ScoredEndpoint] = []
        start = 0
        while start < len(ranked) and len(chosen) < self.count:
            end = start + 1
            while end < len(ranked) and ranked[end].total == ranked[start].total:
                end += 1
            group = ranked[start:end]
            if len(group) > 1:
                cycle.rng.shuffle(group)
            chosen.extend(group[: self.count - len(chosen)])
            start = end
        ties = sum(1 for s in ranked if chosen and s.total == chosen[0].total)
        note = f" (random among {ties} tied)" if ties > 1 else ""
        return chosen, f"max score{note}: {describe(chosen)}"
