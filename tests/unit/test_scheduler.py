"""The scheduling cycle: filter chaining and accounting, soft filters, clamping and weighting, timing, hooks.

The stub plugins are added to a registry of their own (`REGISTRY`), never to the built-in table.
"""

from __future__ import annotations

import math
import random
from typing import ClassVar

import pytest
from pydantic import Field

from scorer.config import load_config
from scorer.framework import PluginParams, Usage
from scorer.plugins import default_registry
from scorer.registry import PluginType
from scorer.scheduler import Scheduler, clamp_score
from scorer.types import (
    CycleState,
    Endpoint,
    EndpointMetrics,
    EndpointState,
    LLMRequest,
    NoEndpointError,
    SchedulingResult,
)

HEAD = "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\n"


class StubFilterParams(PluginParams):
    drop: list[str] = Field(default_factory=list)
    soft: bool = False
    shed: bool = False


class StubFilter:
    """Removes the listed addresses; records what it was given."""

    type_name: ClassVar[str] = "test-stub-filter"
    Params = StubFilterParams

    def __init__(self, name: str, params: StubFilterParams):
        self.name, self.params, self.soft = name, params, params.soft
        self.seen: list[list[str]] = []

    def filter(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        self.seen.append([c.address for c in candidates])
        if self.params.shed:
            raise NoEndpointError("shed by stub", shed=True, filtered_out={self.name: ("x:1",)})
        return [c for c in candidates if c.address not in self.params.drop]


class StubScorerParams(PluginParams):
    scores: dict[str, float] = Field(default_factory=dict)


class StubScorer:
    type_name: ClassVar[str] = "test-stub-scorer"
    Params = StubScorerParams

    def __init__(self, name: str, params: StubScorerParams):
        self.name, self.scores = name, dict(params.scores)

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        return {c.address: self.scores[c.address] for c in candidates if c.address in self.scores}


class StubHook:
    """Fills no extension point; only learns (pre_request, responses, membership)."""

    type_name: ClassVar[str] = "test-stub-hook"

    def __init__(self, name: str, params: object):
        self.name = name
        self.calls: list[tuple] = []

    def pre_request(self, cycle: CycleState, request: LLMRequest, result: SchedulingResult) -> None:
        self.calls.append(("pre_request", request.request_id, tuple(result.addresses)))

    def response_complete(self, request: LLMRequest, address: str, status: int, usage: Usage | None, now: float):
        self.calls.append(("response", request.request_id, address, status))

    def endpoints_changed(self, present: frozenset[str]) -> None:
        self.calls.append(("members", tuple(sorted(present))))


REGISTRY = default_registry().with_types(PluginType.of(StubFilter), PluginType.of(StubScorer), PluginType.of(StubHook))
A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"


def _states(*addresses: str) -> list[EndpointState]:
    return [EndpointState(Endpoint(a), EndpointMetrics()) for a in addresses]


def _scheduler(plugins: str, profile: str, extra_profiles: str = "") -> Scheduler:
    text = HEAD + f"plugins: {plugins}\nschedulingProfiles:\n- {profile}\n{extra_profiles}"
    return Scheduler(load_config(text, REGISTRY))


def _cycle(seed: int = 0) -> CycleState:
    return CycleState(now=100.0, rng=random.Random(seed))


REQ = LLMRequest("r1", "m", prompt="hello")


def test_filters_run_in_order_on_each_others_output_and_removals_are_recorded():
    s = _scheduler(
        f"[{{type: test-stub-filter, name: f1, parameters: {{drop: ['{A}']}}}},"
        f" {{type: test-stub-filter, name: f2, parameters: {{drop: ['{B}']}}}}]",
        "{name: d, plugins: [{pluginRef: f2}, {pluginRef: f1}]}",
    )
    result = s.schedule(REQ, _states(A, B, C), _cycle())
    f1, f2 = s.plugins["f1"], s.plugins["f2"]
    assert f2.seen == [[A, B, C]] and f1.seen == [[A, C]]  # document order: f2 first
    assert result.filtered_out == {"f2": (B,), "f1": (A,)}
    assert result.addresses == [C]


def test_hard_filter_removing_everything_fails_with_what_was_removed():
    s = _scheduler(
        f"[{{type: test-stub-filter, name: f1, parameters: {{drop: ['{A}']}}}},"
        f" {{type: test-stub-filter, name: f2, parameters: {{drop: ['{B}', '{C}']}}}}]",
        "{name: d, plugins: [{pluginRef: f1}, {pluginRef: f2}]}",
    )
    with pytest.raises(NoEndpointError, match="'f2' removed every candidate") as info:
        s.schedule(REQ, _states(A, B, C), _cycle())
    assert info.value.filtered_out == {"f1": (A,), "f2": (B, C)}
    assert not info.value.shed


def test_soft_filter_that_would_remove_everything_is_skipped():
    s = _scheduler(
        f"[{{type: test-stub-filter, name: soft, parameters: {{soft: true, drop: ['{A}', '{B}']}}}}]",
        "{name: d, plugins: [{pluginRef: soft}]}",
    )
    result = s.schedule(REQ, _states(A, B), _cycle())
    assert sorted(result.addresses) != [] and result.filtered_out == {}
    assert "soft filter soft skipped" in result.reason
    partial = s.schedule(REQ, _states(A, B, C), _cycle())  # when it keeps someone it filters normally
    assert partial.addresses == [C] and partial.filtered_out == {"soft": (A, B)}


def test_filter_may_shed_and_the_error_carries_earlier_removals():
    s = _scheduler(
        f"[{{type: test-stub-filter, name: f1, parameters: {{drop: ['{A}']}}}},"
        " {type: test-stub-filter, name: shedder, parameters: {shed: true}}]",
        "{name: d, plugins: [{pluginRef: f1}, {pluginRef: shedder}]}",
    )
    with pytest.raises(NoEndpointError) as info:
        s.schedule(REQ, _states(A, B), _cycle())
    assert info.value.shed
    assert info.value.filtered_out == {"f1": (A,), "shedder": ("x:1",)}


def test_no_candidates_is_no_endpoint():
    s = _scheduler("[]", "{name: d}")
    with pytest.raises(NoEndpointError, match="no candidate"):
        s.schedule(REQ, [], _cycle())


@pytest.mark.parametrize(
    ("raw", "clamped"),
    [(1.7, 1.0), (-0.3, 0.0), (math.nan, 0.0), (math.inf, 1.0), (-math.inf, 0.0), (0.25, 0.25), (0.0, 0.0), (1.0, 1.0)],
)
def test_clamp_score(raw: float, clamped: float):
    assert clamp_score(raw) == clamped


def test_scores_are_clamped_weighted_and_summed():
    s = _scheduler(
        f"[{{type: test-stub-scorer, name: s1, parameters: {{scores: {{'{A}': 1.7, '{B}': -0.3, '{C}': .nan}}}}}},"
        f" {{type: test-stub-scorer, name: s2, parameters: {{scores: {{'{A}': 0.5, '{B}': 0.25}}}}}}]",
        "{name: d, plugins: [{pluginRef: s1, weight: 3}, {pluginRef: s2, weight: 2}]}",
    )
    result = s.schedule(REQ, _states(A, B, C), _cycle())
    by = {e.state.address: e for e in result.scored}
    assert by[A].by_scorer == {"s1": 1.0, "s2": 0.5} and by[A].total == pytest.approx(3 * 1.0 + 2 * 0.5)
    assert by[B].by_scorer == {"s1": 0.0, "s2": 0.25} and by[B].total == pytest.approx(0.5)
    assert by[C].by_scorer == {"s1": 0.0, "s2": 0.0} and by[C].total == 0.0  # NaN and missing count as 0
    assert result.addresses == [A]
    assert "max score" in result.reason and A in result.reason


def test_weight_decides_between_two_scorers():
    plugins = (
        f"[{{type: test-stub-scorer, name: likes-a, parameters: {{scores: {{'{A}': 1.0}}}}}},"
        f" {{type: test-stub-scorer, name: likes-b, parameters: {{scores: {{'{B}': 1.0}}}}}}]"
    )
    heavy_a = _scheduler(plugins, "{name: d, plugins: [{pluginRef: likes-a, weight: 2}, {pluginRef: likes-b}]}")
    heavy_b = _scheduler(plugins, "{name: d, plugins: [{pluginRef: likes-a}, {pluginRef: likes-b, weight: 2}]}")
    assert heavy_a.schedule(REQ, _states(A, B), _cycle()).addresses == [A]
    assert heavy_b.schedule(REQ, _states(A, B), _cycle()).addresses == [B]


def test_every_plugin_that_ran_is_timed():
    s = _scheduler(
        "[{type: test-stub-filter, name: f},"
        f" {{type: test-stub-scorer, name: s, parameters: {{scores: {{'{A}': 1}}}}}}]",
        "{name: d, plugins: [{pluginRef: f}, {pluginRef: s}]}",
    )
    result = s.schedule(REQ, _states(A, B), _cycle())
    assert set(result.plugin_seconds) == {"single-profile-handler", "f", "s", "max-score-picker"}
    assert all(v >= 0.0 for v in result.plugin_seconds.values())


def test_schedule_has_no_side_effects_and_commit_calls_pre_request_hooks_once():
    s = _scheduler("[{type: test-stub-hook, name: hook}]", "{name: d}")
    hook = s.plugins["hook"]
    cycle = _cycle()
    result = s.schedule(REQ, _states(A), cycle)
    assert hook.calls == []
    seconds = s.commit(REQ, result, cycle)
    assert hook.calls == [("pre_request", "r1", (A,))]
    assert set(seconds) == {"hook"}


def test_response_and_membership_fan_out():
    s = _scheduler("[{type: test-stub-hook, name: hook}]", "{name: d}")
    s.response_complete(REQ, B, 200, Usage(prompt_tokens=3), now=5.0)
    s.endpoints_changed(frozenset({B, A}))
    assert s.plugins["hook"].calls == [("response", "r1", B, 200), ("members", (A, B))]


def test_a_plugin_without_extension_point_cannot_join_a_profile():
    with pytest.raises(Exception, match="fills no extension point"):
        _scheduler("[{type: test-stub-hook, name: hook}]", "{name: d, plugins: [{pluginRef: hook}]}")


def test_header_profile_handler_runs_the_named_profile():
    s = _scheduler(
        f"[{{type: header-profile-handler, parameters: {{defaultProfile: b}}}},"
        f" {{type: test-stub-scorer, name: likes-a, parameters: {{scores: {{'{A}': 1}}}}}},"
        f" {{type: test-stub-scorer, name: likes-b, parameters: {{scores: {{'{B}': 1}}}}}}]",
        "{name: a, plugins: [{pluginRef: likes-a}]}",
        "- {name: b, plugins: [{pluginRef: likes-b}]}\n",
    )
    to_a = LLMRequest("r", "m", headers={"x-scheduling-profile": "a"})
    to_nowhere = LLMRequest("r", "m", headers={"x-scheduling-profile": "zzz"})
    assert s.schedule(to_a, _states(A, B), _cycle()).profile == "a"
    assert s.schedule(to_a, _states(A, B), _cycle()).addresses == [A]
    assert s.schedule(to_nowhere, _states(A, B), _cycle()).profile == "b"
    assert s.schedule(REQ, _states(A, B), _cycle()).addresses == [B]


def test_ties_are_broken_at_random_and_both_outcomes_occur():
    s = _scheduler("[]", "{name: d}")
    winners = {s.schedule(REQ, _states(A, B), _cycle(seed)).addresses[0] for seed in range(40)}
    assert winners == {A, B}
    again = {s.schedule(REQ, _states(A, B), _cycle(7)).addresses[0] for _ in range(5)}
    assert len(again) == 1  # the same seed gives the same choice
