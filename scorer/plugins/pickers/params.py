"""Parameters shared by every picker: how many endpoints to return (the primary plus Envoy's fallbacks)."""

from __future__ import annotations

from pydantic import Field

from scorer.framework import PluginParams
from scorer.types import ScoredEndpoint


class PickerParams(PluginParams):
    max_num_of_endpoints: int = Field(1, ge=1)


def describe(chosen: list[ScoredEndpoint]) -> str:
    """`addr (total; scorer=raw, ...)` for the primary, then the fallback addresses."""
    if not chosen:
        return "nothing chosen"
    top = chosen[0]
    parts = ", ".join(f"{name}={value:.2f}" for name, value in top.by_scorer.items())
    text = f"{top.state.address} total {top.total:.3f}" + (f" ({parts})" if parts else "")
    if len(chosen) > 1:
        text += "; fallbacks " + ",".join(c.state.address for c in chosen[1:])
    return text
