"""Every built-in plugin's formula, table-driven: scorers, filters, pickers, profile handlers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from scorer.framework import Usage
from scorer.plugins.filters import LabelSelectorFilter, SaturationFilter
from scorer.plugins.handlers import HeaderProfileHandler, SingleProfileHandler
from scorer.plugins.pickers import MaxScorePicker, RandomPicker, WeightedRandomPicker
from scorer.plugins.scorers import (
    ActiveRequestScorer,
    KVCacheUtilizationScorer,
    LoRAAffinityScorer,
    PrefixCacheScorer,
    QueueScorer,
    RunningRequestsScorer,
    SessionAffinityScorer,
    TTFTEstimateScorer,
)
from scorer.types import (
    CycleState,
    Endpoint,
    EndpointMetrics,
    EndpointState,
    LLMRequest,
    NoEndpointError,
    SchedulingResult,
    ScoredEndpoint,
)

A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"


def state(address: str, labels: dict[str, str] | None = None, **metrics: object) -> EndpointState:
    extra = {k: metrics.pop(k) for k in ("in_flight", "dispatched_since_scrape") if k in metrics}
    return EndpointState(Endpoint(address, labels=labels or {}), EndpointMetrics(**metrics), **extra)  # type: ignore[arg-type]


def cycle(seed: int = 0, now: float = 100.0) -> CycleState:
    return CycleState(now=now, rng=random.Random(seed))


def result(*targets: EndpointState) -> SchedulingResult:
    return SchedulingResult(targets=tuple(targets), reason="test")


REQ = LLMRequest("r1", "base", prompt="hi")


# ---- load scorers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("waiting", "unscraped", "count_unscraped", "expected"),
    [
        ((0, 5, 10), (0, 0, 0), True, (1.0, 0.5, 0.0)),
        ((3, 3, 3), (0, 0, 0), True, (1.0, 1.0, 1.0)),
        ((2, 0, 0), (0, 2, 4), True, (1.0, 1.0, 0.0)),  # requests sent since the scrape count as queued
        ((2, 0, 0), (0, 2, 4), False, (0.0, 1.0, 1.0)),
        ((7,), (0,), True, (1.0,)),
    ],
)
def test_queue_scorer(waiting, unscraped, count_unscraped, expected):
    states = [
        state(a, waiting=w, dispatched_since_scrape=u) for a, w, u in zip((A, B, C), waiting, unscraped, strict=False)
    ]
    scorer = QueueScorer("q", QueueScorer.Params(count_unscraped=count_unscraped))
    scores = scorer.score(cycle(), REQ, states)
    assert [scores[s.address] for s in states] == pytest.approx(list(expected))


@pytest.mark.parametrize(("usage", "expected"), [(0.0, 1.0), (0.25, 0.75), (1.0, 0.0), (1.3, -0.3)])
def test_kv_cache_utilization_scorer(usage: float, expected: float):
    scorer = KVCacheUtilizationScorer("kv", KVCacheUtilizationScorer.Params())
    assert scorer.score(cycle(), REQ, [state(A, kv_usage=usage)])[A] == pytest.approx(expected)  # clamped later


@pytest.mark.parametrize(
    ("running", "expected"), [((4, 2, 0), (0.0, 0.5, 1.0)), ((1, 1, 1), (1.0, 1.0, 1.0)), ((0, 10, 5), (1.0, 0.0, 0.5))]
)
def test_running_requests_scorer(running, expected):
    states = [state(a, running=r) for a, r in zip((A, B, C), running, strict=False)]
    scores = RunningRequestsScorer("r", RunningRequestsScorer.Params()).score(cycle(), REQ, states)
    assert [scores[s.address] for s in states] == pytest.approx(list(expected))


@pytest.mark.parametrize(
    ("in_flight", "idle", "expected"),
    [((0, 4, 8), 0, (1.0, 0.5, 0.0)), ((1, 2, 6), 2, (1.0, 1.0, 0.0)), ((3, 3, 3), 0, (1.0, 1.0, 1.0))],
)
def test_active_request_scorer(in_flight, idle, expected):
    states = [state(a, in_flight=n) for a, n in zip((A, B, C), in_flight, strict=False)]
    scorer = ActiveRequestScorer("a", ActiveRequestScorer.Params(idle_threshold=idle))
    scores = scorer.score(cycle(), REQ, states)
    assert [scores[s.address] for s in states] == pytest.approx(list(expected))


# ---- LoRA -------------------------------------------------------------------------------------------------
def _lora(address: str, active=(), waiting=(), max_loras=2) -> EndpointState:
    return state(address, active_loras=frozenset(active), waiting_loras=frozenset(waiting), max_loras=max_loras)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (_lora(A, active=["sql", "x"]), 1.0),  # active (even with no free slot)
        (_lora(A, active=["x"]), 0.8),  # a free slot
        (_lora(A, active=["x"], waiting=["sql"]), 0.6),  # waiting, no free slot
        (_lora(A, active=["x", "y"]), 0.0),  # full, not there
        (_lora(A, max_loras=0), 0.0),  # LoRA unknown/disabled: no slot
    ],
)
def test_lora_affinity_for_an_adapter(endpoint: EndpointState, expected: float):
    scorer = LoRAAffinityScorer("l", LoRAAffinityScorer.Params(base_model="base"))
    assert scorer.score(cycle(), LLMRequest("r", "sql"), [endpoint])[A] == expected


def test_lora_affinity_base_model_is_neutral_and_adapters_are_inferred():
    inferred = LoRAAffinityScorer("l", LoRAAffinityScorer.Params())
    fleet = [_lora(A, active=["sql"]), _lora(B, active=["x", "y"])]
    assert inferred.score(cycle(), LLMRequest("r", "sql"), fleet) == {A: 1.0, B: 0.0}
    assert inferred.score(cycle(), LLMRequest("r", "base"), fleet) == {A: 1.0, B: 1.0}  # nobody lists it: base
    explicit = LoRAAffinityScorer("l", LoRAAffinityScorer.Params(base_model="base"))
    assert explicit.score(cycle(), LLMRequest("r", "base"), fleet) == {A: 1.0, B: 1.0}
    assert explicit.score(cycle(), LLMRequest("r", "new"), fleet) == {A: 0.8, B: 0.0}  # A has a free slot


# ---- session affinity -------------------------------------------------------------------------------------
def test_session_affinity_binds_on_pre_request_and_expires():
    scorer = SessionAffinityScorer("s", SessionAffinityScorer.Params(ttl_seconds=300))
    req = LLMRequest("r", "m", headers={"x-session-id": "chat-1"})
    states = [state(A), state(B)]
    assert scorer.score(cycle(now=0), req, states) == {A: 0.0, B: 0.0}
    scorer.pre_request(cycle(now=0), req, result(states[1]))
    assert scorer.score(cycle(now=299), req, states) == {A: 0.0, B: 1.0}
    assert scorer.score(cycle(now=300), req, states) == {A: 0.0, B: 0.0}  # expired
    other = LLMRequest("r2", "m", headers={"x-session-id": "chat-2"})
    assert scorer.score(cycle(now=1), other, states) == {A: 0.0, B: 0.0}


def test_session_follows_the_served_endpoint_and_the_table_is_bounded():
    scorer = SessionAffinityScorer("s", SessionAffinityScorer.Params(max_sessions=2))
    reqs = [LLMRequest(f"r{i}", "m", headers={"x-session-id": f"s{i}"}) for i in range(3)]
    scorer.pre_request(cycle(now=0), reqs[0], result(state(A)))
    scorer.response_complete(reqs[0], B, 200, None, now=1)  # Envoy retried onto B
    assert scorer.bound_endpoint("s0", 2) == B
    scorer.response_complete(reqs[0], A, 503, None, now=2)  # a failure does not move it
    assert scorer.bound_endpoint("s0", 3) == B
    scorer.pre_request(cycle(now=0), reqs[1], result(state(A)))
    scorer.pre_request(cycle(now=0), reqs[2], result(state(A)))
    assert scorer.bound_endpoint("s0", 4) is None and len(scorer.bindings) == 2  # least recently used dropped


# ---- prefix cache -----------------------------------------------------------------------------------------
def _prefix(capacity: int = 1000) -> PrefixCacheScorer:
    return PrefixCacheScorer("prefix", PrefixCacheScorer.Params(block_size=4, lru_capacity_per_server=capacity))


def test_prefix_scorer_is_matched_blocks_over_total_and_learns_the_primary():
    scorer = _prefix()
    first = LLMRequest("r1", "m", prompt="aaaabbbbccccdddd")
    states = [state(A), state(B)]
    assert scorer.score(cycle(), first, states) == {A: 0.0, B: 0.0}
    c = cycle()
    scorer.score(c, first, states)
    scorer.pre_request(c, first, result(states[0], states[1]))  # only the primary learns
    half = LLMRequest("r2", "m", prompt="aaaabbbbXXXXYYYYZZ")
    assert scorer.score(cycle(), half, states) == {A: 0.5, B: 0.0}
    assert scorer.match(cycle(), half).cached_fraction(A) == pytest.approx(8 / 18)
    assert scorer.score(cycle(), LLMRequest("r3", "other-model", prompt="aaaabbbb"), states) == {A: 0.0, B: 0.0}
    assert scorer.score(cycle(), LLMRequest("r4", "m", prompt="aaa"), states) == {A: 0.0, B: 0.0}  # no full block


def test_prefix_scorer_hashes_once_per_cycle():
    scorer = _prefix()
    c = cycle()
    req = LLMRequest("r1", "m", prompt="aaaabbbb")
    assert scorer.match(c, req) is scorer.match(c, req)


def test_prefix_scorer_learns_where_the_request_was_really_served():
    scorer = _prefix()
    req = LLMRequest("r1", "m", prompt="aaaabbbb")
    scorer.pre_request(cycle(), req, result(state(A)))
    scorer.response_complete(req.without_prompt(), B, 200, Usage(prompt_tokens=2), now=1.0)  # as the Director has it
    assert scorer.score(cycle(), req, [state(A), state(B)]) == {A: 1.0, B: 1.0}
    failed = LLMRequest("r2", "m", prompt="zzzzyyyy")
    scorer.pre_request(cycle(), failed, result(state(A)))
    scorer.response_complete(failed, C, 500, None, now=1.0)  # an error teaches nothing
    assert scorer.score(cycle(), failed, [state(C)]) == {C: 0.0}
    scorer.endpoints_changed(frozenset({B}))
    assert scorer.score(cycle(), req, [state(A), state(B)]) == {A: 0.0, B: 1.0}


def test_prefix_scorer_keeps_the_blocks_of_pending_responses_within_its_budget():
    scorer = _prefix()
    scorer.sent_budget = (10, 3 * 8)  # 3 blocks of 8 bytes
    first, second = LLMRequest("r1", "m", prompt="aaaabbbb"), LLMRequest("r2", "m", prompt="ccccdddd")
    scorer.pre_request(cycle(), first, result(state(A)))
    scorer.pre_request(cycle(), second, result(state(A)))  # 4 blocks pending: the oldest request is forgotten
    assert list(scorer._sent) == ["r2"] and scorer._sent_bytes == 16
    scorer.response_complete(first.without_prompt(), B, 200, None, now=1.0)  # forgotten: B learns nothing
    scorer.response_complete(second.without_prompt(), B, 200, None, now=1.0)
    assert scorer.score(cycle(), first, [state(B)]) == {B: 0.0}
    assert scorer.score(cycle(), second, [state(B)]) == {B: 1.0}
    assert not scorer._sent and scorer._sent_bytes == 0
    scorer.sent_budget = (1, 2**20)
    for i in range(3):
        scorer.pre_request(cycle(), LLMRequest(f"q{i}", "m", prompt="eeeeffff"), result(state(A)))
    assert list(scorer._sent) == ["q2"] and scorer._sent_bytes == 16


# ---- filters ----------------------------------------------------------------------------------------------
def test_label_selector_filter():
    states = [state(A, {"gpu": "h100", "zone": "a"}), state(B, {"gpu": "a100"}), state(C)]
    keep = LabelSelectorFilter("f", LabelSelectorFilter.Params(match_labels={"gpu": "h100"}))
    everyone = LabelSelectorFilter("f", LabelSelectorFilter.Params())
    assert [s.address for s in keep.filter(cycle(), REQ, states)] == [A]
    assert everyone.filter(cycle(), REQ, states) == states
    assert not keep.soft


@pytest.mark.parametrize(
    ("metrics", "has_headroom"),
    [
        ({"waiting": 5, "kv_usage": 0.8}, True),  # at the thresholds: still fine
        ({"waiting": 6, "kv_usage": 0.1}, False),  # a deep queue alone is saturation
        ({"waiting": 0, "kv_usage": 0.81}, False),  # a full cache alone is saturation
        ({"waiting": 3, "kv_usage": 0.5, "dispatched_since_scrape": 3}, False),  # 3 + 3 unscraped > 5
    ],
)
def test_saturation_headroom(metrics: dict, has_headroom: bool):
    f = SaturationFilter("sat", SaturationFilter.Params())
    assert f.has_headroom(state(A, **metrics)) is has_headroom


def test_saturation_filter_keeps_headroom_then_is_soft_or_sheds():
    f = SaturationFilter("sat", SaturationFilter.Params(queue_threshold=2, kv_threshold=0.9))
    busy, idle = state(A, waiting=9), state(B, waiting=0)
    assert f.filter(cycle(), REQ, [busy, idle]) == [idle]
    assert f.filter(cycle(), LLMRequest("r", "m", priority=-1), [busy, idle]) == [idle]
    assert f.soft and f.filter(cycle(), REQ, [busy]) == []  # the scheduler then skips it
    with pytest.raises(NoEndpointError) as info:
        f.filter(cycle(), LLMRequest("r", "m", priority=-1), [busy])
    assert info.value.shed


# ---- pickers ----------------------------------------------------------------------------------------------
def scored(*totals: float) -> list[ScoredEndpoint]:
    return [ScoredEndpoint(state(f"10.9.0.{i}:80"), t, {}) for i, t in enumerate(totals)]


def picks(picker, candidates, seed: int) -> list[str]:
    chosen, _reason = picker.pick(cycle(seed), REQ, candidates)
    return [c.state.address for c in chosen]


def test_max_score_picker_takes_the_best_then_fallbacks_in_order():
    picker = MaxScorePicker("p", MaxScorePicker.Params(max_num_of_endpoints=3))
    assert picks(picker, scored(0.1, 0.9, 0.5, 0.7), 0) == ["10.9.0.1:80", "10.9.0.3:80", "10.9.0.2:80"]
    assert picks(MaxScorePicker("p", MaxScorePicker.Params()), scored(0.1, 0.9), 0) == ["10.9.0.1:80"]
    big = MaxScorePicker("p", MaxScorePicker.Params(max_num_of_endpoints=10))
    assert len(picks(big, scored(1, 2, 3), 0)) == 3


def test_max_score_picker_breaks_ties_at_random_in_every_position():
    picker = MaxScorePicker("p", MaxScorePicker.Params(max_num_of_endpoints=2))
    outcomes = {tuple(picks(picker, scored(0.2, 0.5, 0.5, 0.1), seed)) for seed in range(50)}
    assert outcomes == {("10.9.0.1:80", "10.9.0.2:80"), ("10.9.0.2:80", "10.9.0.1:80")}
    second = {tuple(picks(picker, scored(0.9, 0.5, 0.5), seed)) for seed in range(50)}
    assert second == {("10.9.0.0:80", "10.9.0.1:80"), ("10.9.0.0:80", "10.9.0.2:80")}
    _chosen, reason = picker.pick(cycle(), REQ, scored(0.5, 0.5))
    assert "random among 2 tied" in reason


def test_weighted_random_picker_follows_the_scores():
    picker = WeightedRandomPicker("p", WeightedRandomPicker.Params())
    counts = Counter(picks(picker, scored(1.0, 3.0, 0.0), seed)[0] for seed in range(2000))
    assert counts["10.9.0.2:80"] == 0  # zero score is never chosen while someone scores above zero
    assert 0.70 < counts["10.9.0.1:80"] / 2000 < 0.80  # 3 / (1 + 3) = 0.75
    uniform = Counter(picks(picker, scored(0.0, 0.0), seed)[0] for seed in range(400))
    assert set(uniform) == {"10.9.0.0:80", "10.9.0.1:80"}  # all zero: uniform
    three = WeightedRandomPicker("p", WeightedRandomPicker.Params(max_num_of_endpoints=3))
    assert sorted(picks(three, scored(1.0, 0.0, 2.0), 1)) == ["10.9.0.0:80", "10.9.0.1:80", "10.9.0.2:80"]
    assert picks(three, scored(1.0, 0.0, 2.0), 1)[-1] == "10.9.0.1:80"  # zero scores come last


def test_random_picker_ignores_scores():
    picker = RandomPicker("p", RandomPicker.Params(max_num_of_endpoints=2))
    outcomes = {tuple(picks(picker, scored(0.0, 5.0), seed)) for seed in range(30)}
    assert outcomes == {("10.9.0.0:80", "10.9.0.1:80"), ("10.9.0.1:80", "10.9.0.0:80")}


# ---- profile handlers -------------------------------------------------------------------------------------
def test_profile_handlers():
    single = SingleProfileHandler("h", SingleProfileHandler.Params())
    assert single.select(cycle(), REQ, ["only"]) == "only"
    header = HeaderProfileHandler("h", HeaderProfileHandler.Params(header="X-Profile", default_profile="b"))
    assert header.select(cycle(), LLMRequest("r", "m", headers={"x-profile": "a"}), ["a", "b"]) == "a"
    assert header.select(cycle(), LLMRequest("r", "m", headers={"x-profile": "c"}), ["a", "b"]) == "b"
    first = HeaderProfileHandler("h", HeaderProfileHandler.Params())
    assert first.select(cycle(), REQ, ["a", "b"]) == "a"


# ---- ttft estimate (load-aware affinity) ------------------------------------------------------------------
PROMPT = "abcd" * 1000  # 4000 bytes: 1000 estimated tokens, 1000 blocks of 4 bytes


def _ttft(prefix: PrefixCacheScorer | None, **params: object) -> TTFTEstimateScorer:
    defaults = {"prefill_tokens_per_second": 1000.0, "decode_step_seconds": 0.01, "running_request_slowdown": 0.0}
    scorer = TTFTEstimateScorer("ttft", TTFTEstimateScorer.Params(**(defaults | params)))  # type: ignore[arg-type]
    scorer.bind({"prefix": prefix} if prefix is not None else {})
    return scorer


def _warm_prefix_on(address: str) -> PrefixCacheScorer:
    prefix = _prefix(capacity=10_000)
    c = cycle()
    prefix.pre_request(c, LLMRequest("warm", "m", prompt=PROMPT), result(state(address)))
    return prefix


def test_ttft_estimate_formula():
    ttft = _ttft(_warm_prefix_on(A))
    req = LLMRequest("r", "m", prompt=PROMPT)
    c = cycle()
    scores = ttft.score(c, req, [state(A), state(B)])
    estimates = c.data["ttft/estimates"]
    assert estimates[A][0] == pytest.approx(0.01)  # everything cached, nothing queued: one step
    assert estimates[B][0] == pytest.approx(0.01 + 1000 / 1000)  # the whole prompt to prefill
    assert scores == {A: 1.0, B: pytest.approx(0.01 / 1.01)}


def test_running_requests_slow_the_prefill():
    ttft = _ttft(None, running_request_slowdown=0.002)
    c = cycle()
    ttft.score(c, LLMRequest("r", "m", prompt=PROMPT), [state(A, running=100), state(B)])
    assert c.data["ttft/estimates"][A][0] == pytest.approx(0.01 + 1.0 * 1.2)
    assert c.data["ttft/estimates"][B][0] == pytest.approx(0.01 + 1.0)


@pytest.mark.parametrize(("waiting", "winner"), [(0, A), (5, A), (9, A), (11, B), (30, B)])
def test_prefix_affinity_yields_to_load(waiting: int, winner: str):
    """A holds the whole prompt; each of its queued requests costs 100 tokens (0.1 s); re-prefilling on B costs 1 s."""
    ttft = _ttft(_warm_prefix_on(A), waiting_request_tokens=100)
    scores = ttft.score(cycle(), LLMRequest("r", "m", prompt=PROMPT), [state(A, waiting=waiting), state(B)])
    assert max(scores, key=lambda a: scores[a]) == winner
    assert max(scores.values()) == 1.0


@pytest.mark.parametrize(
    ("credit", "waiting", "winner"),
    [
        # no credit: A's queue of 11 x 0.1 s costs more than re-prefilling on B (1 s)
        (0.0, 11, B),
        # credit 1: keeping the prefix on A is worth another second of prefill (the next turns), so A until 20 waiting
        (1.0, 11, A),
        (1.0, 19, A),
        (1.0, 21, B),
        (3.0, 21, A),
    ],
)
def test_locality_credit_values_the_cached_prefix_for_the_next_turns(credit: float, waiting: int, winner: str):
    ttft = _ttft(_warm_prefix_on(A), waiting_request_tokens=100, locality_credit=credit)
    c = cycle()
    scores = ttft.score(c, LLMRequest("r", "m", prompt=PROMPT), [state(A, waiting=waiting), state(B)])
    assert max(scores, key=lambda a: scores[a]) == winner
    assert c.data["ttft/estimates"][A][0] == pytest.approx(0.01 + waiting * 0.1)  # the estimate itself is unchanged


def test_dispatches_build_a_backlog_that_drains_with_time():
    ttft = _ttft(None, waiting_request_tokens=0)
    req = LLMRequest("r", "m", prompt=PROMPT)
    c = cycle(now=100.0)
    ttft.score(c, req, [state(A), state(B)])
    ttft.pre_request(c, req, result(state(B)))
    assert ttft.backlog_until[B] == pytest.approx(101.0)  # one second of prefill queued on B
    assert ttft.mean_uncached == pytest.approx(0.05 * 1000)
    later = cycle(now=100.5)
    ttft.score(later, req, [state(A), state(B)])
    assert later.data["ttft/estimates"][B][0] == pytest.approx(0.01 + 0.5 + 1.0)
    ttft.pre_request(later, req, result(state(B)))  # queued behind the first
    assert ttft.backlog_until[B] == pytest.approx(102.0)
    done = cycle(now=103.0)
    ttft.score(done, req, [state(A), state(B)])
    assert done.data["ttft/estimates"][B][0] == pytest.approx(1.01)  # drained
    ttft.endpoints_changed(frozenset({A}))
    assert ttft.backlog_until == {}


def test_ttft_finds_its_prefix_plugin():
    prefix = _prefix()
    auto = TTFTEstimateScorer("t", TTFTEstimateScorer.Params())
    auto.bind({"prefix": prefix, "q": QueueScorer("q", QueueScorer.Params())})
    assert auto.prefix is prefix
    named = TTFTEstimateScorer("t", TTFTEstimateScorer.Params(prefix_plugin_ref="other"))
    named.bind({"prefix": prefix})
    assert named.prefix is None
