"""single-profile-handler: every request runs the one profile there is (added by the loader when none is named).

Formula: `select = profiles[0]`. The loader refuses it when more than one profile is defined.
Parameters: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from scorer.framework import NoParams
from scorer.types import CycleState, LLMRequest


class SingleProfileHandler:
    type_name: ClassVar[str] = "single-profile-handler"
    Params = NoParams
    single_profile: ClassVar[bool] = True

    def __init__(self, name: str, params: NoParams):
        self.name = name

    def select(self, cycle: CycleState, request: LLMRequest, profiles: Sequence[str]) -> str:
        return profiles[0]
