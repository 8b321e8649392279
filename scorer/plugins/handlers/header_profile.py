"""header-profile-handler: the request chooses its profile by name in a header (e.g. a tenant's routing policy).

Formula: `select = headers[header]` when it names a defined profile, else `defaultProfile` (or the first profile).
Parameters: `header` ("x-scheduling-profile"), `defaultProfile` (none: the first profile; must name a profile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from pydantic import Field

from scorer.framework import PluginParams
from scorer.types import CycleState, LLMRequest


class HeaderProfileParams(PluginParams):
    header: str = Field("x-scheduling-profile", min_length=1)
    default_profile: str | None = None


class HeaderProfileHandler:
    type_name: ClassVar[str] = "header-profile-handler"
    Params = HeaderProfileParams

    def __init__(self, name: str, params: HeaderProfileParams):
        self.name = name
        self.header = params.header.lower()
        self.default_profile = params.default_profile

    @classmethod
    def check_references(
        cls, params: HeaderProfileParams, plugins: Mapping[str, str], profiles: Sequence[str]
    ) -> list[tuple[str, str]]:
        if params.default_profile is not None and params.default_profile not in profiles:
            return [("defaultProfile", f"unknown profile {params.default_profile!r}")]
        return []

    def select(self, cycle: CycleState, request: LLMRequest, profiles: Sequence[str]) -> str:
        wanted = request.headers.get(self.header)
        if wanted in profiles:
            return str(wanted)
        if self.default_profile is not None and self.default_profile in profiles:
            return self.default_profile
        return profiles[0]
